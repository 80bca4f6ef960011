from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from sslsearch.config import ConfigError, TrialConfig
from sslsearch.models import load_model
from sslsearch.trial import HISTORY_FILE, MODEL_FILE, run_trial

QUICK = {"epochs": 4, "finetune_epochs": 2, "batch_size": 64}


def _cfg(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "arch": "vgg_small",
        "ssl_lambda": 0.03,
        "ratio": 0.3,
        "threads": 1,
        "recipe": dict(QUICK),
        "latency_repeats": 2,
    }
    base.update(changes)
    return base


class Recorder:
    """A report callback that keeps every report and a copy of every state the trial saved.

    Pass ``rec.store`` as the trial's ``state_dir``; ``rec.checkpoints[i]`` is a directory
    holding the i-th state saved, alone: ``Recorder(root, resume=rec.checkpoints[i])`` starts
    a store from it (a trial restarted from that state). ``stop_after`` states: the trial is
    interrupted (KeyboardInterrupt) right after it reported the last of them.
    """

    def __init__(
        self, root: Path, stop_after: int | None = None, resume: Path | None = None
    ) -> None:
        self.root = root
        self.state_dir = root / "store"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if resume is not None:
            for f in resume.iterdir():
                shutil.copy2(f, self.state_dir / f.name)
        self.store = str(self.state_dir)
        self.metrics: list[dict[str, Any]] = []
        self.checkpoints: list[Path] = []
        self.replayed: list[dict[str, Any]] = []  # epoch reports without a state saved
        self.stop_after = stop_after
        self._newest = self._newest_state()

    def _newest_state(self) -> Path | None:
        states = sorted(self.state_dir.glob("state-*.pt"))
        return states[-1] if states else None

    def __call__(self, metrics: dict[str, Any]) -> None:
        self.metrics.append(dict(metrics))
        newest = self._newest_state()
        if newest is not None and newest != self._newest:
            self._newest = newest
            dst = self.root / f"ckpt{len(self.checkpoints)}"
            dst.mkdir()
            shutil.copy2(newest, dst / newest.name)
            self.checkpoints.append(dst)
        elif not metrics.get("final"):
            self.replayed.append(dict(metrics))
        if self.stop_after is not None and len(self.checkpoints) >= self.stop_after:
            raise KeyboardInterrupt("simulated stop")


def test_reports_every_epoch_and_a_complete_final_row(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    result = run_trial(_cfg(), rec, rec.store)
    epochs = [m for m in rec.metrics if not m["final"]]
    assert [(m["phase"], m["epoch"]) for m in epochs] == [("ssl", i) for i in range(1, 5)] + [
        ("finetune", i) for i in range(1, 3)
    ]
    assert [m["global_epoch"] for m in epochs] == list(range(1, 7))
    for m in epochs:
        assert {"loss", "penalty", "val_top1", "val_top5", "exact_zero_share"} <= m.keys()
        assert {"removable_flops_share", "removable_params_share", "ssl_at_floor"} <= m.keys()
    final = rec.metrics[-1]
    assert final["final"] and final["status"] == "ok" and final == result.metrics
    for key in (
        "top1",
        "top5",
        "flops",
        "params",
        "size_mb",
        "latency_ms",
        "flops_before",
        "params_before",
        "actual_ratio",
        "config",
    ):
        assert final[key] is not None, key
    assert final["flops"] < final["flops_before"]
    # every epoch saved a state, and the end one more; a finished trial keeps only its last
    assert len(rec.checkpoints) == 7
    assert [p.name for p in rec.state_dir.glob("state-*.pt")] == ["state-00000007.pt"]
    history = [json.loads(ln) for ln in (rec.state_dir / HISTORY_FILE).read_text().splitlines()]
    assert [h["global_epoch"] for h in history] == list(range(1, 7))  # the report's curves
    assert TrialConfig.from_dict(json.loads(final["config"])).ratio == 0.3


@pytest.mark.slow
def test_digits_small_vgg_reaches_95_percent_at_ratio_0_3() -> None:
    r = run_trial({"arch": "vgg_small", "ratio": 0.3})
    assert r.status == "ok"
    assert r.metrics["top1"] >= 95.0
    assert r.metrics["actual_ratio"] > 0.2


def test_same_seed_same_result() -> None:
    a = run_trial(_cfg()).metrics
    b = run_trial(_cfg()).metrics
    for k in ("top1", "top5", "flops", "params", "ssl_top1", "exact_zero_share", "narrowest_width"):
        assert a[k] == b[k], k


@pytest.mark.parametrize("stop_after", [2, 5])  # during SSL training; during fine-tuning
def test_resume_from_a_saved_state_matches_an_uninterrupted_run(
    tmp_path: Path, stop_after: int
) -> None:
    full = run_trial(_cfg()).metrics
    rec = Recorder(tmp_path, stop_after=stop_after)
    with pytest.raises(KeyboardInterrupt):
        run_trial(_cfg(), rec, rec.store)
    rest = Recorder(tmp_path / "rest", resume=rec.checkpoints[-1])
    resumed = run_trial(_cfg(), rest, rest.store).metrics
    # only the remaining epochs ran
    assert [m["global_epoch"] for m in rest.metrics if not m["final"]] == list(
        range(stop_after + 1, 7)
    )
    for k in ("top1", "top5", "flops", "params", "actual_ratio"):
        assert resumed[k] == pytest.approx(full[k]), k


def test_a_run_resumed_mid_ssl_keeps_the_group_weights_it_measured_at_the_start(
    tmp_path: Path,
) -> None:
    # the gradient weighting is measured on the model SSL training starts from; measured again
    # on the resumed (half-sparse) model it would give other thresholds and another SSL model
    cfg = _cfg(ssl_lambda=0.5, ssl_weighting="gradient")
    full = Recorder(tmp_path / "full")
    run_trial(cfg, full, full.store)
    rec = Recorder(tmp_path, stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        run_trial(cfg, rec, rec.store)
    rest = Recorder(tmp_path / "rest", resume=rec.checkpoints[-1])
    run_trial(cfg, rest, rest.store)

    def last_ssl_epoch(r: Recorder) -> dict[str, Any]:
        return [m for m in r.metrics if not m["final"] and m["phase"] == "ssl"][-1]

    a, b = last_ssl_epoch(full), last_ssl_epoch(rest)
    assert a["exact_zero_share"] > 0  # SSL acted: the weights decided what went
    for k in ("penalty", "loss", "exact_zero_share", "removable_flops_share", "val_top1"):
        assert b[k] == pytest.approx(a[k], rel=1e-6), k


def test_resuming_a_finished_trial_reports_it_again_without_work(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    first = run_trial(_cfg(), rec, rec.store)
    again = Recorder(tmp_path / "again", resume=rec.checkpoints[-1])
    second = run_trial(_cfg(), again, again.store)
    assert [m["final"] for m in again.metrics] == [True]
    assert second.metrics["top1"] == first.metrics["top1"]


def test_exploding_loss_fails_the_trial_with_a_reason(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    # (a huge lambda no longer does it: the floor rule holds every layer at its floor)
    result = run_trial(_cfg(recipe={**QUICK, "lr": 1e20}), rec, rec.store)
    assert result.status == "failed"
    assert result.error is not None and "loss became" in result.error
    final = rec.metrics[-1]
    assert final["final"] and final["status"] == "failed" and "loss became" in final["error"]
    again = Recorder(tmp_path / "again", resume=rec.checkpoints[-1])  # its last state: done
    assert run_trial(_cfg(recipe={**QUICK, "lr": 1e20}), again, again.store).status == "failed"


def test_layers_held_at_their_floor_are_reported_and_the_figures_are_exact() -> None:
    one = {**QUICK, "epochs": 1, "finetune_epochs": 0}
    m = run_trial(_cfg(ssl_lambda=1000.0, recipe=one)).metrics
    assert m["status"] == "ok"
    convs = ["features.0", "features.3", "features.7", "features.10", "features.14", "features.17"]
    assert sorted(m["ssl_at_floor"].split(",")) == sorted(convs)
    floors = dict(zip(convs, [8, 8, 8, 8, 16, 16]))  # 10% of the width, at least 8, rounded to 8
    assert json.loads(m["narrowest_width"]) == floors
    assert m["exact_zero_share"] == pytest.approx(1 - sum(floors.values()) / 448)
    assert 0.9 < m["removable_flops_share"] < 1 and 0.9 < m["removable_params_share"] < 1


def test_shape_wise_runs_when_asked() -> None:
    one = {**QUICK, "epochs": 1, "finetune_epochs": 0}
    cfg = _cfg(ssl_type="shape_wise", ssl_lambda=30.0, recipe=one, allow_unmatched_prune=True)
    m = run_trial(cfg).metrics
    assert m["status"] == "ok" and m["exact_zero_share"] > 0.5
    # only the input channels it emptied whole in every reader are removable (a zero shape saves
    # nothing: tests/test_sparsity_report.py)
    assert m["removable_flops_share"] < m["exact_zero_share"]


def test_cache_hit_skips_ssl_training_and_gives_the_same_model(tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    first = run_trial(_cfg(cache_dir=cache, ratio=0.5))
    assert first.metrics["ssl_reused"] is False
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    rec = Recorder(tmp_path)
    hit = run_trial(_cfg(cache_dir=cache, ratio=0.3, out_dir=str(tmp_path / "hit")), rec, rec.store)
    assert hit.metrics["ssl_reused"] is True
    # the SSL curve is replayed, but no SSL epoch was trained (no SSL state saved)
    assert [m["phase"] for m in rec.metrics if not m["final"]].count("ssl") == 4
    assert [m["phase"] for m in rec.replayed] == ["ssl"] * 4
    assert len(rec.checkpoints) == 3  # 2 fine-tune epochs + final
    cold = run_trial(_cfg(ratio=0.3, out_dir=str(tmp_path / "cold")))
    assert hit.metrics["ssl_top1"] == cold.metrics["ssl_top1"]
    # the SSL model's test top-1 is the store's, the figure a cold run measures
    assert hit.metrics["ssl_test_top1"] == cold.metrics["ssl_test_top1"] > 0
    assert hit.metrics["top1"] == cold.metrics["top1"]
    a = load_model(tmp_path / "hit" / MODEL_FILE).state_dict()
    b = load_model(tmp_path / "cold" / MODEL_FILE).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_another_lambda_misses_the_cache(tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    run_trial(_cfg(cache_dir=cache, recipe={**QUICK, "epochs": 1, "finetune_epochs": 0}))
    r = run_trial(
        _cfg(cache_dir=cache, ssl_lambda=0.01, recipe={**QUICK, "epochs": 1, "finetune_epochs": 0})
    )
    assert r.metrics["ssl_reused"] is False
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2


def test_ssl_key_ignores_what_does_not_change_the_ssl_model() -> None:
    a = TrialConfig.from_dict(_cfg())
    assert a.ssl_key() == a.with_(ratio=0.7, prune_way="mean", threads=2).ssl_key()
    assert a.ssl_key() != a.with_(ssl_lambda=0.1).ssl_key()
    assert a.ssl_key() != a.with_(seed=1).ssl_key()


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"arch": "vgg17"}, "arch"),
        ({"prune_type": "depth_wise", "blocks": 1}, "prune_type"),
        ({"prune_way": "median"}, "prune_way"),
        ({"ratio": 1.5}, "ratio"),
        ({"data": {"name": "mnist"}}, "data.name"),
        ({"recipe": {"lrr": 0.1}}, "recipe.lrr"),
    ],
)
def test_bad_config_names_the_key(changes: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        run_trial(_cfg(**changes))
    assert e.value.key == key


def test_cli_prints_json(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sslsearch",
            "-q",
            "trial",
            "--arch",
            "vgg_small",
            "--ratio",
            "0.3",
            "--ssl-lambda",
            "0.03",
            "--epochs",
            "2",
            "--finetune-epochs",
            "1",
            "--threads",
            "1",
            "--out",
            str(tmp_path / "run"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    m = json.loads(out.stdout)
    assert m["status"] == "ok" and m["arch"] == "vgg_small" and m["ratio"] == 0.3
    assert m["flops"] < m["flops_before"]
    assert (tmp_path / "run" / MODEL_FILE).exists()


def test_ensure_ssl_model_trains_once_and_points_then_only_prune(tmp_path: Path) -> None:
    from sslsearch.trial import ensure_ssl_model

    cache = str(tmp_path / "cache")
    quick = {**QUICK, "epochs": 1, "finetune_epochs": 0}
    cfg = _cfg(cache_dir=cache, ssl_lambda=0.0, recipe=quick)
    key = ensure_ssl_model(cfg)
    assert [p.stem for p in (tmp_path / "cache").glob("*.pt")] == [key]
    assert ensure_ssl_model(cfg) == key  # stored: nothing trained again
    r = run_trial(cfg)
    assert r.metrics["ssl_model_id"] == key and r.metrics["ssl_reused"] is True
    with pytest.raises(ValueError, match="cache_dir"):
        ensure_ssl_model(_cfg(ssl_lambda=0.0, recipe=quick))

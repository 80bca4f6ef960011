"""The two stages of a trial: SSL model (stage 1) -> points (stage 2), without Ray."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from sslsearch.config import TrialConfig
from sslsearch.trial import dominated_reason, run_points, run_trial, ssl_model_id

from .test_trial import Recorder

TINY = {"epochs": 2, "finetune_epochs": 2, "batch_size": 64}


def _cfgs(tmp: Path, ratios: tuple[float, ...] = (0.3, 0.6, 0.45), **kw: Any) -> list[TrialConfig]:
    base = TrialConfig.from_dict(
        {
            "arch": "vgg_small",
            "ssl_lambda": 0.03,
            "threads": 1,
            "recipe": dict(TINY),
            "latency_repeats": 1,
            "cache_dir": str(tmp / "ssl_models"),
            **kw,
        }
    )
    ways = ("group_lasso", "mean_abs", "group_lasso")
    return [base.with_(ratio=r, prune_way=ways[i % 3]) for i, r in enumerate(ratios)]


IDS = ["t-0", "t-1", "t-2"]


def _ssl_epochs_trained(rec: Recorder) -> int:
    """SSL epochs that were trained (a replayed stored curve comes without a state saved)."""
    return sum(1 for m in rec.metrics if m.get("phase") == "ssl" and not m["final"]) - sum(
        1 for m in rec.replayed if m.get("phase") == "ssl"
    )


Rec = Recorder


def test_one_ssl_training_yields_every_point_each_equal_to_its_own_trial(tmp_path: Path) -> None:
    cfgs = _cfgs(tmp_path)
    rec = Rec(tmp_path / "rec")
    results = run_points(cfgs, rec, rec.store, point_ids=IDS, points_dir=str(tmp_path / "points"))
    assert [r.status for r in results] == ["ok"] * 3
    assert _ssl_epochs_trained(rec) == 2  # one SSL training for three points
    # trained for the first point, reused by the other two
    assert [r.metrics["ssl_reused"] for r in results] == [False, True, True]
    ids = {r.metrics["ssl_model_id"] for r in results}
    assert len(ids) == 1 and list((tmp_path / "ssl_models").glob("*.pt"))
    # the job's CPU time when each point ended: SSL training counted once, then each point
    cpu = [r.metrics["cpu_seconds"] for r in results]
    assert 0 < cpu[0] < cpu[1] < cpu[2]
    finals = [m for m in rec.metrics if m["final"]]
    assert [(m["point"], m["trial_id"]) for m in finals] == [(0, "t-0"), (1, "t-1"), (2, "t-2")]
    for i, r in enumerate(results):  # each point is on disk as soon as it finished
        on_disk = json.loads((tmp_path / "points" / IDS[i] / "result.json").read_text())
        assert on_disk["top1"] == r.metrics["top1"] and on_disk["ratio"] == cfgs[i].ratio
        assert (tmp_path / "points" / IDS[i] / "model.pt").is_file()
    # stage 2 alone (the SSL model from the store) gives the same point as within the trial
    alone = run_trial(cfgs[1])
    assert alone.metrics["ssl_reused"] is True
    for k in ("top1", "flops", "params", "actual_ratio", "ssl_top1"):
        assert alone.metrics[k] == pytest.approx(results[1].metrics[k]), k


def test_a_crash_between_points_loses_no_point_and_retrains_no_ssl_model(tmp_path: Path) -> None:
    cfgs = _cfgs(tmp_path)
    full = run_points(_cfgs(tmp_path / "ref"), point_ids=IDS, points_dir=str(tmp_path / "ref_p"))
    # states: 2 SSL epochs, 2 fine-tune epochs of point 0, point 0 final -> crash
    rec = Rec(tmp_path / "a", stop_after=5)
    with pytest.raises(KeyboardInterrupt):
        run_points(cfgs, rec, rec.store, point_ids=IDS, points_dir=str(tmp_path / "points"))
    assert rec.metrics[-1]["final"] and rec.metrics[-1]["point"] == 0
    done = tmp_path / "points" / "t-0" / "result.json"
    mtime = done.stat().st_mtime_ns
    store = {p: p.stat().st_mtime_ns for p in (tmp_path / "ssl_models").glob("*.pt")}
    rest = Rec(tmp_path / "b", resume=rec.checkpoints[-1])
    resumed = run_points(cfgs, rest, rest.store, point_ids=IDS, points_dir=str(tmp_path / "points"))
    assert not [m for m in rest.metrics if m.get("phase") == "ssl"]  # no SSL epoch at all
    assert [m["point"] for m in rest.metrics if m["final"]] == [1, 2]
    assert [r.status for r in resumed] == ["ok"] * 3
    # the job trained its SSL model for point 0, and the resumed points still say they reused it
    assert [r.metrics["ssl_reused"] for r in resumed] == [False, True, True]
    # the resumed job counts its CPU time on from what the first process had used: point 1
    # alone (a fine-tune) costs less than SSL training and point 0 did
    cpu = [r.metrics["cpu_seconds"] for r in resumed]
    assert cpu[0] < cpu[1] < cpu[2]
    assert done.stat().st_mtime_ns == mtime  # the finished point was kept, not re-run
    assert {p: p.stat().st_mtime_ns for p in store} == store
    for a, b in zip(resumed, full, strict=True):
        assert a.metrics["top1"] == pytest.approx(b.metrics["top1"])
        assert a.metrics["flops"] == b.metrics["flops"]


def test_early_stopping_never_acts_during_ssl_training_and_stops_points(tmp_path: Path) -> None:
    cfgs = _cfgs(tmp_path)
    rec = Rec(tmp_path / "rec")
    calls: list[tuple[int, dict[str, float]]] = []

    def stop(candidate: dict[str, float]) -> str | None:
        ssl_seen = sum(1 for m in rec.metrics if m.get("phase") == "ssl")
        calls.append((ssl_seen, dict(candidate)))
        # a fine-tune epoch's check (it knows the schedule): stop there
        return "test: dominated" if "first_check" in candidate else None

    results = run_points(
        cfgs, rec, rec.store, point_ids=IDS, points_dir=str(tmp_path / "p"), stop=stop
    )
    assert calls and all(seen == 2 for seen, _ in calls)  # only after all SSL epochs
    assert _ssl_epochs_trained(rec) == 2  # SSL training ran to its end
    assert [r.status for r in results] == ["stopped"] * 3
    for r in results:
        assert r.metrics.get("top1") is None
        assert r.metrics["flops"] < r.metrics["flops_before"]  # exact costs are kept
        assert r.error == "test: dominated"
        assert len(r.metrics["finetune_val_top1"]) == 1  # stopped after fine-tune epoch 1 of 2
    # the check sees exact costs, the best top-1 so far and the fine-tune's schedule
    cand = next(c for _, c in calls if "first_check" in c)  # point 0, after epoch 1
    m = results[0].metrics
    assert cand["flops"] == m["flops"] and cand["epochs"] == 2.0 and cand["first_check"] == 2.0
    assert cand["top1"] == pytest.approx(max(m["pruned_top1"], m["finetune_val_top1"][0]))
    assert "latency_ms" not in cand and "top5" not in cand  # known only at the end


def test_dominated_reason_matches_its_definition() -> None:
    obj = [("top1", "max"), ("flops", "min"), ("size_mb", "min")]
    row = {"status": "ok", "trial_id": "a", "top1": 90.0, "flops": 100, "size_mb": 1.0}
    assert dominated_reason({"top1": 89.0, "flops": 100, "size_mb": 1.0}, [row], obj)
    assert dominated_reason({"top1": 90.0, "flops": 100, "size_mb": 1.0}, [row], obj) is None
    assert dominated_reason({"top1": 89.0, "flops": 99, "size_mb": 1.0}, [row], obj) is None
    assert dominated_reason({"top1": 91.0, "flops": 200, "size_mb": 2.0}, [row], obj) is None
    stopped = {**row, "status": "stopped"}
    assert dominated_reason({"top1": 1.0, "flops": 999, "size_mb": 9.0}, [stopped], obj) is None
    # latency is unknown before the end: a candidate at 0 ms is never dominated on it
    lat = [*obj, ("latency_ms", "min")]
    c = {"top1": 1.0, "flops": 999, "size_mb": 9.0, "latency_ms": 0.0}
    assert dominated_reason(c, [{**row, "latency_ms": 3.0}], lat) is None


def test_ssl_model_id_holds_the_precision() -> None:
    cfg = TrialConfig()
    assert ssl_model_id(cfg, "fp32") != ssl_model_id(cfg, "bf16")
    assert ssl_model_id(cfg, "bf16") == ssl_model_id(cfg.with_(ratio=0.7), "bf16")


@pytest.mark.parametrize("stop_after", [1, 3])  # in SSL training; in fine-tuning
def test_resume_continues_the_random_stream_that_dropout_draws_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop_after: int
) -> None:
    """Dropout draws from torch's global RNG: a resumed run must draw what the uninterrupted
    one drew (the restored RNG state is not overwritten by seeding)."""
    import sslsearch.trial._train as train_mod

    draws: list[float] = []
    real = train_mod.train_one_epoch

    def with_dropout(*a: Any, **kw: Any) -> Any:
        draws.append(float(torch.rand(1)))  # what a dropout layer would consume
        return real(*a, **kw)

    monkeypatch.setattr(train_mod, "train_one_epoch", with_dropout)
    cfg = _cfgs(tmp_path, ratios=(0.3,), cache_dir=None)[0]
    run_trial(cfg)
    full = list(draws)
    draws.clear()
    rec = Rec(tmp_path / "a", stop_after=stop_after)
    with pytest.raises(KeyboardInterrupt):
        run_trial(cfg, rec, rec.store)
    draws.clear()
    rest = Rec(tmp_path / "b", resume=rec.checkpoints[-1])
    run_trial(cfg, rest, rest.store)
    assert draws == full[stop_after:]


def test_a_point_on_disk_is_kept_when_its_trial_resumes_from_before_it(tmp_path: Path) -> None:
    """The worker wrote the point, then died before its next state was written (the newest
    whole state is from before the point finished)."""
    cfgs = _cfgs(tmp_path, ratios=(0.3, 0.6))
    rec = Rec(tmp_path / "a")
    first = run_points(cfgs, rec, rec.store, point_ids=IDS[:2], points_dir=str(tmp_path / "points"))
    mid_point_0 = rec.checkpoints[2]  # after its first fine-tuning epoch
    again = Rec(tmp_path / "b", resume=mid_point_0)
    resumed = run_points(
        cfgs, again, again.store, point_ids=IDS[:2], points_dir=str(tmp_path / "points")
    )
    assert not [m for m in again.metrics if not m["final"]]  # nothing trained again
    assert [r.metrics["top1"] for r in resumed] == [r.metrics["top1"] for r in first]


def test_the_baseline_is_dense_trained_as_long_as_a_point_and_made_once(tmp_path: Path) -> None:
    from sslsearch.trial import run_baseline

    cfg = _cfgs(tmp_path, ratios=(0.5,))[0]
    rec = Rec(tmp_path / "rec")
    b = run_baseline(cfg, str(tmp_path / "exp"), rec)
    m = b.metrics
    assert b.status == "ok" and m["role"] == "baseline" and m["trial_id"] == "baseline"
    assert m["ssl_model_id"] is None and m["ssl_lambda"] == 0.0
    assert m["flops"] == m["flops_before"] and m["actual_ratio"] == 0.0  # nothing pruned
    assert m["epochs"] == TINY["epochs"] + TINY["finetune_epochs"]
    assert [x["penalty"] for x in rec.metrics if not x["final"]] == [0.0] * 4
    assert (tmp_path / "exp" / "baseline" / "model.pt").is_file()
    again = Rec(tmp_path / "again")
    assert run_baseline(cfg, str(tmp_path / "exp"), again).metrics == m
    assert again.metrics == []  # reused, not retrained

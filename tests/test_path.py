"""The lambda path: one SSL training whose lambda steps up, each step's end an SSL model with
points of its own; a job of the search asks every step's points, each its own Optuna trial at
its step's lambda; a crash in a later step retrains nothing already trained."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sslsearch.config import ConfigError, TrialConfig, space_from_mapping
from sslsearch.trial import SSLCache, run_path

from .spaces import with_changes

TINY = {"epochs": 2, "finetune_epochs": 1, "batch_size": 64}
LAMS = (0.03, 0.06)


def _cfgs(tmp: Path) -> list[TrialConfig]:
    base = TrialConfig.from_dict(
        {
            "arch": "vgg_small",
            "threads": 1,
            "recipe": dict(TINY),
            "latency_repeats": 1,
            "cache_dir": str(tmp / "ssl_models"),
        }
    )
    # two steps, two points at the first and one at the second, lowest lambda first
    return [
        base.with_(ssl_lambda=LAMS[0], ratio=0.3),
        base.with_(ssl_lambda=LAMS[0], ratio=0.6),
        base.with_(ssl_lambda=LAMS[1], ratio=0.3),
    ]


class Reports:
    """Keeps every report; ``crash_at``: raise after this many SSL epoch reports (a kill)."""

    def __init__(self, crash_at: int | None = None) -> None:
        self.metrics: list[dict[str, Any]] = []
        self.crash_at = crash_at

    def __call__(self, metrics: dict[str, Any]) -> None:
        self.metrics.append(dict(metrics))
        if self.crash_at is not None and len(self.ssl_epochs()) >= self.crash_at:
            raise KeyboardInterrupt("killed")

    def ssl_epochs(self) -> list[dict[str, Any]]:
        return [m for m in self.metrics if m.get("phase") == "ssl" and not m.get("final")]


def _run(tmp: Path, rep: Reports) -> list[Any]:
    return run_path(
        _cfgs(tmp),
        rep,
        state_dir=str(tmp / "job"),
        point_ids=["j-0", "j-1", "j-2"],
        points_dir=str(tmp / "points"),
        path_epochs=2,
    )


def test_each_step_starts_from_the_last_ones_ssl_model_and_keeps_its_points(
    tmp_path: Path,
) -> None:
    rep = Reports()
    results = _run(tmp_path, rep)
    assert [r.status for r in results] == ["ok"] * 3
    finals = [r.metrics for r in results]
    assert [f["ssl_lambda"] for f in finals] == [LAMS[0], LAMS[0], LAMS[1]]
    first, second = finals[0]["ssl_model_id"], finals[2]["ssl_model_id"]
    assert finals[1]["ssl_model_id"] == first and second != first  # one SSL model per step
    # step 2 trained path_epochs from step 1's stored SSL model, its schedule restarted
    cfg = json.loads(finals[2]["config"])
    assert cfg["warm_start"] == SSLCache(str(tmp_path / "ssl_models")).path(first)
    assert cfg["recipe"]["epochs"] == 2 and cfg["recipe"]["warmup_epochs"] == 0
    assert len(rep.ssl_epochs()) == TINY["epochs"] + 2
    assert [m["path_step"] for m in rep.ssl_epochs()] == [0, 0, 1, 1]
    # the job's CPU time and start carry across its steps
    cpu = [f["cpu_seconds"] for f in finals]
    assert cpu == sorted(cpu) and cpu[2] > cpu[1]
    assert len({f["started_at"] for f in finals}) == 1
    # each step's state in its own directory; each point written where the search reads it
    assert (tmp_path / "job" / "step1").is_dir()
    assert sorted(p.name for p in (tmp_path / "points").iterdir()) == ["j-0", "j-1", "j-2"]


def test_a_crash_in_a_later_step_retrains_neither_step(tmp_path: Path) -> None:
    # killed after the first epoch of step 2 (2 SSL epochs of step 1, then 1 of step 2)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, Reports(crash_at=TINY["epochs"] + 1))
    done = json.loads((tmp_path / "points" / "j-1" / "result.json").read_text())
    again = Reports()
    results = _run(tmp_path, again)
    assert [r.status for r in results] == ["ok"] * 3
    # step 1 is re-reported as it was; step 2 goes on at its second epoch
    assert results[1].metrics["top1"] == done["top1"]
    assert [m["epoch"] for m in again.ssl_epochs()] == [2]
    assert results[2].metrics["cpu_seconds"] > done["cpu_seconds"]


def test_a_step_without_an_ssl_model_fails_the_steps_after_it(tmp_path: Path) -> None:
    from sslsearch.trial import TrialResult

    calls = []

    def first_fails(cfgs: list[TrialConfig], *a: Any, **kw: Any) -> list[TrialResult]:
        calls.append(cfgs[0].ssl_lambda)
        return [TrialResult("failed", {"status": "failed", "error": "SSL training failed"})] * len(
            cfgs
        )

    rep = Reports()
    results = run_path(
        _cfgs(tmp_path),
        rep,
        point_ids=["j-0", "j-1", "j-2"],
        points_dir=str(tmp_path / "points"),
        path_epochs=2,
        runner=first_fails,
    )
    assert calls == [LAMS[0]]  # step 2 had nothing to start from: never run
    assert results[2].status == "failed" and "step 1's SSL training failed" in str(results[2].error)
    written = json.loads((tmp_path / "points" / "j-2" / "result.json").read_text())
    assert written["status"] == "failed" and written["ssl_lambda"] == LAMS[1]
    assert rep.metrics[-1]["final"] and rep.metrics[-1]["trial_id"] == "j-2"


def test_a_path_job_asks_every_steps_points_each_an_optuna_trial_at_its_lambda(
    tmp_path: Path,
) -> None:
    optuna = pytest.importorskip("optuna")
    from sslsearch.search._params import path_lambdas
    from sslsearch.search._plan import plan_search
    from sslsearch.search._searcher import PointSearcher

    space = space_from_mapping(
        with_changes(
            economy={"points_per_ssl": 2, "lambda_path": 3, "path_ratio": 2.0},
            params={
                "ssl_lambda": {"low": 1e-3, "high": 1e-1, "log": True},
                "ratio": {"low": 0.1, "high": 0.8},
            },
            budget={"num_samples": 10, "max_concurrent": 2},
        )
    )
    assert plan_search(space).points_per_job == 6
    assert path_lambdas(space, 0.02, 3) == pytest.approx([0.005, 0.01, 0.02])
    assert path_lambdas(space, 0.003, 3) == pytest.approx([0.0015, 0.003])  # 0.00075 < low
    exp = tmp_path / "exp"
    s = PointSearcher(space, str(exp), f"sqlite:///{tmp_path}/study.db")
    s.open()
    points = s.suggest("a")["points"]
    lam = points[-1]["ssl_lambda"]  # the sampler's: the path's last step
    want = path_lambdas(space, lam, 3)
    per_point = [p["ssl_lambda"] for p in points]
    assert per_point == pytest.approx([want[0]] * 2 + [want[1]] * 2 + [want[2]] * 2)
    # each step spreads its two points over the ratio range, as one SSL model's
    assert {p["ratio"] for p in points[4:]} >= {points[4]["ratio"]}
    # the last job has what is left of the budget: 4 points, the path's first two steps
    rest = s.suggest("b")["points"]
    assert len(rest) == 4 and len({p["ssl_lambda"] for p in rest}) <= 2
    for i, p in enumerate(points):
        d = exp / "points" / p["trial_id"]
        d.mkdir(parents=True)
        result = {
            "final": True,
            "status": "ok",
            "trial_id": p["trial_id"],
            "point": i,
            "top1": 90.0 - i,
            "flops": 1000 + i,
            "size_mb": 0.5,
            "ratio": p["ratio"],
            "ssl_lambda": p["ssl_lambda"],
        }
        (d / "result.json").write_text(json.dumps(result))
    s.on_trial_complete("a")
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path}/study.db")
    got = {
        t.user_attrs["trial_id"]: t.params["ssl_lambda"]
        for t in study.trials
        if t.state.name == "COMPLETE"
    }
    assert got == pytest.approx({p["trial_id"]: p["ssl_lambda"] for p in points})


@pytest.mark.parametrize(
    ("economy", "params", "key"),
    [
        ({"lambda_path": 1}, {}, "lambda_path"),
        ({"lambda_path": 3, "path_ratio": 1.0}, {}, "path_ratio"),
        ({"lambda_path": 3, "path_epochs": 0}, {}, "path_epochs"),
        ({"lambda_path": 3, "screen": 4, "rungs": [0.5]}, {}, "rungs"),
        ({"lambda_path": 3}, {"ssl_lambda": 0.0}, "economy.lambda_path"),
        ({"lambda_path": 3}, {"ssl_lambda": {"choices": [0.01, 0.1]}}, "economy.lambda_path"),
    ],
)
def test_a_lambda_path_that_cannot_run_is_refused_naming_its_key(
    economy: dict[str, Any], params: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError, match=key):
        space_from_mapping(
            with_changes(economy=economy, **{f"params__{k}": v for k, v in params.items()})
        )

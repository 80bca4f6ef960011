"""The searcher without a Ray cluster: several points per SSL model, each its own Optuna trial
told with its true final values; stopped and failed points never COMPLETE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

optuna = pytest.importorskip("optuna")

from sslsearch.config import space_from_mapping  # noqa: E402
from sslsearch.search._params import define_by_run  # noqa: E402
from sslsearch.search._searcher import (  # noqa: E402
    close_errored,
    errored_closed,
    make_searcher,
    sampler_name,
)

from .spaces import with_changes  # noqa: E402


def _searcher(tmp_path: Path, **changes: Any) -> Any:
    space = space_from_mapping(with_changes(**changes))
    url = f"sqlite:///{tmp_path}/study.db"
    return space, make_searcher(space, url, space.name, define_by_run(space))


def _final(point: int, status: str, top1: float | None = 90.0) -> dict[str, Any]:
    return {
        "final": True,
        "point": point,
        "status": status,
        "top1": top1,
        "flops": 1000 + point,
        "size_mb": 0.5,
        "error": None if status == "ok" else f"{status} for a reason",
    }


def test_spread_takes_the_ranges_stops_on_its_own_scale_less_the_samplers() -> None:
    from sslsearch.config import Range
    from sslsearch.search._params import spread

    lin = Range(0.1, 0.9)
    assert [spread(lin, 0.67, i, 4) for i in range(4)] == pytest.approx(
        [0.67, 0.1, 0.1 + 0.8 / 3, 0.9]
    )
    assert [spread(lin, 0.88, i, 4) for i in range(4)] == pytest.approx(
        [0.88, 0.1, 0.1 + 0.8 / 3, 0.1 + 1.6 / 3]  # the top's stop is the sampler's
    )
    assert [spread(lin, 0.3, i, 2) for i in range(2)] == pytest.approx([0.3, 0.9])
    log = Range(1e-3, 1e-1, log=True)
    assert [spread(log, 0.05, i, 3) for i in range(3)] == pytest.approx([0.05, 1e-3, 1e-2])
    blocks = Range(1, 6, integer=True)
    got = [spread(blocks, 3, i, 4) for i in range(4)]
    assert got == [3, 1, 4, 6] and all(isinstance(b, int) for b in got)
    stepped = Range(0.1, 0.9, step=0.1)
    assert [spread(stepped, 0.5, i, 4) for i in range(4)] == pytest.approx([0.5, 0.1, 0.6, 0.9])


def test_a_space_searching_only_ssl_settings_asks_one_point_per_ssl_model(
    tmp_path: Path,
) -> None:
    from sslsearch.search._params import points_per_ssl
    from sslsearch.search._run import ssl_trainings

    space, s = _searcher(
        tmp_path,
        economy={"points_per_ssl": 4},
        params={"ssl_lambda": {"low": 1e-3, "high": 1e-1, "log": True}, "ratio": 0.5},
        budget={"num_samples": 6, "max_concurrent": 2},
    )
    assert points_per_ssl(space) == 1 and ssl_trainings(space) == 6
    assert len(s.suggest("a")["points"]) == 1


def test_one_trial_asks_its_points_at_one_ssl_setting_and_tells_each(tmp_path: Path) -> None:
    space, s = _searcher(
        tmp_path,
        economy={"points_per_ssl": 4},
        params={
            "ssl_lambda": {"low": 1e-3, "high": 1e-1, "log": True},
            "ratio": {"low": 0.1, "high": 0.8},
            "prune_way": {"choices": ["group_lasso", "mean_abs"]},
        },
        budget={"num_samples": 6, "max_concurrent": 2},
    )
    first = s.suggest("a")
    points = first["points"]
    assert len(points) == 4 and len({p["ssl_lambda"] for p in points}) == 1
    # one SSL model gives a curve: the other points take the range's evenly spaced stops, both
    # ends included, less the one nearest the sampler's ratio (asked per point, the GP returned
    # the same ratio again)
    stops = [0.1, 0.1 + 0.7 / 3, 0.1 + 1.4 / 3, 0.8]
    r0 = points[0]["ratio"]
    stops.remove(min(stops, key=lambda v: abs(v - r0)))
    assert [p["ratio"] for p in points[1:]] == pytest.approx(stops)
    assert {p["prune_way"] for p in points} <= {"group_lasso", "mean_abs"}
    second = s.suggest("b")
    assert len(second["points"]) == 2  # 6 points in all
    s.on_trial_result("a", {"final": False, "phase": "ssl", "val_top1": 50.0})
    s.on_trial_result("a", _final(0, "ok", 91.0))
    s.on_trial_result("a", _final(1, "stopped", None))
    s.on_trial_result("a", _final(2, "failed", None))
    s.on_trial_complete("a", _final(3, "ok", 92.0))
    s.on_trial_complete("b", None, error=True)
    url = f"sqlite:///{tmp_path}/study.db"
    study = optuna.load_study(study_name=space.name, storage=url)
    by_id = {t.user_attrs["trial_id"]: t for t in study.trials}
    assert set(by_id) == {"a-0", "a-1", "a-2", "a-3", "b-0", "b-1"}
    assert by_id["a-0"].state.name == "COMPLETE" and by_id["a-0"].values == [91.0, 1000, 0.5]
    assert by_id["a-3"].state.name == "COMPLETE" and by_id["a-3"].values == [92.0, 1003, 0.5]
    assert by_id["a-1"].state.name == "PRUNED" and by_id["a-1"].values is None
    assert "stopped" in by_id["a-1"].user_attrs["reason"]
    assert by_id["a-2"].state.name == "FAIL"
    # an errored trial stays RUNNING, marked: a resume may re-run it to COMPLETE; the end of
    # the search closes it as FAIL
    assert {by_id[k].state.name for k in ("b-0", "b-1")} == {"RUNNING"}
    assert all(by_id[k].user_attrs["errored"] for k in ("b-0", "b-1"))
    assert not errored_closed(url, space.name)
    assert close_errored(url, space.name, {"b-0": "worker died", "b-1": "worker died"}) == 2
    study = optuna.load_study(study_name=space.name, storage=url)
    by_id = {t.user_attrs["trial_id"]: t for t in study.trials}
    assert {by_id[k].state.name for k in ("b-0", "b-1")} == {"FAIL"}
    assert by_id["b-0"].user_attrs["reason"] == "worker died" and errored_closed(url, space.name)
    for i, p in enumerate(points):  # each point's parameters are its Optuna trial's
        t = by_id[f"a-{i}"]
        assert t.params["ratio"] == p["ratio"] and t.params["ssl_lambda"] == p["ssl_lambda"]


def test_the_ssl_type_follows_a_searched_prune_type_within_a_trial(tmp_path: Path) -> None:
    _, s = _searcher(
        tmp_path,
        params={
            "ssl_lambda": {"low": 1e-3, "high": 1e-1, "log": True},
            "ratio": {"low": 0.1, "high": 0.8},
            "prune_type": {"choices": ["filter_wise", "channel_wise"]},
        },
        budget={"num_samples": 8, "max_concurrent": 2},
    )
    for tid in ("a", "b"):
        pts = s.suggest(tid)["points"]
        assert len({p["prune_type"] for p in pts}) == 1  # it decides the SSL model


def test_auto_picks_gp_unless_the_space_is_conditional() -> None:
    plain = space_from_mapping(with_changes(sampler={"name": "auto"}))
    assert sampler_name(plain) == "gp"
    cond = space_from_mapping(
        with_changes(
            arch="resnet20",
            sampler={"name": "auto"},
            params={
                "ssl_lambda": 0.01,
                "ratio": {"low": 0.1, "high": 0.5},
                "blocks": {"low": 1, "high": 3},
                "prune_type": {"choices": ["filter_wise", "depth_wise"]},
            },
        )
    )
    assert sampler_name(cond) == "tpe"


def test_resume_accepts_the_same_overrides_and_names_real_changes() -> None:
    from sslsearch.search._run import _changed_keys

    saved = with_changes(budget={"num_samples": 6, "max_concurrent": 2})
    assert _changed_keys(saved, ["budget.num_samples=6", "sampler.name=tpe"]) == []
    changed = _changed_keys(saved, ["budget.num_samples=7", "budget.max_concurrent=2"])
    assert changed == ["budget.num_samples (was 6)"]


def test_a_trial_directory_without_params_gets_its_points_from_the_study(tmp_path: Path) -> None:
    # A driver killed as a trial started can leave its directory without params.json: its rows
    # then take the parameters the study asked for (never a row with null parameters).
    from sslsearch.search._results import collect_trials
    from sslsearch.search._searcher import point_params

    space, s = _searcher(tmp_path, economy={"points_per_ssl": 2})
    asked = s.suggest("abc123")["points"]
    known = point_params(f"sqlite:///{tmp_path}/study.db", space.name)
    assert set(known) == {"abc123-0", "abc123-1"}
    exp = tmp_path / "exp"
    (exp / "sslsearch_trial_abc123_00001_1_2026").mkdir(parents=True)
    bare = collect_trials(str(exp))
    assert len(bare) == 1 and bare[0]["ssl_lambda"] is None  # what the study fills in
    rows = collect_trials(str(exp), known)
    assert [r["trial_id"] for r in rows] == ["abc123-0", "abc123-1"]
    for r, p in zip(rows, asked):
        assert r["status"] == "stopped"
        assert r["ssl_lambda"] == p["ssl_lambda"]
        assert r["flops_budget"] == p["flops_budget"]


def test_progress_line_shows_blocks_only_for_depth_wise_points() -> None:
    from sslsearch.search._progress import describe_params

    # a finished point's result carries blocks = -1 when it has none (trials.parquet: null)
    line = describe_params({"ssl_lambda": 0.0125, "ratio": 0.5, "blocks": -1})
    assert "blocks" not in line and "ratio=0.500" in line
    assert "blocks=2" in describe_params({"ssl_lambda": 0.01, "blocks": 2, "ratio": None})


def test_progress_line_shows_the_ssl_models_exact_zeros_and_layers_at_the_floor(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from sslsearch.search._progress import ProgressCallback

    cb = ProgressCallback(num_samples=2)
    point = {"status": "ok", "top1": 97.5, "flops": 1e6, "size_mb": 0.1, "actual_ratio": 0.4}
    with caplog.at_level(logging.INFO, logger="sslsearch.progress"):
        cb._point_line({**point, "exact_zero_share": 0.0, "removable_flops_share": 0.0})
        cb._point_line(
            {
                **point,
                "exact_zero_share": 0.625,
                "removable_flops_share": 0.5,
                "ssl_at_floor": "features.0,features.3",
            }
        )
    first, second = [r.getMessage() for r in caplog.records]
    assert "zero 0.0% removable FLOPs 0.0%" in first and "floor" not in first
    assert "zero 62.5% removable FLOPs 50.0%, 2 layers at the floor" in second


def test_set_user_attr_marks_an_unfinished_trial_from_another_process(tmp_path: Path) -> None:
    """The one use of Optuna's private API: fails here, not mid-search, if Optuna changes it."""
    from sslsearch.search._searcher import set_user_attr

    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="s", storage=url, directions=["maximize"])
    running = study.ask()
    done = study.ask()
    study.tell(done, 1.0)
    other = optuna.load_study(study_name="s", storage=url)  # as a resumed driver would
    [t] = other.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    set_user_attr(other, t, "reason", "lost with the driver")
    again = optuna.load_study(study_name="s", storage=url).trials
    assert again[running.number].user_attrs == {"reason": "lost with the driver"}
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):  # why callers set it first
        set_user_attr(other, other.trials[done.number], "reason", "too late")


def test_a_point_finished_on_disk_but_never_heard_is_told_from_the_disk(tmp_path: Path) -> None:
    """Kill/resume: a point finished just before the driver died and the resumed trial started
    after it, so the new driver never heard its result; it was told PRUNED while trials.parquet
    had it ok. Now its result.json on disk is told."""
    import json

    from sslsearch.search._params import define_by_run as dbr

    space = space_from_mapping(
        with_changes(
            economy={"points_per_ssl": 2},
            params={
                "ssl_lambda": {"low": 1e-3, "high": 1e-1, "log": True},
                "ratio": {"low": 0.1, "high": 0.8},
            },
            budget={"num_samples": 2, "max_concurrent": 1},
        )
    )
    url = f"sqlite:///{tmp_path}/study.db"
    points = tmp_path / "points"
    s = make_searcher(space, url, space.name, dbr(space), str(points))
    s.suggest("a")
    (points / "a-0").mkdir(parents=True)
    (points / "a-0" / "result.json").write_text(json.dumps(_final(0, "ok", 93.0)))
    s.on_trial_complete("a", None)  # nothing reported in this driver's lifetime
    study = optuna.load_study(study_name=space.name, storage=url)
    by_id = {t.user_attrs["trial_id"]: t for t in study.trials}
    assert by_id["a-0"].state.name == "COMPLETE" and by_id["a-0"].values == [93.0, 1000, 0.5]
    assert by_id["a-1"].state.name == "PRUNED"  # never finished: no result anywhere


def test_trials_parquet_carries_the_ssl_models_figures(tmp_path: Path) -> None:
    import json

    from sslsearch.search._results import _result_row, trials_table
    from sslsearch.trial import run_trial

    one = {"epochs": 1, "finetune_epochs": 0, "batch_size": 64}
    cfg = {"arch": "vgg_small", "ssl_lambda": 1000.0, "ssl_weighting": "none", "recipe": one}
    m = run_trial({**cfg, "ratio": 0.0, "threads": 1, "latency_repeats": 1}).metrics
    row = trials_table([_result_row(str(tmp_path), m, "t1", "search", "t1/model.pt")]).to_pylist()
    (r,) = row
    assert r["ssl_weighting"] == "none"
    assert r["exact_zero_share"] == m["exact_zero_share"] > 0.5
    assert 0.9 < r["removable_flops_share"] < 1 and 0.9 < r["removable_params_share"] < 1
    assert len(r["ssl_at_floor"].split(",")) == 6  # every layer held at its floor
    assert json.loads(r["narrowest_width"])["features.0"] == 8

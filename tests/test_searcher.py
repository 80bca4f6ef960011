"""The searcher without a Ray cluster: jobs of several points, each point its own Optuna trial
told from the experiment directory with its true final values; stopped and failed points
never COMPLETE; a new searcher on the same directory (a resumed search) finishes what the
directory says is unfinished, first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

optuna = pytest.importorskip("optuna")

from sslsearch.config import space_from_mapping  # noqa: E402
from sslsearch.search._searcher import PointSearcher  # noqa: E402

from .spaces import with_changes  # noqa: E402

SEARCHED = {
    "ssl_lambda": {"low": 1e-3, "high": 1e-1, "log": True},
    "ratio": {"low": 0.1, "high": 0.8},
}


def _searcher(tmp_path: Path, **changes: Any) -> Any:
    space = space_from_mapping(with_changes(**changes))
    s = PointSearcher(space, str(tmp_path / "exp"), f"sqlite:///{tmp_path}/study.db")
    s.open()
    return space, s


def _study(tmp_path: Path, name: str = "tiny") -> Any:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/study.db")


def _by_id(tmp_path: Path) -> dict[str, Any]:
    return {t.user_attrs["trial_id"]: t for t in _study(tmp_path).trials}


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


def _finish(tmp_path: Path, pid: str, result: dict[str, Any]) -> dict[str, Any]:
    """What a worker does when a point finishes: its result.json, then the final report as
    the searcher gets it from Tune (which fills trial_id with its own trial's id)."""
    d = tmp_path / "exp" / "points" / pid
    d.mkdir(parents=True, exist_ok=True)
    result = {**result, "trial_id": pid}
    (d / "result.json").write_text(json.dumps(result))
    return {**result, "point_id": pid, "trial_id": "tune-trial-id"}


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
    from sslsearch.search._plan import plan_search

    space, s = _searcher(
        tmp_path,
        economy={"points_per_ssl": 4},
        params={"ssl_lambda": {"low": 1e-3, "high": 1e-1, "log": True}, "ratio": 0.5},
        budget={"num_samples": 6, "max_concurrent": 2},
    )
    plan = plan_search(space)
    assert plan.points_per_ssl == 1 and plan.ssl_trainings == 6
    assert len(s.suggest("a")["points"]) == 1


def test_one_job_asks_its_points_at_one_ssl_setting_and_each_is_told_from_disk(
    tmp_path: Path,
) -> None:
    from optuna.trial import TrialState
    from ray.tune.search import Searcher

    _, s = _searcher(
        tmp_path,
        economy={"points_per_ssl": 4},
        params={**SEARCHED, "prune_way": {"choices": ["group_lasso", "mean_abs"]}},
        budget={"num_samples": 6, "max_concurrent": 2},
    )
    first = s.suggest("a")
    points = first["points"]
    assert first["job_id"] == "a" and [p["trial_id"] for p in points] == [
        f"a-{i}" for i in range(4)
    ]
    assert len({p["ssl_lambda"] for p in points}) == 1
    # one SSL model gives a curve: the other points take the range's evenly spaced stops, both
    # ends included, less the one nearest the sampler's ratio (asked per point, the GP returned
    # the same ratio again)
    stops = [0.1, 0.1 + 0.7 / 3, 0.1 + 1.4 / 3, 0.8]
    r0 = points[0]["ratio"]
    stops.remove(min(stops, key=lambda v: abs(v - r0)))
    assert [p["ratio"] for p in points[1:]] == pytest.approx(stops)
    assert {p["prune_way"] for p in points} <= {"group_lasso", "mean_abs"}
    # the job is in the experiment directory before Tune sees it
    job = json.loads((tmp_path / "exp" / "jobs" / "a" / "job.json").read_text())
    assert [p["params"]["ratio"] for p in job["points"]] == [p["ratio"] for p in points]
    second = s.suggest("b")
    assert len(second["points"]) == 2  # 6 points in all
    assert s.suggest("c") == Searcher.FINISHED
    s.on_trial_result("a", {"final": False, "phase": "ssl", "val_top1": 50.0})
    s.on_trial_result("a", _finish(tmp_path, "a-0", _final(0, "ok", 91.0)))
    s.on_trial_result("a", _finish(tmp_path, "a-1", _final(1, "stopped", None)))
    s.on_trial_result("a", _finish(tmp_path, "a-2", _final(2, "failed", None)))
    assert set(_by_id(tmp_path)) == {"a-0", "a-1", "a-2"}  # each in the study at its report
    _finish(tmp_path, "a-3", _final(3, "ok", 92.0))  # its report never came: the job's end tells
    s.on_trial_complete("a", None)
    s.on_trial_complete("b", None, error=True)
    by_id = _by_id(tmp_path)
    assert set(by_id) == {"a-0", "a-1", "a-2", "a-3"}  # finished points only
    assert by_id["a-0"].state.name == "COMPLETE" and by_id["a-0"].values == [91.0, 1000, 0.5]
    assert by_id["a-3"].state.name == "COMPLETE" and by_id["a-3"].values == [92.0, 1003, 0.5]
    assert by_id["a-1"].state.name == "PRUNED" and by_id["a-1"].values is None
    assert by_id["a-1"].user_attrs["reason"] == "stopped for a reason"
    assert by_id["a-2"].state.name == "FAIL" and by_id["a-2"].user_attrs["reason"]
    # an errored job's points stay out of the study: a resume runs the job again; the end of a
    # search that ended by itself records them as errors, with the job's own error
    (tmp_path / "exp" / "jobs" / "b" / "error.txt").write_text("Traceback\nOSError: disk full\n")
    assert s.ended_by_itself() and s.close() == 2
    by_id = _by_id(tmp_path)
    assert {by_id[k].state.name for k in ("b-0", "b-1")} == {"FAIL"}
    assert by_id["b-0"].user_attrs["reason"] == "OSError: disk full"
    on_disk = json.loads((tmp_path / "exp" / "points" / "b-1" / "result.json").read_text())
    assert on_disk["status"] == "error" and on_disk["ratio"] == second["points"][1]["ratio"]
    for i, p in enumerate(points):  # each point's parameters are its Optuna trial's
        t = by_id[f"a-{i}"]
        assert t.params["ratio"] == p["ratio"] and t.params["ssl_lambda"] == p["ssl_lambda"]
    assert s.book is not None and s.book.study.trials[0].state == TrialState.COMPLETE


def test_a_new_searcher_finishes_what_the_directory_says_is_unfinished_first(
    tmp_path: Path,
) -> None:
    """A driver killed mid-search: points that finished on disk after its last report are told
    when the next one opens the directory, and unfinished jobs are handed out again (same
    job id, points and parameters) before any new one."""
    from ray.tune.search import Searcher

    changes = {
        "economy": {"points_per_ssl": 2},
        "params": SEARCHED,
        "budget": {"num_samples": 6, "max_concurrent": 2},
    }
    _, s = _searcher(tmp_path, **changes)
    a, b = s.suggest("a"), s.suggest("b")
    s.on_trial_result("a", _finish(tmp_path, "a-0", _final(0, "ok", 93.0)))
    _finish(tmp_path, "a-1", _final(1, "ok", 94.0))  # finished as the driver died: never heard
    _finish(tmp_path, "b-0", _final(0, "ok", 95.0))  # b-1 never finished
    del s
    _, again = _searcher(tmp_path, **changes)  # the same command with --resume
    by_id = _by_id(tmp_path)
    assert [by_id[p].values[0] for p in ("a-0", "a-1", "b-0")] == [93.0, 94.0, 95.0]
    assert "b-1" not in by_id
    assert again.asked == 4 and again.done == 3
    resumed = again.suggest("new1")
    assert resumed == b  # job b again, under another Tune trial id
    fresh = again.suggest("new2")
    assert [p["trial_id"] for p in fresh["points"]] == ["new2-0", "new2-1"]
    assert again.suggest("new3") == Searcher.FINISHED
    assert a["job_id"] == "a" and len(_study(tmp_path).trials) == 3


def test_a_point_a_worker_recorded_itself_is_added_to_the_study(tmp_path: Path) -> None:
    """Points the sampler never asked (a worker that picks its own, from a screened curve)
    enter the study with add_trial: their parameters, values, state and reason."""
    _, s = _searcher(tmp_path, economy={"points_per_ssl": 1}, params=SEARCHED)
    s.suggest("a")
    extra = {**_final(1, "ok", 88.0), "ssl_lambda": 0.01, "ratio": 0.55, "job_id": "a"}
    s.on_trial_result("a", _finish(tmp_path, "a-s1", extra))
    stopped = {**_final(2, "stopped", None), "ssl_lambda": 0.01, "ratio": 0.7, "job_id": "a"}
    _finish(tmp_path, "a-s2", stopped)
    _, again = _searcher(tmp_path, economy={"points_per_ssl": 1}, params=SEARCHED)  # on open
    by_id = _by_id(tmp_path)
    t = by_id["a-s1"]
    assert t.state.name == "COMPLETE" and t.values == [88.0, 1001, 0.5]
    assert t.params == {"ssl_lambda": 0.01, "ratio": 0.55} and t.user_attrs["job_id"] == "a"
    assert by_id["a-s2"].state.name == "PRUNED"
    assert by_id["a-s2"].user_attrs["reason"] == "stopped for a reason"
    assert again.done == 2 and len(_study(tmp_path).trials) == 2  # a-0 never finished


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


def test_resume_accepts_the_same_overrides_and_names_real_changes() -> None:
    from sslsearch.search._setup import _changed_keys

    saved = with_changes(budget={"num_samples": 6, "max_concurrent": 2})
    assert _changed_keys(saved, ["budget.num_samples=6", "sampler.name=tpe"]) == []
    changed = _changed_keys(saved, ["budget.num_samples=7", "budget.max_concurrent=2"])
    assert changed == ["budget.num_samples (was 6)"]


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


def test_an_experiment_of_an_older_version_is_refused_on_resume(tmp_path: Path) -> None:
    from sslsearch.errors import UserError
    from sslsearch.search._setup import SearchOptions, prepare

    from .spaces import write_space

    space = write_space(tmp_path, name="old")
    exp = tmp_path / "runs" / "old"
    (exp / "points" / "abc-0").mkdir(parents=True)
    (exp / "space.yaml").write_text(space.read_text())
    (exp / "study_url").write_text(f"sqlite:///{exp}/optuna.db\n")
    with pytest.raises(UserError, match="older sslsearch"):
        prepare(SearchOptions(space=str(space), resume=True))
    (exp / "jobs").mkdir()
    assert prepare(SearchOptions(space=str(space), resume=True))[1] == str(exp)


# The private parts of Ray and Optuna the search used before issue 21 (and Tune's on-disk
# layout): none may come back, or a Ray or Optuna release can break resume silently.
PRIVATE = [
    r"\._ot_(trials|study)\b",
    r"(?<!config)\._space\b",
    r"_suggest_from_define_by_run_func",
    r"_completed_trials",
    r"\._counter\b",
    r"_total_samples",
    r"\._finished\b",
    r"_local_tuner",
    r"\._run_config\b",
    r"\._storage\b",
    r"\._trial_id\b",
    r"checkpoint_%",
    r"params\.json",
    r"sslsearch_trial_",
    r"\bOptunaSearch\b",
    r"\bSearchGenerator\b",
]


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
    # a built-in measured objective, on the point and on the model it was pruned from
    assert 0 < r["peak_activation_mb"] <= r["peak_activation_mb_before"]


def _docstring_lines(tree: Any) -> set[int]:
    import ast

    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                lines.update(range(body[0].lineno, (body[0].end_lineno or body[0].lineno) + 1))
    return lines


def test_the_search_uses_no_private_part_of_ray_or_optuna() -> None:
    import ast
    import re

    import sslsearch

    root = Path(sslsearch.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        docs = _docstring_lines(ast.parse(text))  # docstrings may name what was removed
        for n, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            if n not in docs and any(re.search(p, code) for p in PRIVATE):
                found.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    assert found == [], "private Ray / Optuna names or Tune's layout:\n" + "\n".join(found)

"""trials.parquet from the experiment directory alone: every point asked (jobs/), its result
when it has one (points/), ``unfinished`` with its job's error and last epoch when not."""

from __future__ import annotations

import json
from pathlib import Path

from sslsearch.search._experiment import Job, write_error, write_job
from sslsearch.search._results import UNFINISHED, collect_trials


def test_rows_come_from_jobs_and_results_and_name_what_is_unfinished(tmp_path: Path) -> None:
    exp = str(tmp_path)
    params = [{"ssl_lambda": 0.01, "ratio": r, "prune_type": "filter_wise"} for r in (0.2, 0.5)]
    write_job(exp, Job("b2", [{"trial_id": f"b2-{i}", "params": p} for i, p in enumerate(params)]))
    write_job(exp, Job("a1", [{"trial_id": "a1-0", "params": params[0]}], asked_at=1.0))
    done = tmp_path / "points" / "b2-0"
    done.mkdir(parents=True)
    (done / "result.json").write_text(json.dumps({"status": "ok", "top1": 97.0, "ratio": 0.2}))
    (done / "model.pt").write_bytes(b"x")
    (tmp_path / "points" / "b2-1").mkdir()  # its model was being written: not finished
    write_error(exp, "b2", "Traceback (most recent call last):\nRuntimeError: CUDA out of memory\n")
    (tmp_path / "jobs" / "b2" / "history.jsonl").write_text(
        "\n".join(json.dumps({"phase": "ssl", "global_epoch": g}) for g in (1, 2, 3)) + "\n"
    )
    extra = tmp_path / "points" / "b2-s1"  # recorded by the worker, never asked
    extra.mkdir()
    (extra / "result.json").write_text(
        json.dumps(
            {"status": "stopped", "error": "early stopping: x", "ratio": 0.7, "job_id": "b2"}
        )
    )
    rows = {r["trial_id"]: r for r in collect_trials(exp)}
    assert list(rows) == ["a1-0", "b2-0", "b2-1", "b2-s1"]  # in the order asked, then the rest
    assert rows["a1-0"]["status"] == UNFINISHED
    assert rows["a1-0"]["error"] == "never finished (interrupted)" and rows["a1-0"]["ratio"] == 0.2
    ok = rows["b2-0"]
    assert (
        ok["status"] == "ok" and ok["top1"] == 97.0 and ok["model_path"] == "points/b2-0/model.pt"
    )
    assert ok["trial_dir"] == "jobs/b2" and ok["role"] == "search"
    left = rows["b2-1"]
    assert left["status"] == UNFINISHED and left["error"] == "RuntimeError: CUDA out of memory"
    assert left["last_epoch"] == 3 and left["ratio"] == 0.5 and left["model_path"] is None
    assert rows["b2-s1"]["status"] == "stopped" and rows["b2-s1"]["trial_dir"] == "jobs/b2"


def test_screens_are_collected_per_job_with_their_rungs_and_never_become_trials(
    tmp_path: Path,
) -> None:
    import pyarrow.parquet as pq

    from sslsearch.search._results import SCREEN_COLUMNS, collect_screens, write_screens

    from .report_data import screen_file

    exp = str(tmp_path)
    assert write_screens(exp) is None and not (tmp_path / "screens.parquet").exists()
    write_job(exp, Job("a1", [{"trial_id": "a1-0", "params": {"ssl_lambda": 0.01}}], 1.0))
    write_job(exp, Job("b2", [{"trial_id": "b2-0", "params": {"ssl_lambda": 0.3}}], 2.0))
    write_job(exp, Job("c3", [{"trial_id": "c3-0", "params": {"ssl_lambda": 1.0}}], 3.0))
    jobs = tmp_path / "jobs"
    a = screen_file("a1", 0.01, [50, 60, 70, 80], chosen={3: "a1-0"})
    (jobs / "a1" / "screen.json").write_text(json.dumps(a))
    early = screen_file("a1", 0.01, [40, 45, 50], rung=0)
    early.pop("rung")  # the file name gives it
    (jobs / "a1" / "screen-r0.json").write_text(json.dumps(early))
    stopped = screen_file("b2", 0.3, [30, 31], rung=1, status="stopped")
    (jobs / "b2" / "screen.json").write_text(json.dumps(stopped))
    (jobs / "c3" / "screen.json").write_text('{"job_id": "c3", "rows": [')  # torn: skipped
    rows = collect_screens(exp)
    assert [(r["job_id"], r["rung"]) for r in rows] == [("a1", 0)] * 3 + [("a1", None)] * 4 + [
        ("b2", 1)
    ] * 2
    assert set(rows[0]) == {c for c, _ in SCREEN_COLUMNS}
    last = rows[6]
    assert last["chosen"] is True and last["point_id"] == "a1-0" and last["top1"] == 80
    assert last["key"] == "flops_budget" and last["value"] == 0.9 and last["epochs_trained"] == 12
    assert {r["status"] for r in rows[7:]} == {"stopped"}
    written = write_screens(exp)
    assert written is not None
    table = pq.read_table(tmp_path / "screens.parquet")
    assert table.num_rows == 9 and table.schema.field("flops").type == "int64"
    # a screened value is never a trial
    assert [r["trial_id"] for r in collect_trials(exp)] == ["a1-0", "b2-0", "c3-0"]


def test_a_points_screen_columns_come_from_its_result(tmp_path: Path) -> None:
    exp = str(tmp_path)
    write_job(exp, Job("a1", [{"trial_id": f"a1-{i}", "params": {}} for i in range(2)]))
    for i, screen in enumerate(({"screen_top1": 71.5, "screen_candidates": 16}, {})):
        (tmp_path / "points" / f"a1-{i}").mkdir(parents=True)
        result = {"status": "ok", "top1": 90.0, "ssl_reused": i > 0, **screen}
        (tmp_path / "points" / f"a1-{i}" / "result.json").write_text(json.dumps(result))
    from sslsearch.search._results import trials_table

    table = trials_table(collect_trials(exp)).to_pylist()
    assert [(r["screen_top1"], r["screen_candidates"], r["ssl_reused"]) for r in table] == [
        (71.5, 16, False),
        (None, None, True),
    ]

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

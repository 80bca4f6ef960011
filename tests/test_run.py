"""The lambda = 0 references' choices (search/_references.py) and finish (search/_finish.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from sslsearch.search._references import distinct_choices


def _point(tid: str, **choice: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(
        ("ratio", "flops_budget", "params_budget", "latency_budget", "blocks", "min_width_share")
    )
    row.update(trial_id=tid, ssl_type="filter_wise", prune_type="filter_wise")
    row.update(prune_way="group_lasso", ssl_lambda=0.01)
    row.update(choice)
    return row


def test_each_distinct_pruning_choice_is_referenced_once_by_its_first_point() -> None:
    rows = [
        _point("a-0", ratio=0.9, ssl_lambda=0.01),
        _point("a-1", ratio=0.1),
        _point("b-0", ratio=0.9, ssl_lambda=0.3),  # the default run's repeated ratio
        _point("b-1", ratio=0.9000000000000001),  # the same after rounding to 12 digits
        _point("c-0", ratio=0.9, prune_way="mean_abs"),
        _point("c-1", ratio=0.9, min_width_share=0.2),
        _point("d-0", flops_budget=0.5, ssl_type="channel_wise"),
        _point("d-1", flops_budget=0.5),  # the ssl type trains nothing at lambda = 0
        _point("e-0", prune_type="depth_wise", blocks=2),
        _point("e-1", prune_type="depth_wise", blocks=3),
        _point("e-2", prune_type="depth_wise", blocks=2),
    ]
    got = distinct_choices(rows)
    assert [c["trial_id"] for c in got] == ["a-0", "a-1", "c-0", "c-1", "d-0", "e-0", "e-1"]
    assert got[0] == {
        "trial_id": "a-0",
        "ssl_type": "filter_wise",
        "prune_type": "filter_wise",
        "prune_way": "group_lasso",
        "ratio": 0.9,
    }
    assert got[4]["ssl_type"] == "channel_wise" and got[4]["flops_budget"] == 0.5
    assert "ssl_lambda" not in got[0]  # the reference trains at lambda = 0
    # the same rows give the same ids (a resume finds the references on disk)
    assert distinct_choices(rows) == got
    assert distinct_choices([]) == []


def test_distinct_floats_stay_apart() -> None:
    got = distinct_choices([_point("a", ratio=0.5), _point("b", ratio=0.5000001)])
    assert [c["trial_id"] for c in got] == ["a", "b"]


def test_finish_writes_the_screens_and_says_when_the_screen_ranks_unlike_fine_tuning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sslsearch.config import SearchSpace
    from sslsearch.search._experiment import Job, write_job
    from sslsearch.search._finish import finish

    from .report_data import point, screen_file

    exp = str(tmp_path)
    for i, (screened, final) in enumerate([(40.0, 92.0), (50.0, 91.0), (60.0, 90.0)]):
        job = f"j{i}"
        write_job(exp, Job(job, [{"trial_id": f"{job}-0", "params": {}}], asked_at=float(i)))
        s = screen_file(job, 0.01 * (i + 1), [10, 20, screened], chosen={2: f"{job}-0"})
        (tmp_path / "jobs" / job / "screen.json").write_text(json.dumps(s))
        result = point(f"{job}-0", 0.5, final, lam=s["ssl_lambda"], screen_top1=screened)
        (tmp_path / "points" / f"{job}-0").mkdir(parents=True)
        (tmp_path / "points" / f"{job}-0" / "result.json").write_text(json.dumps(result))
    with caplog.at_level(logging.INFO, logger="sslsearch.search._finish"):
        _, counts, pareto = finish(exp, SearchSpace(), "sqlite:///x.db")
    assert counts == {"ok": 3} and pareto is not None
    assert pq.read_table(tmp_path / "screens.parquet").num_rows == 9
    text = caplog.text
    assert "3 search points (3 ok) from 3 SSL models; 9 screened; no dense baseline" in text
    assert "screen rank agreement (Kendall tau, 3 fine-tuned points): -1.00" in text
    assert "fine-tune more points per SSL model (economy.points_per_ssl)" in text

"""Screens in the report (report/_screen_agreement.py): Kendall tau by hand, the headline's counts, and a
report built from an experiment with screens: curves, agreement, never a front point."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from sslsearch.report import export_experiment, headline, kendall_tau, screen_agreement
from sslsearch.search._experiment import Job, write_job
from sslsearch.search._results import write_screens

from .report_data import baseline, experiment, point, screen_file


@pytest.mark.parametrize(
    ("x", "y", "tau"),
    [
        ([1, 2, 3, 4], [1, 2, 3, 4], 1.0),
        ([1, 2, 3, 4], [4, 3, 2, 1], -1.0),
        # one discordant pair (2, 3) of six: (5 - 1) / 6
        ([1, 2, 3, 4], [1, 3, 2, 4], 4 / 6),
        # a tie in x (pair 0-1) and one in y (pair 1-2): 4 concordant, 0 discordant over
        # sqrt((6 - 1) * (6 - 1))
        ([1, 1, 2, 3], [1, 2, 2, 3], 4 / 5),
        # ties in both at once (pair 0-1) count in both: 2 concordant - 0 over sqrt(2 * 2)
        ([1, 1, 2], [5, 5, 6], 1.0),
        # 5 points, by hand: pairs (i<j) concordant C = 6, discordant D = 3, tie in y (0-4): 1
        ([1, 2, 3, 4, 5], [3, 1, 4, 5, 3], (6 - 3) / (10 * 9) ** 0.5),
    ],
)
def test_kendall_tau_b_by_hand(x: list[float], y: list[float], tau: float) -> None:
    assert kendall_tau(x, y) == pytest.approx(tau)
    assert kendall_tau(y, x) == pytest.approx(tau)  # symmetric


def test_kendall_tau_is_none_without_a_ranking() -> None:
    assert kendall_tau([1, 2], [1, 2]) is None  # n < 3
    assert kendall_tau([], []) is None
    assert kendall_tau([1, 2, 3], [7, 7, 7]) is None  # one sample constant
    with pytest.raises(ValueError, match="paired"):
        kendall_tau([1, 2, 3], [1, 2])


def _pt(tid: str, screen: float | None, top1: float, **extra: Any) -> dict[str, Any]:
    return point(tid, 0.5, top1, screen_top1=screen, screen_candidates=8, **extra)


def test_screen_agreement_counts_only_ok_search_points_with_a_screen() -> None:
    rows = [
        _pt("t000", 40.0, 90.0),
        _pt("t001", 50.0, 92.0),
        _pt("t002", 60.0, 91.0),
        _pt("t003", None, 10.0),  # not screened
        _pt("t004", 70.0, 10.0, status="failed"),
        _pt("t005", 70.0, 10.0, role="reference"),
        _pt("t006", 70.0, 10.0, confirm_of="t000"),
    ]
    assert screen_agreement(rows) == (pytest.approx(1 / 3), 3)
    assert screen_agreement(rows[:2]) == (None, 2)
    assert screen_agreement([]) == (None, 0)


def test_headline_counts_each_kind_apart() -> None:
    search = [point(f"t{i:03d}", 0.5, 90.0, lam=0.01 * (1 + i % 4)) for i in range(16)]
    search[0]["status"] = "failed"
    search[1]["status"] = "stopped"
    refs = [point(f"r{i:03d}", 0.5, 90.0, role="reference") for i in range(9)]
    redo = point("t002-seed1", 0.5, 90.0, confirm_of="t002")
    screens = screen_file("a", 0.01, [1] * 16)["rows"] * 4
    stopped = [{"job_id": "z", "status": "stopped", "rung": 0}] * 3
    assert headline([*search, *refs, redo, baseline()], screens + stopped) == (
        "16 search points (14 ok, 1 failed, 1 stopped; only ok points are on the fronts, the rest "
        "excluded) from 4 SSL models; 67 screened "
        "(1 SSL model stopped by multi-fidelity); 9 references (lambda = 0); "
        "1 re-evaluation (--confirm-front); dense baseline"
    )
    refs[0]["status"] = "failed"
    assert headline([*search[2:], *refs]) == (
        "14 search points (14 ok) from 4 SSL models; 9 references (lambda = 0; 8 ok, 1 failed); "
        "no dense baseline"
    )
    # the trials' compute: each job's CPU time when its last point ended (780 s), summed over
    # its 3 jobs, not over its 12 rows
    for i, r in enumerate(search):
        r.update(trial_dir=f"jobs/j{i // 4}", cpu_seconds=600.0 + 60.0 * (i % 4))
    assert headline(search[4:]).endswith("; the trials used 39.0 CPU-minutes")


def _screened_experiment(tmp_path: Path, finals: list[float]) -> Path:
    """Three SSL models, each screened at 6 FLOPs budgets (one also at rung 0, one stopped),
    their fine-tuned points with ``finals`` as final top-1 (screened: 60, 70, 80 at 0.9)."""
    screens = [
        screen_file("a1", 0.01, [10, 20, 30, 40, 50, 60], chosen={5: "a1-0"}),
        screen_file("b2", 0.03, [15, 25, 35, 45, 55, 70], chosen={5: "b2-0"}),
        screen_file("c3", 0.1, [99.9] * 5 + [80], chosen={5: "c3-0"}),  # would dominate
        screen_file("d4", 1.0, [99.9] * 6, rung=0, status="stopped"),  # never fine-tuned
    ]
    rows = [
        point(f"{s['job_id']}-0", 0.5, top1, lam=s["ssl_lambda"], screen_top1=s["rows"][5]["top1"])
        for s, top1 in zip(screens, finals)
    ]
    rows += [point("r000", 0.5, 80.0, role="reference"), baseline()]
    exp = experiment(tmp_path, rows)
    for i, s in enumerate(screens):
        write_job(str(exp), Job(s["job_id"], [], asked_at=float(i)))
        (exp / "jobs" / s["job_id"] / "screen.json").write_text(json.dumps(s))
    early = screen_file("a1", 0.01, [5, 6, 7], rung=0)
    (exp / "jobs" / "a1" / "screen-r0.json").write_text(json.dumps(early))
    assert write_screens(str(exp)) is not None
    return exp


def test_report_shows_screens_and_their_agreement_and_never_puts_them_on_a_front(
    tmp_path: Path,
) -> None:
    exp = _screened_experiment(tmp_path / "good", [90.0, 91.0, 92.0])  # the screen's order
    out = export_experiment(str(exp))
    ids = {"a1-0", "b2-0", "c3-0", "r000"}
    for f in out["fronts"]:
        assert {r["trial_id"] for r in f.rows} <= ids, f.name
    s = out["summary"]
    assert len(s.screens) == 3 * 6 + 6 + 3 and s.agreement == (1.0, 3)
    md = (exp / "pareto.md").read_text()
    assert "3 search points (3 ok) from 3 SSL models; 27 screened (1 SSL model stopped" in md
    assert "over 3 fine-tuned points): 1.00." in md and "unlike fine-tuning" not in md
    hv = json.loads((exp / "hypervolume.json").read_text())
    assert hv["screen_rank_agreement"] == {"kendall_tau": 1.0, "points": 3}
    page = (exp / "report.html").read_text()
    assert "Screens (before fine-tuning)" in page and "screen (before fine-tuning)" in page
    assert '"visible":"legendonly"' in page  # the curves on the FLOPs front: off until clicked
    assert "filter_wise lambda=1 (d4, rung 0, stopped)" in page and "(a1, rung 0)" in page
    data = re.search(r'id="sslsearch-data">(.*?)</script>', page, re.S)
    assert data is not None
    embedded = json.loads(data.group(1).replace("<\\/", "</"))
    assert len(embedded["screens"]) == 27
    assert {t for f in embedded["fronts"] for t in f["trial_ids"]} <= ids
    # the same experiment without its screens: the same fronts and hypervolumes
    (exp / "screens.parquet").unlink()
    plain = export_experiment(str(exp))
    assert [[r["trial_id"] for r in f.rows] for f in plain["fronts"]] == [
        [r["trial_id"] for r in f.rows] for f in out["fronts"]
    ]
    assert plain["hypervolume"] == hv


def test_a_screen_that_ranks_unlike_fine_tuning_is_flagged(tmp_path: Path) -> None:
    exp = _screened_experiment(tmp_path, [92.0, 91.0, 90.0])  # the reverse order
    out = export_experiment(str(exp))
    assert out["summary"].agreement == (-1.0, 3)
    warning = "fine-tune more points per SSL model (economy.points_per_ssl)"
    assert warning in (exp / "pareto.md").read_text()
    assert warning in (exp / "report.html").read_text() and warning in out["console"]

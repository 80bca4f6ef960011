"""Which fronts, objective modes, seed means and the points to confirm (report/_fronts.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from sslsearch.errors import UserError
from sslsearch.report import (
    compute_front,
    export_experiment,
    front_specs,
    points_to_confirm,
    resolve_objectives,
    with_seed_means,
)
from sslsearch.report._fronts import hypervolume_history, reference_point

from .report_data import baseline, experiment, md_tables, point, random_rows
from .test_report import brute_force_front


def _brute_ids(rows: list[dict[str, Any]], objectives: list[tuple[str, str]]) -> set[str]:
    pts = np.array([[-r[o] if d == "max" else r[o] for o, d in objectives] for r in rows])
    return {rows[i]["trial_id"] for i in brute_force_front(pts)}


@pytest.mark.parametrize(
    ("objectives", "latency", "names"),
    [
        (
            ["top1", "flops", "size_mb"],
            True,
            ["top1_vs_flops", "top1_vs_size", "top1_vs_latency", "all_objectives"],
        ),
        (
            ["top1", "flops", "latency_ms"],
            True,
            ["top1_vs_flops", "top1_vs_latency", "all_objectives"],
        ),
        (["top1", "flops"], False, ["top1_vs_flops"]),
        (["top5", "params"], True, ["top5_vs_params", "top1_vs_latency"]),
    ],
)
def test_front_specs_follow_the_objectives(
    objectives: list[str], latency: bool, names: list[str]
) -> None:
    specs = front_specs(objectives, latency)
    assert [s.name for s in specs] == names
    assert all(
        s.in_space for s in specs if s.name != "top1_vs_latency" or "latency_ms" in objectives
    )


def test_latency_objective_space_exports_latency_front_with_baseline_reference(
    tmp_path: Path,
) -> None:
    rows = [*random_rows(20), *random_rows(8, seed=3, role="reference"), baseline(99.0)]
    objs = (("top1", "max"), ("flops", "min"), ("latency_ms", "min"))
    exp = experiment(tmp_path, rows, objectives=objs)
    out = export_experiment(str(exp), ["md", "png"])
    md = (exp / "pareto.md").read_text()
    assert "## top1 vs size_mb" not in md  # size is not an objective of this space
    sections = [t for t in md_tables(md) if t["h2"] == "top1 vs latency_ms"]
    assert len(sections) == 2  # SSL and no-SSL
    for t in sections:
        col = t["header"].index("latency/ms")
        lat = [float(r[col]) for r in t["rows"][1:]]
        assert lat == sorted(lat)
        assert t["rows"][0][col] == "0.5"  # the baseline's latency heads the table
    assert "Latency measured at batch 1, cpu, 1 thread" in md
    hv = out["hypervolume"]["top1_vs_latency"]
    assert hv["reference"]["latency_ms"] == pytest.approx(0.5)  # the dense model's, not a trial's
    assert hv["reference_source"]["latency_ms"] == "dense baseline"
    ssl = [r for r in rows if r["role"] == "search"]
    f = out["summary"].pairs[1].ssl
    assert {r["trial_id"] for r in f.rows} == _brute_ids(
        ssl, [("top1", "max"), ("latency_ms", "min")]
    )
    assert out["summary"].pairs[2].ssl.objectives == ["top1", "flops", "latency_ms"]


def test_export_honours_each_objectives_mode(tmp_path: Path) -> None:
    rows = random_rows(25)
    exp = experiment(tmp_path, rows, objectives=(("top1", "max"), ("flops", "max")))
    out = export_experiment(str(exp), ["parquet"])
    got = {
        r["trial_id"]
        for r in pq.read_table(exp / "pareto.parquet").to_pylist()
        if r["front"] == "top1_vs_flops"
    }
    assert got == _brute_ids(rows, [("top1", "max"), ("flops", "max")])
    assert got != _brute_ids(rows, [("top1", "max"), ("flops", "min")])
    f = out["summary"].pairs[0].ssl
    assert f.directions == ["max", "max"] and f.reference["flops"] == 0.0
    meta = {
        k.decode(): v.decode()
        for k, v in pq.read_table(exp / "pareto.parquet").schema.metadata.items()
    }
    assert json.loads(meta["sslsearch.export_objectives"]) == [["top1", "max"], ["flops", "max"]]


def test_resolve_objectives() -> None:
    meta = {"sslsearch.objectives": json.dumps([["top1", "max"], ["flops", "max"]])}
    assert resolve_objectives(None, meta) == [("top1", "max"), ("flops", "max")]
    assert resolve_objectives(["top1", "flops"], meta) == [("top1", "max"), ("flops", "max")]
    assert resolve_objectives(["flops:min", "size_mb"], meta) == [
        ("flops", "min"),
        ("size_mb", "min"),
    ]
    assert resolve_objectives(None, {}) == [("top1", "max"), ("flops", "min"), ("size_mb", "min")]
    with pytest.raises(UserError, match="unknown objective 'flop'"):
        resolve_objectives(["flop"], {})
    with pytest.raises(UserError, match="mode must be max or min"):
        resolve_objectives(["flops:least"], {})


def _confirmed() -> list[dict[str, Any]]:
    a, b, c = point("t001", 0.8, 95.0), point("t002", 0.6, 97.0), point("t003", 0.3, 98.0)
    d = point("t004", 0.6, 90.0)  # dominated by b
    redo = [
        point("t101", 0.8, 95.5, confirm_of="t001", seed=1),
        point("t102", 0.8, 99.9, confirm_of="t001", seed=2),  # never a front point itself
        point("t201", 0.6, 93.0, confirm_of="t002", seed=1),
        point("t202", 0.6, 92.0, confirm_of="t002", seed=2),
    ]
    return [a, b, c, d, *redo, baseline(99.0)]


def test_seed_means_mark_points_dominated_on_the_mean(tmp_path: Path) -> None:
    rows = _confirmed()
    f = with_seed_means(
        compute_front(
            [r for r in rows if not r.get("confirm_of") and r["role"] == "search"],
            ["top1", "flops"],
        ),
        rows,
    )
    by = {r["trial_id"]: r for r in f.rows}
    assert set(by) == {"t001", "t002", "t003"}
    # the selected run (t001: 95.0) is kept apart: the means are over its re-runs alone
    assert by["t001"]["n_seeds"] == 2 and by["t003"]["n_seeds"] == 0
    assert by["t001"]["top1_mean"] == pytest.approx((95.5 + 99.9) / 2)
    assert by["t001"]["top1_std"] == pytest.approx(float(np.std([95.5, 99.9], ddof=1)))
    assert by["t002"]["top1_mean"] == pytest.approx(92.5)  # below t001's mean at a higher cost
    assert by["t003"]["top1_std"] is None and "top1_mean" not in by["t003"]
    assert {t: r["on_mean_front"] for t, r in by.items()} == {
        "t001": True,
        "t002": False,
        "t003": True,
    }
    exp = experiment(tmp_path, rows)
    export_experiment(str(exp), ["md", "png", "html"])
    t = md_tables((exp / "pareto.md").read_text())[0]
    cells = [dict(zip(t["header"], r)) for r in t["rows"]]
    assert [c["on re-run front"] for c in cells] == ["", "yes", "no (dominated)", "yes"]
    assert cells[1]["re-runs"] == "2" and cells[2]["re-run top1 mean ± sd"] == "92.50 ± 0.71"


def test_front_without_reevaluations_is_unchanged() -> None:
    rows = random_rows(10)
    f = with_seed_means(compute_front(rows, ["top1", "flops"]), rows)
    assert all("n_seeds" not in r and "on_mean_front" not in r for r in f.rows)


def test_points_to_confirm_are_the_shown_fronts_points() -> None:
    rows = [*random_rows(20), *random_rows(10, seed=4, role="reference"), *_confirmed()[4:]]
    objs = [("top1", "max"), ("flops", "min"), ("size_mb", "min")]
    ids = points_to_confirm(rows, objs)
    assert len(ids) == len(set(ids))
    expected: set[str] = set()
    for role in ("search", "reference"):
        pts = [r for r in rows if r["role"] == role and not r.get("confirm_of")]
        for o in ([objs[0], objs[1]], [objs[0], objs[2]], [objs[0], ("latency_ms", "min")], objs):
            expected |= _brute_ids(pts, o)
    assert set(ids) == expected
    assert not any(i.startswith(("t1", "t2")) for i in ids)  # re-evaluations are never picked
    ssl_only = points_to_confirm(rows, objs, roles=["search"])
    assert all(i.startswith("t") for i in ssl_only)
    first = compute_front(
        [r for r in rows if r["role"] == "search" and not r.get("confirm_of")], objs[:2]
    )
    assert ssl_only[: len(first.rows)] == [r["trial_id"] for r in first.rows]


def test_hypervolume_history_grows_to_the_fronts() -> None:
    rows = random_rows(15)
    objs = [("top1", "max"), ("flops", "min")]
    ref = reference_point(rows, objs, None)
    hist = hypervolume_history(rows, objs, ref)
    values = [h for _, h in hist]
    assert len(hist) == 15 and values == sorted(values)
    assert values[-1] == pytest.approx(compute_front(rows, objs, reference=ref).hypervolume)


def test_hypervolume_history_is_the_hypervolume_of_every_prefix() -> None:
    """Its shortcut (a point the front weakly dominates changes nothing) against the
    definition: the front of each prefix, computed from scratch."""
    rows = random_rows(60, seed=3)
    rows += [{**r, "trial_id": r["trial_id"] + "-copy", "finished_at": 1e12} for r in rows[:5]]
    objs = [("top1", "max"), ("flops", "min"), ("size_mb", "min")]
    ref = reference_point(rows, objs, None)
    hist = hypervolume_history(rows, objs, ref)
    order = [tid for tid, _ in hist]
    by_id = {r["trial_id"]: r for r in rows}
    for k in range(1, len(order) + 1):
        prefix = [by_id[t] for t in order[:k]]
        assert hist[k - 1][1] == pytest.approx(
            compute_front(prefix, objs, reference=ref).hypervolume
        ), k


def test_no_two_rows_of_any_front_are_identical(tmp_path: Path) -> None:
    # the default run before one reference per choice: ratio 0.9 fine-tuned four times at
    # lambda = 0 (identical rows), two SSL points identical too, and one that differs in lambda
    search = [
        point("t000", 0.9, 90.0, lam=0.01),
        point("t001", 0.9, 90.0, lam=0.01),
        point("t002", 0.9, 90.0, lam=0.02),  # another lambda: another line
        point("t003", 0.5, 95.0),
    ]
    refs = [point(f"r{i:03d}", 0.9, 88.0, role="reference") for i in range(4)]
    refs.append(point("r004", 0.5, 93.0, role="reference"))
    exp = experiment(tmp_path, [*search, *refs, baseline()])
    out = export_experiment(str(exp))
    names = ["role", "ssl_type", "ssl_lambda", "prune_type", "prune_way", "ratio"]
    for f in out["fronts"]:
        lines = [tuple(r.get(k) for k in [*names, *f.objectives]) for r in f.rows]
        assert len(lines) == len(set(lines)), f.name
    top = {f.role: f for f in out["fronts"] if f.name == "top1_vs_flops"}
    assert [(r["trial_id"], r["identical_points"]) for r in top["reference"].rows] == [
        ("r000", 4),
        ("r004", 1),
    ]
    assert {r["trial_id"]: r["identical_points"] for r in top["search"].rows} == {
        "t000": 2,
        "t002": 1,
        "t003": 1,
    }
    assert top["reference"].considered == 5  # every point counts; the hypervolume is the same
    once = compute_front(
        [refs[0], refs[4]], ["top1", "flops"], baseline=out["summary"].baseline, role="reference"
    )
    assert [r["identical_points"] for r in once.rows] == [1, 1]
    assert once.hypervolume > 0
    assert top["reference"].hypervolume == pytest.approx(once.hypervolume)
    # every written table and the parquet list each line once
    for t in md_tables((exp / "pareto.md").read_text()):
        assert len(t["rows"]) == len({tuple(r) for r in t["rows"]}), (t["h2"], t["h3"])
    assert "3 identical points listed once" in (exp / "pareto.md").read_text()
    table = pq.read_table(exp / "pareto.parquet").to_pylist()
    keys = [tuple(r[k] for k in ("front", *names, "top1", "flops", "size_mb")) for r in table]
    assert len(keys) == len(set(keys))
    assert "3 identical points listed once" in (exp / "report.html").read_text()

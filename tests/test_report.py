"""Pareto fronts, hypervolume and exports, checked against brute force on synthetic trials."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from sslsearch.cli import main
from sslsearch.report import (
    NoResultsError,
    compute_front,
    export_experiment,
    hypervolume,
    non_dominated_mask,
)

from .report_data import baseline, experiment, md_tables, point, random_rows


def brute_force_front(points: np.ndarray) -> set[int]:
    """Minimisation: i is optimal unless some j is <= everywhere and < somewhere."""
    n = len(points)
    return {
        i
        for i in range(n)
        if not any(
            np.all(points[j] <= points[i]) and np.any(points[j] < points[i]) for j in range(n)
        )
    }


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [2, 3])
def test_non_dominated_matches_brute_force(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    pts = rng.integers(0, 6, size=(40, k)).astype(float)  # many ties on purpose
    assert set(np.flatnonzero(non_dominated_mask(pts))) == brute_force_front(pts)


@pytest.mark.parametrize("k", [2, 3])
def test_non_dominated_sweep_of_many_points_matches_brute_force(k: int) -> None:
    rng = np.random.default_rng(k)
    pts = rng.integers(0, 40, size=(700, k)).astype(float)  # past PAIRWISE_MAX, with ties
    pts[:, -1] = 40 - pts[:, 0] + rng.integers(0, 3, size=700)  # a real trade-off
    assert set(np.flatnonzero(non_dominated_mask(pts))) == brute_force_front(pts)


def test_hypervolume_2d_by_hand() -> None:
    pts = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [3.5, 3.5]])
    # staircase under reference (4, 4): 3*1 + 2*1 + 1*1 = 6
    assert hypervolume(pts, np.array([4.0, 4.0])) == pytest.approx(6.0)
    assert hypervolume(np.array([[5.0, 1.0]]), np.array([4.0, 4.0])) == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_hypervolume_3d_matches_grid_count(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pts = rng.integers(0, 8, size=(12, 3)).astype(float)
    ref = np.array([8.0, 8.0, 8.0])
    # count unit cells [x, x+1)^3 dominated by some point (integer coordinates: exact)
    cells = sum(
        1
        for c in itertools.product(range(8), repeat=3)
        if any(np.all(p <= np.array(c)) for p in pts)
    )
    assert hypervolume(pts, ref) == pytest.approx(cells)


def _mixed(n: int = 30) -> list[dict[str, Any]]:
    """SSL points, no-SSL points, a dense baseline and three non-completed trials."""
    rows = random_rows(n) + random_rows(12, seed=1, role="reference")
    rows[3].update(status="failed", error="loss became nan", top1=None, flops=None)
    rows[7].update(status="error", error="RuntimeError: boom", top1=None)
    rows[9].update(status="stopped", error="early stopping")
    return [*rows, baseline(99.0)]


def _brute(rows: list[dict[str, Any]], objectives: list[tuple[str, str]], role: str) -> set[str]:
    ok = [r for r in rows if r["status"] == "ok" and r["role"] == role]
    pts = np.array([[-r[o] if d == "max" else r[o] for o, d in objectives] for r in ok])
    return {ok[i]["trial_id"] for i in brute_force_front(pts)}


COST_COLUMN = {  # a front's heading in pareto.md -> the column it is sorted by
    "top1 vs flops": "FLOPs after pruning/",
    "top1 vs size_mb": "Model size after pruning/",
    "top1 vs latency_ms": "latency/ms",
    "all objectives": "FLOPs after pruning/",  # its first cost
}


def test_export_fronts_tables_and_files(tmp_path: Path) -> None:
    rows = _mixed()
    exp = experiment(tmp_path, rows)
    out = export_experiment(str(exp))
    s = out["summary"]
    assert [p.name for p in s.pairs] == [
        "top1_vs_flops",
        "top1_vs_size",
        "top1_vs_latency",
        "all_objectives",
    ]
    # every front (SSL and no-SSL) is the brute-force front of its role, sorted by its own cost
    table = pq.read_table(exp / "pareto.parquet").to_pylist()
    for p in s.pairs:
        objs = list(zip(p.ssl.objectives, p.ssl.directions))
        for f, role in ((p.ssl, "search"), (p.no_ssl, "reference")):
            assert f is not None and f.role == role
            assert {r["trial_id"] for r in f.rows} == _brute(rows, objs, role), (p.name, role)
            got = [r for r in table if r["front"] == p.name and r["role"] == role]
            cost = objs[1][0]
            assert [r["trial_id"] for r in got] == [r["trial_id"] for r in f.rows]
            assert [r[cost] for r in got] == sorted(r[cost] for r in got), (p.name, role)
    # the Markdown: per front one SSL and one no-SSL table, baseline first, in cost order
    md = (exp / "pareto.md").read_text()
    tables = md_tables(md)
    assert len(tables) == 2 * len(s.pairs)
    for t in tables:
        head = t["header"]
        assert head[:6] == [
            "arch",
            "prune type",
            "prune way",
            "ssl lambda",
            "pruning ratio",
            "actual pruning ratio",
        ]
        # digits-sized numbers: FLOPs in M, params in K, size in MB, stated in the header
        assert {
            "flops/M",
            "model size/MB",
            "FLOPs after pruning/M",
            "params after pruning/K",
        } <= set(head)
        for col in ("top1", "top5", "top-1 drop", "FLOPs reduction", "params reduction"):
            assert col in head
        assert "latency/ms" in head and "speed-up" in head
        assert t["rows"][0][1] == "dense baseline" and t["rows"][0][head.index("top1")] == "99.00"
        name = t["h2"]
        cost = next(c for k, c in COST_COLUMN.items() if name.startswith(k))
        col = next(i for i, h in enumerate(head) if h.startswith(cost))
        values = [float(r[col]) for r in t["rows"][1:]]
        assert values == sorted(values), (name, t["h3"])
        assert not any("e-0" in c or "e+0" in c for r in t["rows"] for c in r)
    # the headline counts each kind apart: search points, references, the baseline
    assert (
        "30 search points (27 ok, 1 error, 1 failed, 1 stopped; only ok points are on the fronts, "
        "the rest excluded) from 30 SSL models; "
        "12 references (lambda = 0); dense baseline." in md
    )
    assert "Dense baseline: vgg_small" in md and "no-SSL (lambda = 0) front" in md
    # hypervolumes: SSL and no-SSL against the same reference point, the dense baseline's cost
    hv = json.loads((exp / "hypervolume.json").read_text())
    assert hv["top1_vs_flops"]["reference"] == {"top1": 0.0, "flops": 2_400_000}
    assert hv["top1_vs_flops"]["reference_source"]["flops"] == "dense baseline"
    assert 0 < hv["top1_vs_flops"]["no_ssl"]["hypervolume"] < 1
    assert hv["top1_vs_latency"]["reference"]["latency_ms"] == pytest.approx(0.5)
    # Parquet: typed, baseline row first, metadata with hypervolumes; CSV = Parquet; PNG; HTML
    pt = pq.read_table(exp / "pareto.parquet")
    for name, typ in [
        ("front", "string"),
        ("role", "string"),
        ("top1_drop", "double"),
        ("flops_reduction", "double"),
        ("speedup", "double"),
        ("flops", "int64"),
        ("on_mean_front", "bool"),
    ]:
        assert str(pt.schema.field(name).type) == typ, name
    assert table[-1]["front"] == "baseline" and table[-1]["top1"] == 99.0
    assert table[-1]["top1_drop"] == 0 and table[-1]["speedup"] == pytest.approx(1.0)
    meta = {k.decode(): v.decode() for k, v in pt.schema.metadata.items()}
    assert json.loads(meta["sslsearch.hypervolume"]) == hv
    csv = (exp / "pareto.csv").read_text().splitlines()
    assert len(csv) == pt.num_rows + 1 and csv[0].startswith('"front"')
    assert (exp / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (exp / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_derived_columns_against_the_baseline(tmp_path: Path) -> None:
    rows = [point("t001", 0.5, 97.5), point("t002", 0.75, 95.0), baseline(98.0)]
    exp = experiment(tmp_path, rows)
    export_experiment(str(exp), ["md", "parquet"])
    got = {
        (r["front"], r["trial_id"]): r for r in pq.read_table(exp / "pareto.parquet").to_pylist()
    }
    r = got[("top1_vs_flops", "t001")]
    assert r["top1_drop"] == pytest.approx(0.5)
    assert r["flops_reduction"] == pytest.approx(2_400_000 / r["flops"])
    assert r["params_reduction"] == pytest.approx(300_000 / r["params"])
    assert r["speedup"] == pytest.approx(0.5 / r["latency_ms"])
    t = md_tables((exp / "pareto.md").read_text())[0]
    assert [row[t["header"].index("top-1 drop")] for row in t["rows"]] == ["0.00", "3.00", "0.50"]
    cells = dict(zip(t["header"], t["rows"][2]))  # t001, after the cheaper t002
    assert cells["top-1 drop"] == "0.50" and cells["FLOPs reduction"] == "4.00x"
    assert cells["speed-up"] == f"{0.5 / r['latency_ms']:.2f}x"
    assert cells["FLOPs after pruning/M"] == "0.6" and cells["top1"] == "97.50"


def test_without_baseline_or_reference_rows_export_falls_back(tmp_path: Path) -> None:
    rows = random_rows(12)
    exp = experiment(tmp_path, rows, contract=False)  # a trials.parquet from before the roles
    out = export_experiment(str(exp))
    md = (exp / "pareto.md").read_text()
    assert "No dense baseline in this experiment" in md and "no no-SSL front" in md
    for t in md_tables(md):
        assert t["rows"][0][1] == "filter_wise"  # no baseline row
        drop = t["header"].index("top-1 drop")
        assert {r[drop] for r in t["rows"]} == {"-"}
        assert all(r[t["header"].index("FLOPs reduction")].endswith("x") for r in t["rows"])
    hv = out["hypervolume"]
    assert hv["top1_vs_flops"]["reference_source"]["flops"] == "unpruned architecture, flops_before"
    worst = max(r["latency_ms"] for r in rows)
    assert hv["top1_vs_latency"]["reference"]["latency_ms"] == pytest.approx(worst)
    assert hv["top1_vs_flops"]["no_ssl"] is None


def test_hypervolume_normalised_by_hand(tmp_path: Path) -> None:
    rows = [point(f"t00{i}", 0.5, 0.0) for i in range(4)] + [baseline(99.0)]
    for r, (top1, flops) in zip(
        rows, [(90.0, 1_200_000), (80.0, 600_000), (70.0, 1_800_000), (95.0, 2_400_000)]
    ):
        r.update(top1=top1, flops=flops)
    f = compute_front(rows[:4], ["top1", "flops"])
    # normalised: (0.95, 1.0) adds nothing (at the reference); (0.9, 0.5) and (0.8, 0.25)
    assert {r["trial_id"] for r in f.rows} == {"t000", "t001", "t003"}
    assert [r["trial_id"] for r in f.rows] == ["t001", "t000", "t003"]  # by FLOPs
    assert f.hypervolume == pytest.approx(0.9 * 0.5 + 0.8 * 0.25)
    exp = experiment(tmp_path, rows)
    hv = export_experiment(str(exp), ["md"])["hypervolume"]["top1_vs_flops"]
    assert hv["hypervolume"] == pytest.approx(0.9 * 0.5 + 0.8 * 0.25)


def test_empty_and_all_failed_experiments_give_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = experiment(tmp_path, [])
    with pytest.raises(NoResultsError, match="no trials yet"):
        export_experiment(str(exp))
    rows = random_rows(3)
    for r in rows:
        r.update(status="failed", error="loss became inf", top1=None)
    exp2 = experiment(tmp_path, rows, name="b")
    assert main(["export", str(exp2)]) == 2
    err = capsys.readouterr().err
    assert "no completed trial" in err and "loss became inf" in err and "Traceback" not in err


def test_export_cli_formats_and_objectives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = experiment(tmp_path, _mixed())
    assert main(["export", str(exp), "--format", "md,parquet", "--objectives", "top1,params"]) == 0
    printed = capsys.readouterr().out
    assert "Pareto front top1 vs params" in printed and "dense baseline" in printed
    assert (exp / "pareto.md").exists() and (exp / "pareto.parquet").exists()
    assert not (exp / "pareto.png").exists() and not (exp / "report.html").exists()
    fronts = set(pq.read_table(exp / "pareto.parquet").column("front").to_pylist())
    assert fronts == {"baseline", "top1_vs_params", "top1_vs_latency"}
    assert main(["export", str(exp), "--format", "pdf"]) == 2
    assert "unknown format 'pdf'" in capsys.readouterr().err
    assert main(["export", str(exp)]) == 0  # the default formats include the report
    assert (exp / "report.html").exists() and (exp / "pareto.png").exists()


def test_export_reads_only_trials_parquet(tmp_path: Path) -> None:
    exp = experiment(tmp_path, _mixed())
    before = (exp / "trials.parquet").read_bytes()
    export_experiment(str(exp))
    assert (exp / "trials.parquet").read_bytes() == before
    assert pq.read_table(io.BytesIO(before)).num_rows == 43


def test_fronts_say_which_split_chose_them_and_keep_budget_misses_off(tmp_path: Path) -> None:
    rows = [
        baseline(99.0, test_top1=98.0),
        point("t001", 0.5, 97.0, test_top1=96.0),
        # the best point, but its latency budget was missed: seen in trials.parquet, off fronts
        point("t002", 0.6, 98.5, test_top1=97.5, status="budget_missed"),
        point("r001", 0.5, 96.0, role="reference", test_top1=95.0),
    ]
    exp = experiment(tmp_path, rows)
    out = export_experiment(str(exp))
    md = (exp / "pareto.md").read_text()
    assert "which chose every front" in md and "test top1" in md
    assert "validation split" in (exp / "report.html").read_text()
    for p in out["summary"].pairs:
        assert "t002" not in {r["trial_id"] for f in p.fronts for r in f.rows}
    assert "1 budget_missed" in md  # the headline counts it apart


def test_a_users_objective_gets_its_column_front_table_and_axis(tmp_path: Path) -> None:
    """Read from the definitions the experiment saved: no code of the user's is imported."""
    from sslsearch.config import defs_to_json, objective, user_objective
    from sslsearch.report import OBJECTIVE_DEFS_KEY, export_experiment
    from sslsearch.search._results import trials_table

    mine = user_objective("my_meter_q:energy_mj", "min", unit="mJ", axis="log")
    rows = [
        point(f"t{i:03d}", ratio, 95.0 - 10 * ratio**2, energy_mj=5.0 * (1 - ratio) + 1)
        for i, ratio in enumerate((0.1, 0.4, 0.7))
    ] + [baseline(energy_mj=6.0)]
    exp = tmp_path / "mine"
    exp.mkdir()
    objectives = [("top1", "max"), ("energy_mj", "min")]
    meta = {
        "sslsearch.objectives": json.dumps(objectives),
        OBJECTIVE_DEFS_KEY: defs_to_json([objective("top1"), mine]),
    }
    pq.write_table(trials_table(rows, meta, [mine]), exp / "trials.parquet")
    out = export_experiment(str(exp))
    pareto = pq.read_table(exp / "pareto.parquet").to_pylist()
    assert {r["energy_mj"] for r in pareto if r["front"] != "baseline"} == {5.5, 4.0, 2.5}
    (table,) = [t for t in md_tables(out["markdown"]) if "energy_mj" in t["h2"] and t["rows"]][:1]
    assert "energy_mj/mJ" in table["header"]
    page = (exp / "report.html").read_text()
    assert "top1 vs energy_mj" in page and '"type":"log"' in page.replace(" ", "")
    assert out["hypervolume"]["top1_vs_energy_mj"]["reference"]["energy_mj"] == 6.0

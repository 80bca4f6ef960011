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
    SEED_COLUMNS,
    NoResultsError,
    compute_front,
    export_experiment,
    hypervolume,
    non_dominated_mask,
)
from sslsearch.search._results import trials_table


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


def _rows(n: int = 30, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        ratio = float(rng.uniform(0.1, 0.9))
        rows.append(
            {
                "trial_id": f"t{i:03d}",
                "trial_dir": f"sslsearch_trial_t{i:03d}_x",
                "status": "ok",
                "arch": "vgg_small",
                "dataset": "digits",
                "ssl_type": "filter_wise",
                "ssl_lambda": float(10 ** rng.uniform(-3, -1)),
                "prune_type": "filter_wise",
                "prune_way": "group_lasso",
                "ratio": ratio,
                "actual_ratio": ratio - 0.05,
                "top1": float(np.round(99 - 10 * ratio**3 + rng.normal(0, 1), 2)),
                "top5": 100.0,
                "flops": int(2.4e6 * (1 - ratio) ** 2) + int(rng.integers(0, 1000)),
                "params": int(3e5 * (1 - ratio) ** 2),
                "size_mb": float(1.2 * (1 - ratio) ** 2 + rng.uniform(0, 0.05)),
                "flops_before": 2_400_000,
                "params_before": 300_000,
                "size_mb_before": 1.2,
                "model_path": None,
            }
        )
    if n >= 10:
        rows[3].update(status="failed", error="loss became nan", top1=None, flops=None)
        rows[7].update(status="error", error="RuntimeError: boom", top1=None)
        rows[9].update(status="stopped", error="early stopping")
    return rows


def _experiment(tmp_path: Path, rows: list[dict[str, Any]]) -> Path:
    exp = tmp_path / "exp"
    exp.mkdir()
    meta = {
        "sslsearch.objectives": json.dumps([["top1", "max"], ["flops", "min"], ["size_mb", "min"]]),
        "sslsearch.space": json.dumps({"name": "exp"}),
    }
    pq.write_table(trials_table(rows, meta), exp / "trials.parquet")
    return exp


def test_export_matches_brute_force_and_writes_everything(tmp_path: Path) -> None:
    rows = _rows()
    exp = _experiment(tmp_path, rows)
    out = export_experiment(str(exp))
    ok = [r for r in rows if r["status"] == "ok"]
    for front in out["fronts"]:
        pts = np.array(
            [[-r["top1"] if o == "top1" else r[o] for o in front.objectives] for r in ok]
        )
        expected = {ok[i]["trial_id"] for i in brute_force_front(pts)}
        assert {r["trial_id"] for r in front.rows} == expected, front.name
        assert all(r["status"] == "ok" for r in front.rows)
        flops = [r["flops"] for r in front.rows]
        assert flops == sorted(flops)  # sorted by FLOPs
    assert [f.name for f in out["fronts"]] == ["top1_vs_flops", "top1_vs_size", "all_objectives"]
    # Markdown: one table per front in the seed's columns, failures counted
    md = (exp / "pareto.md").read_text()
    header = "| " + " | ".join(SEED_COLUMNS)
    assert md.count("## ") == 3
    for line in md.splitlines():
        if line.startswith("|") and "prune type" in line:
            assert [c.strip() for c in line.strip("|").split("|")] == list(SEED_COLUMNS)
    assert header.split()[1] == "arch"
    assert "1 error, 1 failed, 1 stopped, excluded" in md and "reference point" in md
    # Parquet: typed schema, metadata with hypervolumes
    table = pq.read_table(exp / "pareto.parquet")
    schema = table.schema
    for name, typ in [
        ("trial_id", "string"),
        ("front", "string"),
        ("ssl_lambda", "double"),
        ("ratio", "double"),
        ("actual_ratio", "double"),
        ("top1", "double"),
        ("flops", "int64"),
        ("params", "int64"),
        ("size_mb", "double"),
        ("model_path", "string"),
    ]:
        assert str(schema.field(name).type) == typ, name
    meta = {k.decode(): v.decode() for k, v in schema.metadata.items()}
    hv = json.loads(meta["sslsearch.hypervolume"])
    assert hv["top1_vs_flops"]["reference"] == {"top1": 0.0, "flops": 2_400_000}
    assert 0 < hv["top1_vs_flops"]["hypervolume"] < 1
    assert json.loads(meta["sslsearch.space"]) == {"name": "exp"}
    assert table.num_rows == sum(len(f.rows) for f in out["fronts"])
    # CSV matches the Parquet rows; the PNG is a PNG
    csv = (exp / "pareto.csv").read_text().splitlines()
    assert len(csv) == table.num_rows + 1 and csv[0].startswith('"front"')
    assert (exp / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_hypervolume_normalised_by_hand(tmp_path: Path) -> None:
    rows = _rows(4)
    for r, (top1, flops) in zip(
        rows, [(90.0, 1_200_000), (80.0, 600_000), (70.0, 1_800_000), (95.0, 2_400_000)]
    ):
        r.update(status="ok", top1=top1, flops=flops)
    f = compute_front(rows, ["top1", "flops"])
    # normalised: (0.95, 1.0) adds nothing (at the reference); (0.9, 0.5) and (0.8, 0.25)
    assert {r["trial_id"] for r in f.rows} == {"t000", "t001", "t003"}
    assert f.hypervolume == pytest.approx(0.9 * 0.5 + 0.8 * 0.25)


def test_empty_and_all_failed_experiments_give_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = _experiment(tmp_path, [])
    with pytest.raises(NoResultsError, match="no trials yet"):
        export_experiment(str(exp))
    rows = _rows(3)
    for r in rows:
        r.update(status="failed", error="loss became inf", top1=None)
    (tmp_path / "b").mkdir()
    exp2 = _experiment(tmp_path / "b", rows)
    assert main(["export", str(exp2)]) == 2
    err = capsys.readouterr().err
    assert "no completed trial" in err and "loss became inf" in err and "Traceback" not in err


def test_export_cli_formats_and_objectives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = _experiment(tmp_path, _rows())
    assert main(["export", str(exp), "--format", "md,parquet", "--objectives", "top1,params"]) == 0
    assert (exp / "pareto.md").exists() and (exp / "pareto.parquet").exists()
    assert not (exp / "pareto.png").exists() and not (exp / "pareto.csv").exists()
    fronts = set(pq.read_table(exp / "pareto.parquet").column("front").to_pylist())
    assert fronts == {"top1_vs_flops", "top1_vs_size", "all_objectives"}
    capsys.readouterr()
    assert main(["export", str(exp), "--format", "pdf"]) == 2
    assert "unknown format 'pdf'" in capsys.readouterr().err


def test_export_reads_only_trials_parquet(tmp_path: Path) -> None:
    exp = _experiment(tmp_path, _rows())
    before = (exp / "trials.parquet").read_bytes()
    export_experiment(str(exp))
    assert (exp / "trials.parquet").read_bytes() == before
    assert pq.read_table(io.BytesIO(before)).num_rows == 30

"""The default search, end to end, from one or more checkouts, over seeds: its top1-vs-FLOPs
fronts (SSL and no-SSL), their hypervolumes and how evenly the front covers the FLOPs axis.

Each run is ``python launch/search.py`` of a checkout (the main job a user runs) with
``--seed S --set seed=S``, in its own experiment directory. Per run: the SSL and no-SSL
(lambda = 0) hypervolumes of the top1 x FLOPs front (hypervolume.json), the front's points, the
largest gap in log10 FLOPs between neighbouring front points (the dense baseline included),
wall time, and the test top-1 of the front points (the search chose them on validation).

    python benchmarks/bench_default_search.py --checkouts . /path/to/older/checkout --seeds 0 1 2
    python benchmarks/bench_default_search.py --from-json benchmarks/results/bench_default_search.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    REPO_DIR,
    Col,
    load_average,
    machine_info,
    print_header,
    print_table,
    write_results,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkouts", nargs="+", default=[str(REPO_DIR)])
    p.add_argument("--labels", nargs="+", default=None, help="a name per checkout")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--python", default=sys.executable, help="interpreter (default: this one)")
    p.add_argument("--keep", default=None, help="keep the experiments under this directory")
    p.add_argument("--from-json", default=None, help="summarise a saved run again")
    p.add_argument(
        "--analyse",
        nargs="+",
        default=None,
        help="summarise kept experiment directories (<label>/seed<S>) without running",
    )
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def run_search(python: str, checkout: str, seed: int, where: Path) -> tuple[Path, float]:
    name = f"seed{seed}"
    cmd = [
        python,
        "launch/search.py",
        "--no-dashboard",
        "--storage-path",
        str(where),
        "--name",
        name,
        "--seed",
        str(seed),
        "--set",
        f"seed={seed}",
    ]
    env = {**os.environ, "PYTHONPATH": checkout}
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{checkout} seed {seed} failed:\n{proc.stderr[-3000:]}")
    return where / name, wall


def analyse(exp: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    hv = json.loads((exp / "hypervolume.json").read_text())
    name = next(k for k, v in hv.items() if list(v.get("objectives", [])) == ["top1", "flops"])
    entry = hv[name]
    out: dict[str, Any] = {
        "front": name,
        "hv_ssl": entry["hypervolume"],
        "hv_no_ssl": (entry.get("no_ssl") or {}).get("hypervolume"),
    }
    table = pq.read_table(exp / "pareto.parquet").to_pylist()
    rows = [r for r in table if str(r.get("front", "")).startswith(name)]
    base = next((r for r in table if r.get("role") == "baseline"), None)
    for role in ("search", "reference"):
        pts = sorted((r for r in rows if r.get("role") == role), key=lambda r: r["flops"])
        flops = [float(r["flops"]) for r in pts]
        if base is not None:
            flops.append(float(base["flops"]))
        logs = [math.log10(f) for f in sorted(flops) if f > 0]
        gaps = [b - a for a, b in itertools.pairwise(logs)]
        out[role] = {
            "points": [
                {
                    k: r.get(k)
                    for k in (
                        "trial_id",
                        "ssl_lambda",
                        "flops_budget",
                        "ratio",
                        "actual_ratio",
                        "flops",
                        "top1",
                        "test_top1",
                    )
                }
                for r in pts
            ],
            "n": len(pts),
            "largest_log10_flops_gap": max(gaps) if gaps else None,
            "distinct_rows": len({(r["flops"], r["top1"]) for r in pts}),
        }
    out["dense_flops"] = float(base["flops"]) if base is not None else None
    trials = pq.read_table(exp / "trials.parquet").to_pylist()
    out["points_ok"] = sum(
        1 for t in trials if t.get("role") in (None, "search") and t.get("status") == "ok"
    )
    return out


def hv_on_test(points: list[dict[str, Any]], dense_flops: float | None) -> float | None:
    """Hypervolume (top1 x FLOPs, reference: 0% and the dense FLOPs, both scaled to 1) of the
    front points the search chose on validation, with their test top-1."""
    pts = [
        (float(p["test_top1"]) / 100, float(p["flops"]) / dense_flops)
        for p in points
        if dense_flops and p.get("test_top1") is not None and p.get("flops") is not None
    ]
    hv, best = 0.0, 0.0
    for t, f in sorted((q for q in pts if q[1] <= 1.0), key=lambda q: q[1]):  # cheapest first
        if t > best:  # adds the band between the best top-1 so far and t, from f to the dense
            hv += (t - best) * (1.0 - f)
            best = t
    return hv if pts else None


def summarise(runs: list[dict[str, Any]]) -> None:
    rows = []
    for r in runs:
        a = r["analysis"]
        dense = a.get("dense_flops")
        a["hv_ssl_test"] = hv_on_test(a["search"]["points"], dense)
        a["hv_no_ssl_test"] = hv_on_test(a["reference"]["points"], dense)
        rows.append(
            {
                "label": r["label"],
                "seed": r["seed"],
                "wall": r["wall_s"],
                "ssl": r["analysis"]["hv_ssl"],
                "nossl": r["analysis"]["hv_no_ssl"],
                "ssl_t": a["hv_ssl_test"],
                "nossl_t": a["hv_no_ssl_test"],
                "n": r["analysis"]["search"]["n"],
                "gap": r["analysis"]["search"]["largest_log10_flops_gap"],
                "gap0": r["analysis"]["reference"]["largest_log10_flops_gap"],
            }
        )
    print_table(
        rows,
        [
            Col("label", "checkout"),
            Col("seed", "seed"),
            Col("wall", "wall s", ".0f"),
            Col("ssl", "HV SSL", ".4f"),
            Col("nossl", "HV no-SSL", ".4f"),
            Col("ssl_t", "HV SSL (test)", ".4f"),
            Col("nossl_t", "HV no-SSL (test)", ".4f"),
            Col("n", "SSL front points"),
            Col("gap", "largest log10 FLOPs gap (SSL)", ".3f"),
            Col("gap0", "(no-SSL)", ".3f"),
        ],
        "Default search, top1 vs FLOPs",
    )
    for label in dict.fromkeys(r["label"] for r in rows):
        sel = [r for r in rows if r["label"] == label and r["ssl"] is not None]
        if sel:
            print(
                f"{label}: median HV SSL {statistics.median(r['ssl'] for r in sel):.4f}, "
                f"no-SSL {statistics.median(r['nossl'] for r in sel):.4f} (val); test "
                f"{statistics.median(r['ssl_t'] for r in sel):.4f} / "
                f"{statistics.median(r['nossl_t'] for r in sel):.4f}, "
                f"median largest gap {statistics.median(r['gap'] for r in sel):.3f}"
            )


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    if a.from_json:
        summarise(json.loads(Path(a.from_json).read_text())["results"]["runs"])
        return
    if a.analyse:
        runs = []
        for d in map(Path, a.analyse):
            if (d / "hypervolume.json").exists():
                seed = int(d.name.removeprefix("seed")) if d.name.startswith("seed") else -1
                runs.append(
                    {
                        "label": d.parent.name,
                        "checkout": None,
                        "seed": seed,
                        "wall_s": None,
                        "load": None,
                        "analysis": analyse(d),
                    }
                )
        summarise(runs)
        write_results(
            "bench_default_search",
            machine=machine_info(),
            settings=vars(a),
            results={"runs": runs},
            started=time.time(),
            out=a.out,
        )
        return
    started = time.time()
    machine = machine_info()
    print_header("bench_default_search: the default search end to end", machine)
    labels = a.labels or [Path(c).resolve().name for c in a.checkouts]
    runs = []
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="bds-"))
    try:
        for seed in a.seeds:  # interleaved: a load that comes and goes touches every checkout
            for label, checkout in zip(labels, a.checkouts):
                where = root / label
                exp, wall = run_search(a.python, str(Path(checkout).resolve()), seed, where)
                runs.append(
                    {
                        "label": label,
                        "checkout": checkout,
                        "seed": seed,
                        "wall_s": wall,
                        "load": load_average(),
                        "analysis": analyse(exp),
                    }
                )
                print(f"{label} seed {seed}: {wall:.0f} s", flush=True)
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    summarise(runs)
    write_results(
        "bench_default_search",
        machine=machine,
        settings=vars(a),
        results={"runs": runs},
        started=started,
        out=a.out,
    )


if __name__ == "__main__":
    main()

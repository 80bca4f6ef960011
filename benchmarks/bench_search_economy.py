"""Search economy: hypervolume against wall-clock time and SSL trainings, today's scheme vs the
new one, with REAL end-to-end searches (``sslsearch.search.run_search`` on a local Ray instance).

Schemes (each a full search on ``search_spaces/default.yaml``, 2 CPUs, the dense baseline and
the lambda = 0 references off):

* ``old``: one SSL training per point, TPE (the scheme before issue 12:
  ``economy.points_per_ssl=1``, ``sampler.name=tpe``, no early stopping), 16 points (the
  default space's budget);
* ``new``: one SSL training per 4 points (the points spread along the ratio range), the sampler
  ``auto`` picks (GP on this space), 32 points (a point costs 3 + 4 epochs instead of 12 + 4);
* ``new_es``: ``new`` plus early stopping of dominated points during fine-tuning (compared with
  finished points at the same fine-tune epoch, from epoch 3 of 4, margin 1 top-1 point);
* ``new_k2``: ``new`` with 2 points per SSL model, 32 points;
* ``old_gp``: ``old`` with GP: what the sampler alone gives, 16 points.

Variants run interleaved per seed (every scheme, then the next seed), so machine load hits
them alike. Hypervolume as the export computes it: top1/100 and flops/flops_before, reference
point top1 = 0 and the dense model's FLOPs. Time is measured from the call to ``run_search``
(Ray is started once beforehand) to each point's ``finished_at``.

    python benchmarks/bench_search_economy.py                 # 3 seeds x 5 schemes, ~15 min
    python benchmarks/bench_search_economy.py --seeds 1 --schemes old new
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from _common import Col, machine_info, median, print_header, print_table, write_results

from sslsearch.report import hypervolume, to_minimization

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_SPACE = ROOT / "search_spaces" / "default.yaml"
OLD = ["economy.points_per_ssl=1", "sampler.name=tpe", "early_stopping.enabled=false"]
NEW = ["economy.points_per_ssl=4", "sampler.name=auto"]
SCHEMES: dict[str, list[str]] = {
    # issue 20: today's default (4 points per SSL model on fixed spread stops, GP) against the
    # screen (each SSL model pruned at 16 budgets, the 4 that add the most hypervolume tuned)
    "spread": ["economy.points_per_ssl=4", "economy.screen=0"],
    "screen": ["economy.points_per_ssl=4", "economy.screen=16"],
    # the screen's choice trusted more: 2 tuned points per SSL model, half the points (the
    # same 4 SSL models, half the fine-tunes)
    "screen_k2": ["economy.points_per_ssl=2", "economy.screen=16", "budget.num_samples=8"],
    # plus multi-fidelity: SSL models screened at 1/4 and 1/2 of their SSL epochs, the better
    # half by hypervolume contribution go on; twice the points asked (stopped ones are cheap)
    "screen_mf": [
        "economy.points_per_ssl=4",
        "economy.screen=16",
        "economy.rungs=[0.25,0.5]",
        "economy.keep=0.5",
        "budget.num_samples=32",
    ],
    "old": OLD,
    "new": [*NEW, "early_stopping.enabled=false"],
    "new_es": [*NEW, "early_stopping.enabled=true"],
    "new_k2": ["economy.points_per_ssl=2", "sampler.name=auto", "early_stopping.enabled=false"],
    # the sampler alone: one SSL model per point as before, but GP (what sharing adds over it)
    "old_gp": ["economy.points_per_ssl=1", "sampler.name=gp", "early_stopping.enabled=false"],
}
# The dense baseline and the lambda = 0 reference points are the same for every scheme and run
# after (or beside) the search: off here, so the clocks time the search alone.
COMMON = ["reference.baseline=false", "reference.lambda0=false"]
DIRECTIONS = ["max", "min"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, default=3, help="sampler seeds per scheme")
    p.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. +seeds-1")
    p.add_argument(
        "--from-json",
        default=None,
        help="summarise the runs of an earlier result file again (no search is run)",
    )
    p.add_argument(
        "--schemes", nargs="+", default=["spread", "screen", "screen_mf"], choices=list(SCHEMES)
    )
    p.add_argument(
        "--baseline",
        default="spread",
        choices=list(SCHEMES),
        help="the scheme the others are compared with (issue 12's runs: old)",
    )
    p.add_argument("--num-samples", type=int, default=16, help="points of a search")
    p.add_argument(
        "--new-samples",
        type=int,
        default=32,
        help="points of a new* scheme search (issue 12: a point costs less, same wall time)",
    )
    p.add_argument("--space", default=str(DEFAULT_SPACE))
    p.add_argument("--set", action="append", default=[], help="extra key=value for every run")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def normalised_hv(rows: list[dict[str, Any]]) -> float:
    ok = [r for r in rows if r["status"] == "ok" and r["top1"] is not None]
    if not ok:
        return 0.0
    vals = np.array([[r["top1"] / 100.0, r["flops"] / r["flops_before"]] for r in ok])
    ref = to_minimization(np.array([[0.0, 1.0]]), DIRECTIONS)[0]
    return hypervolume(to_minimization(vals, DIRECTIONS), ref)


def curve(rows: list[dict[str, Any]], t0: float) -> list[dict[str, float]]:
    """HV and SSL trainings after each finished point, by seconds since the search started."""
    done = sorted(
        (r for r in rows if r.get("finished_at") is not None), key=lambda r: r["finished_at"]
    )
    out = []
    for i, r in enumerate(done):
        upto = done[: i + 1]
        out.append(
            {
                "t": float(r["finished_at"]) - t0,
                "hv": normalised_hv(upto),
                "ssl_trainings": len({x["ssl_model_id"] for x in upto if x.get("ssl_model_id")}),
                "points": i + 1,
            }
        )
    return out


def hv_at(c: list[dict[str, float]], t: float) -> float:
    return max([p["hv"] for p in c if p["t"] <= t], default=0.0)


def min_lead(new: list[dict[str, float]], old: list[dict[str, float]], grid: list[float]) -> float:
    """The smallest HV(new) - HV(old) at the given moments (0.0 with none)."""
    return min((hv_at(new, g) - hv_at(old, g) for g in grid), default=0.0)


def time_to(c: list[dict[str, float]], hv: float) -> float | None:
    for p in c:
        if p["hv"] >= hv - 1e-12:
            return p["t"]
    return None


def kendall(pairs: list[list[float]]) -> float | None:
    """Kendall's tau-b of (screened, final) top-1 pairs (None under 3 pairs)."""
    from sslsearch.report import kendall_tau

    return kendall_tau([a for a, _ in pairs], [b for _, b in pairs])


def run_one(args: argparse.Namespace, scheme: str, seed: int, base: Path) -> dict[str, Any]:
    from sslsearch.search import SearchOptions, run_search

    name = f"{scheme}_s{seed}"
    overrides = [
        f"name={name}",
        f"storage_path={base}",
        f"sampler.seed={seed}",
        f"budget.num_samples={args.new_samples if scheme.startswith('new') else args.num_samples}",
        *COMMON,
        *SCHEMES[scheme],
        *args.set,
    ]
    t0 = time.time()
    out = run_search(
        SearchOptions(space=args.space, overrides=overrides, dashboard=False, progress_every_s=1e9)
    )
    wall = time.time() - t0
    rows = pq.read_table(io.BytesIO(Path(out.trials_path).read_bytes())).to_pylist()
    rows = [r for r in rows if r.get("role", "search") == "search" and not r.get("confirm_of")]
    c = curve(rows, t0)
    exp = Path(out.trials_path).parent
    screens = [json.loads(f.read_text()) for f in exp.glob("jobs/*/screen.json")]
    return {
        "scheme": scheme,
        "seed": seed,
        "wall_s": wall,
        "last_point_s": c[-1]["t"] if c else None,
        "final_hv": c[-1]["hv"] if c else 0.0,
        "points_ok": sum(r["status"] == "ok" for r in rows),
        "points_stopped": sum(r["status"] == "stopped" for r in rows),
        "ssl_trainings": c[-1]["ssl_trainings"] if c else 0,
        "curve": c,
        "counts": out.counts,
        # (screened val top-1, final val top-1) of every fine-tuned point with a screen
        "screen_pairs": [
            [r["screen_top1"], r["top1"]]
            for r in rows
            if r["status"] == "ok" and r.get("screen_top1") is not None
        ],
        "screen_seconds": sum(float(x.get("seconds", 0.0)) for x in screens),
        "screened_values": sum(len(x.get("rows", [])) for x in screens),
    }


def _runs_file(args: argparse.Namespace) -> Path:
    out = Path(args.out) if args.out else RESULTS / "bench_search_economy.json"
    return out.with_suffix(".runs.jsonl")


def run_all(args: argparse.Namespace, seeds: list[int]) -> list[dict[str, Any]]:
    """Every scheme for every seed, interleaved, on one local Ray instance."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    base = Path(tempfile.mkdtemp(prefix="sslsearch-economy-"))
    runs: list[dict[str, Any]] = []
    try:
        for seed in seeds:
            for scheme in args.schemes:
                r = run_one(args, scheme, seed, base)
                runs.append(r)
                with open(_runs_file(args), "a") as f:  # each run kept as soon as it ends
                    f.write(json.dumps(r) + "\n")
                print(
                    f"seed {seed} {scheme:7s}: {r['wall_s']:.0f}s, HV {r['final_hv']:.4f}, "
                    f"{r['points_ok']} ok / {r['points_stopped']} stopped, "
                    f"{r['ssl_trainings']} SSL trainings",
                    flush=True,
                )
    finally:
        ray.shutdown()
        shutil.rmtree(base, ignore_errors=True)
    return runs


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.time()
    machine = machine_info()
    print_header("search economy: real searches, hypervolume vs wall time", machine)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    runs: list[dict[str, Any]] = []
    if args.from_json:
        src = Path(args.from_json)
        if src.suffix == ".jsonl":  # the runs of an interrupted or earlier run, one per line
            found = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
            args.measured = f"runs read from {src.name} (written as each search ended)"
        else:
            earlier = json.loads(src.read_text())
            found = earlier["results"]["runs"]
            args.measured = (
                f"runs measured {earlier['started_at']} by `{earlier['command']}` (load "
                f"average at the end {earlier.get('load_average_at_end')}); summarised again"
            )
        runs = [r for r in found if r["scheme"] in args.schemes and r["seed"] in seeds]
    else:
        runs = run_all(args, seeds)

    by = {(r["scheme"], r["seed"]): r for r in runs}
    table = []
    comparisons: dict[str, Any] = {}
    for scheme in args.schemes:
        mine = [r for r in runs if r["scheme"] == scheme]
        row: dict[str, Any] = {
            "scheme": scheme,
            "wall_s": median([r["wall_s"] for r in mine]),
            "final_hv": median([r["final_hv"] for r in mine]),
            "ssl": median([r["ssl_trainings"] for r in mine]),
            "stopped": median([r["points_stopped"] for r in mine]),
        }
        taus = [kendall(r.get("screen_pairs") or []) for r in mine]
        taus = [t for t in taus if t is not None]
        if taus:
            row["tau"] = median(taus)
            row["tau_range"] = f"{min(taus):.2f}..{max(taus):.2f}"
        if scheme != args.baseline and args.baseline in args.schemes:
            fracs, ahead, ahead_after = [], [], []
            for seed in seeds:
                old, new = by[(args.baseline, seed)], by[(scheme, seed)]
                t = time_to(new["curve"], old["final_hv"])
                fracs.append(t / old["last_point_s"] if t is not None else float("inf"))
                grid = sorted([p["t"] for p in old["curve"]] + [p["t"] for p in new["curve"]])
                firsts = [c[0]["t"] for c in (old["curve"], new["curve"]) if c]
                ahead.append(min_lead(new["curve"], old["curve"], grid))
                later = [g for g in grid if g >= max(firsts, default=0.0)]
                ahead_after.append(min_lead(new["curve"], old["curve"], later))
            row["time_to_old_hv"] = median(fracs)
            row["min_hv_lead"] = median(ahead)
            row["min_hv_lead_after"] = median(ahead_after)
            comparisons[scheme] = {
                "time_to_old_final_hv_fraction": fracs,
                "min_hv_lead": ahead,
                "min_hv_lead_once_both_have_a_point": ahead_after,
            }
        table.append(row)
    cols = [
        Col("scheme", "scheme", ""),
        Col("wall_s", "wall s (median)", ".0f"),
        Col("final_hv", "final HV", ".4f"),
        Col("ssl", "SSL trainings", ".0f"),
        Col("stopped", "stopped points", ".0f"),
        Col("time_to_old_hv", "time to baseline's final HV / its time", ".2f"),
        Col("min_hv_lead", "min HV lead over baseline at equal time", "+.4f"),
        Col("min_hv_lead_after", "same, once both have a point", "+.4f"),
        Col("tau", "Kendall tau screen vs final (median)", ".2f"),
        Col("tau_range", "tau range", ""),
    ]
    print_table(
        table,
        cols,
        f"median of {args.seeds} seeds; {args.num_samples} points a search (new*: "
        f"{args.new_samples}); baseline {args.baseline}",
    )
    write_results(
        "bench_search_economy",
        machine=machine,
        settings={k: v for k, v in vars(args).items() if k not in ("out", "measured")}
        | {"schemes_def": SCHEMES},
        results={"table": table, "comparisons": comparisons, "runs": runs},
        started=started,
        notes=[
            "time_to_old_hv: seconds until the scheme's HV reaches old's final HV (same seed) "
            "divided by old's time to its last point; <= 0.5 is the target",
            "min_hv_lead: over every moment either search finished a point, the smallest "
            "HV(scheme) - HV(old); >= 0 means never behind at equal wall time",
            "min_hv_lead_once_both_have_a_point: the same from the moment both searches have "
            "finished a point (a first point a second later reads as a lead of -HV otherwise)",
            "the dense baseline and the lambda = 0 reference points are off (the same for "
            "every scheme); old_gp: one SSL model per point with GP, the sampler's share",
            *([args.measured] if getattr(args, "measured", None) else []),
        ],
        out=args.out,
    )
    _plot(runs, args)


def _plot(runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = {
        "spread": "tab:gray",
        "screen": "tab:orange",
        "screen_mf": "tab:brown",
        "screen_k2": "tab:olive",
        "old": "tab:gray",
        "new": "tab:blue",
        "new_es": "tab:green",
        "new_k2": "tab:red",
        "old_gp": "tab:purple",
    }
    for r in runs:
        c = r["curve"]
        kw = {"color": colors[r["scheme"]], "alpha": 0.8, "where": "post"}
        label = r["scheme"] if r["seed"] == args.first_seed else None
        axes[0].step([p["t"] for p in c], [p["hv"] for p in c], label=label, **kw)
        axes[1].step([p["ssl_trainings"] for p in c], [p["hv"] for p in c], label=label, **kw)
    axes[0].set_xlabel("wall-clock seconds since the search started")
    axes[1].set_xlabel("SSL trainings")
    for ax in axes:
        ax.set_ylabel("hypervolume (top1 x FLOPs)")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"default space, 2 CPUs, {args.seeds} seeds; old {args.num_samples} points, "
        f"new {args.new_samples}"
    )
    fig.tight_layout()
    out = (
        Path(args.out).with_suffix(".png")
        if args.out
        else Path(__file__).resolve().parent / "results" / "bench_search_economy.png"
    )
    fig.savefig(out, dpi=110)
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main()

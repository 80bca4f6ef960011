"""Search efficiency: hypervolume of top-1 x FLOPs reached by each sampler, as a TABULAR benchmark.

Real trials cost seconds each, so samplers x seeds x budgets cannot all run for real. Instead a
discretised space is evaluated once with real trials (``sslsearch.run_trial`` on digits /
vgg_small, short recipe): ssl_lambda on log-spaced values, ratio on an even grid, every prune
way (criterion). Trials with the same lambda share one SSL training through the SSL cache
(``cache_dir``); the table is kept in ``benchmarks/results/bench_search_efficiency_table.json``
and reused by later runs (``--rebuild-table`` to redo it). The samplers then run against the
table with Optuna's ask/tell over the same discrete space (ssl_lambda x ratio x prune_way in
{group_lasso, mean_abs}), built by ``sslsearch.search._sampler.make_sampler``, objectives
[maximise top1, minimise flops].

Hypervolume as sslsearch.report computes it: top1/100 and flops/flops_before, reference point
top1=0 and the dense model's FLOPs. Every figure is given as a share of the reference front's
hypervolume: the whole table (the dense grid). Compared: tpe, nsga2, gp and random after 8, 16,
24 trials over several seeds, and the seed project's hand-made grid (ratios 20/40/60% x the five
criteria at one fixed lambda) at its own trial count.

    python benchmarks/bench_search_efficiency.py            # ~5 min incl. the table (2 cores)
    python benchmarks/bench_search_efficiency.py --seeds 20 --budgets 8 16 24 48
    python benchmarks/bench_search_efficiency.py --rebuild-table --epochs 12 --finetune-epochs 4
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import shutil
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    RESULTS_DIR,
    Col,
    machine_info,
    median,
    print_header,
    print_table,
    quantile,
    versions,
    write_results,
)

from sslsearch.report import hypervolume, pareto_front, to_minimization

ALL_WAYS = ["group_lasso", "mean_abs", "mean", "sum_abs", "sum"]
TABLE_FILE = RESULTS_DIR / "bench_search_efficiency_table.json"
DIRECTIONS = ["max", "min"]  # top1, flops


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    g = p.add_argument_group("the table (real trials)")
    g.add_argument("--arch", default="vgg_small")
    g.add_argument("--dataset", default="digits")
    g.add_argument("--lambda-low", type=float, default=1e-3)
    g.add_argument("--lambda-high", type=float, default=1e-1)
    g.add_argument("--lambda-steps", type=int, default=6, help="log-spaced values")
    g.add_argument("--ratio-low", type=float, default=0.1)
    g.add_argument("--ratio-high", type=float, default=0.9)
    g.add_argument("--ratio-steps", type=int, default=9, help="evenly spaced values")
    g.add_argument("--table-ways", nargs="+", default=ALL_WAYS, help="criteria in the table")
    g.add_argument("--prune-type", default="filter_wise", help="also the ssl type")
    g.add_argument("--epochs", type=int, default=6)
    g.add_argument("--finetune-epochs", type=int, default=2)
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--trial-seed", type=int, default=0)
    g.add_argument("--table", default=str(TABLE_FILE), help="where the table is cached")
    g.add_argument("--rebuild-table", action="store_true", help="redo the table's trials")
    s = p.add_argument_group("the samplers (against the table)")
    s.add_argument("--samplers", nargs="+", default=["tpe", "nsga2", "gp", "random"])
    s.add_argument("--search-ways", nargs="+", default=["group_lasso", "mean_abs"])
    s.add_argument("--seeds", type=int, default=5, help="sampler seeds 0..N-1")
    s.add_argument("--budgets", nargs="+", type=int, default=[8, 16, 24])
    h = p.add_argument_group("the seed project's hand-made grid")
    h.add_argument("--seed-ratios", nargs="+", type=float, default=[0.2, 0.4, 0.6])
    h.add_argument("--seed-ways", nargs="+", default=ALL_WAYS)
    h.add_argument("--seed-lambda", type=float, default=1e-2, help="nearest grid value is used")
    p.add_argument("--workers", type=int, default=2, help="processes (1 torch thread each)")
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/)")
    return p.parse_args(argv)


# ---- the grid ----------------------------------------------------------------------------------


def lambda_grid(args: argparse.Namespace) -> list[float]:
    lo, hi = math.log10(args.lambda_low), math.log10(args.lambda_high)
    return [float(f"{10**x:.6g}") for x in np.linspace(lo, hi, args.lambda_steps)]


def ratio_grid(args: argparse.Namespace) -> list[float]:
    return [
        round(float(x), 6) for x in np.linspace(args.ratio_low, args.ratio_high, args.ratio_steps)
    ]


def table_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Everything that determines the table's numbers (a cached table must match it)."""
    return {
        "arch": args.arch,
        "dataset": args.dataset,
        "prune_type": args.prune_type,
        "ssl_type": args.prune_type,
        "lambdas": lambda_grid(args),
        "ratios": ratio_grid(args),
        "ways": list(args.table_ways),
        "recipe": {
            "epochs": args.epochs,
            "finetune_epochs": args.finetune_epochs,
            "batch_size": args.batch_size,
        },
        "trial_seed": args.trial_seed,
    }


def key(lam: float, ratio: float, way: str) -> str:
    return f"{lam:.6g}|{ratio:.6g}|{way}"


# ---- building the table (real trials) -------------------------------------------------------


def _run_lambda_group(settings: dict[str, Any], lam: float, cache_dir: str) -> list[dict[str, Any]]:
    """All trials of one lambda, in one worker process: the first trains SSL, the rest hit the
    cache."""
    import logging

    warnings.filterwarnings("ignore")
    logging.getLogger("sslsearch").setLevel(logging.WARNING)
    from sslsearch import DataConfig, Recipe, TrialConfig, run_trial

    rec = Recipe(**settings["recipe"])
    rows = []
    for way in settings["ways"]:
        for ratio in settings["ratios"]:
            cfg = TrialConfig(
                arch=settings["arch"],
                data=DataConfig(name=settings["dataset"]),
                recipe=rec,
                ssl_type=settings["ssl_type"],
                ssl_lambda=lam,
                prune_type=settings["prune_type"],
                prune_way=way,
                ratio=ratio,
                seed=settings["trial_seed"],
                threads=1,
                cache_dir=cache_dir,
            )
            t0 = time.perf_counter()
            res = run_trial(cfg, report=lambda m: None)
            wall = time.perf_counter() - t0
            m = res.metrics
            rows.append(
                {
                    "ssl_lambda": lam,
                    "ratio": ratio,
                    "prune_way": way,
                    "status": res.status,
                    "error": res.error,
                    "top1": m.get("top1"),
                    "test_top1": m.get("test_top1"),
                    "flops": m.get("flops"),
                    "flops_before": m.get("flops_before"),
                    "params": m.get("params"),
                    "size_mb": m.get("size_mb"),
                    "actual_ratio": m.get("actual_ratio"),
                    "ssl_top1": m.get("ssl_top1"),
                    "pruned_top1": m.get("pruned_top1"),
                    "exact_zero_share": m.get("exact_zero_share"),
                    "removable_flops_share": m.get("removable_flops_share"),
                    "ssl_reused": m.get("ssl_reused"),
                    "train_seconds": m.get("train_seconds"),
                    "trial_seconds": m.get("trial_seconds"),
                    "wall_seconds": wall,
                }
            )
    return rows


def build_table(args: argparse.Namespace, settings: dict[str, Any]) -> dict[str, Any]:
    cache_dir = tempfile.mkdtemp(prefix="sslsearch-bench-ssl-cache-")
    lambdas = settings["lambdas"]
    n = len(lambdas) * len(settings["ratios"]) * len(settings["ways"])
    print(
        f"building the table: {n} real trials ({len(lambdas)} lambdas x "
        f"{len(settings['ratios'])} ratios x {len(settings['ways'])} ways), "
        f"{args.workers} worker(s), SSL cache {cache_dir}",
        flush=True,
    )
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    try:
        if args.workers > 1:
            with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as ex:
                futs = {
                    ex.submit(_run_lambda_group, settings, lam, cache_dir): lam for lam in lambdas
                }
                for f in futs:
                    rows += f.result()
                    print(
                        f"  lambda {futs[f]:.3g} done ({time.perf_counter() - t0:.0f} s)",
                        flush=True,
                    )
        else:
            for lam in lambdas:
                rows += _run_lambda_group(settings, lam, cache_dir)
                print(f"  lambda {lam:.3g} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    wall = time.perf_counter() - t0
    trained = sum(1 for r in rows if r["ssl_reused"] is False)
    cached = sum(1 for r in rows if r["ssl_reused"] is True)
    ssl_runs = [r for r in rows if r["ssl_reused"] is False]
    return {
        "settings": settings,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "build": {
            "trials": len(rows),
            "ok": sum(1 for r in rows if r["status"] == "ok"),
            "ssl_trainings": trained,
            "ssl_trainings_saved_by_cache": cached,
            "wall_seconds": wall,
            "workers": args.workers,
            "sum_trial_seconds": sum(r["trial_seconds"] or 0.0 for r in rows),
            "median_trial_seconds_trained": median([r["trial_seconds"] for r in ssl_runs])
            if ssl_runs
            else None,
            "median_trial_seconds_cached": median(
                [r["trial_seconds"] for r in rows if r["ssl_reused"] and r["trial_seconds"]]
            )
            if cached
            else None,
        },
        "machine": machine_info(),
        "versions": versions(),
        "rows": rows,
    }


def load_or_build_table(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    settings = table_settings(args)
    path = Path(args.table)
    if path.is_file() and not args.rebuild_table:
        table = json.loads(path.read_text())
        if table.get("settings") == settings:
            print(f"using the cached table {path} (built {table.get('built_at')})", flush=True)
            return table, False
        print(f"the cached table {path} was built with other settings: rebuilding it", flush=True)
    table = build_table(args, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote the table to {path}", flush=True)
    return table, True


# ---- hypervolume -------------------------------------------------------------------------------


def normalised_hv(rows: list[dict[str, Any]], flops_before: float) -> float:
    ok = [r for r in rows if r["status"] == "ok" and r["top1"] is not None]
    if not ok:
        return 0.0
    vals = np.array([[r["top1"] / 100.0, r["flops"] / flops_before] for r in ok])
    ref = to_minimization(np.array([[0.0, 1.0]]), DIRECTIONS)[0]
    return hypervolume(to_minimization(vals, DIRECTIONS), ref)


# ---- the samplers (against the table) -----------------------------------------------------------


def _run_sampler(
    name: str,
    seed: int,
    n_trials: int,
    lambdas: list[float],
    ratios: list[float],
    ways: list[str],
    lookup: dict[str, dict[str, Any]],
    flops_before: float,
) -> dict[str, Any]:
    warnings.filterwarnings("ignore")
    import optuna

    from sslsearch.config import SearchSpace
    from sslsearch.config._space import Budget, Sampler
    from sslsearch.search._sampler import make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace(
        sampler=Sampler(name=name, seed=seed),  # type: ignore[arg-type]
        budget=Budget(num_samples=n_trials),
    )
    sampler = make_sampler(space)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    llo, lhi = math.log10(lambdas[0]), math.log10(lambdas[-1])
    lstep = (lhi - llo) / (len(lambdas) - 1) if len(lambdas) > 1 else None
    rstep = (ratios[-1] - ratios[0]) / (len(ratios) - 1) if len(ratios) > 1 else None
    seen: list[dict[str, Any]] = []
    curve, proposals = [], []
    t0 = time.perf_counter()
    for _ in range(n_trials):
        t = study.ask()
        li = (
            round((t.suggest_float("log10_ssl_lambda", llo, lhi, step=lstep) - llo) / lstep)
            if lstep
            else 0
        )
        ri = (
            round((t.suggest_float("ratio", ratios[0], ratios[-1], step=rstep) - ratios[0]) / rstep)
            if rstep
            else 0
        )
        way = t.suggest_categorical("prune_way", ways) if len(ways) > 1 else ways[0]
        row = lookup[key(lambdas[li], ratios[ri], way)]
        proposals.append([li, ri, way])
        if row["status"] == "ok":
            study.tell(t, [row["top1"], row["flops"]])
            seen.append(row)
        else:
            study.tell(t, state=optuna.trial.TrialState.FAIL)
        curve.append(normalised_hv(seen, flops_before))
    distinct = len({tuple(p) for p in proposals})
    startup = getattr(sampler, "_n_startup_trials", None)
    if name == "nsga2":
        startup = getattr(sampler, "_population_size", None)  # the first generation is random
    return {
        "sampler": name,
        "seed": seed,
        "n_trials": n_trials,
        "random_startup_trials": n_trials if name == "random" else startup,
        "hv_curve": curve,
        "proposals": proposals,
        "distinct_points": distinct,
        "seconds": time.perf_counter() - t0,
    }


def run_samplers(
    args: argparse.Namespace, table: dict[str, Any], flops_before: float, budgets: list[int]
) -> list[dict[str, Any]]:
    """One study per (sampler, seed, budget), with num_samples = the budget: make_sampler sizes
    the random start-up and NSGA-II's population by it, as in a search of that budget."""
    st = table["settings"]
    lookup = {key(r["ssl_lambda"], r["ratio"], r["prune_way"]): r for r in table["rows"]}
    jobs = [(s, seed, b) for b in budgets for s in args.samplers for seed in range(args.seeds)]
    jobs.sort(key=lambda j: (j[0] != "gp", -j[2]))  # the slow ones first
    common = (st["lambdas"], st["ratios"], list(args.search_ways), lookup, flops_before)
    t0 = time.perf_counter()
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as ex:
            futs = [ex.submit(_run_sampler, s, seed, b, *common) for s, seed, b in jobs]
            out = [f.result() for f in futs]
    else:
        out = [_run_sampler(s, seed, b, *common) for s, seed, b in jobs]
    print(
        f"ran {len(jobs)} sampler runs ({len(args.samplers)} samplers x {args.seeds} seeds x "
        f"budgets {budgets}) in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    return sorted(out, key=lambda r: (r["n_trials"], r["sampler"], r["seed"]))


# ---- main ---------------------------------------------------------------------------------------


def _nearest(values: list[float], x: float, log: bool = False) -> float:
    f = (lambda v: math.log10(v)) if log else (lambda v: v)
    return min(values, key=lambda v: abs(f(v) - f(x)))


def _win_rate(a: list[float], b: list[float]) -> float:
    """P(a > b) over all pairs, ties counting half."""
    wins = sum((x > y) + 0.5 * (x == y) for x in a for y in b)
    return wins / (len(a) * len(b))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.time()
    machine = machine_info()
    st_now = table_settings(args)
    missing = [w for w in set(args.search_ways) | set(args.seed_ways) if w not in args.table_ways]
    if missing:
        raise SystemExit(f"ways {missing} are not in the table (--table-ways)")
    for r in args.seed_ratios:
        if not any(abs(r - x) < 1e-9 for x in st_now["ratios"]):
            raise SystemExit(f"seed ratio {r} is not on the ratio grid {st_now['ratios']}")
    print_header(
        "Search efficiency (TABULAR benchmark over a discretised space)",
        machine,
        f"{args.arch} on {args.dataset}; lambdas {st_now['lambdas']}; ratios {st_now['ratios']}; "
        f"table ways {args.table_ways}; samplers search ways {args.search_ways}",
    )
    table, built = load_or_build_table(args)
    rows = table["rows"]
    st = table["settings"]
    flops_before = float(next(r["flops_before"] for r in rows if r["flops_before"]))
    ref_hv = normalised_hv(rows, flops_before)
    space_rows = [r for r in rows if r["prune_way"] in args.search_ways]
    space_hv = normalised_hv(space_rows, flops_before)
    front_idx = pareto_front(
        np.array([[r["top1"], r["flops"]] for r in rows if r["status"] == "ok"]), DIRECTIONS
    )
    ok_rows = [r for r in rows if r["status"] == "ok"]
    reference_front = sorted((ok_rows[i] for i in front_idx), key=lambda r: r["flops"])

    # the seed project's hand-made grid, at the fixed lambda and (for scale) at every lambda
    def seed_grid(lam: float) -> list[dict[str, Any]]:
        return [
            r
            for r in rows
            if r["ssl_lambda"] == lam
            and r["prune_way"] in args.seed_ways
            and any(abs(r["ratio"] - x) < 1e-9 for x in args.seed_ratios)
        ]

    seed_lam = _nearest(st["lambdas"], args.seed_lambda, log=True)
    grid_hv = {lam: normalised_hv(seed_grid(lam), flops_before) / ref_hv for lam in st["lambdas"]}
    grid_n = len(seed_grid(seed_lam))

    budgets = sorted(set(args.budgets) | {grid_n})
    runs = run_samplers(args, table, flops_before, budgets)

    def final_hv(sampler: str, b: int) -> list[float]:
        return [
            r["hv_curve"][-1] / ref_hv
            for r in runs
            if r["sampler"] == sampler and r["n_trials"] == b
        ]

    summary_rows = []
    random_at = {b: final_hv("random", b) for b in budgets}
    for b in budgets:
        for s in args.samplers:
            fr = final_hv(s, b)
            rnd = random_at[b]
            sub = [r for r in runs if r["sampler"] == s and r["n_trials"] == b]
            summary_rows.append(
                {
                    "trials": b,
                    "method": s,
                    "seeds": len(fr),
                    "random_startup": sub[0]["random_startup_trials"] if sub else None,
                    "distinct_median": median([r["distinct_points"] for r in sub]),
                    "hv_fraction_median": median(fr),
                    "hv_fraction_p25": quantile(fr, 0.25),
                    "hv_fraction_p75": quantile(fr, 0.75),
                    "hv_fraction_min": min(fr),
                    "hv_fraction_max": max(fr),
                    "vs_random_median_pp": 100 * (median(fr) - median(rnd)) if rnd else None,
                    "p_beats_random": _win_rate(fr, rnd) if rnd and s != "random" else None,
                    "raw_hv_fraction": fr,
                }
            )
        if b == grid_n:
            summary_rows.append(
                {
                    "trials": b,
                    "method": f"seed grid (lambda {seed_lam:.3g})",
                    "seeds": 1,
                    "hv_fraction_median": grid_hv[seed_lam],
                    "hv_fraction_min": min(grid_hv.values()),
                    "hv_fraction_max": max(grid_hv.values()),
                    "vs_random_median_pp": 100 * (grid_hv[seed_lam] - median(random_at[b])),
                    "p_beats_random": _win_rate([grid_hv[seed_lam]], random_at[b]),
                }
            )

    b = table["build"]
    print(
        "\nTABULAR benchmark: every point of the discretised space "
        f"({len(st['lambdas'])} lambdas x {len(st['ratios'])} ratios x {len(st['ways'])} ways = "
        f"{len(rows)} real trials, one training seed each, {st['recipe']}) was run once; the "
        "samplers only look values up. It measures how fast a sampler finds good points of this "
        "grid, not the noise of real trials."
    )
    print(
        f"table: {b['trials']} trials ({b['ok']} ok), {b['ssl_trainings']} SSL trainings, "
        f"{b['ssl_trainings_saved_by_cache']} saved by the SSL cache; built in "
        f"{b['wall_seconds']:.0f} s with {b['workers']} worker(s)"
        + (" (this run)" if built else f" (cached, built {table.get('built_at')})")
        + f"; median trial {b['median_trial_seconds_trained'] or float('nan'):.2f} s with SSL "
        f"training, {b['median_trial_seconds_cached'] or float('nan'):.2f} s from the cache"
    )
    print(
        f"reference front (whole table): {len(reference_front)} points, hypervolume "
        f"{ref_hv:.4f} (normalised: top1/100, flops/{flops_before:.0f}; reference top1=0, "
        f"dense FLOPs); best reachable in the samplers' space ({'/'.join(args.search_ways)}): "
        f"{space_hv:.4f} = {space_hv / ref_hv:.3f} of it"
    )
    print_table(
        [
            {
                **r,
                "iqr": (
                    f"{r['hv_fraction_p25']:.3f}..{r['hv_fraction_p75']:.3f}"
                    if "hv_fraction_p25" in r
                    else "-"
                ),
                "range": f"{r['hv_fraction_min']:.3f}..{r['hv_fraction_max']:.3f}",
            }
            for r in summary_rows
        ],
        [
            Col("trials", "trials"),
            Col("method", "method"),
            Col("seeds", "seeds"),
            Col("random_startup", "random start-up"),
            Col("distinct_median", "distinct points", ".0f"),
            Col("hv_fraction_median", "HV / reference (median)", ".3f"),
            Col("iqr", "p25..p75"),
            Col("range", "min..max"),
            Col("vs_random_median_pp", "vs random (pp)", "+.1f"),
            Col("p_beats_random", "P(beats random)", ".2f"),
        ],
        title=(
            "Hypervolume (top1 x FLOPs) as a share of the reference front's; seed grid: "
            f"ratios {args.seed_ratios} x {len(args.seed_ways)} criteria at one lambda "
            "(min..max over the grid's lambdas)"
        ),
    )
    print(
        "\nOne study per budget with num_samples = the budget (as a search of that budget runs). "
        "random start-up: trials a sampler draws at random before its model is used "
        "(make_sampler: max(2, min(10, n // 3)) for tpe and gp; NSGA-II's first population of "
        "max(4, min(50, n // 3))); during it a sampler with seed s draws the same points as "
        "random search with seed s. distinct points: median number of different grid points "
        "among the trials (repeats are re-run, as a real search would).\n"
        "P(beats random): share of (seed, random seed) pairs where the method's hypervolume is "
        "higher (ties count half)."
    )
    write_results(
        "bench_search_efficiency",
        machine=machine,
        settings={**vars(args), "table_settings": st},
        results={
            "tabular": True,
            "table_path": str(args.table),
            "table_built_this_run": built,
            "table_build": b,
            "flops_before": flops_before,
            "reference_hv": ref_hv,
            "search_space_hv": space_hv,
            "reference_front": reference_front,
            "seed_grid": {
                "lambda": seed_lam,
                "trials": grid_n,
                "hv_fraction_by_lambda": {f"{k:.6g}": v for k, v in grid_hv.items()},
            },
            "summary": summary_rows,
            "sampler_runs": runs,
            "table_rows": rows,
        },
        started=started,
        notes=[
            "TABULAR benchmark over a discretised space: each grid point is one real trial run "
            "once; samplers query the table with Optuna ask/tell.",
            "Sampler space: log10(ssl_lambda) and ratio as stepped floats (exactly the grid), "
            "prune_way categorical; samplers from sslsearch.search._sampler.make_sampler, one "
            "study per budget with num_samples = the budget (its random start-up and NSGA-II "
            "population depend on it).",
            "Failed trials (if any) are told to Optuna as FAIL and add no point.",
        ],
        out=args.out,
    )


if __name__ == "__main__":
    main()

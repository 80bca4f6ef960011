"""Does the screen rank an SSL model's pruning amounts the way fine-tuning does? The ranking
the chooser acts on, measured within each SSL model on the CIFAR-10 CPU tier.

For each SSL model (the space ``cifar10_cpu``: vgg_small at 16x16, 800 images per class, the
space's recipe; ``--lambdas`` x ``--seeds``, trained and stored by the product, or found in
``--cache``), every value of a grid of ``flops_budget`` (``--values``, geometric over the
space's range) is

* screened by each proxy (validation top-1, the same 1,600 images the screen uses):
  ``bn``: the product's screen (``screen_model``: pruned, BatchNorm statistics re-estimated on
  training batches, no training); ``recover<R>``: the same, then ``R`` steps of plain SGD at
  the fine-tune lr (a short recovery before measuring); ``anneal<R>``: the same with the lr
  decayed to 0 along a cosine over the ``R`` steps, as a fine-tune ends (a finished unit that
  lacks a proxy asked for gets it on the next run, its SSL model read from ``--cache``);
* and fine-tuned by the product (``run_points``, the space's 3 epochs): validation and **test**
  top-1, the final side (the test split: images the proxy never saw).

Reported per proxy, over the SSL models (median and range, and the median's bootstrap 95%
interval):

* ``tau``: Kendall tau between the proxy's top-1 and the final test top-1 across one model's
  values (the within-model ranking); ``val (fine-tuned)`` is the same for the fine-tuned
  validation top-1 against test: the ceiling set by the splits' own noise;
* the chooser: the ``--k`` values ``sslsearch.trial.choose`` picks from the proxy's rows (what
  a screened search fine-tunes), scored by the test hypervolume of their fine-tuned points
  (the protocol's two axes: the cost on a log and on a linear axis) as a share of the best
  ``k`` of the grid (chosen on test: a ceiling no method reaches), with the paired difference
  from ``spread`` (the grid values nearest the spread scheme's ``k`` stops, both ends
  included: what a search without a screen fine-tunes); ``random``: the mean over every
  ``k``-subset;
* across SSL models: at each budget, Kendall tau across every SSL model (all lambdas and
  seeds) between the proxy and the final test top-1: the comparison the rungs of
  multi-fidelity and the choice against other models' screens rest on.

    python benchmarks/bench_screen_rank.py --lambdas 0.05 --seeds 0 1 2 3 4 --floor scale \\
        --cache benchmarks/.cache/tier_pruners/ssl_models --workers 2
    python benchmarks/bench_screen_rank.py --lambdas 0.14 --seeds 0 1 2 3 4 --workers 2
    python benchmarks/bench_screen_rank.py --summarize
"""

from __future__ import annotations

import argparse
import itertools
import math
import shutil
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import Any

from _common import RESULTS_DIR, Col, machine_info, print_header, print_table, write_results
from _protocol import (
    Point,
    Rows,
    bootstrap_median,
    hv_linear,
    hv_log,
    interval_text,
    paired_interval,
    seeds_or_die,
)
from _tier import tier_root
from bench_ssl_adds import base_config

from sslsearch.config import TrialConfig

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--space", default="cifar10_cpu")
    p.add_argument("--lambdas", type=float, nargs="+", default=[0.05, 0.14])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--floor", default=None, help="ssl_floor (default: the product's)")
    p.add_argument("--values", type=int, default=8, help="grid size over the space's range")
    p.add_argument("--recover", type=int, nargs="+", default=[25, 100], help="steps per proxy")
    p.add_argument("--anneal", type=int, nargs="+", default=[100], help="steps per annealed proxy")
    p.add_argument("--k", type=int, default=4, help="values fine-tuned per SSL model")
    p.add_argument("--workers", type=int, default=2, help="processes, one thread each")
    p.add_argument("--data-root", default=None, help="default: the unpacked shared CIFAR-10")
    p.add_argument("--cache", default=str(HERE / ".cache" / "screen_rank" / "ssl_models"))
    p.add_argument("--rows", default=str(RESULTS_DIR / "bench_screen_rank.rows.jsonl"))
    p.add_argument("--work", default=str(HERE / ".cache" / "screen_rank"))
    p.add_argument("--summarize", action="store_true")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def grid(args: argparse.Namespace) -> list[float]:
    """``--values`` budgets, geometric over the space's ``flops_budget`` range."""
    from sslsearch.config import load_space, space_file

    rng = load_space(space_file(args.space)).params["flops_budget"]
    lo, hi = float(rng["low"]), float(rng["high"])
    n = args.values
    return [round(lo * (hi / lo) ** (i / (n - 1)), 5) for i in range(n)]


def unit_config(args: argparse.Namespace, lam: float, seed: int) -> TrialConfig:
    cfg = replace(
        base_config(args, args.data_root or str(tier_root())),
        ssl_lambda=lam,
        seed=1000 * seed,
        cache_dir=args.cache,
    )
    return replace(cfg, ssl_floor=args.floor) if args.floor else cfg


# ---- one unit: an SSL model, its proxies and its fine-tuned grid ------------------------------


def recovered_top1(
    run: Any, cfg: TrialConfig, ssl: Any, value: float, steps: int, anneal: bool = False
) -> float:
    """The screen's pruned copy, then the product's ``recover`` (``economy.screen_steps``):
    ``steps`` of SGD at the fine-tune lr, held or (``anneal``) decayed to 0 along a cosine;
    val top-1."""
    import torch

    from sslsearch.trial._point import point_seed, pruned_copy
    from sslsearch.trial._screen import recover
    from sslsearch.trial._train import evaluate

    seed = point_seed(cfg.seed, 0)
    c = cfg.with_(flops_budget=value)
    model, _ = pruned_copy(run, c, ssl, seed)
    recover(run, c, model, steps, seed, anneal=anneal)
    with torch.no_grad():
        return float(evaluate(model, run.data.val, batch_size=256, device=run.device).top1)


def proxy_names(args: argparse.Namespace) -> dict[str, tuple[int, bool]]:
    """The recovery proxies asked for: name -> (steps, annealed)."""
    out = {f"recover{r}": (r, False) for r in args.recover}
    out.update({f"anneal{r}": (r, True) for r in args.anneal})
    return out


def fill_proxies(
    args: argparse.Namespace,
    run: Any,
    cfg: TrialConfig,
    ssl: Any,
    values: list[float],
    proxies: dict[str, list[float]],
    seconds: dict[str, float],
) -> None:
    """Measure into ``proxies`` (and their times into ``seconds``) the recovery proxies of
    ``args`` that it lacks, at each of ``values``."""
    for name, (steps, anneal) in proxy_names(args).items():
        if name not in proxies:
            t = time.time()
            proxies[name] = [recovered_top1(run, cfg, ssl, v, steps, anneal) for v in values]
            seconds[name] = time.time() - t


def add_proxies(args: argparse.Namespace, row: dict[str, Any]) -> dict[str, Any]:
    """``row`` (a finished unit) with the proxies of ``args`` it lacks measured and added."""
    import torch

    from sslsearch.trial._pipeline import _log_report
    from sslsearch.trial._run import Run
    from sslsearch.trial._ssl import train_ssl_model

    torch.set_num_threads(1)
    cfg = unit_config(args, float(row["lambda"]), int(row["seed"]))
    if row.get("floor") and cfg.ssl_floor != row["floor"]:
        raise SystemExit(f"{row['key']}: trained with ssl_floor {row['floor']}: pass --floor")
    run = Run(cfg, _log_report, {}, None)
    ssl = train_ssl_model(run)
    if ssl.trained:
        raise SystemExit(f"{row['key']}: its SSL model is not in {args.cache}: pass --cache")
    proxies, seconds = dict(row["proxies"]), dict(row["proxy_seconds"])
    fill_proxies(args, run, cfg, ssl, row["values"], proxies, seconds)
    keep = {k: v for k, v in row.items() if k != "key"}
    return {**keep, "proxies": proxies, "proxy_seconds": seconds}


def run_unit(args: argparse.Namespace, lam: float, seed: int, key: str) -> dict[str, Any]:
    import torch

    from sslsearch.trial import ScreenSpec, run_points
    from sslsearch.trial._pipeline import _log_report
    from sslsearch.trial._run import Run
    from sslsearch.trial._ssl import train_ssl_model

    torch.set_num_threads(1)
    t0 = time.time()
    cfg = unit_config(args, lam, seed)
    values = grid(args)
    run = Run(cfg, _log_report, {}, None)
    ssl = train_ssl_model(run)  # a stored model is read, not trained again
    trained = time.time() - t0
    proxies: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}
    from sslsearch.trial._screen import screen_model

    t = time.time()
    rows = screen_model(run, cfg, ssl, ScreenSpec("flops_budget", tuple(values)))
    if [r["value"] for r in rows] != values:
        raise RuntimeError(f"{key}: the screen left values out: {[r['value'] for r in rows]}")
    proxies["bn"], seconds["bn"] = [r["top1"] for r in rows], time.time() - t
    fill_proxies(args, run, cfg, ssl, values, proxies, seconds)
    out = Path(args.work) / key
    t = time.time()
    results = run_points(
        [cfg.with_(flops_budget=v) for v in values],
        state_dir=str(out / "state"),
        points_dir=str(out / "points"),
        point_ids=[f"b{v:g}" for v in values],
    )
    shutil.rmtree(out / "state", ignore_errors=True)
    final = [r.metrics for r in results]
    bad = [f"{v:g}: {r.status}" for v, r in zip(values, results) if r.status != "ok"]
    if bad:
        raise RuntimeError(f"{key}: points did not finish: {bad}")
    return {
        "lambda": lam,
        "seed": seed,
        "floor": cfg.ssl_floor,
        "values": values,
        "ssl_val": ssl.ssl_top1,
        "ssl_test": ssl.ssl_test_top1,
        "removable_flops": final[0].get("removable_flops_share"),
        "proxies": proxies,
        "proxy_seconds": seconds,
        "cost": [m["flops"] / m["flops_before"] for m in final],
        "val": [m["top1"] for m in final],
        "test": [m["test_top1"] for m in final],
        "finetune_seconds": time.time() - t,
        "ssl_seconds": trained,
        "seconds": time.time() - t0,
    }


def run_all(args: argparse.Namespace, rows: Rows) -> None:
    """Every unit of ``--lambdas`` x ``--seeds`` not yet in ``rows``; a finished one that lacks
    a proxy asked for gets it (its SSL model read from ``--cache``, nothing fine-tuned)."""
    keys = [(f"l{lam:g}/s{s}", lam, s) for lam in args.lambdas for s in args.seeds]
    names = set(proxy_names(args))
    todo = [(k, lam, s) for k, lam, s in keys if k not in rows]
    more = [k for k, _, _ in keys if k in rows and not names <= set(rows.rows[k]["proxies"])]
    if not todo and not more:
        return
    work = len(todo) + len(more)
    total = len(rows.rows) + len(todo)
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futs = {pool.submit(run_unit, args, lam, s, k): k for k, lam, s in todo}
        futs.update({pool.submit(add_proxies, args, rows.rows[k]): k for k in more})
        for i, fut in enumerate(as_completed(futs)):
            k = futs[fut]
            row = rows.add(k, fut.result())
            rows.progress(f"{k} ({row['seconds']:.0f} s)", total, work - i - 1)


# ---- the summary ----------------------------------------------------------------------------


def _tau(a: list[float], b: list[float]) -> float:
    from sslsearch.report import kendall_tau

    t = kendall_tau(a, b)
    return math.nan if t is None else float(t)


def chooser_scores(row: dict[str, Any], k: int, axis: str = "log") -> dict[str, float]:
    """Test hypervolume (``axis``: the cost on the log or the linear axis) of the ``k`` values
    each rule picks, as a share of the best ``k`` of the grid on test."""
    from sslsearch.trial import choose

    hv_of = hv_log if axis == "log" else hv_linear
    pts = [Point(c, v, t) for c, v, t in zip(row["cost"], row["val"], row["test"])]
    n = len(pts)
    subsets = list(itertools.combinations(range(n), min(k, n)))
    hv = {s: hv_of([pts[i] for i in s]) for s in subsets}
    best = max(hv.values())
    objectives = [("top1", "max"), ("flops", "min")]
    out = {"random": statistics.mean(hv.values()) / best}
    # the spread scheme's stops (both ends, evenly on the log scale): the nearest grid values
    spread = tuple(sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)}))
    out["spread"] = hv_of([pts[i] for i in spread]) / best
    for name, top1 in row["proxies"].items():
        screened = [
            {"value": v, "top1": t, "flops": c} for v, t, c in zip(row["values"], top1, row["cost"])
        ]
        picks = choose(screened, k, objectives)
        out[name] = hv_of([pts[i] for i in picks]) / best
    return out


def _stats(xs: list[float]) -> dict[str, float]:
    xs = [x for x in xs if not math.isnan(x)]
    med, lo, hi = bootstrap_median(xs)
    return {
        "median": med,
        "ci_low": lo,
        "ci_high": hi,
        "min": min(xs) if xs else math.nan,
        "max": max(xs) if xs else math.nan,
        "n": len(xs),
    }


def summarize(args: argparse.Namespace, rows: Rows) -> dict[str, Any]:
    table: list[dict[str, Any]] = []
    paired: list[dict[str, Any]] = []
    for lam in sorted({float(r["lambda"]) for r in rows.rows.values()}):
        mine = sorted(rows.where(**{"lambda": lam}), key=lambda r: r["seed"])
        names = [n for n in mine[0]["proxies"] if all(n in r["proxies"] for r in mine)]
        scores = {a: [chooser_scores(r, args.k, a) for r in mine] for a in ("log", "linear")}
        taus = {n: [_tau(r["proxies"][n], r["test"]) for r in mine] for n in names}
        taus["val (fine-tuned)"] = [_tau(r["val"], r["test"]) for r in mine]
        per_value = {
            n: statistics.mean(r["proxy_seconds"][n] / len(r["values"]) for r in mine)
            for n in names
        }
        ft = statistics.mean(r["finetune_seconds"] / len(r["values"]) for r in mine)
        for n in [*names, "val (fine-tuned)", "spread", "random"]:
            t = _stats(taus[n]) if n in taus else None
            row: dict[str, Any] = {
                "lambda": lam,
                "ranker": n,
                "models": len(mine),
                "tau": t["median"] if t else None,
                "tau_range": f"{t['min']:.2f}..{t['max']:.2f}" if t else "",
                "tau_ci": f"[{t['ci_low']:.2f}, {t['ci_high']:.2f}]" if t else "",
                "s_per_value": per_value.get(n, ft if n == "val (fine-tuned)" else None),
                "tau_stats": t,
            }
            for a, sc in scores.items():
                if n not in sc[0]:
                    continue
                c = _stats([x[n] for x in sc])
                row[f"hv_{a}"] = c["median"]
                row[f"stats_{a}"] = c
                if n in names:
                    st = paired_interval([x[n] for x in sc], [x["spread"] for x in sc])
                    row[f"vs_spread_{a}"] = interval_text(st, 3)
                    paired.append({"lambda": lam, "ranker": n, "axis": a, "vs": "spread", **st})
            table.append(row)
    across = across_models(list(rows.rows.values()))
    cols = [
        Col("lambda", "lambda", "g"),
        Col("ranker", "ranker"),
        Col("models", "models"),
        Col("tau", "tau (median)", ".2f"),
        Col("tau_range", "range"),
        Col("tau_ci", "95% CI"),
        Col("hv_log", "chosen / best k, test HV log axis", ".3f"),
        Col("vs_spread_log", "- spread [95% CI]"),
        Col("hv_linear", "linear axis", ".3f"),
        Col("vs_spread_linear", "- spread [95% CI]"),
        Col("s_per_value", "s per value", ".1f"),
    ]
    print_table(table, cols)
    print_table(
        across,
        [
            Col("ranker", "ranker"),
            Col("tau", "tau across SSL models at one budget (median over budgets)", ".2f"),
            Col("tau_range", "range over budgets"),
            Col("models", "models"),
        ],
    )
    return {
        "table": table,
        "across_models": across,
        "paired_vs_spread": paired,
        "grid": grid(args),
        "k": args.k,
    }


def across_models(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At each budget of the grid, Kendall tau across every SSL model (all lambdas and seeds)
    between a proxy and the final test top-1: the ranking the rungs and the search's choice
    between SSL models rely on."""
    if len(rows) < 3:
        return []
    names = [n for n in rows[0]["proxies"] if all(n in r["proxies"] for r in rows)]
    names.append("val (fine-tuned)")
    out = []
    for n in names:
        taus = [
            _tau(
                [r["val"][i] if n == "val (fine-tuned)" else r["proxies"][n][i] for r in rows],
                [r["test"][i] for r in rows],
            )
            for i in range(len(rows[0]["values"]))
        ]
        ok = [t for t in taus if not math.isnan(t)]
        out.append(
            {
                "ranker": n,
                "tau": statistics.median(ok) if ok else None,
                "tau_range": f"{min(ok):.2f}..{max(ok):.2f}" if ok else "",
                "per_budget": dict(zip(rows[0]["values"], taus)),
                "models": len(rows),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    machine = machine_info()
    rows = Rows(Path(args.rows))
    print_header("bench_screen_rank: the screen's ranking within an SSL model", machine)
    if not args.summarize:
        seeds_or_die(args.seeds)
        run_all(args, rows)
    if not rows.rows:
        print("no rows yet")
        return 1
    result = summarize(args, rows)
    write_results(
        "bench_screen_rank",
        machine=machine,
        settings=vars(args),
        results=result,
        started=started,
        out=args.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Does one lambda mean the same on every network? The smallest lambda that makes half of the
FLOPs removable, per network and SSL weighting, on digits.

For each network (vgg_small and resnet20 at digits' native 8x8, resnet56, vgg16_bn and
mobilenet_v2 at 32x32), each weighting (``ssl_weighting``) and each seed: filter_wise SSL with
one short recipe (``--epochs``, the trial's training loop: proximal step, flushed every epoch),
then the figures of ``sslsearch.sparsity_report`` and a pruning to ``flops_budget`` 0.5 with the
BatchNorm re-estimation the search does. A lambda *works* when at least half of the dense FLOPs
are removable at no change of the function and top-1 right after pruning is within 1 point of
top-1 after SSL (judged on the validation split, reported on the test split; both with the BN
re-estimation: a short run leaves the running
statistics behind the shrinking weights, which would blame pruning for what it did not do). lambda* is the smallest lambda of a log grid (``--per-decade``
steps per decade) that works, found by bisection (the criterion grows with lambda; a run that
contradicts it is reported); a network's lambda* is the median over seeds. The spread of the
networks' lambda* (in decades) says whether one lambda transfers. lambda = 0 (plain training,
the same pruning and re-estimation) is the reference row.

Resumable: every finished run is appended to ``--rows`` (JSON lines) at once and a rerun skips
it, so a killed run loses at most the run in progress; several processes (e.g. one per core,
``--archs`` split between them) may append to the same file. ``--summarize`` only prints the
tables and writes the JSON from the rows.

    python benchmarks/bench_lambda_transfer.py                     # all (hours on 2 cores)
    python benchmarks/bench_lambda_transfer.py --archs vgg_small resnet20 --seeds 1
    python benchmarks/bench_lambda_transfer.py --summarize
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from _common import RESULTS_DIR, Col, machine_info, print_header, print_table, write_results
from bench_ssl_types import ssl_penalty, train

from sslsearch.config import DataConfig, Recipe
from sslsearch.data import load_datasets
from sslsearch.errors import NotPrunableError
from sslsearch.models import create_model
from sslsearch.pruning import prune, sparsity_report
from sslsearch.trial._train import (
    NonFiniteLoss,
    evaluate,
    recalibrate_bn,
    seed_everything,
)
from sslsearch.vocabulary import SSL_WEIGHTINGS

NETWORKS = {  # arch -> image size (None: digits' native 8x8)
    "vgg_small": None,
    "resnet20": None,
    "resnet56": 32,
    "mobilenet_v2": 32,
    "vgg16_bn": 32,
}
FLOPS_BUDGET = 0.5
MAX_DROP = 1.0  # top-1 points right after pruning vs after SSL
START = 0.1  # first lambda tried when nothing else is known


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--archs", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    p.add_argument(
        "--weightings", nargs="+", default=["gradient", "none", "flops"], choices=SSL_WEIGHTINGS
    )
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument(
        "--only-seeds", nargs="+", type=int, default=None, help="run these seeds (of --seeds)"
    )
    p.add_argument("--epochs", type=int, default=5, help="SSL epochs (the short recipe)")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up epochs (linear)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--per-decade", type=int, default=4, help="grid steps per decade")
    p.add_argument("--low", type=float, default=1e-4, help="smallest lambda of the grid")
    p.add_argument("--high", type=float, default=30.0, help="largest lambda of the grid")
    p.add_argument("--order", choices=("weighting", "seed"), default="weighting")
    p.add_argument("--threads", type=int, default=1)
    # rows from before lambda* was judged on validation (bench_lambda_transfer.rows.jsonl)
    # are not reused
    p.add_argument("--rows", default=str(RESULTS_DIR / "bench_lambda_transfer_val.rows.jsonl"))
    p.add_argument("--summarize", action="store_true", help="only summarise the saved rows")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


# ---- one run -----------------------------------------------------------------------------------


def grid(args: argparse.Namespace) -> list[float]:
    k0 = math.floor(math.log10(args.low) * args.per_decade + 1e-9)
    k1 = math.ceil(math.log10(args.high) * args.per_decade - 1e-9)
    return [float(f"{10 ** (k / args.per_decade):.4g}") for k in range(k0, k1 + 1)]


def run_one(
    arch: str, weighting: str, seed: int, lam: float, args: argparse.Namespace
) -> dict[str, Any]:
    """SSL-train ``arch`` at ``lam`` (0: plain training), measure, prune to the budget."""
    t0 = time.perf_counter()
    c0 = time.process_time()
    data = load_datasets(DataConfig(name="digits", image_size=NETWORKS[arch]))
    rec = Recipe(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, warmup_epochs=args.warmup
    )
    dev = torch.device("cpu")
    example = torch.zeros(1, data.channels, data.image_size, data.image_size)
    seed_everything(seed)
    model = create_model(arch, data.num_classes, data.channels)
    pen = ssl_penalty(model, data, rec, "filter_wise", lam, weighting, seed, example)
    train(model, data, rec, rec.epochs, rec.lr, pen, seed, warmup=rec.warmup_epochs)
    ssl_top1 = evaluate(model, data.test, batch_size=256, device=dev).top1
    # the SSL model with the BN re-estimation a pruned one gets: a short run leaves running
    # statistics behind fast-shrinking weights, and the comparison is then about pruning alone
    same = copy.deepcopy(model)
    recalibrate_bn(same, _calibration(data, rec, seed, dev))
    ssl_top1_bn = evaluate(same, data.test, batch_size=256, device=dev).top1
    ssl_top1_bn_val = evaluate(same, data.val, batch_size=256, device=dev).top1
    del same
    rep = sparsity_report(model, "filter_wise", example)
    row: dict[str, Any] = {
        "arch": arch,
        "weighting": weighting if lam > 0 else "-",
        "seed": seed,
        "lambda": lam,
        "epochs": rec.epochs,
        "lr": rec.lr,
        "warmup": rec.warmup_epochs,
        "ssl_top1": ssl_top1,
        "ssl_top1_bn": ssl_top1_bn,
        "ssl_top1_bn_val": ssl_top1_bn_val,
        **{k: rep[k] for k in ("exact_zero_share", "removable_flops_share")},
        "removable_params_share": rep["removable_params_share"],
        "ssl_at_floor": len(rep["at_floor"]),
        "layers": len(rep["width"]),
        "narrowest_width": rep["narrowest_width"],
        "weights": pen.weights()["n"] if pen is not None else None,
    }
    try:
        r = prune(model, example, prune_type="filter_wise", flops_budget=FLOPS_BUDGET)
        recalibrate_bn(r.model, _calibration(data, rec, seed, dev))
        row["pruned_top1"] = evaluate(r.model, data.test, batch_size=256, device=dev).top1
        row["pruned_top1_val"] = evaluate(r.model, data.val, batch_size=256, device=dev).top1
        row["flops_kept"] = r.flops_after / r.flops_before
        row["prune_at_floor"] = len(r.at_floor)
    except NotPrunableError as e:
        row["pruned_top1"], row["prune_error"] = float("nan"), str(e)
        row["pruned_top1_val"] = float("nan")
    row["works"] = bool(
        row["removable_flops_share"] >= FLOPS_BUDGET
        and row["ssl_top1_bn_val"] - row["pruned_top1_val"] <= MAX_DROP  # chosen on validation
    )
    row["seconds"] = time.perf_counter() - t0
    row["cpu_seconds"] = time.process_time() - c0
    row["load_average"] = list(os.getloadavg())
    return row


def _calibration(data: Any, rec: Recipe, seed: int, dev: torch.device) -> Any:
    """The batches BN statistics are re-estimated on (the search's: un-augmented, shuffled)."""
    return data.train.batches(rec.batch_size, shuffle=True, augment=False, seed=seed, device=dev)


# ---- rows file ---------------------------------------------------------------------------------


def key(
    arch: str, weighting: str, seed: int, lam: float, epochs: int, lr: float
) -> tuple[Any, ...]:
    return (arch, weighting if lam > 0 else "-", seed, float(f"{lam:.4g}"), epochs, lr)


def load_rows(path: str, args: argparse.Namespace) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The saved runs of this recipe (``--epochs``, ``--lr``, ``--warmup``), by key."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text().splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill
        if (r.get("epochs"), r.get("lr"), r.get("warmup")) != (args.epochs, args.lr, args.warmup):
            continue
        out[key(r["arch"], r["weighting"], r["seed"], r["lambda"], r["epochs"], r["lr"])] = r
    return out


def append_row(path: str, row: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(row) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one write per row: lines of two processes never mix
    finally:
        os.close(fd)


def evaluate_at(
    arch: str, w: str, seed: int, lam: float, args: argparse.Namespace
) -> dict[str, Any]:
    rows = load_rows(args.rows, args)  # another process may have run it meanwhile
    k = key(arch, w, seed, lam, args.epochs, args.lr)
    if k in rows:
        return rows[k]
    try:
        row = run_one(arch, w, seed, lam, args)
    except NonFiniteLoss as e:  # a lambda that blows training up does not work
        row = {"arch": arch, "weighting": w if lam > 0 else "-", "seed": seed, "lambda": lam}
        row.update(
            epochs=args.epochs,
            lr=args.lr,
            warmup=args.warmup,
            works=False,
            error=str(e),
            ssl_top1=float("nan"),
        )
        row.update(pruned_top1=float("nan"), removable_flops_share=0.0, exact_zero_share=0.0)
        row.update(ssl_top1_bn=float("nan"))
        row.update(ssl_at_floor=0, layers=0, seconds=0.0, load_average=list(os.getloadavg()))
    append_row(args.rows, row)
    print(
        f"  {arch:12s} {row['weighting']:8s} seed {seed} lambda {lam:<8.4g} removable FLOPs "
        f"{100 * row['removable_flops_share']:5.1f}%  zero {100 * row['exact_zero_share']:5.1f}%  "
        f"top-1 {row['ssl_top1']:.2f} ({row.get('ssl_top1_bn', float('nan')):.2f} BN re-est.) -> "
        f"{row['pruned_top1']:.2f}  at floor "
        f"{row['ssl_at_floor']}/{row['layers']}  {'WORKS' if row['works'] else 'no':5s} "
        f"({row['seconds']:.0f} s, load {row['load_average'][0]:.1f})",
        flush=True,
    )
    return row


# ---- the search for lambda* --------------------------------------------------------------------


def start_index(
    g: list[float], arch: str, w: str, args: argparse.Namespace, rows: dict[tuple[Any, ...], Any]
) -> int:
    """Where to look first: this network's lambda* at other seeds, else other networks'."""
    found = [
        r["lambda"]
        for r in lambda_stars(rows, args.epochs, g).get(w, {}).get(arch, {}).values()
        if r is not None
    ]
    if not found:
        found = [
            s
            for by_seed in lambda_stars(rows, args.epochs, g).get(w, {}).values()
            for s in (r["lambda"] for r in by_seed.values() if r is not None)
        ]
    target = statistics.median(found) if found else START
    return min(range(len(g)), key=lambda i: abs(math.log(g[i]) - math.log(target)))


def search_star(arch: str, w: str, seed: int, args: argparse.Namespace) -> None:
    """Bisection over the grid for the smallest lambda that works: first a half-decade walk from
    the start until one fails and one works (or the grid ends), then halving the gap."""
    g = grid(args)
    n = len(g)
    stride = max(1, args.per_decade // 2)

    def works(j: int) -> bool:
        return bool(evaluate_at(arch, w, seed, g[j], args)["works"])

    rows = load_rows(args.rows, args)
    done = {  # grid index -> works, of the runs already saved for this network, weighting, seed
        j: bool(rows[k]["works"])
        for j in range(n)
        if (k := key(arch, w, seed, g[j], args.epochs, args.lr)) in rows
    }
    if any(done.values()):  # start from what the saved runs bracket already
        hi = min(j for j, ok in done.items() if ok)
        lo = max((j for j, ok in done.items() if not ok and j < hi), default=-1)
        if lo >= 0 or hi == 0:
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if works(mid) else (mid, hi)
            return
    i = start_index(g, arch, w, args, rows)
    lo, hi = (-1, i) if works(i) else (i, n)  # lo fails (-1: below the grid), hi works (n: none)
    while hi == n:
        j = min(lo + stride, n - 1)
        if j == lo:
            return  # nothing on the grid works
        lo, hi = (lo, j) if works(j) else (j, hi)
    while lo == -1:
        j = max(hi - stride, 0)
        if j == hi:
            return  # the grid's smallest lambda works
        lo, hi = (lo, j) if works(j) else (j, hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if works(mid) else (mid, hi)


def lambda_stars(
    rows: dict[tuple[Any, ...], dict[str, Any]], epochs: int, g: list[float]
) -> dict[str, dict[str, dict[int, dict[str, Any] | None]]]:
    """weighting -> arch -> seed -> the row of the smallest lambda that works, given that a
    smaller grid lambda was run and failed (else None: not bracketed yet). The row gets
    ``below``: the largest failing lambda under it (the bracket; the next grid value when the
    bisection ran at ``--per-decade``, a coarser step when a network ran on a coarser grid)."""
    by: dict[tuple[str, str, int], dict[float, dict[str, Any]]] = {}
    for r in rows.values():
        if r["lambda"] <= 0:
            continue
        by.setdefault((r["weighting"], r["arch"], r["seed"]), {})[r["lambda"]] = r
    out: dict[str, dict[str, dict[int, dict[str, Any] | None]]] = {}
    for (w, arch, seed), runs in by.items():
        working = sorted(lam for lam, r in runs.items() if r["works"])
        star = None
        if working:
            lam = working[0]
            below = [x for x, r in runs.items() if x < lam and not r["works"]]
            if below or lam <= g[0] * 1.0001:
                star = {**runs[lam], "below": max(below) if below else None}
        out.setdefault(w, {}).setdefault(arch, {})[seed] = star
    return out


def contradictions(rows: dict[tuple[Any, ...], dict[str, Any]], epochs: int) -> list[str]:
    """Runs where a larger lambda failed although a smaller one worked (same network, seed)."""
    by: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in rows.values():
        if r["lambda"] > 0:
            by.setdefault((r["weighting"], r["arch"], r["seed"]), []).append(r)
    out = []
    for (w, arch, seed), runs in sorted(by.items()):
        runs.sort(key=lambda r: r["lambda"])
        first = next((r["lambda"] for r in runs if r["works"]), None)
        bad = [
            r["lambda"]
            for r in runs
            if first is not None and r["lambda"] > first and not r["works"]
        ]
        if bad:
            out.append(f"{arch} {w} seed {seed}: works at {first:g} but not at {bad}")
    return out


# ---- summary -----------------------------------------------------------------------------------


def summarize(args: argparse.Namespace, started: float, machine: dict[str, Any]) -> None:
    rows = load_rows(args.rows, args)
    g = grid(args)
    stars = lambda_stars(rows, args.epochs, g)
    archs = [a for a in NETWORKS if any(a in stars.get(w, {}) for w in stars)]
    ref = {(r["arch"], r["seed"]): r for r in rows.values() if r["lambda"] == 0}
    table, detail, spreads = [], [], {}
    bounds: dict[str, dict[str, str]] = {}  # weighting -> arch -> a bound, where not bracketed
    for w in [w for w in SSL_WEIGHTINGS if w in stars]:
        line: dict[str, Any] = {"weighting": w}
        medians: list[float] = []
        named: dict[str, float] = {}
        for arch in archs:
            seeds = stars[w].get(arch, {})
            vals = [r["lambda"] for r in seeds.values() if r is not None]
            if not vals:  # not bracketed: the bound the runs give, if any
                mine = [r for r in rows.values() if (r["arch"], r["weighting"]) == (arch, w)]
                ok = [r["lambda"] for r in mine if r["works"]]
                bad = [r["lambda"] for r in mine if not r["works"]]
                line[arch] = (
                    f"<= {min(ok):.3g} (not bracketed)"
                    if ok
                    else f"> {max(bad):.3g} (none works)"
                    if bad
                    else "-"
                )
                if ok or bad:
                    bounds.setdefault(w, {})[arch] = line[arch]
                continue
            med = statistics.median(vals)
            medians.append(med)
            named[arch] = med
            line[arch] = f"{med:.3g} ({'/'.join(f'{v:.3g}' for v in vals)})"
            coarse = [r for r in seeds.values() if r is not None and r["below"] is not None]
            step = 10 ** (1 / args.per_decade) * 1.001
            if any(r["lambda"] / r["below"] > step for r in coarse):  # a coarser bracket
                lows = "/".join(f"{r['below']:.3g}" for r in coarse)
                line[arch] += f", fails at {lows}"
            at = [r for r in seeds.values() if r is not None]
            # the run just below lambda* (the bracket): how sharp the step to half the FLOPs is
            under = [
                rows[k]
                for r in at
                if r["below"] is not None
                and (k := key(arch, w, r["seed"], r["below"], args.epochs, args.lr)) in rows
            ]
            refs = [ref[(arch, r["seed"])] for r in at if (arch, r["seed"]) in ref]
            detail.append(
                {
                    "weighting": w,
                    "arch": arch,
                    "lambda_star": med,
                    "seeds": len(vals),
                    "fails_at": statistics.median(b)
                    if (b := [r["below"] for r in at if r["below"]])
                    else None,
                    "removable_flops_pct": 100 * _mean(r["removable_flops_share"] for r in at),
                    "exact_zero_pct": 100 * _mean(r["exact_zero_share"] for r in at),
                    "ssl_top1": _mean_sd([r["ssl_top1_bn"] for r in at]),
                    "pruned_top1": _mean_sd([r["pruned_top1"] for r in at]),
                    "at_floor": f"{_mean(r['ssl_at_floor'] for r in at):.1f}/{at[0]['layers']}",
                    "below_removable_pct": 100 * _mean(r["removable_flops_share"] for r in under),
                    "below_ssl_top1": _mean_sd([r["ssl_top1_bn"] for r in under]),
                    "ref_ssl_top1": _mean_sd([r["ssl_top1_bn"] for r in refs]) if refs else "-",
                    "ref_pruned_top1": _mean_sd([r["pruned_top1"] for r in refs]) if refs else "-",
                }
            )
        if len(medians) >= 2:
            spread = math.log10(max(medians) / min(medians))
            spreads[w] = {"decades": spread, "networks": len(medians), "lambda_star": named}
            line["spread"] = f"{spread:.2f}"
        table.append(line)
    cols = [Col("weighting", "weighting")] + [Col(a, f"lambda* {a}") for a in archs]
    cols.append(Col("spread", "spread (decades)"))
    print_table(table, cols, title="lambda* per network: median over seeds (per seed)")
    print_table(
        detail,
        [
            Col("weighting", "weighting"),
            Col("arch", "model"),
            Col("lambda_star", "lambda*", ".3g"),
            Col("fails_at", "fails at", ".3g"),
            Col("removable_flops_pct", "removable FLOPs %", ".1f"),
            Col("exact_zero_pct", "exactly zero %", ".1f"),
            Col("ssl_top1", "top-1 after SSL (BN re-est.)"),
            Col("pruned_top1", "right after pruning to 50% FLOPs"),
            Col("below_removable_pct", "at 'fails at': removable %", ".1f"),
            Col("below_ssl_top1", "at 'fails at': top-1 after SSL"),
            Col("ref_ssl_top1", "lambda=0: top-1 (BN re-est.)"),
            Col("ref_pruned_top1", "lambda=0: right after pruning"),
            Col("at_floor", "layers at floor"),
        ],
        title="At lambda* (test top-1 %, mean +- sd over seeds; pruned with BN re-estimation)",
    )
    bad = contradictions(rows, args.epochs)
    for b in bad:
        print("not monotone:", b)
    write_results(
        "bench_lambda_transfer",
        machine=machine,
        settings={**vars(args), "grid": g, "flops_budget": FLOPS_BUDGET, "max_drop": MAX_DROP},
        results={
            "spread": spreads,
            "not_bracketed": bounds,
            "table": table,
            "at_lambda_star": detail,
            "lambda_star_rows": {
                w: {a: {str(s): r for s, r in by.items()} for a, by in d.items()}
                for w, d in stars.items()
            },
            "not_monotone": bad,
            "runs": sorted(
                rows.values(), key=lambda r: (r["arch"], r["weighting"], r["seed"], r["lambda"])
            ),
        },
        started=started,
        notes=[
            "lambda*: the smallest grid lambda whose SSL model has >= 50% of its FLOPs removable "
            "at no change of the function and loses <= 1 point of test top-1 when pruned to a "
            "flops_budget of 0.5 (BN re-estimated); the next grid value below it failed.",
            "The VM was shared with other engineers' jobs (load average in every run).",
        ],
        out=args.out,
    )


def _mean(xs: Any) -> float:
    v = [float(x) for x in xs]
    return sum(v) / len(v) if v else float("nan")


def _mean_sd(xs: list[float]) -> str:
    if not xs:
        return "-"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{_mean(xs):.2f} +- {sd:.2f}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.time()
    torch.set_num_threads(args.threads)
    machine = machine_info()
    if not args.summarize:
        print_header(
            "lambda transfer: smallest lambda with half the FLOPs removable, per network",
            machine,
            f"filter_wise SSL, {args.epochs} epochs, lr {args.lr} (warm-up {args.warmup:g} "
            f"epoch), batch {args.batch_size}; "
            f"grid {args.per_decade}/decade in [{args.low:g}, {args.high:g}]; rows: {args.rows}",
        )
        # weighting-major: the first weighting (the default) on every seed first; seed-major:
        # every weighting on the first seed first (a long network's comparison, early)
        seeds = [s for s in range(args.seeds) if args.only_seeds is None or s in args.only_seeds]
        pairs = [(w, seed) for w in args.weightings for seed in seeds]
        if args.order == "seed":
            pairs.sort(key=lambda p: p[1])
        for w, seed in pairs:
            for arch in args.archs:
                search_star(arch, w, seed, args)
        for seed in seeds:  # the lambda = 0 reference last
            for arch in args.archs:
                evaluate_at(arch, "-", seed, 0.0, args)
    summarize(args, started, machine)


if __name__ == "__main__":
    main()

"""What SSL adds: SSL then pruning against pruning alone, on the CIFAR-10 CPU tier.

The protocol (benchmarks/_protocol.py): paired seeds; the same number of trained models and of
fine-tuned points on each side; every choice on validation, every headline on test; medians of
the paired differences with bootstrap 95% intervals; hypervolume on a linear and a log cost axis.

The tier is the shipped space ``cifar10_cpu`` (its data, model, recipe, SSL type, prune type and
criterion, all read from the space file). For every seed:

* **SSL side:** ``--k`` SSL models, one per lambda of ``--lambdas`` (spread over the space's
  range), each pruned to every FLOPs budget of ``--budgets`` and fine-tuned: the product's own
  trial pipeline (``sslsearch.trial.run_points``), as a search runs it.
* **No-SSL side:** ``--k`` plain models (lambda = 0, training seeds paired with the SSL side's),
  trained with the weight decay that won a pilot on validation (``--wd-grid``, pilot seed
  ``--pilot-seed``, never an evaluated seed), the same budgets and the same fine-tune.

Figures, per seed, SSL minus no-SSL: the test hypervolume of the front each side's points give
when chosen on validation (linear and log axes), and the test top-1 at each budget of the
candidate each side keeps there on validation. Each trained model is one row of the rows file
(appended when it ends; a rerun resumes, with a progress line); ``--summarize`` only reads them.

    python benchmarks/bench_ssl_adds.py --workers 2          # 2 cores: about 75 minutes
    python benchmarks/bench_ssl_adds.py --summarize
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import Any

from _common import RESULTS_DIR, Col, machine_info, print_header, print_table, write_results
from _protocol import (
    Point,
    Rows,
    best_on_val,
    front_scores,
    interval_text,
    paired_columns,
    paired_interval,
    seeds_or_die,
)
from _tier import tier_root

from sslsearch.config import TrialConfig, load_space, space_file

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--space", default="cifar10_cpu")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--k", type=int, default=2, help="trained models per side and seed")
    p.add_argument("--lambdas", type=float, nargs="+", default=[0.05, 0.15])
    p.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.25, 0.125, 0.0625])
    p.add_argument("--wd-grid", type=float, nargs="+", default=[5e-4, 1e-3, 2e-3])
    p.add_argument("--pilot-seed", type=int, default=100)
    p.add_argument("--workers", type=int, default=2, help="processes, one thread each")
    p.add_argument("--data-root", default=None, help="default: the unpacked shared CIFAR-10")
    p.add_argument("--rows", default=str(RESULTS_DIR / "bench_ssl_adds.rows.jsonl"))
    p.add_argument("--work", default=str(HERE / ".cache" / "ssl_adds"))
    p.add_argument("--summarize", action="store_true")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def base_config(args: argparse.Namespace, root: str) -> TrialConfig:
    space = load_space(space_file(args.space))
    fixed = {k: v for k, v in space.params.items() if not isinstance(v, dict)}
    return TrialConfig(
        arch=space.arch,
        data=replace(space.data, root=root),
        recipe=space.recipe,
        ssl_type=fixed.get("ssl_type", "filter_wise"),
        prune_type=fixed.get("prune_type", "filter_wise"),
        prune_way=fixed.get("prune_way", "group_lasso"),
        min_width_share=float(fixed.get("min_width_share", 0.1)),
        threads=1,
        device="cpu",
        latency_repeats=3,
    )


def run_unit(cfg: TrialConfig, budgets: list[float], work: str, key: str) -> dict[str, Any]:
    """One trained model (SSL or plain) pruned to every budget and fine-tuned."""
    import torch

    from sslsearch.trial import run_points

    torch.set_num_threads(1)
    t0 = time.time()
    cfgs = [replace(cfg, flops_budget=b) for b in budgets]
    out = Path(work) / key
    results = run_points(
        cfgs,
        state_dir=str(out / "state"),
        points_dir=str(out / "points"),
        point_ids=[f"b{b:g}" for b in budgets],
    )
    points = []
    for b, r in zip(budgets, results):
        m = r.metrics
        points.append(
            {
                "budget": b,
                "status": r.status,
                "val": m.get("top1"),
                "test": m.get("test_top1"),
                "cost": (m.get("flops") or 0) / max(m.get("flops_before") or 1, 1),
                "pruned_val": m.get("pruned_top1"),
                "flops": m.get("flops"),
            }
        )
    first = results[0].metrics
    shutil.rmtree(out / "state", ignore_errors=True)  # the points stay: a rerun skips them
    return {
        "ssl_val": first.get("ssl_top1"),
        "removable_flops": first.get("removable_flops_share"),
        "points": points,
        "seconds": time.time() - t0,
    }


def units(
    args: argparse.Namespace, base: TrialConfig, wd: float | None
) -> list[tuple[str, dict[str, Any], TrialConfig]]:
    """(key, description, config) of every trained model still to describe the comparison."""
    out = []
    if wd is None:  # the pilot: plain models at each weight decay, on the pilot seed
        for w in args.wd_grid:
            rec = replace(base.recipe, weight_decay=w)
            cfg = replace(base, recipe=rec, ssl_lambda=0.0, seed=args.pilot_seed)
            out.append((f"pilot/wd{w:g}", {"phase": "pilot", "wd": w}, cfg))
        return out
    for seed in args.seeds:
        for j in range(args.k):
            train_seed = 1000 * seed + j  # paired: candidate j of both sides starts alike
            lam = args.lambdas[j % len(args.lambdas)]
            ssl = replace(base, ssl_lambda=lam, seed=train_seed)
            out.append(
                (
                    f"s{seed}/ssl{j}",
                    {"phase": "main", "side": "ssl", "seed": seed, "j": j, "lambda": lam},
                    ssl,
                )
            )
            plain = replace(
                base,
                ssl_lambda=0.0,
                seed=train_seed,
                recipe=replace(base.recipe, weight_decay=wd),
            )
            out.append(
                (
                    f"s{seed}/plain{j}",
                    {"phase": "main", "side": "plain", "seed": seed, "j": j, "wd": wd},
                    plain,
                )
            )
    return out


def run_all(
    args: argparse.Namespace, rows: Rows, todo: list[tuple[str, dict[str, Any], TrialConfig]]
) -> None:
    left = [(k, d, c) for k, d, c in todo if k not in rows]
    total = len(rows.rows) + len(left)
    if not left:
        return
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futs = {pool.submit(run_unit, c, args.budgets, args.work, k): (k, d) for k, d, c in left}
        for i, fut in enumerate(as_completed(futs)):
            k, d = futs[fut]
            row = rows.add(k, {**d, **fut.result()})
            rows.progress(f"{k} ({row['seconds']:.0f} s)", total, len(left) - i - 1)


def points_of(row: dict[str, Any]) -> list[Point]:
    return [
        Point(p["cost"], p["val"], p["test"])
        for p in row["points"]
        if p["status"] == "ok" and p["val"] is not None
    ]


def pilot_choice(args: argparse.Namespace, rows: Rows) -> float | None:
    pilots = rows.where(phase="pilot")
    if len(pilots) < len(args.wd_grid):
        return None
    fronts = {r["wd"]: front_scores(points_of(r)) for r in pilots}
    return max(fronts, key=lambda w: fronts[w]["hv_val"] + fronts[w]["hv_log_val"])


def summarize(args: argparse.Namespace, rows: Rows, wd: float) -> dict[str, Any]:
    per_seed: dict[int, dict[str, Any]] = {}
    for seed in args.seeds:
        sides = {}
        for side in ("ssl", "plain"):
            rs = [r for r in rows.where(phase="main", seed=seed, side=side)]
            if len(rs) < args.k:
                break
            pts = [p for r in rs for p in points_of(r)]
            by_budget = {}
            for b in args.budgets:
                cands = [
                    Point(p["cost"], p["val"], p["test"])
                    for r in rs
                    for p in r["points"]
                    if p["budget"] == b and p["status"] == "ok"
                ]
                if cands:
                    by_budget[b] = best_on_val(cands)
            before = {
                b: max(
                    (
                        p["pruned_val"]
                        for r in rs
                        for p in r["points"]
                        if p["budget"] == b and p.get("pruned_val") is not None
                    ),
                    default=None,
                )
                for b in args.budgets
            }
            sides[side] = {"front": front_scores(pts), "budget": by_budget, "before": before}
        if len(sides) == 2:
            per_seed[seed] = sides
    seeds = sorted(per_seed)
    table = []
    for metric, label in (
        ("hv_test", "test HV, linear FLOPs axis"),
        ("hv_log_test", "test HV, log FLOPs axis"),
        ("hv_val", "validation HV, linear (chose the front)"),
    ):
        st = paired_interval(
            [per_seed[s]["ssl"]["front"][metric] for s in seeds],
            [per_seed[s]["plain"]["front"][metric] for s in seeds],
        )
        table.append({"figure": label, **st, "text": interval_text(st, 4)})
    for b in args.budgets:
        have = [
            s
            for s in seeds
            if b in per_seed[s]["ssl"]["budget"] and b in per_seed[s]["plain"]["budget"]
        ]
        st = paired_interval(
            [per_seed[s]["ssl"]["budget"][b].test for s in have],
            [per_seed[s]["plain"]["budget"][b].test for s in have],
        )
        table.append(
            {"figure": f"test top-1 at {b:.2%} of the FLOPs", **st, "text": interval_text(st, 2)}
        )
    for b in args.budgets:
        have = [
            s
            for s in seeds
            if per_seed[s]["ssl"]["before"][b] is not None
            and per_seed[s]["plain"]["before"][b] is not None
        ]
        st = paired_interval(
            [per_seed[s]["ssl"]["before"][b] for s in have],
            [per_seed[s]["plain"]["before"][b] for s in have],
        )
        table.append(
            {
                "figure": f"val top-1 right after pruning to {b:.2%} (no fine-tune; best of k)",
                **st,
                "text": interval_text(st, 2),
            }
        )
    return {
        "seeds": seeds,
        "plain_weight_decay": wd,
        "table": table,
        "per_seed": {
            s: {
                side: {
                    "front": v["front"],
                    "budget": {str(b): vars(p) for b, p in v["budget"].items()},
                }
                for side, v in per_seed[s].items()
            }
            for s in seeds
        },
    }


def main(argv: list[str] | None = None) -> None:
    started = time.time()
    args = parse_args(argv)
    seeds_or_die(args.seeds)
    if len(args.lambdas) < args.k:
        raise SystemExit(f"--k {args.k} needs at least {args.k} --lambdas")
    rows = Rows(Path(args.rows))
    machine = machine_info()
    print_header("What SSL adds on the CIFAR-10 CPU tier", machine)
    base = base_config(args, args.data_root or str(tier_root()))
    if not args.summarize:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        run_all(args, rows, units(args, base, None))
    wd = pilot_choice(args, rows)
    if wd is None:
        raise SystemExit("the weight-decay pilot has not finished: run without --summarize")
    print(f"no-SSL weight decay chosen on validation: {wd:g}")
    if not args.summarize:
        run_all(args, rows, units(args, base, wd))
    out = summarize(args, rows, wd)
    print_table(
        out["table"],
        [
            Col("figure", "figure", "s"),
            *paired_columns("SSL", "no-SSL"),
        ],
    )
    write_results(
        "bench_ssl_adds",
        machine=machine,
        settings={**vars(args), "space": args.space},
        results=out,
        started=started,
        out=args.out,
    )


if __name__ == "__main__":
    main()

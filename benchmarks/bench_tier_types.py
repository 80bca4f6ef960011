"""What each SSL type adds on the CIFAR-10 CPU tier: every SSL type against lambda = 0.

The protocol (benchmarks/_protocol.py) and the units of ``bench_ssl_adds.py``: one trained model
pruned to each FLOPs budget of ``--budgets`` and fine-tuned by the product's own trial pipeline.
For each SSL type of ``--types`` (pruned by the prune type that removes what it zeroes):

* **lambda, chosen on validation:** on ``--pilot-seed`` (never an evaluated seed), one SSL model
  per value of ``--lambdas``; the type keeps the one whose front has the larger validation
  hypervolume (linear + log axes), the rule of bench_ssl_adds's weight-decay pilot.
* **Evaluation:** for every seed, one SSL model of that type at its lambda against one plain
  model (lambda = 0, the weight decay bench_ssl_adds chose on validation), the same training
  seed, budgets and fine-tune: one trained model and four fine-tuned points on each side.

The plain models and the filter_wise models at 0.05 and 0.15 are bench_ssl_adds's own units
(same configuration, same training seeds): their rows are read from ``--adds-rows``, not run
again. Figures per type, SSL type minus plain, paired by seed: the test hypervolume of the
front chosen on validation (linear and log FLOPs axes), the test top-1 at each budget, and the
validation top-1 right after pruning (before fine-tuning). Resumable (``Rows``).

    python benchmarks/bench_tier_types.py --workers 2     # 2 cores: about 80 minutes
    python benchmarks/bench_tier_types.py --summarize
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from _common import RESULTS_DIR, Col, machine_info, print_header, print_table, write_results
from _protocol import (
    Rows,
    front_scores,
    interval_text,
    paired_columns,
    paired_interval,
    seeds_or_die,
)
from _tier import tier_root
from bench_ssl_adds import base_config, points_of, run_all

from sslsearch.config import TrialConfig

HERE = Path(__file__).resolve().parent
PRUNE_OF = {  # the prune type that removes what each SSL type zeroes
    "filter_wise": "filter_wise",
    "channel_wise": "channel_wise",
    "filter_and_channel_wise": "filter_and_channel_wise",
    "group_wise": "filter_and_channel_wise",
}
ADDS_LAMBDAS = [0.05, 0.15]  # bench_ssl_adds's SSL side: candidate j trains at ADDS_LAMBDAS[j]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--space", default="cifar10_cpu")
    p.add_argument("--types", nargs="+", default=list(PRUNE_OF), choices=list(PRUNE_OF))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--lambdas", type=float, nargs="+", default=ADDS_LAMBDAS)
    p.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.25, 0.125, 0.0625])
    p.add_argument("--pilot-seed", type=int, default=100)
    p.add_argument("--workers", type=int, default=2, help="processes, one thread each")
    p.add_argument("--data-root", default=None, help="default: the unpacked shared CIFAR-10")
    p.add_argument("--rows", default=str(RESULTS_DIR / "bench_tier_types.rows.jsonl"))
    p.add_argument("--adds-rows", default=str(RESULTS_DIR / "bench_ssl_adds.rows.jsonl"))
    p.add_argument("--work", default=str(HERE / ".cache" / "tier_types"))
    p.add_argument("--summarize", action="store_true")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def typed(base: TrialConfig, ssl_type: str, lam: float, seed: int) -> TrialConfig:
    return replace(
        base, ssl_type=ssl_type, prune_type=PRUNE_OF[ssl_type], ssl_lambda=lam, seed=seed
    )


def pilot_units(args: argparse.Namespace, base: TrialConfig) -> list[tuple[str, dict, Any]]:
    return [
        (
            f"pilot/{t}/lam{lam:g}",
            {"phase": "pilot", "type": t, "lambda": lam},
            typed(base, t, lam, args.pilot_seed),
        )
        for t in args.types
        for lam in args.lambdas
    ]


def chosen_lambda(args: argparse.Namespace, rows: Rows, ssl_type: str) -> float | None:
    pilots = rows.where(phase="pilot", type=ssl_type)
    if len(pilots) < len(args.lambdas):
        return None
    fronts = {r["lambda"]: front_scores(points_of(r)) for r in pilots}
    return max(fronts, key=lambda lam: fronts[lam]["hv_val"] + fronts[lam]["hv_log_val"])


def candidate(lam: float) -> int:
    """bench_ssl_adds's candidate index whose training seed this lambda's models share."""
    return ADDS_LAMBDAS.index(lam) if lam in ADDS_LAMBDAS else 0


def main_units(
    args: argparse.Namespace, base: TrialConfig, rows: Rows, adds: Rows
) -> list[tuple[str, dict, Any]]:
    out = []
    for t in args.types:
        lam = chosen_lambda(args, rows, t)
        if lam is None:
            continue
        j = candidate(lam)
        for seed in args.seeds:
            if t == "filter_wise" and lam in ADDS_LAMBDAS and f"s{seed}/ssl{j}" in adds:
                continue  # bench_ssl_adds ran this very model
            out.append(
                (
                    f"s{seed}/{t}",
                    {"phase": "main", "type": t, "seed": seed, "lambda": lam},
                    typed(base, t, lam, 1000 * seed + j),
                )
            )
    return out


def side_rows(
    args: argparse.Namespace, rows: Rows, adds: Rows, t: str, seed: int, lam: float
) -> tuple[dict | None, dict | None]:
    j = candidate(lam)
    ssl = rows.rows.get(f"s{seed}/{t}")
    if ssl is None and t == "filter_wise":
        ssl = adds.rows.get(f"s{seed}/ssl{j}")
    return ssl, adds.rows.get(f"s{seed}/plain{j}")


def at_budget(row: dict, b: float, field: str) -> float | None:
    for p in row["points"]:
        if p["budget"] == b and p["status"] == "ok":
            return p.get(field)
    return None


def summarize(args: argparse.Namespace, rows: Rows, adds: Rows) -> dict[str, Any]:
    table: list[dict[str, Any]] = []
    per_type: dict[str, Any] = {}
    for t in args.types:
        lam = chosen_lambda(args, rows, t)
        if lam is None:
            continue
        pairs = {}
        for seed in args.seeds:
            ssl, plain = side_rows(args, rows, adds, t, seed, lam)
            if ssl is not None and plain is not None:
                pairs[seed] = (ssl, plain)
        seeds = sorted(pairs)
        fronts = {
            s: [front_scores(points_of(pairs[s][0])), front_scores(points_of(pairs[s][1]))]
            for s in seeds
        }
        figures: list[tuple[str, list[float | None], list[float | None], int]] = [
            (
                "test HV, linear",
                [fronts[s][0]["hv_test"] for s in seeds],
                [fronts[s][1]["hv_test"] for s in seeds],
                4,
            ),
            (
                "test HV, log",
                [fronts[s][0]["hv_log_test"] for s in seeds],
                [fronts[s][1]["hv_log_test"] for s in seeds],
                4,
            ),
        ]
        for b in args.budgets:
            figures.append(
                (
                    f"test top-1 at {b:.2%}",
                    [at_budget(pairs[s][0], b, "test") for s in seeds],
                    [at_budget(pairs[s][1], b, "test") for s in seeds],
                    2,
                )
            )
        for b in args.budgets:
            figures.append(
                (
                    f"val top-1 after pruning to {b:.2%}, no fine-tune",
                    [at_budget(pairs[s][0], b, "pruned_val") for s in seeds],
                    [at_budget(pairs[s][1], b, "pruned_val") for s in seeds],
                    2,
                )
            )
        figures.append(
            (
                "SSL model's val top-1 (before pruning)",
                [pairs[s][0].get("ssl_val") for s in seeds],
                [pairs[s][1].get("ssl_val") for s in seeds],
                2,
            )
        )
        for label, a, b_, digits in figures:
            keep = [i for i in range(len(seeds)) if a[i] is not None and b_[i] is not None]
            st = paired_interval([a[i] for i in keep], [b_[i] for i in keep])  # type: ignore[misc]
            table.append(
                {"type": t, "lambda": lam, "figure": label, **st, "text": interval_text(st, digits)}
            )
        per_type[t] = {
            "lambda": lam,
            "seeds": seeds,
            "removable_flops": {s: pairs[s][0].get("removable_flops") for s in seeds},
            "fronts": {s: {"ssl": fronts[s][0], "plain": fronts[s][1]} for s in seeds},
        }
    return {
        "table": table,
        "per_type": per_type,
        "pilot": {
            r["key"]: {
                "lambda": r["lambda"],
                "front": front_scores(points_of(r)),
                "ssl_val": r.get("ssl_val"),
            }
            for r in rows.where(phase="pilot")
        },
    }


def main(argv: list[str] | None = None) -> None:
    started = time.time()
    args = parse_args(argv)
    seeds_or_die(args.seeds)
    rows, adds = Rows(Path(args.rows)), Rows(Path(args.adds_rows))
    if not adds.where(phase="main"):
        raise SystemExit(f"{args.adds_rows}: no bench_ssl_adds rows (run bench_ssl_adds first)")
    machine = machine_info()
    print_header("What each SSL type adds on the CIFAR-10 CPU tier", machine)
    base = base_config(args, args.data_root or str(tier_root()))
    if not args.summarize:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        run_all(args, rows, pilot_units(args, base))
        run_all(args, rows, main_units(args, base, rows, adds))
    for t in args.types:
        print(f"{t}: lambda chosen on validation: {chosen_lambda(args, rows, t)}")
    out = summarize(args, rows, adds)
    print_table(
        out["table"],
        [
            Col("type", "SSL type", "s"),
            Col("lambda", "lambda", "g"),
            Col("figure", "figure", "s"),
            *paired_columns("SSL", "lambda 0"),
        ],
    )
    write_results(
        "bench_tier_types",
        machine=machine,
        settings=vars(args),
        results=out,
        started=started,
        out=args.out,
    )


if __name__ == "__main__":
    main()

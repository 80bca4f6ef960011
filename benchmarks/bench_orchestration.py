"""Orchestration overhead of the search (Ray Tune + Optuna) on the embedded default task.

Runs ``sslsearch.search.run_search`` on ``search_spaces/default.yaml`` (digits, vgg_small) with
short trials, on a local Ray instance started once by this script (``ray.init(num_cpus=2,
include_dashboard=False)``, the time it takes is reported), for every combination of
max_concurrent (1, 2) and actor reuse (on, off); the runs of one repeat go in a rotating order.
From each run's trials.parquet:

* overhead = search wall time / sum of the trials' own compute time (``trial_seconds``, from
  run_trial's start to its final metrics); with 2 slots the ideal wall time is half that sum,
  so "slot efficiency" = sum(trial_seconds) / (wall * max_concurrent) is also given;
* per-trial start-up cost: on each slot, the gap between one trial's ``finished_at`` and the
  next trial's ``started_at`` (final checkpoint, Tune and Optuna bookkeeping, actor start-up
  when actors are not reused, dataset loading in a new worker);
* before the first trial (Tuner set-up, first actors) and after the last one (final
  checkpoint, trials.parquet, the Pareto exports).

    python benchmarks/bench_orchestration.py               # ~6 min on 2 CPU cores
    python benchmarks/bench_orchestration.py --num-samples 32 --repeats 3 --epochs 4
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    Col,
    machine_info,
    median,
    print_header,
    print_table,
    summary,
    write_results,
)

from sslsearch.search import SearchOptions, run_search

DEFAULT_SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "default.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--space", default=str(DEFAULT_SPACE))
    p.add_argument("--num-samples", type=int, default=8, help="trials per search")
    p.add_argument("--epochs", type=int, default=2, help="recipe.epochs (SSL training)")
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 2], help="max_concurrent")
    p.add_argument(
        "--reuse", nargs="+", default=["on", "off"], choices=["on", "off"], help="actor reuse"
    )
    p.add_argument("--repeats", type=int, default=2, help="runs of every configuration")
    p.add_argument("--num-cpus", type=int, default=2, help="of the local Ray instance")
    p.add_argument("--set", action="append", default=[], help="extra space override key=value")
    p.add_argument("--keep", action="store_true", help="keep the experiment directories")
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/)")
    return p.parse_args(argv)


def slot_gaps(rows: list[dict[str, Any]]) -> list[float]:
    """Idle time of a slot between two trials: for every trial but the first on each slot, its
    ``started_at`` minus the earliest not yet taken-over ``finished_at`` before it (first in,
    first out, as Tune hands freed slots on)."""
    free: list[float] = []  # finish times whose slot no later trial has taken yet
    gaps = []
    for r in sorted(rows, key=lambda r: r["started_at"]):
        before = [f for f in free if f <= r["started_at"]]
        if before:
            f = min(before)
            free.remove(f)
            gaps.append(r["started_at"] - f)
        free.append(r["finished_at"])
    return gaps


def one_run(
    args: argparse.Namespace, base: Path, concurrency: int, reuse: bool, rep: int
) -> dict[str, Any]:
    import pyarrow.parquet as pq

    name = f"c{concurrency}_reuse{'on' if reuse else 'off'}_r{rep}"
    overrides = [
        f"storage_path={base}",
        f"name={name}",
        f"budget.num_samples={args.num_samples}",
        f"budget.max_concurrent={concurrency}",
        f"recipe.epochs={args.epochs}",
        f"recipe.finetune_epochs={args.finetune_epochs}",
        "economy.points_per_ssl=1",  # one point per Tune trial: what this benchmark times
        *args.set,
    ]
    opts = SearchOptions(
        space=args.space,
        overrides=overrides,
        reuse_actors=reuse,
        dashboard=False,
        num_cpus=args.num_cpus,
        progress_every_s=1e9,
    )
    t_call = time.time()
    t0 = time.perf_counter()
    outcome = run_search(opts)
    wall = time.perf_counter() - t0
    t_return = time.time()
    table = pq.read_table(outcome.trials_path).to_pylist()
    ok = [r for r in table if r["status"] == "ok"]
    trial_s = [r["trial_seconds"] for r in ok]
    first_start = min(r["started_at"] for r in ok)
    last_finish = max(r["finished_at"] for r in ok)
    gaps = slot_gaps(ok)
    total = sum(trial_s)
    res = {
        "name": name,
        "max_concurrent": concurrency,
        "reuse_actors": reuse,
        "repeat": rep,
        "counts": outcome.counts,
        "trials_ok": len(ok),
        "wall_s": wall,
        "sum_trial_s": total,
        "sum_train_s": sum(r["train_seconds"] for r in ok),
        "overhead": wall / total,
        "slot_efficiency": total / (wall * concurrency),
        "span_s": last_finish - first_start,
        "span_overhead": (last_finish - first_start) / total,
        "before_first_trial_s": first_start - t_call,
        "after_last_trial_s": t_return - last_finish,
        "gap_median_s": median(gaps) if gaps else None,
        "gaps": summary(gaps),
        "per_trial_overhead_s": (wall - total / concurrency) / len(ok),
        "raw_gaps_s": gaps,
        "raw_trials": [
            {
                k: r[k]
                for k in (
                    "trial_id",
                    "ssl_lambda",
                    "ratio",
                    "top1",
                    "flops",
                    "trial_seconds",
                    "train_seconds",
                    "started_at",
                    "finished_at",
                    "threads",
                    "ssl_reused",
                )
            }
            for r in table
        ],
    }
    print(
        f"  {name}: wall {wall:.1f} s, trials {total:.1f} s (x{res['overhead']:.2f}), "
        f"slot gap median {res['gap_median_s'] or float('nan'):.2f} s, "
        f"before first {res['before_first_trial_s']:.1f} s, after last "
        f"{res['after_last_trial_s']:.1f} s",
        flush=True,
    )
    return res


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.time()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    machine = machine_info()
    configs = [(c, r == "on") for c in args.concurrency for r in args.reuse]
    print_header(
        "Search orchestration overhead (Ray Tune + Optuna)",
        machine,
        f"space {args.space} with {args.num_samples} trials, epochs {args.epochs}+"
        f"{args.finetune_epochs}; configurations {configs}, {args.repeats} repeat(s), "
        f"order rotated per repeat",
    )
    import ray

    from sslsearch.search._cluster import tune_environment

    tune_environment()  # the environment run_search gives a Ray instance it starts itself
    # as sslsearch's own connect(): token authentication stays on, minus its warning
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.ERROR
    )
    base = Path(tempfile.mkdtemp(prefix="sslsearch-bench-orch-"))
    t0 = time.perf_counter()
    ray.init(
        num_cpus=args.num_cpus,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    ray_start = time.perf_counter() - t0
    print(f"ray.init(num_cpus={args.num_cpus}, include_dashboard=False): {ray_start:.1f} s")
    runs = []
    ray_stop = None
    try:
        for rep in range(args.repeats):
            k = rep % len(configs)
            for c, reuse in configs[k:] + configs[:k]:
                runs.append(one_run(args, base, c, reuse, rep))
    finally:
        t1 = time.perf_counter()
        ray.shutdown()
        ray_stop = time.perf_counter() - t1
        if args.keep:
            print(f"experiments kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print(f"ray.shutdown(): {ray_stop:.1f} s")

    agg = []
    for c, reuse in configs:
        sub = [r for r in runs if r["max_concurrent"] == c and r["reuse_actors"] == reuse]
        gaps = [g for r in sub for g in r["raw_gaps_s"]]
        agg.append(
            {
                "max_concurrent": c,
                "reuse": "on" if reuse else "off",
                "runs": len(sub),
                "wall_s": median([r["wall_s"] for r in sub]),
                "sum_trial_s": median([r["sum_trial_s"] for r in sub]),
                "overhead": median([r["overhead"] for r in sub]),
                "slot_efficiency": median([r["slot_efficiency"] for r in sub]),
                "gap_median_s": median(gaps) if gaps else None,
                "gap_p90_s": summary(gaps).get("p90"),
                "per_trial_overhead_s": median([r["per_trial_overhead_s"] for r in sub]),
                "before_first_trial_s": median([r["before_first_trial_s"] for r in sub]),
                "after_last_trial_s": median([r["after_last_trial_s"] for r in sub]),
                "trial_s_median": median(
                    [t["trial_seconds"] for r in sub for t in r["raw_trials"] if t["trial_seconds"]]
                ),
            }
        )
    print_table(
        agg,
        [
            Col("max_concurrent", "max concurrent"),
            Col("reuse", "actor reuse"),
            Col("runs", "runs"),
            Col("trial_s_median", "trial s (median)", ".2f"),
            Col("wall_s", "search wall s", ".1f"),
            Col("sum_trial_s", "sum trial s", ".1f"),
            Col("overhead", "wall / sum trial", ".2f"),
            Col("slot_efficiency", "slot efficiency", ".2f"),
            Col("gap_median_s", "slot gap s (median)", ".2f"),
            Col("gap_p90_s", "slot gap p90", ".2f"),
            Col("per_trial_overhead_s", "overhead s/trial", ".2f"),
            Col("before_first_trial_s", "before 1st trial s", ".1f"),
            Col("after_last_trial_s", "after last trial s", ".1f"),
        ],
        title=(
            f"Medians over {args.repeats} run(s) of {args.num_samples} trials each; Ray already "
            f"running (start-up {ray_start:.1f} s, shutdown {ray_stop:.1f} s, not included)"
        ),
    )
    print(
        "\nslot efficiency = sum trial s / (wall * max concurrent): 1.0 = no orchestration cost. "
        "overhead s/trial = (wall - sum trial / max concurrent) / trials. slot gap: idle time of "
        "a slot between one trial's end and the next one's start."
    )
    write_results(
        "bench_orchestration",
        machine=machine,
        settings={**vars(args), "configurations": configs},
        results={
            "ray_init_s": ray_start,
            "ray_shutdown_s": ray_stop,
            "summary": agg,
            "runs": runs,
        },
        started=started,
        notes=[
            "trial_seconds, started_at and finished_at come from run_trial itself (trials.parquet); "
            "started_at is taken after the worker has loaded the data, finished_at before the "
            "final checkpoint is written.",
            "Each run is a complete run_search (validation, Tuner, trials, trials.parquet, Pareto "
            "exports), with Ray already started by this script.",
        ],
        out=args.out,
    )


if __name__ == "__main__":
    main()

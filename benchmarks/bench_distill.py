"""Logit distillation in the fine-tune, on and off, on the same SSL and pruned models.

For each network (vgg_small and resnet20 on 8x8 digits) and seed, the trial's own functions
build, under one experiment directory per (network, seed):

* the dense baseline (``run_baseline``: the same recipe for SSL + fine-tune epochs, no penalty),
  the teacher, as a search makes it;
* one SSL model (filter_wise group Lasso, ``ssl_lambda``), trained once and stored
  (``cache_dir``): every cell of the table starts from it;
* for each FLOPs budget (share of the dense model's multiply-adds kept), the point pruned from
  it (same seed and point index, so the same pruned model and the same BN re-estimate in every
  variant; ``pruned_top1`` checks it) and fine-tuned by each variant: ``off`` (plain
  cross-entropy), ``baseline`` (distilled from the dense baseline) and, with ``--teachers``
  including it, ``ssl_model`` (from the SSL model before pruning).

Reported: test-split top-1 after fine-tuning, mean and sample sd over the seeds, the paired
difference to ``off`` (per seed, then mean and sd), and what distillation costs: process
CPU-seconds per fine-tune epoch (training + validation pass, from the epoch reports' clock),
median over cells, on / off. CPU-seconds, not wall time: the machine may be shared.

Every point's row is cached under benchmarks/.cache/bench_distill/ (with the baselines and SSL
models): the same command resumes where it stopped, and re-prints the table at no cost.

    nice -n 10 python benchmarks/bench_distill.py                  # 2 nets x 3 seeds x 3 budgets
    python benchmarks/bench_distill.py --archs vgg_small --seeds 0 --budgets 0.25   # a quick look
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from _common import (
    Col,
    load_average,
    machine_info,
    median,
    print_header,
    print_table,
    set_threads,
    write_results,
)

from sslsearch.config import Recipe, TrialConfig
from sslsearch.trial import BASELINE_ID, MODEL_FILE, run_baseline, run_points

CACHE = Path(__file__).resolve().parent / ".cache" / "bench_distill"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--archs", nargs="+", default=["vgg_small", "resnet20"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    # resnet20's layer floors at min_width_share 0.05 keep about 12% of its FLOPs: 0.15 is the
    # cheapest budget both networks meet
    p.add_argument("--budgets", nargs="+", type=float, default=[0.5, 0.25, 0.15])
    p.add_argument("--ssl-lambda", type=float, default=0.01)
    p.add_argument("--min-width-share", type=float, default=0.05)
    p.add_argument("--epochs", type=int, default=12, help="SSL epochs (the default space's)")
    p.add_argument("--finetune-epochs", type=int, default=4)
    p.add_argument("--distill-weight", type=float, default=0.5)
    p.add_argument("--distill-temperature", type=float, default=4.0)
    p.add_argument(
        "--teachers",
        nargs="+",
        default=["baseline", "ssl_model"],
        choices=["baseline", "ssl_model"],
        help="distilled variants besides off",
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per trial")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def base_config(arch: str, seed: int, a: argparse.Namespace) -> TrialConfig:
    return TrialConfig(
        arch=arch,
        recipe=Recipe(epochs=a.epochs, finetune_epochs=a.finetune_epochs),
        ssl_lambda=a.ssl_lambda,
        min_width_share=a.min_width_share,
        seed=seed,
        threads=a.threads,
        latency_repeats=1,  # latency is not what this measures
    )


def exp_dir(arch: str, seed: int, a: argparse.Namespace) -> Path:
    """One experiment per network and seed; its name holds what determines its models."""
    return CACHE / f"{arch}-s{seed}-e{a.epochs}-f{a.finetune_epochs}-l{a.ssl_lambda:g}"


def variant_config(
    cfg: TrialConfig, variant: str, budget: float, exp: Path, a: argparse.Namespace
) -> TrialConfig:
    cfg = cfg.with_(flops_budget=budget, cache_dir=str(exp / "ssl_models"))
    if variant == "off":
        return cfg
    rec = replace(
        cfg.recipe, distill_weight=a.distill_weight, distill_temperature=a.distill_temperature
    )
    teacher = str(exp / BASELINE_ID / MODEL_FILE) if variant == "baseline" else None
    return cfg.with_(recipe=rec, teacher=teacher)


def variant_id(variant: str, budget: float, a: argparse.Namespace) -> str:
    kd = "" if variant == "off" else f"-w{a.distill_weight:g}-T{a.distill_temperature:g}"
    return f"b{budget:g}-{variant}{kd}"


def baseline(cfg: TrialConfig, exp: Path) -> dict[str, Any]:
    """The dense baseline (the teacher), trained once; its process CPU-seconds recorded."""
    row_path = exp / "rows" / "baseline.json"
    if row_path.exists():
        return dict(json.loads(row_path.read_text()))
    cpu = time.process_time()
    result = run_baseline(cfg, str(exp))
    row = {
        "status": result.status,
        "test_top1": result.metrics.get("test_top1"),
        "top1": result.metrics.get("top1"),
        "cpu_s": time.process_time() - cpu,
    }
    row_path.parent.mkdir(parents=True, exist_ok=True)
    row_path.write_text(json.dumps(row))
    return row


def point(cfg: TrialConfig, exp: Path, pid: str) -> dict[str, Any]:
    """One pruned and fine-tuned point (the trial's run_points), cached as a row."""
    row_path = exp / "rows" / f"{pid}.json"
    if row_path.exists():
        return dict(json.loads(row_path.read_text()))
    clock: list[tuple[str, float]] = []

    def report(metrics: dict[str, Any], checkpoint: Path | None = None) -> None:
        if not metrics.get("final"):
            clock.append((str(metrics["phase"]), time.process_time()))

    cpu = time.process_time()
    [res] = run_points([cfg], report, point_ids=[pid], points_dir=str(exp / "points"))
    m = res.metrics
    fine = [t for phase, t in clock if phase == "finetune"]
    row = {
        "status": res.status,
        "error": res.error,
        "test_top1": m.get("test_top1"),
        "top1": m.get("top1"),
        "pruned_top1": m.get("pruned_top1"),
        "flops_kept": (m["flops"] / m["flops_before"]) if m.get("flops_before") else None,
        "distilled_from": m.get("distilled_from"),
        "ssl_trained": m.get("ssl_reused") is False,
        "cpu_s": time.process_time() - cpu,
        # epochs 2..n of the fine-tune (each: training + a validation pass) from the reports
        "finetune_cpu_s_per_epoch": (fine[-1] - fine[0]) / (len(fine) - 1)
        if len(fine) > 1
        else None,
    }
    row_path.parent.mkdir(parents=True, exist_ok=True)
    row_path.write_text(json.dumps(row))
    return row


def _mean_sd(xs: list[float]) -> tuple[float | None, float | None]:
    if not xs:
        return None, None
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def _pm(xs: list[float]) -> str:
    mean, sd = _mean_sd(xs)
    return "-" if mean is None else f"{mean:.2f} ± {sd:.2f}"


def _signed_pm(xs: list[float]) -> str:
    mean, sd = _mean_sd(xs)
    return "-" if mean is None else f"{mean:+.2f} ± {sd:.2f}"


def summarise(rows: list[dict[str, Any]], variants: list[str]) -> list[dict[str, Any]]:
    """One line per network and budget: test top-1 per variant over the seeds, paired
    differences to off, and the fine-tune's CPU-seconds per epoch."""
    table = []
    keys = sorted({(r["arch"], r["budget"]) for r in rows}, key=lambda k: (k[0], -k[1]))
    for arch, budget in keys:
        cell = [r for r in rows if r["arch"] == arch and r["budget"] == budget]
        by = {
            v: {r["seed"]: r for r in cell if r["variant"] == v and r["status"] == "ok"}
            for v in variants
        }
        line: dict[str, Any] = {
            "arch": arch,
            "budget": budget,
            "flops_kept": median([r["flops_kept"] for r in cell if r.get("flops_kept")]),
            "pruned": _pm([r["pruned_top1"] for r in by["off"].values()]),
            "seeds": len(by["off"]),
        }
        for v in variants:
            line[v] = _pm([r["test_top1"] for r in by[v].values()])
            if v != "off":
                paired = [
                    by[v][s]["test_top1"] - by["off"][s]["test_top1"]
                    for s in by[v]
                    if s in by["off"]
                ]
                line[f"{v}_delta"] = _signed_pm(paired)
                line[f"{v}_delta_values"] = paired
        table.append(line)
    return table


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    started = time.time()
    set_threads(a.threads)
    machine = machine_info()
    variants = ["off", *a.teachers]
    print_header(
        "bench_distill: fine-tune with and without logit distillation (test split)",
        machine,
        f"weight {a.distill_weight}, temperature {a.distill_temperature}, SSL lambda "
        f"{a.ssl_lambda}, {a.epochs} SSL + {a.finetune_epochs} fine-tune epochs, "
        f"{a.threads} torch thread(s); rows cached in {CACHE}",
    )
    rows: list[dict[str, Any]] = []
    baselines: list[dict[str, Any]] = []
    loads: list[list[float] | None] = []
    for arch in a.archs:
        for seed in a.seeds:
            exp = exp_dir(arch, seed, a)
            cfg = base_config(arch, seed, a)
            b = baseline(cfg, exp)
            baselines.append({"arch": arch, "seed": seed, **b})
            for i, budget in enumerate(a.budgets):
                k = i % len(variants)  # rotate the order: a load drift touches every variant
                for variant in variants[k:] + variants[:k]:
                    pid = variant_id(variant, budget, a)
                    row = point(variant_config(cfg, variant, budget, exp, a), exp, pid)
                    rows.append(
                        {"arch": arch, "seed": seed, "budget": budget, "variant": variant, **row}
                    )
                    if row["status"] != "ok":
                        print(f"{arch} seed {seed} {pid}: {row['status']} {row['error']}")
            loads.append(load_average())
            print(f"{arch} seed {seed} done; load average {loads[-1]}", flush=True)

    # the same pruned model in every variant of a cell (same seed, same BN re-estimate)
    same_pruned = all(
        len({r["pruned_top1"] for r in rows if (r["arch"], r["seed"], r["budget"]) == key}) == 1
        for key in {(r["arch"], r["seed"], r["budget"]) for r in rows}
    )
    table = summarise(rows, variants)
    cols = [
        Col("arch", "network"),
        Col("budget", "FLOPs budget", ".2f"),
        Col("flops_kept", "FLOPs kept", ".3f"),
        Col("pruned", "pruned, before fine-tune"),
    ]
    for v in variants:
        cols.append(Col(v, f"{v} test top-1" if v == "off" else f"KD from {v}"))
        if v != "off":
            cols.append(Col(f"{v}_delta", f"{v} - off (paired)"))
    cols.append(Col("seeds", "seeds"))
    print_table(table, cols, "Test top-1 (%) after fine-tuning, mean ± sd over seeds")

    dense = []
    for arch in a.archs:
        tops = [b["test_top1"] for b in baselines if b["arch"] == arch and b["status"] == "ok"]
        dense.append({"arch": arch, "top1": _pm(tops), "seeds": len(tops)})
    print_table(
        dense,
        [
            Col("arch", "network"),
            Col("top1", "dense baseline (teacher) test top-1"),
            Col("seeds", "seeds"),
        ],
    )

    cost = []
    for arch in a.archs:
        for v in variants:
            per = [
                r["finetune_cpu_s_per_epoch"]
                for r in rows
                if r["arch"] == arch and r["variant"] == v and r["finetune_cpu_s_per_epoch"]
            ]
            cost.append({"arch": arch, "variant": v, "cpu": median(per) if per else None})
        off = next(c["cpu"] for c in cost if c["arch"] == arch and c["variant"] == "off")
        for c in cost:
            if c["arch"] == arch and off and c["cpu"]:
                c["ratio"] = c["cpu"] / off
    print_table(
        cost,
        [
            Col("arch", "network"),
            Col("variant", "fine-tune"),
            Col("cpu", "CPU-s per fine-tune epoch (median)", ".3f"),
            Col("ratio", "vs off", ".2f"),
        ],
        "What distillation costs: process CPU-seconds per fine-tune epoch (train + val pass)",
    )
    total_cpu = sum(r["cpu_s"] for r in rows) + sum(b["cpu_s"] for b in baselines)
    print(
        f"\nsame pruned model in every variant of a cell: {same_pruned}; CPU-seconds of the "
        f"cached work: {total_cpu:.0f} (baselines, SSL models and points, whenever they ran); "
        f"load average at the end {load_average()} on {machine['cpu_cores_usable']} cores"
    )
    write_results(
        "bench_distill",
        machine=machine,
        settings=vars(a),
        results={
            "table": table,
            "dense_baselines": baselines,
            "cost": cost,
            "same_pruned_model_per_cell": same_pruned,
            "cpu_seconds_total": total_cpu,
            "load_average_per_network_seed": loads,
            "rows": rows,
        },
        started=started,
        notes=[
            "test top-1 on the test split; the variants of a cell share the SSL model and the "
            "pruned model (pruned_top1 equal), and differ only in the fine-tune's loss",
            "cost: process CPU-seconds (not wall time) per fine-tune epoch, epochs 2..n, "
            "training plus one validation pass; the machine was shared (see the load averages)",
        ],
        out=a.out,
    )


if __name__ == "__main__":
    main()

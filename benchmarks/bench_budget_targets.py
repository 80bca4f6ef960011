"""Are budgets met? FLOPs and parameter budgets on the seed's and torchvision's models, and
latency budgets measured on this CPU, each against its promise.

Counts (``--counts``): for each model, at random init and after a short SSL run (proximal steps of
a strong filter_wise penalty: some groups exactly zero), budgets 0.75 / 0.5 / 0.25 of the FLOPs
(fvcore) and of the parameters. The promise: at most the budget, and within 1% of it or one
rounding step of one layer (the result names the step; the table shows its cost).

Latency (``--latency``): vgg_small and resnet20 at batch 1 and 32 on this CPU (``--threads``),
budgets 0.75 / 0.5 / 0.25; measured latency of the pruned model over the dense one's, timed side
by side (median of rounds). The promise: within 10% of the target. The load average of the
machine is printed with each row: latency on a shared machine is noisy.

    python benchmarks/bench_budget_targets.py             # both (~10 min on 2 cores)
    python benchmarks/bench_budget_targets.py --counts --models vgg16_bn@32 resnet50@224
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from _common import (
    Col,
    load_average,
    machine_info,
    print_header,
    print_table,
    set_threads,
    write_results,
)
from torch import nn

from sslsearch.errors import NotPrunableError
from sslsearch.models import create_model
from sslsearch.pruning import LatencySpec, prune
from sslsearch.pruning._latency import LatencyModel
from sslsearch.sparsity import SSLPenalty

MODELS = [
    "vgg16_bn@32",
    "vgg16_bn@224",
    "resnet50@224",
    "resnet20@32",
    "mobilenet_v2@224",
    "regnet_x_400mf@224",
]
CLASSES = {"vgg16_bn": 100, "resnet50": 100}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--counts", action="store_true", help="only FLOPs and parameter budgets")
    p.add_argument("--latency", action="store_true", help="only latency budgets")
    p.add_argument("--models", nargs="+", default=MODELS, help="arch@input size")
    p.add_argument("--budgets", nargs="+", type=float, default=[0.75, 0.5, 0.25])
    p.add_argument("--latency-models", nargs="+", default=["vgg_small@8", "resnet20@32"])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def short_ssl(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    """Some groups exactly zero, some small: BN scales drawn at random, then proximal steps."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.mul_(torch.rand(m.num_features, generator=g) * 2)
    pen = SSLPenalty.build(model, "filter_wise", 0.3, torch.zeros(1, *shape))
    for _ in range(2 * pen.calls_per_cycle):
        pen.prox_(1.0)
    return model


def parse_model(spec: str) -> tuple[str, int]:
    arch, _, size = spec.partition("@")
    return arch, int(size or 32)


def counts(a: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for spec in a.models:
        arch, size = parse_model(spec)
        channels = 1 if arch == "vgg_small" else 3
        shape = (channels, size, size)
        for state in ("init", "ssl"):
            torch.manual_seed(0)
            model = create_model(arch, CLASSES.get(arch, 10), channels).eval()
            if state == "ssl":
                model = short_ssl(model, shape)
            for kind in ("flops", "params"):
                for budget in a.budgets:
                    t0 = time.time()
                    r = prune(model, shape, prune_type="filter_wise", **{f"{kind}_budget": budget})
                    got = r.budget_achieved or float("nan")
                    gap = budget - got
                    ok = got <= budget and (gap <= 0.01 or (r.budget_step or 0) > gap)
                    rows.append(
                        {
                            "model": spec,
                            "state": state,
                            "kind": kind,
                            "budget": budget,
                            "reached": got,
                            "gap": gap,
                            "step": r.budget_step,
                            "ratio": r.actual_ratio,
                            "at_floor": len(r.at_floor),
                            "seconds": time.time() - t0,
                            "met": "yes" if ok else "NO",
                            "note": r.budget_note,
                        }
                    )
                    print(
                        f"{spec} {state} {kind} {budget}: {got:.4f} ({r.budget_note}) "
                        f"{time.time() - t0:.1f} s",
                        flush=True,
                    )
    return rows


def latency(a: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for spec in a.latency_models:
        arch, size = parse_model(spec)
        channels = 1 if arch == "vgg_small" else 3
        shape = (channels, size, size)
        torch.manual_seed(0)
        model = create_model(arch, 10, channels).eval()
        for batch in a.batch_sizes:
            lat = LatencySpec(batch_size=batch, threads=a.threads)
            for budget in a.budgets:
                t0 = time.time()
                try:
                    r = prune(
                        model, shape, prune_type="filter_wise", latency_budget=budget, latency=lat
                    )
                except NotPrunableError as e:
                    rows.append(
                        {
                            "model": spec,
                            "batch": batch,
                            "budget": budget,
                            "met": "unreachable",
                            "note": str(e),
                            "load": load_average(),
                        }
                    )
                    print(f"{spec} b{batch} {budget}: {e}", flush=True)
                    continue
                # an independent check: time pruned and dense again, side by side
                check = LatencyModel(lat, shape).relative(r.model, model, rounds=7)
                got = r.budget_achieved or float("nan")
                rows.append(
                    {
                        "model": spec,
                        "batch": batch,
                        "budget": budget,
                        "dense_ms": r.latency_ms_before,
                        "pruned_ms": r.latency_ms_after,
                        "reached": got,
                        "recheck": check,
                        "flops_share": r.flops_after / r.flops_before,
                        "met": "yes" if abs(got - budget) <= 0.1 * budget else "NO",
                        "recheck_met": "yes" if abs(check - budget) <= 0.1 * budget else "NO",
                        "seconds": time.time() - t0,
                        "load": load_average(),
                        "note": r.budget_note,
                    }
                )
                print(
                    f"{spec} b{batch} {budget}: {got:.3f} (recheck {check:.3f}) "
                    f"load {load_average()}",
                    flush=True,
                )
    return rows


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    started = time.time()
    set_threads(a.threads)
    machine = machine_info()
    print_header("bench_budget_targets: are budgets met?", machine)
    results: dict[str, Any] = {}
    if not a.latency:
        results["counts"] = counts(a)
        print_table(
            results["counts"],
            [
                Col("model", "model@input"),
                Col("state", "weights"),
                Col("kind", "budget of"),
                Col("budget", "budget"),
                Col("reached", "reached", ".4f"),
                Col("step", "finest step left", ".4f"),
                Col("ratio", "actual ratio", ".3f"),
                Col("at_floor", "layers at floor"),
                Col("met", "met"),
                Col("seconds", "s", ".1f"),
            ],
            "FLOPs and parameter budgets (share of the dense model kept)",
        )
    if not a.counts:
        results["latency"] = latency(a)
        print_table(
            results["latency"],
            [
                Col("model", "model@input"),
                Col("batch", "batch"),
                Col("budget", "budget"),
                Col("dense_ms", "dense ms", ".3f"),
                Col("pruned_ms", "pruned ms", ".3f"),
                Col("reached", "reached", ".3f"),
                Col("recheck", "re-timed", ".3f"),
                Col("flops_share", "FLOPs kept", ".3f"),
                Col("met", "within 10%"),
                Col("recheck_met", "re-timed within 10%"),
                Col("load", "load avg"),
            ],
            f"Latency budgets on this CPU ({a.threads} threads)",
        )
    write_results(
        "bench_budget_targets",
        machine=machine,
        settings=vars(a),
        results=results,
        started=started,
        out=a.out,
    )


if __name__ == "__main__":
    main()

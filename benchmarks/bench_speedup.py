"""Realised speed-up of pruned models: FLOPs reduction vs measured latency speed-up.

vgg16_bn and resnet50 (random weights, 100 classes) are pruned with ``sslsearch.prune``
(criterion group_lasso) at several ratios for filter_wise, channel_wise and
filter_and_channel_wise, and by 2, 4, 8 residual blocks (depth_wise) for resnet50. For each
pruned model: FLOPs reduction (flops_before / flops_after, fvcore multiply-adds), latency of an
eval-mode forward pass at each batch size, measured interleaved with the dense model (one
forward each per round, order rotated; median over rounds after warm-up), the speed-up
(dense / pruned median latency) and speed-up / FLOPs reduction (1.0 = the physical limit: the
time shrinks as much as the arithmetic).

    python benchmarks/bench_speedup.py                      # 32x32, CPU: ~2.5 min on 2 cores
    python benchmarks/bench_speedup.py --device cuda --image-size 224 --batch-sizes 1 32 128
"""

from __future__ import annotations

import argparse
import gc
import logging
import time
from typing import Any

import torch
from _common import (
    Col,
    interleaved,
    machine_info,
    median,
    paired,
    print_header,
    print_table,
    quantile,
    set_threads,
    summary,
    write_results,
)
from torch import nn

import sslsearch
from sslsearch.models import get_model_spec
from sslsearch.trial import pick_device


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--archs", nargs="+", default=["vgg16_bn", "resnet50"])
    p.add_argument(
        "--prune-types",
        nargs="+",
        default=["filter_wise", "channel_wise", "filter_and_channel_wise", "depth_wise"],
    )
    p.add_argument("--ratios", nargs="+", type=float, default=[0.3, 0.5, 0.7])
    p.add_argument("--blocks", nargs="+", type=int, default=[2, 4, 8], help="depth_wise")
    p.add_argument("--prune-way", default="group_lasso")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=100)
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    p.add_argument(
        "--rounds",
        nargs="+",
        type=int,
        default=[40, 15],
        help="timed rounds per batch size (one value: all batch sizes)",
    )
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/)")
    return p.parse_args(argv)


def _configs(arch: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    residual = get_model_spec(arch).residual
    out = []
    for t in args.prune_types:
        if t == "depth_wise":
            if residual:
                out += [{"prune_type": t, "blocks": b} for b in args.blocks]
        else:
            out += [{"prune_type": t, "ratio": r} for r in args.ratios]
    return out


def _latencies(
    dense: nn.Module,
    pruned: nn.Module,
    args: argparse.Namespace,
    device: torch.device,
) -> dict[int, dict[str, list[float]]]:
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    out = {}
    rounds = args.rounds if len(args.rounds) > 1 else args.rounds * len(args.batch_sizes)
    for bs, n in zip(args.batch_sizes, rounds):
        x = torch.randn(bs, 3, args.image_size, args.image_size, device=device)
        with torch.inference_mode():
            out[bs] = interleaved(
                {"dense": lambda x=x: dense(x), "pruned": lambda x=x: pruned(x)},
                rounds=n,
                warmup=args.warmup,
                sync=sync,
            )
    return out


def bench_arch(arch: str, args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    torch.manual_seed(args.seed)
    dense = sslsearch.create_model(arch, args.num_classes).to(device).eval()
    shape = (3, args.image_size, args.image_size)
    rows = []
    for c in _configs(arch, args):
        t0 = time.perf_counter()
        res = sslsearch.prune(dense, shape, prune_way=args.prune_way, **c)
        prune_s = time.perf_counter() - t0
        pruned = res.model.to(device).eval()
        lat = _latencies(dense, pruned, args, device)
        row: dict[str, Any] = {
            "arch": arch,
            "prune_type": c["prune_type"],
            "setting": f"blocks={c['blocks']}" if "blocks" in c else f"ratio={c['ratio']:.2f}",
            "ratio": c.get("ratio"),
            "blocks": c.get("blocks"),
            "actual_ratio": res.actual_ratio,
            "flops_before": res.flops_before,
            "flops_after": res.flops_after,
            "params_before": res.params_before,
            "params_after": res.params_after,
            "flops_reduction": res.flops_before / res.flops_after,
            "params_reduction": res.params_before / res.params_after,
            "prune_seconds": prune_s,
            "latency": {},
        }
        for bs, times in lat.items():
            speed = paired(times["pruned"], times["dense"], "ratio")  # dense / pruned per round
            row["latency"][str(bs)] = {
                "dense_ms": summary([1e3 * t for t in times["dense"]]),
                "pruned_ms": summary([1e3 * t for t in times["pruned"]]),
                "speedup": median(times["dense"]) / median(times["pruned"]),
                "speedup_paired_median": median(speed),
                "speedup_paired_p10": quantile(speed, 0.1),
                "speedup_paired_p90": quantile(speed, 0.9),
                "raw_dense_s": times["dense"],
                "raw_pruned_s": times["pruned"],
            }
            row[f"speedup_b{bs}"] = row["latency"][str(bs)]["speedup"]
            row[f"efficiency_b{bs}"] = row[f"speedup_b{bs}"] / row["flops_reduction"]
            row[f"dense_ms_b{bs}"] = row["latency"][str(bs)]["dense_ms"]["median"]
            row[f"pruned_ms_b{bs}"] = row["latency"][str(bs)]["pruned_ms"]["median"]
        print(
            f"  {arch} {c['prune_type']} {row['setting']}: FLOPs /{row['flops_reduction']:.2f}, "
            + ", ".join(
                f"b{bs} x{row[f'speedup_b{bs}']:.2f} ({row[f'efficiency_b{bs}']:.2f})"
                for bs in args.batch_sizes
            )
            + f"  [prune {prune_s:.1f} s]",
            flush=True,
        )
        rows.append(row)
        del pruned, res
        gc.collect()
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if len(args.rounds) not in (1, len(args.batch_sizes)):
        raise SystemExit("--rounds takes one value or one per batch size")
    logging.getLogger("sslsearch").setLevel(logging.WARNING)
    started = time.time()
    threads = set_threads(args.threads)
    device = pick_device(args.device)
    machine = machine_info()
    print_header(
        "Realised speed-up of pruned models",
        machine,
        f"device {device}, threads {threads}, input {args.image_size}x{args.image_size}, "
        f"{args.num_classes} classes, random weights, prune way {args.prune_way}, "
        f"batch sizes {args.batch_sizes}, rounds {args.rounds}",
    )
    rows = [r for a in args.archs for r in bench_arch(a, args, device)]
    table = [{**r, "flops_after_m": r["flops_after"] / 1e6} for r in rows]
    for arch in args.archs:
        sub = [r for r in table if r["arch"] == arch]
        if not sub:
            continue
        cols = [
            Col("prune_type", "prune type"),
            Col("setting", "setting"),
            Col("actual_ratio", "actual ratio", ".3f"),
            Col("flops_after_m", "FLOPs after/M", ".1f"),
            Col("flops_reduction", "FLOPs reduction", ".2f"),
        ]
        for bs in args.batch_sizes:
            dense_ms = median([r[f"dense_ms_b{bs}"] for r in sub])
            cols += [
                Col(f"pruned_ms_b{bs}", f"b{bs} ms (dense {dense_ms:.1f})", ".2f"),
                Col(f"speedup_b{bs}", f"b{bs} speed-up", ".2f"),
                Col(f"efficiency_b{bs}", f"b{bs} speed-up/FLOPs red.", ".2f"),
            ]
        print_table(
            sub,
            cols,
            title=(
                f"{arch} at {args.image_size}x{args.image_size}: FLOPs before "
                f"{sub[0]['flops_before'] / 1e6:.1f}M (multiply-adds, fvcore); latency medians, "
                f"{threads} threads, {device}"
            ),
        )
    print(
        "\nspeed-up = median dense latency / median pruned latency (measured interleaved); "
        "speed-up/FLOPs red. = 1.0 when time shrinks exactly as much as the arithmetic."
    )
    write_results(
        "bench_speedup",
        machine=machine,
        settings={**vars(args), "threads_used": threads, "device_used": str(device)},
        results={"rows": rows},
        started=started,
        notes=[
            "Random weights (create_model, seeded); the group_lasso criterion then ranks random "
            "groups, which is fine for speed: only the kept widths matter.",
            "Each pruned model is timed interleaved with the dense model (dense, pruned / pruned, "
            "dense ...), eval mode, torch.inference_mode, after warm-up rounds.",
            "FLOPs are fvcore multiply-adds at batch 1 (one fused multiply-add = one flop).",
        ],
        out=args.out,
    )


if __name__ == "__main__":
    main()

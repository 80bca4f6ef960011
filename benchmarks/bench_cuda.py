"""The CUDA paths end to end: a whole trial on the GPU, and dense vs pruned latency on CUDA.

What runs (each once, on ``--device``, default cuda):

1. ``run_trial`` with vgg16_bn on digits resized to ``--image-size`` (224 like the seed), SSL
   training, filter_wise pruning at ``--ratio``, fine-tuning, measuring: once with the CUDA
   defaults (mixed precision, channels_last, data resident on the GPU) and once in plain fp32
   (``amp=False, channels_last=False``), so the table shows what the fast path buys and that
   both reach similar top-1. Epoch throughput comes from each trial's own ``images_per_second``.
2. Latency of the dense and the pruned model from the first trial (eval mode, fp32, and
   bf16 autocast), at several batch sizes, interleaved (one forward each per round, order
   rotated; median over rounds): the realised speed-up next to the FLOPs reduction.

    python benchmarks/bench_cuda.py                       # a GPU machine, ~2-3 min
    python benchmarks/bench_cuda.py --epochs 1 --image-size 64 --device cpu   # smoke test

The JSON goes to benchmarks/results/bench_cuda.json (``--out`` to change it).

"""

from __future__ import annotations

import argparse
import contextlib
import logging
import tempfile
import time
from typing import Any

import torch
from _common import Col, machine_info, median, print_header, print_table, write_results
from torch import nn

import sslsearch
from sslsearch.config import DataConfig, Recipe, TrialConfig
from sslsearch.models import model_info


def _trial(args: argparse.Namespace, fast: bool, out_dir: str) -> dict[str, Any]:
    cfg = TrialConfig(
        arch="vgg16_bn",
        data=DataConfig(name="digits", image_size=args.image_size),
        recipe=Recipe(
            epochs=args.epochs,
            finetune_epochs=args.finetune_epochs,
            batch_size=args.batch_size,
            lr=0.01,
            finetune_lr=0.005,
        ),
        ssl_type="filter_wise",
        ssl_lambda=args.ssl_lambda,
        prune_type="filter_wise",
        prune_way="group_lasso",
        ratio=args.ratio,
        device=args.device,
        amp=fast,
        channels_last=fast,
        out_dir=out_dir,
        latency_batch_size=1,
    )
    t0 = time.perf_counter()
    res = sslsearch.run_trial(cfg)
    wall = time.perf_counter() - t0
    if res.status != "ok":
        raise SystemExit(f"trial failed ({'amp' if fast else 'fp32'}): {res.error}")
    m = res.metrics
    return {
        "variant": "amp+channels_last" if fast else "fp32",
        "wall_s": wall,
        "train_seconds": m["train_seconds"],
        "images_per_second": m["images_per_second"],
        "ssl_top1": m["ssl_top1"],
        "pruned_top1": m["pruned_top1"],
        "exact_zero_share": m.get("exact_zero_share"),
        "removable_flops_share": m.get("removable_flops_share"),
        "top1": m["top1"],
        "test_top1": m["test_top1"],
        "flops_before": m["flops_before"],
        "flops": m["flops"],
        "params_before": m["params_before"],
        "params": m["params"],
        "actual_ratio": m["actual_ratio"],
        "latency_ms_b1": m["latency_ms"],
        "device": m["device"],
        "model_path": res.model_path,
    }


def _time_forward(model: nn.Module, x: torch.Tensor, dev: torch.device, bf16: bool) -> float:
    ctx = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if bf16 and dev.type == "cuda"
        else contextlib.nullcontext()
    )
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    with torch.inference_mode(), ctx:
        model(x)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return (time.perf_counter() - t0) * 1e3


def _latency(
    dense: nn.Module,
    pruned: nn.Module,
    shape: tuple[int, ...],
    dev: torch.device,
    batch_sizes: list[int],
    rounds: int,
) -> list[dict[str, Any]]:
    rows = []
    for mode in ("fp32", "bf16"):
        bf16 = mode == "bf16"
        for bs in batch_sizes:
            x = torch.randn(bs, *shape, device=dev)
            if dev.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            models = {"dense": dense, "pruned": pruned}
            for m in models.values():
                for _ in range(5):
                    _time_forward(m, x, dev, bf16)
            times: dict[str, list[float]] = {"dense": [], "pruned": []}
            for r in range(rounds):
                order = ["dense", "pruned"] if r % 2 == 0 else ["pruned", "dense"]
                for name in order:
                    times[name].append(_time_forward(models[name], x, dev, bf16))
            d, p = median(times["dense"]), median(times["pruned"])
            rows.append(
                {
                    "precision": mode,
                    "batch_size": bs,
                    "dense_ms": d,
                    "pruned_ms": p,
                    "speedup": d / p,
                }
            )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=4, help="SSL epochs")
    p.add_argument("--finetune-epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--ssl-lambda", type=float, default=1e-3)
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32, 128])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--skip-fp32", action="store_true", help="only the amp+channels_last trial")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/)")
    args = p.parse_args()
    started = time.time()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dev = torch.device(args.device)
    info = machine_info()
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
        torch.backends.cudnn.benchmark = True
    print_header("bench_cuda: a trial on the GPU, dense vs pruned latency", info)

    trials = []
    with tempfile.TemporaryDirectory() as tmp:
        trials.append(_trial(args, True, f"{tmp}/amp"))
        if not args.skip_fp32:
            trials.append(_trial(args, False, f"{tmp}/fp32"))
        for t in trials:
            t["gflops"], t["gflops_before"] = t["flops"] / 1e9, t["flops_before"] / 1e9
        print_table(
            trials,
            [
                Col("variant", "variant"),
                Col("images_per_second", "img/s", ".0f"),
                Col("train_seconds", "train s", ".1f"),
                Col("wall_s", "trial s", ".1f"),
                Col("ssl_top1", "top1 SSL", ".2f"),
                Col("exact_zero_share", "exactly zero", ".3f"),
                Col("removable_flops_share", "removable FLOPs", ".3f"),
                Col("pruned_top1", "top1 pruned", ".2f"),
                Col("top1", "top1 final", ".2f"),
                Col("gflops", "GFLOPs", ".3f"),
                Col("gflops_before", "GFLOPs dense", ".3f"),
            ],
        )
        info_pruned = model_info(trials[0]["model_path"])
        pruned = sslsearch.load_model(trials[0]["model_path"]).to(dev).eval()
        dense = sslsearch.create_model(
            "vgg16_bn", num_classes=10, in_channels=info_pruned["in_channels"]
        )
        dense = dense.to(dev).eval()
        if dev.type == "cuda":
            pruned = pruned.to(memory_format=torch.channels_last)
            dense = dense.to(memory_format=torch.channels_last)
        shape = tuple(info_pruned["input_shape"])
        lat = _latency(dense, pruned, shape, dev, args.batch_sizes, args.rounds)
    flops_x = trials[0]["flops_before"] / trials[0]["flops"]
    for row in lat:
        row["flops_reduction"] = flops_x
        row["speedup_per_flops_reduction"] = row["speedup"] / flops_x
    print_table(
        lat,
        [
            Col("precision", "precision"),
            Col("batch_size", "batch", "d"),
            Col("dense_ms", "dense ms", ".3f"),
            Col("pruned_ms", "pruned ms", ".3f"),
            Col("speedup", "speed-up", ".2f"),
            Col("flops_reduction", "FLOPs x", ".2f"),
            Col("speedup_per_flops_reduction", "speed-up / FLOPs x", ".2f"),
        ],
    )
    for t in trials:
        t.pop("model_path", None)
    write_results(
        "bench_cuda",
        machine=info,
        settings=vars(args),
        results={"trials": trials, "latency": lat},
        started=started,
        notes=[
            "trial: vgg16_bn on digits resized to image_size, filter_wise SSL + pruning",
            "latency: eval mode, channels_last on CUDA, interleaved dense/pruned, median",
        ],
        out=args.out,
    )


if __name__ == "__main__":
    main()

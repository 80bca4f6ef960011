"""Training throughput of the trial pipeline's SSL loop vs a plain minimal PyTorch loop.

Pipeline: ``sslsearch.trial._train.train_one_epoch`` fed by ``TensorSplit.batches`` (uint8
images -> float, normalised, on the device, shuffled per epoch; per-step learning rate, NaN check,
running statistics), the optimizer of ``make_optimizer``. Plain: the same model architecture and
initial weights, the same images already normalised as float tensors on the device, a
``randperm`` per epoch, ``torch.optim.SGD`` with the same hyperparameters, cross-entropy.

Variants (each its own model copy and optimizer; one epoch each per round, order rotated every
round):

* ``plain`` / ``pipeline``: no penalty -> the overhead of our data and loop machinery;
* ``plain+ssl`` / ``pipeline+ssl``: with the same ``SSLPenalty`` (filter_wise);
* ``pipeline+ssl+augment``: what a trial runs (random shifts/flips on the device), for scale.

Aim: pipeline >= 95% of plain.

    python benchmarks/bench_throughput.py                   # ~3.5 min on 2 CPU cores
    python benchmarks/bench_throughput.py --device cuda --synthetic-size 20000 --rounds 10
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass
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
from sslsearch.config import DataConfig, Recipe
from sslsearch.data import TensorSplit, load_datasets
from sslsearch.data._core import channel_stats
from sslsearch.sparsity import SSLPenalty
from sslsearch.trial import pick_device
from sslsearch.trial._train import lr_at, make_optimizer, train_one_epoch

AIM = 0.95


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--workloads",
        nargs="+",
        default=["vgg_small:digits", "resnet20:synthetic32"],
        help="ARCH:DATA with DATA digits or synthetic32 (random 3x32x32 uint8 images)",
    )
    p.add_argument("--synthetic-size", type=int, default=1536, help="images of synthetic32")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--ssl-type", default="filter_wise")
    p.add_argument("--ssl-lambda", type=float, default=1e-3)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--rounds", type=int, default=6, help="timed epochs per variant")
    p.add_argument("--digits-rounds", type=int, default=12, help="timed epochs on digits")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/)")
    return p.parse_args(argv)


@dataclass
class Workload:
    arch: str
    data: str
    split: TensorSplit
    num_classes: int
    channels: int


def load_workload(spec: str, args: argparse.Namespace) -> Workload:
    arch, _, data = spec.partition(":")
    if data == "digits":
        ds = load_datasets(DataConfig(name="digits"))
        assert isinstance(ds.train, TensorSplit)
        return Workload(arch, data, ds.train, ds.num_classes, ds.channels)
    if data == "synthetic32":
        gen = torch.Generator().manual_seed(args.seed)
        n = args.synthetic_size
        images = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
        labels = torch.randint(0, 10, (n,), generator=gen)
        mean, std = channel_stats(images)
        split = TensorSplit(images, labels, mean=mean, std=std, out_size=32, pad=4, flip=True)
        return Workload(arch, data, split, 10, 3)
    raise SystemExit(f"unknown data {data!r} in workload {spec!r} (digits or synthetic32)")


def plain_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, gen: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    order = torch.randperm(len(y), generator=gen).to(x.device)
    for i in range(0, len(y), batch_size):
        idx = order[i : i + batch_size]
        yield x[idx], y[idx]


def bench_workload(w: Workload, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    base = sslsearch.create_model(w.arch, w.num_classes, w.channels)
    recipe = Recipe(batch_size=args.batch_size, lr=args.lr, epochs=args.rounds + args.warmup)
    n = len(w.split)
    steps = -(-n // args.batch_size)
    # the plain loop's data: the same images, normalised once, already on the device
    x_all = ((w.split.images.float() / 255.0 - w.split.mean) / w.split.std).to(device)
    y_all = w.split.labels.to(device)
    loss_fn = nn.CrossEntropyLoss()
    sync = torch.cuda.synchronize if device.type == "cuda" else None

    def plain(ssl: bool) -> Any:
        model = copy.deepcopy(base).to(device)
        opt = torch.optim.SGD(
            model.parameters(),
            lr=args.lr,
            momentum=recipe.momentum,
            weight_decay=recipe.weight_decay,
        )
        pen = SSLPenalty.build(model, args.ssl_type, args.ssl_lambda) if ssl else None
        gen = torch.Generator().manual_seed(args.seed)

        def epoch() -> None:
            model.train()
            for x, y in plain_batches(x_all, y_all, args.batch_size, gen):
                loss = loss_fn(model(x), y)
                if pen is not None:
                    loss = loss + pen()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        return epoch

    def pipeline(ssl: bool, augment: bool) -> Any:
        model = copy.deepcopy(base).to(device)
        opt = make_optimizer(model, args.lr, recipe)
        pen = SSLPenalty.build(model, args.ssl_type, args.ssl_lambda) if ssl else None
        count = [0]

        def epoch() -> None:
            e = count[0]
            count[0] += 1
            batches = w.split.batches(
                args.batch_size, shuffle=True, augment=augment, seed=1000 + e, device=device
            )
            train_one_epoch(
                model,
                batches,
                opt,
                lr_fn=lambda p: lr_at(p, args.lr, recipe.epochs, recipe, 0.0),
                steps_per_epoch=steps,
                epoch=e % recipe.epochs,
                penalty=pen,
                label_smoothing=0.0,
                device=device,
            )

        return epoch

    fns = {
        "plain": plain(False),
        "pipeline": pipeline(False, False),
        "plain+ssl": plain(True),
        "pipeline+ssl": pipeline(True, False),
        "pipeline+ssl+augment": pipeline(True, True),
    }
    rounds = args.digits_rounds if w.data == "digits" else args.rounds
    t0 = time.perf_counter()

    def progress(r: int) -> None:
        if r >= 0:
            print(
                f"  {w.arch} on {w.data}: round {r + 1}/{rounds} ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )

    times = interleaved(fns, rounds=rounds, warmup=args.warmup, sync=sync, on_round=progress)
    ips = {k: [n / t for t in v] for k, v in times.items()}
    pairs = [  # (A, B, what A/B measures, whether the 95% aim applies)
        ("pipeline", "plain", "data/loop machinery", True),
        ("pipeline+ssl", "plain+ssl", "machinery, with the penalty", True),
        ("plain+ssl", "plain", "the penalty (plain loop)", False),
        ("pipeline+ssl", "pipeline", "the penalty (pipeline)", False),
        ("pipeline+ssl+augment", "plain+ssl", "a trial's SSL epoch vs plain+ssl", False),
    ]
    comparisons = []
    for a, b, what, aimed in pairs:
        r = paired(ips[b], ips[a], "ratio")  # a / b per round
        comparisons.append(
            {
                "workload": f"{w.arch}/{w.data}",
                "a": a,
                "b": b,
                "what": what,
                "ratio_median": median(r),
                "ratio_p10": quantile(r, 0.1),
                "ratio_p90": quantile(r, 0.9),
                "meets_aim": median(r) >= AIM if aimed else None,
                "raw_ratios": r,
            }
        )
    return {
        "workload": f"{w.arch}/{w.data}",
        "arch": w.arch,
        "data": w.data,
        "images_per_epoch": n,
        "steps_per_epoch": steps,
        "input_shape": list(x_all.shape[1:]),
        "images_per_second": {k: summary(v) for k, v in ips.items()},
        "comparisons": comparisons,
        "raw_epoch_seconds": times,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.time()
    threads = set_threads(args.threads)
    device = pick_device(args.device)
    machine = machine_info()
    print_header(
        "Training throughput: trial pipeline vs plain PyTorch loop",
        machine,
        f"device {device}, threads {threads}, batch {args.batch_size}, penalty "
        f"{args.ssl_type} lambda {args.ssl_lambda:g}; epochs interleaved, order rotated per round",
    )
    results = [bench_workload(load_workload(s, args), args, device) for s in args.workloads]
    rows = [
        {
            "workload": r["workload"],
            "variant": k,
            "ips": s["median"],
            "p10": s["p10"],
            "p90": s["p90"],
        }
        for r in results
        for k, s in r["images_per_second"].items()
    ]
    print_table(
        rows,
        [
            Col("workload", "workload"),
            Col("variant", "variant"),
            Col("ips", "images/s (median)", ".0f"),
            Col("p10", "p10", ".0f"),
            Col("p90", "p90", ".0f"),
        ],
        title=f"Images per second ({threads} threads, {device})",
    )
    comp = [
        {
            **c,
            "ratio_pct": 100 * c["ratio_median"],
            "spread": f"{100 * c['ratio_p10']:.1f}..{100 * c['ratio_p90']:.1f}",
            "aim": "-" if c["meets_aim"] is None else ("yes" if c["meets_aim"] else "NO"),
        }
        for r in results
        for c in r["comparisons"]
    ]
    print_table(
        comp,
        [
            Col("workload", "workload"),
            Col("a", "A"),
            Col("b", "B"),
            Col("what", "what it measures"),
            Col("ratio_pct", "A/B throughput %", ".1f"),
            Col("spread", "p10..p90 %"),
            Col("aim", f">= {100 * AIM:.0f}%"),
        ],
        title="Side-by-side ratios (median of per-round ratios)",
    )
    write_results(
        "bench_throughput",
        machine=machine,
        settings={**vars(args), "threads_used": threads, "device_used": str(device)},
        results={"aim": AIM, "workloads": results},
        started=started,
        notes=[
            "Each variant trains its own copy of the same initial model; one epoch per variant "
            "per round, order rotated every round.",
            "Throughput = training images / wall seconds of the epoch (batch creation included; "
            "no evaluation).",
            "The plain loop's tensors are normalised and moved to the device before timing; the "
            "pipeline converts uint8 -> float and normalises every batch (part of what is measured).",
        ],
        out=args.out,
    )


if __name__ == "__main__":
    main()

"""Does every SSL type make its structures prunable? One row per (model, SSL type) on digits.

For each SSL type: SSL training (the proximal group Lasso the trial uses), then the share of
near-zero units of the prune type's groups, pruning at exactly that share, and fine-tuning
without the penalty. The figure that counts is top-1 right after pruning: on digits fine-tuning
recovers almost anything. Each row has a lambda = 0 reference (plain training, then the same
pruning at the same share), which shows what SSL adds.

lambda per type: the smallest value of an ascending grid (``--lambdas``) whose SSL model has at
least ``--target`` near-zero groups (of the SSL type's own groups) and loses at most
``--max-drop`` points of top-1 right after pruning; if none does, the grid value with the most
near-zero groups among those within ``--max-drop`` (or, failing that, the last one).

    python benchmarks/bench_ssl_types.py                    # 2 CPU cores: ~20-40 min
    python benchmarks/bench_ssl_types.py --archs vgg_small --types filter_wise --epochs 4
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from typing import Any

import torch
from _common import Col, machine_info, print_header, print_table, set_threads, write_results
from torch import nn

from sslsearch.config import DataConfig, Recipe
from sslsearch.data import load_datasets
from sslsearch.models import create_model
from sslsearch.pruning import prune
from sslsearch.sparsity import SSL_TYPES, SSLPenalty, build_groups, group_sparsity
from sslsearch.trial._train import evaluate, lr_at, make_optimizer, seed_everything, train_one_epoch

# which prune type removes what each SSL type zeroes
PRUNE_OF = {
    "filter_wise": "filter_wise",
    "channel_wise": "channel_wise",
    "filter_and_channel_wise": "filter_and_channel_wise",
    "shape_wise": "shape_wise",  # no prune type removes shapes: the near-zero ones are zeroed
    "depth_wise": "depth_wise",
    "group_wise": "filter_and_channel_wise",
}
PARTS = {
    "filter_wise": ["filter"],
    "channel_wise": ["channel"],
    "filter_and_channel_wise": ["filter", "channel"],
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--archs", nargs="+", default=["vgg_small", "resnet20"])
    p.add_argument("--types", nargs="+", default=list(SSL_TYPES), choices=SSL_TYPES)
    p.add_argument("--lambdas", nargs="+", type=float, default=[0.03, 0.1, 0.3])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--finetune-epochs", type=int, default=4)
    p.add_argument("--target", type=float, default=0.5, help="near-zero share to reach")
    p.add_argument("--max-drop", type=float, default=1.0, help="top-1 points lost by pruning")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def train(
    model: nn.Module, data: Any, rec: Recipe, epochs: int, lr: float, pen: SSLPenalty | None
) -> None:
    opt = make_optimizer(model, lr, rec)
    steps = math.ceil(len(data.train) / rec.batch_size)
    for epoch in range(epochs):
        batches = data.train.batches(
            rec.batch_size,
            shuffle=True,
            augment=True,
            seed=1000 + epoch,
            device=torch.device("cpu"),
        )
        train_one_epoch(
            model,
            batches,
            opt,
            lr_fn=lambda p: lr_at(p, lr, epochs, rec, 0.0),
            steps_per_epoch=steps,
            epoch=epoch,
            penalty=pen,
            label_smoothing=0.0,
            device=torch.device("cpu"),
        )


def top1(model: nn.Module, data: Any) -> float:
    return evaluate(model, data.val, batch_size=256, device=torch.device("cpu")).top1


def near_zero_share(model: nn.Module, prune_type: str, example: torch.Tensor) -> float:
    """Share of the prune type's units that are near zero (what pruning at that share removes).

    A unit is near zero when its part's norm is at most 1e-3 of the largest in its group
    (filter_and_channel_wise: either part); depth_wise: share of residual blocks.
    """
    if prune_type == "shape_wise":
        return group_sparsity(model, "shape_wise", example_inputs=example)
    gs, _, _ = build_groups(model, example)
    if prune_type == "depth_wise":
        n = torch.stack([g.moments()[:, 2].sqrt().squeeze(0) for g in gs.block])
        return float((n <= 1e-3 * n.max()).float().mean())
    parts = PARTS[prune_type]
    near = total = 0
    for g in gs.channel:
        if not g.prunable or not all(g.has(p) for p in parts):
            continue
        dead = torch.zeros(g.units, dtype=torch.bool)
        for p in parts:
            n = g.moments(p)[:, 2].sqrt()
            dead |= n <= 1e-3 * n.max()
        near += int(dead.sum())
        total += g.units
    return near / max(total, 1)


def zero_shapes(model: nn.Module, share: float, example: torch.Tensor) -> nn.Module:
    """Shape "pruning": zero the ``share`` of shape units with the lowest relative norms.

    No prune type removes W[:, c, h, w] physically (it would remove a GEMM column of the
    im2col'd convolution, as in Wen et al.), so this zeroes them: the accuracy it measures is
    what removing them would keep.
    """
    out = copy.deepcopy(model)
    gs, _, _ = build_groups(out, example)
    scores = []
    for g in gs.shape:
        n = g.squares().sqrt()
        scores.append(n / n.pow(2).mean().sqrt().clamp_min(1e-30))
    flat = torch.cat(scores)
    k = round(share * flat.numel())
    if k == 0:
        return out
    thr = flat.sort().values[k - 1]
    with torch.no_grad():
        for g, sc in zip(gs.shape, scores):
            ax = g.slices[0].axis
            ax.param.mul_(ax.shaped((sc > thr).to(ax.param.dtype)))
    return out


class _Zeroed:
    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.actual_ratio = float("nan")
        self.flops_after = self.flops_before = 1


def prune_at(model: nn.Module, prune_type: str, share: float, example: torch.Tensor, **kw: Any):  # type: ignore[no-untyped-def]
    if prune_type == "shape_wise":
        return _Zeroed(zero_shapes(model, share, example))
    if prune_type == "depth_wise":
        from sslsearch.models import residual_blocks

        blocks = round(share * len(residual_blocks(model)))
        blocks = min(blocks, len(residual_blocks(model)) - 1)
        return prune(model, example, prune_type="depth_wise", blocks=blocks, **kw)
    return prune(model, example, prune_type=prune_type, ratio=min(share, 0.95), **kw)


def finetuned(model: nn.Module, data: Any, rec: Recipe, epochs: int) -> float:
    m = copy.deepcopy(model)
    train(m, data, rec, epochs, rec.finetune_lr, None)
    return top1(m, data)


def run_type(
    arch: str, ssl_type: str, data: Any, rec: Recipe, args: argparse.Namespace, plain: nn.Module
) -> dict[str, Any]:
    prune_type = PRUNE_OF[ssl_type]
    example = torch.zeros(1, data.channels, data.image_size, data.image_size)
    tries = []
    chosen: dict[str, Any] | None = None
    for lam in args.lambdas:
        seed_everything(args.seed)
        model = create_model(arch, data.num_classes, data.channels)
        t0 = time.perf_counter()
        pen = SSLPenalty.build(model, ssl_type, lam, example)
        train(model, data, rec, args.epochs, rec.lr, pen)
        ssl_top1 = top1(model, data)
        sparsity = group_sparsity(model, ssl_type, example_inputs=example)
        share = near_zero_share(model, prune_type, example)
        res = prune_at(model, prune_type, share, example)
        pruned_top1 = top1(res.model, data)
        row = {
            "lambda": lam,
            "near_zero": sparsity,
            "prune_share": share,
            "actual_ratio": res.actual_ratio,
            "ssl_top1": ssl_top1,
            "pruned_top1": pruned_top1,
            "flops_kept": res.flops_after / max(res.flops_before, 1),
            "seconds": time.perf_counter() - t0,
            "_model": res.model,
        }
        print(
            f"  {arch} {ssl_type} lambda {lam:g}: near-zero {100 * sparsity:.1f}%, "
            f"prune {prune_type} at {100 * share:.1f}%, top-1 {ssl_top1:.2f} -> {pruned_top1:.2f}"
            f" ({row['seconds']:.0f} s)",
            flush=True,
        )
        tries.append(row)
        ok_drop = ssl_top1 - pruned_top1 <= args.max_drop
        if sparsity >= args.target and ok_drop:
            chosen = row
            break
    if chosen is None:
        within = [r for r in tries if r["ssl_top1"] - r["pruned_top1"] <= args.max_drop]
        chosen = max(within, key=lambda r: r["near_zero"]) if within else tries[-1]
    chosen["finetuned_top1"] = finetuned(chosen["_model"], data, rec, args.finetune_epochs)
    # lambda = 0 reference: the same pruning at the same share
    ref = prune_at(plain, prune_type, chosen["prune_share"], example)
    ref_pruned = top1(ref.model, data)
    ref_ft = finetuned(ref.model, data, rec, args.finetune_epochs)
    out = {k: v for k, v in chosen.items() if not k.startswith("_")}
    return {
        "arch": arch,
        "ssl_type": ssl_type,
        "prune_type": prune_type,
        **out,
        "meets_target": out["near_zero"] >= args.target
        and out["ssl_top1"] - out["pruned_top1"] <= args.max_drop,
        "ref_top1": top1(plain, data),
        "ref_pruned_top1": ref_pruned,
        "ref_finetuned_top1": ref_ft,
        "tries": [{k: v for k, v in r.items() if not k.startswith("_")} for r in tries],
    }


def normalizer_rows(
    arch: str, plain: nn.Module, data: Any, example: torch.Tensor
) -> list[dict[str, Any]]:
    """How the score normaliser decides what a dense (lambda = 0) model loses at ratio 0.3/0.5."""
    rows = []
    for prune_type in ("filter_wise", "channel_wise", "filter_and_channel_wise"):
        for ratio in (0.5,):
            row: dict[str, Any] = {"arch": arch, "prune_type": prune_type, "ratio": ratio}
            for how in ("mean", "element", "none"):
                r = prune(plain, example, prune_type=prune_type, ratio=ratio, normalizer=how)
                row[how] = top1(r.model, data)
                row[f"{how}_min_width"] = min(
                    m.out_channels for m in r.model.modules() if isinstance(m, nn.Conv2d)
                )
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.time()
    threads = set_threads(args.threads)
    machine = machine_info()
    rec = Recipe(epochs=args.epochs, finetune_epochs=args.finetune_epochs)
    data = load_datasets(DataConfig(name="digits"))
    print_header(
        "SSL types on digits: near-zero groups and top-1 after SSL / pruning / fine-tuning",
        machine,
        f"threads {threads}, {args.epochs} SSL + {args.finetune_epochs} fine-tune epochs, "
        f"lambda grid {args.lambdas}",
    )
    rows: list[dict[str, Any]] = []
    norm_rows: list[dict[str, Any]] = []
    for arch in args.archs:
        seed_everything(args.seed)
        plain = create_model(arch, data.num_classes, data.channels)
        train(plain, data, rec, args.epochs, rec.lr, None)
        example = torch.zeros(1, data.channels, data.image_size, data.image_size)
        norm_rows += normalizer_rows(arch, plain, data, example)
        for t in args.types:
            if t == "depth_wise" and arch.startswith("vgg"):
                continue
            rows.append(run_type(arch, t, data, rec, args, plain))
    print_table(
        [
            {
                **r,
                "near_zero_pct": 100 * r["near_zero"],
                "share_pct": 100 * r["prune_share"],
                "ok": "yes" if r["meets_target"] else "NO",
            }
            for r in rows
        ],
        [
            Col("arch", "model"),
            Col("ssl_type", "ssl type"),
            Col("lambda", "lambda", "g"),
            Col("near_zero_pct", "near-zero groups %", ".1f"),
            Col("prune_type", "pruned as"),
            Col("share_pct", "pruned share %", ".1f"),
            Col("ssl_top1", "top-1 after SSL", ".2f"),
            Col("pruned_top1", "right after pruning", ".2f"),
            Col("finetuned_top1", "after fine-tune", ".2f"),
            Col("ref_pruned_top1", "lambda=0: right after pruning", ".2f"),
            Col("ref_finetuned_top1", "lambda=0: after fine-tune", ".2f"),
            Col("ok", ">=50% and <=1 pt"),
        ],
        title="SSL types (val top-1 %, digits)",
    )
    print_table(
        norm_rows,
        [
            Col("arch", "model"),
            Col("prune_type", "prune type"),
            Col("ratio", "ratio", ".1f"),
            Col("mean", "normalizer mean", ".2f"),
            Col("element", "per element", ".2f"),
            Col("none", "none", ".2f"),
            Col("mean_min_width", "min width (mean)"),
            Col("element_min_width", "min width (element)"),
            Col("none_min_width", "min width (none)"),
        ],
        title="Score normaliser on the dense (lambda = 0) models: top-1 right after pruning",
    )
    write_results(
        "bench_ssl_types",
        machine=machine,
        settings={**vars(args), "threads_used": threads},
        results={"rows": rows, "normalizers": norm_rows},
        started=started,
        notes=[
            "near_zero: share of the SSL type's units with norm <= 1e-3 x the largest of their "
            "group; prune_share: the same for the prune type's units, the ratio pruned at.",
            "lambda: the smallest grid value meeting the target (see the module docstring).",
        ],
        out=args.out,
    )


if __name__ == "__main__":
    main()

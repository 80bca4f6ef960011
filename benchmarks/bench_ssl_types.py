"""Does every SSL type make its structures prunable? One row per (model, SSL type) on digits,
mean and sd over seeds; lambda chosen on the validation split, figures on the test split.

For each SSL type: SSL training (the trial's loop: proximal group Lasso with the default
``ssl_weighting``, flushed every epoch), the figures of ``sslsearch.sparsity_report`` (exactly
zero units; the FLOPs the pruner could remove at no change of the function), pruning with the
prune type that removes what the SSL type zeroes to ``flops_budget`` 0.5 plus the BatchNorm
re-estimation the search does, then fine-tuning without the penalty. The figure that counts is
top-1 right after pruning, next to top-1 after SSL with the same BN re-estimation (what pruning
alone changed). lambda = 0 (plain training, the same pruning and re-estimation) is each row's
reference: what SSL adds.

shape_wise: no prune type removes a shape, so its zeros save no FLOPs (its removable FLOPs are the
channels it happens to empty); its row keeps the SSL model as it is (the zeroed shapes) and its
lambda = 0 reference zeroes the same share of the weakest shapes of the plain model.

lambda per (model, type): on the first seed, the smallest value of ``--lambdas`` whose SSL model
has at least half of its FLOPs removable (shape_wise: half of its shapes exactly zero) and loses
at most ``--max-drop`` points right after pruning; failing that, the largest. Every seed then
runs at that lambda. Every run is appended to ``--rows`` (JSON lines) at once and a rerun skips
it: a killed run loses at most the run in progress.

    python benchmarks/bench_ssl_types.py                  # 2 CPU cores: about an hour
    python benchmarks/bench_ssl_types.py --archs vgg_small --types filter_wise --seeds 1
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
from torch import nn

from sslsearch.config import DataConfig, Recipe
from sslsearch.data import load_datasets
from sslsearch.errors import NotPrunableError
from sslsearch.models import create_model
from sslsearch.pruning import DEFAULT_SSL_WEIGHTING, build_penalty, prune, sparsity_report
from sslsearch.sparsity import SSL_TYPES, model_groups
from sslsearch.trial._train import (
    evaluate,
    lr_at,
    make_optimizer,
    recalibrate_bn,
    seed_everything,
    train_one_epoch,
)

# which prune type removes what each SSL type zeroes (shape_wise: none does)
PRUNE_OF = {
    "filter_wise": "filter_wise",
    "channel_wise": "channel_wise",
    "filter_and_channel_wise": "filter_and_channel_wise",
    "shape_wise": None,
    "depth_wise": "depth_wise",
    "group_wise": "filter_and_channel_wise",
}
FLOPS_BUDGET = 0.5
_PLAIN: dict[tuple[str, int], dict[str, Any]] = {}  # (arch, seed) -> the lambda = 0 weights


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--archs", nargs="+", default=["vgg_small", "resnet20"])
    p.add_argument("--types", nargs="+", default=list(SSL_TYPES), choices=SSL_TYPES)
    p.add_argument("--weighting", default=DEFAULT_SSL_WEIGHTING)
    p.add_argument("--lambdas", nargs="+", type=float, default=[0.03, 0.1, 0.3, 1.0, 3.0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--finetune-epochs", type=int, default=4)
    p.add_argument("--max-drop", type=float, default=1.0, help="top-1 points lost by pruning")
    p.add_argument("--threads", type=int, default=1)
    # rows before lambda was chosen on validation (bench_ssl_types.rows.jsonl) are not reused
    p.add_argument("--rows", default=str(RESULTS_DIR / "bench_ssl_types_val.rows.jsonl"))
    p.add_argument("--summarize", action="store_true", help="only summarise the saved rows")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def ssl_penalty(
    model: nn.Module,
    data: Any,
    rec: Recipe,
    ssl_type: str,
    lam: float,
    weighting: str,
    seed: int,
    example: torch.Tensor,
) -> Any:
    """The trial's penalty for ``model`` (None at lambda 0), its weights measured on training
    batches as the trial measures them."""
    if lam <= 0:
        return None
    calib = data.train.batches(
        rec.batch_size, shuffle=True, augment=False, seed=seed, device=torch.device("cpu")
    )
    return build_penalty(
        model, ssl_type, lam, weighting=weighting, example_inputs=example, batches=calib
    )


def train(
    model: nn.Module,
    data: Any,
    rec: Recipe,
    epochs: int,
    lr: float,
    pen: Any,
    seed: int,
    warmup: float = 0.0,
) -> None:
    opt = make_optimizer(model, lr, rec)
    steps = math.ceil(len(data.train) / rec.batch_size)
    dev = torch.device("cpu")
    for epoch in range(epochs):
        batches = data.train.batches(
            rec.batch_size, shuffle=True, augment=True, seed=seed * 1000 + epoch, device=dev
        )
        train_one_epoch(
            model,
            batches,
            opt,
            lr_fn=lambda p: lr_at(p, lr, epochs, rec, warmup),
            steps_per_epoch=steps,
            epoch=epoch,
            penalty=pen,
            label_smoothing=0.0,
            device=dev,
        )
        if pen is not None:
            pen.flush_()


def top1(model: nn.Module, data: Any) -> float:
    """Test top-1: what the tables report (nothing is chosen on it)."""
    return evaluate(model, data.test, batch_size=256, device=torch.device("cpu")).top1


def val_top1(model: nn.Module, data: Any) -> float:
    """Validation top-1: what chooses lambda (``meets``)."""
    return evaluate(model, data.val, batch_size=256, device=torch.device("cpu")).top1


def zero_weakest_shapes(model: nn.Module, share: float, example: torch.Tensor) -> nn.Module:
    """The lambda = 0 reference of a shape_wise row: zero the ``share`` of shapes with the lowest
    norms relative to their layer (what a shape pruner would take first)."""
    out = copy.deepcopy(model)
    gs = model_groups(out, example)
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


def pruned(
    model: nn.Module, prune_type: str | None, data: Any, rec: Recipe, seed: int, share: float
) -> tuple[nn.Module, float]:
    """(pruned + BN re-estimated model, FLOPs kept). shape_wise: the weakest ``share`` zeroed."""
    example = torch.zeros(1, data.channels, data.image_size, data.image_size)
    if prune_type is None:
        small, kept = zero_weakest_shapes(model, share, example), 1.0
    else:
        r = prune(model, example, prune_type=prune_type, flops_budget=FLOPS_BUDGET)
        small, kept = r.model, r.flops_after / r.flops_before
    recalibrate_bn(small, _calibration(data, rec, seed))
    return small, kept


def _calibration(data: Any, rec: Recipe, seed: int) -> Any:
    """The batches BN statistics are re-estimated on (the search's: un-augmented, shuffled)."""
    return data.train.batches(
        rec.batch_size, shuffle=True, augment=False, seed=seed, device=torch.device("cpu")
    )


def run_one(
    arch: str, ssl_type: str, lam: float, seed: int, args: argparse.Namespace
) -> dict[str, Any]:
    t0 = time.perf_counter()
    data = load_datasets(DataConfig(name="digits"))
    rec = Recipe(epochs=args.epochs, finetune_epochs=args.finetune_epochs)
    example = torch.zeros(1, data.channels, data.image_size, data.image_size)
    seed_everything(seed)
    model = create_model(arch, data.num_classes, data.channels)
    pen = ssl_penalty(model, data, rec, ssl_type, lam, args.weighting, seed, example)
    plain = _PLAIN.get((arch, seed)) if lam == 0 else None
    if plain is not None:  # lambda = 0 trains the same model for every type
        model.load_state_dict(plain)
    else:
        train(model, data, rec, rec.epochs, rec.lr, pen, seed)
        if lam == 0:
            _PLAIN[(arch, seed)] = copy.deepcopy(model.state_dict())
    rep = sparsity_report(model, ssl_type, example)
    prune_type = PRUNE_OF[ssl_type]
    row: dict[str, Any] = {
        "arch": arch,
        "ssl_type": ssl_type,
        "lambda": lam,
        "seed": seed,
        "epochs": rec.epochs,
        "weighting": args.weighting if lam > 0 else "-",
        "prune_type": prune_type or "shapes zeroed",
        "ssl_top1": top1(model, data),
        "exact_zero_share": rep["exact_zero_share"],
        "removable_flops_share": rep["removable_flops_share"],
        "removable_params_share": rep["removable_params_share"],
        "at_floor": len(rep["at_floor"]),
        "layers": len(rep["width"]),
        "_model": model,
    }
    return {**row, "seconds": time.perf_counter() - t0}


def finish(row: dict[str, Any], args: argparse.Namespace, share: float) -> dict[str, Any]:
    """Prune (at the budget; shape_wise: zero ``share`` of the shapes) and fine-tune."""
    data = load_datasets(DataConfig(name="digits"))
    rec = Recipe(epochs=args.epochs, finetune_epochs=args.finetune_epochs)
    model = row.pop("_model")
    prune_type = PRUNE_OF[row["ssl_type"]]
    try:
        small, kept = pruned(model, prune_type, data, rec, row["seed"], share)
    except NotPrunableError as e:
        row.update(pruned_top1=float("nan"), finetuned_top1=float("nan"), error=str(e))
        return row
    row["flops_kept"] = kept
    row["pruned_top1"] = top1(small, data)
    row["pruned_top1_val"] = val_top1(small, data)
    # the SSL model with the same BN re-estimation: what pruning alone changed
    same = copy.deepcopy(model)
    recalibrate_bn(same, _calibration(data, rec, row["seed"]))
    row["ssl_top1_bn"] = top1(same, data)
    row["ssl_top1_bn_val"] = val_top1(same, data)
    train(small, data, rec, rec.finetune_epochs, rec.finetune_lr, None, row["seed"] + 500)
    row["finetuned_top1"] = top1(small, data)
    row["meets"] = bool(
        (row["exact_zero_share"] if prune_type is None else row["removable_flops_share"])
        >= FLOPS_BUDGET
        and row["ssl_top1_bn_val"] - row["pruned_top1_val"] <= args.max_drop  # validation
    )
    return row


# ---- rows ----------------------------------------------------------------------------------


def load_rows(path: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    p = Path(path)
    if p.exists():
        for line in p.read_text().splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            out[_key(r["arch"], r["ssl_type"], r["lambda"], r["seed"], r.get("ref_of"))] = r
    return out


def _key(arch: str, t: str, lam: float, seed: int, ref_of: Any = None) -> tuple[Any, ...]:
    return (arch, t, float(f"{lam:.6g}"), seed, ref_of)


def append_row(path: str, row: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(row) + "\n").encode())
    finally:
        os.close(fd)


def ssl_row(arch: str, t: str, lam: float, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    rows = load_rows(args.rows)
    k = _key(arch, t, lam, seed)
    if k in rows:
        return rows[k]
    row = run_one(arch, t, lam, seed, args)
    row = finish(row, args, row["exact_zero_share"])
    append_row(args.rows, row)
    print(
        f"  {arch} {t} lambda {lam:g} seed {seed}: zero {100 * row['exact_zero_share']:.1f}%, "
        f"removable FLOPs {100 * row['removable_flops_share']:.1f}%, top-1 "
        f"{row['ssl_top1']:.2f} -> {row.get('pruned_top1', float('nan')):.2f} -> "
        f"{row.get('finetuned_top1', float('nan')):.2f}, at floor {row['at_floor']}/"
        f"{row['layers']} ({row['seconds']:.0f} s)",
        flush=True,
    )
    return row


def ref_row(arch: str, t: str, seed: int, share: float, args: argparse.Namespace) -> dict[str, Any]:
    """lambda = 0 (one plain model per seed), pruned like the SSL type's row."""
    rows = load_rows(args.rows)
    k = _key(arch, t, 0.0, seed, t)
    if k in rows:
        return rows[k]
    row = run_one(arch, t, 0.0, seed, args)
    row = finish(row, args, share)
    row["ref_of"] = t
    append_row(args.rows, row)
    return row


# ---- summary -------------------------------------------------------------------------------


def _ms(xs: list[float], scale: float = 1.0, fmt: str = ".2f") -> str:
    v = [scale * float(x) for x in xs if x is not None and not math.isnan(float(x))]
    if not v:
        return "-"
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{format(statistics.mean(v), fmt)} +- {format(sd, fmt)}"


def summarize(
    args: argparse.Namespace, chosen: dict[tuple[str, str], float]
) -> list[dict[str, Any]]:
    rows = load_rows(args.rows)
    table = []
    for (arch, t), lam in chosen.items():
        ssl = [rows[k] for k in rows if k[:3] == _key(arch, t, lam, 0)[:3] and k[4] is None]
        ssl = [r for r in ssl if r["seed"] < args.seeds]
        refs = [r for r in rows.values() if r.get("ref_of") == t and r["arch"] == arch]
        refs = [r for r in refs if r["seed"] < args.seeds]
        if not ssl:
            continue
        table.append(
            {
                "arch": arch,
                "ssl_type": t,
                "lambda": lam,
                "seeds": len(ssl),
                "zero": _ms([r["exact_zero_share"] for r in ssl], 100, ".1f"),
                "removable": _ms([r["removable_flops_share"] for r in ssl], 100, ".1f"),
                "pruned_as": ssl[0]["prune_type"],
                "flops_kept": _ms([r.get("flops_kept", float("nan")) for r in ssl], 100, ".1f"),
                "ssl_top1": _ms([r["ssl_top1"] for r in ssl]),
                "ssl_top1_bn": _ms([r.get("ssl_top1_bn", float("nan")) for r in ssl]),
                "pruned_top1": _ms([r.get("pruned_top1", float("nan")) for r in ssl]),
                "finetuned_top1": _ms([r.get("finetuned_top1", float("nan")) for r in ssl]),
                "ref_top1": _ms([r["ssl_top1"] for r in refs]),
                "ref_pruned_top1": _ms([r.get("pruned_top1", float("nan")) for r in refs]),
                "ref_finetuned_top1": _ms([r.get("finetuned_top1", float("nan")) for r in refs]),
                "at_floor": f"{statistics.mean(r['at_floor'] for r in ssl):.1f}/{ssl[0]['layers']}",
                "meets": f"{sum(bool(r.get('meets')) for r in ssl)}/{len(ssl)}",
            }
        )
    print_table(
        table,
        [
            Col("arch", "model"),
            Col("ssl_type", "ssl type"),
            Col("lambda", "lambda", "g"),
            Col("zero", "exactly zero %"),
            Col("removable", "removable FLOPs %"),
            Col("pruned_as", "pruned as"),
            Col("flops_kept", "FLOPs kept %"),
            Col("ssl_top1", "after SSL"),
            Col("ssl_top1_bn", "after SSL, BN re-est."),
            Col("pruned_top1", "right after pruning"),
            Col("finetuned_top1", "after fine-tune"),
            Col("ref_pruned_top1", "lambda=0: right after pruning"),
            Col("ref_finetuned_top1", "lambda=0: after fine-tune"),
            Col("at_floor", "layers at floor"),
            Col("meets", ">=50% and <=1 pt"),
        ],
        title="SSL types on digits (test top-1 %, mean +- sd over seeds)",
    )
    return table


def choose(arch: str, t: str, args: argparse.Namespace) -> float:
    """The smallest grid lambda meeting the target on the first seed (else the largest)."""
    for lam in args.lambdas:
        if ssl_row(arch, t, lam, 0, args).get("meets"):
            return lam
    return args.lambdas[-1]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.time()
    torch.set_num_threads(args.threads)
    machine = machine_info()
    print_header(
        "SSL types on digits: exact zeros, removable FLOPs, top-1 after SSL / pruning / fine-tune",
        machine,
        f"threads {args.threads}, {args.epochs} SSL + {args.finetune_epochs} fine-tune epochs, "
        f"weighting {args.weighting}, lambda grid {args.lambdas}, {args.seeds} seeds",
    )
    chosen: dict[tuple[str, str], float] = {}
    saved = load_rows(args.rows)
    for arch in args.archs:
        for t in args.types:
            if t == "depth_wise" and arch.startswith("vgg"):
                continue
            if args.summarize:  # the saved rows only: what choose() picked, if it got there
                first = [lam for lam in args.lambdas if _key(arch, t, lam, 0) in saved]
                met = [lam for lam in first if saved[_key(arch, t, lam, 0)].get("meets")]
                if met or (first and first[-1] == args.lambdas[-1]):
                    chosen[(arch, t)] = met[0] if met else first[-1]
                continue
            lam = choose(arch, t, args)
            chosen[(arch, t)] = lam
            for seed in range(args.seeds):
                r = ssl_row(arch, t, lam, seed, args)
                ref_row(arch, t, seed, r["exact_zero_share"], args)
    table = summarize(args, chosen)
    write_results(
        "bench_ssl_types",
        machine=machine,
        settings={**vars(args), "flops_budget": FLOPS_BUDGET},
        results={
            "table": table,
            "chosen_lambda": {f"{a} {t}": lam for (a, t), lam in chosen.items()},
            "runs": list(load_rows(args.rows).values()),
        },
        started=started,
        notes=[
            "exact zero: share of the SSL type's units exactly zero; removable FLOPs: share of "
            "the dense FLOPs the pruner could remove at no change of the function "
            "(sslsearch.sparsity_report). Pruned to flops_budget 0.5 with BN re-estimation.",
            "lambda = 0 rows: plain training, the same pruning and BN re-estimation.",
            "The VM was shared with other engineers' jobs.",
        ],
        out=args.out,
    )


if __name__ == "__main__":
    main()

"""``prune``, ``profile`` and ``evaluate``: one saved model file, one library call."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from sslsearch.cli._args import (
    add_model_argument,
    add_pruning_arguments,
    model_argument,
    optional_model_argument,
    print_json,
    pruning_arguments,
    refuse_overwrite,
)
from sslsearch.config import PRUNE_TYPE_NAMES, PRUNE_WAY_NAMES
from sslsearch.errors import UserError

log = logging.getLogger("sslsearch")


# ---- prune ----------------------------------------------------------------------------------


def add_prune(p: argparse.ArgumentParser) -> None:
    """Prune a saved model (the seed's prune step) and write the smaller model."""
    add_model_argument(p, "the model file to prune (written by a trial, finetune or prune)")
    p.add_argument("--prune-type", required=True, help=" | ".join(PRUNE_TYPE_NAMES))
    p.add_argument("--prune-way", default="group_lasso", help=" | ".join(PRUNE_WAY_NAMES))
    add_pruning_arguments(p)
    p.add_argument("--batch-size", type=int, default=1, help="latency budget: batch size")
    p.add_argument("--threads", type=int, default=None, help="latency budget: CPU threads")
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="input size (default: the one stored in the model file)",
    )
    p.add_argument("--out", required=True, help="where to write the pruned model")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_prune)


def _input_shape(info: dict[str, Any], image_size: int | None) -> tuple[int, ...]:
    shape = info.get("input_shape")
    c = int(info.get("in_channels", 3))
    if image_size is not None:
        return (c, image_size, image_size)
    if shape:
        return tuple(int(s) for s in shape)
    raise UserError("the model file does not store its input size; pass --image-size")


def cmd_prune(a: argparse.Namespace) -> int:
    from sslsearch.models import load_model, model_info, save_model
    from sslsearch.pruning import LatencySpec, prune

    path = model_argument(a)
    out = Path(a.out)
    refuse_overwrite(out, a.force)
    info = model_info(path)
    model = load_model(path)
    if not a.verbose:  # the library logs what the command prints below: say it once
        logging.getLogger("sslsearch.pruning").setLevel(logging.WARNING)
    shape = _input_shape(info, a.image_size)
    r = prune(
        model,
        shape,
        prune_type=a.prune_type,
        prune_way=a.prune_way,
        latency=LatencySpec(batch_size=a.batch_size, threads=a.threads),
        inplace=True,
        **pruning_arguments(a),
    )
    save_model(
        r.model,
        out,
        arch=info["arch"],
        num_classes=info["num_classes"],
        in_channels=info["in_channels"],
        input_shape=shape,
        meta={**info.get("meta", {}), "prune": json.dumps(r.summary())},
    )
    summary = {**r.summary(), "out": str(out)}
    if a.json:
        print_json(summary)
    else:
        budget = (
            f"{r.budget_kind} budget {r.budget:.1%}: reached {r.budget_achieved:.1%} "
            f"({r.budget_note}); "
            if r.budget_kind and r.budget is not None and r.budget_achieved is not None
            else ""
        )
        print(
            f"{r.prune_type}/{r.prune_way}: {budget}actual ratio {r.actual_ratio:.2%}, "
            f"FLOPs {r.flops_before / 1e9:.4g}G -> {r.flops_after / 1e9:.4g}G, "
            f"params {r.params_before / 1e6:.4g}M -> {r.params_after / 1e6:.4g}M; wrote {out}"
        )
        if r.at_floor:
            print(
                f"layers cut to their floor (min_width_share {r.min_width_share:g}): "
                + ", ".join(r.at_floor)
            )
    return 0


# ---- profile --------------------------------------------------------------------------------


def add_profile(p: argparse.ArgumentParser) -> None:
    """FLOPs (multiply-adds, fvcore), parameters, size (MB) and measured latency of a model."""
    add_model_argument(p, "profile a saved (pruned) model file (or give --arch)")
    p.add_argument(
        "--arch", default=None, help="model name or module:function (or give a model file)"
    )
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="default: the model file's, else the architecture's own (vgg_small, resnet20, "
        "resnet56: 32; vgg16_bn, resnet50: 224)",
    )
    p.add_argument("--batch-size", type=int, default=1, help="latency batch size")
    p.add_argument("--repeats", type=int, default=20, help="timed runs (after 5 warm-up runs)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for latency")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_profile)


def cmd_profile(a: argparse.Namespace) -> int:
    from sslsearch.config import MODEL_NAMES
    from sslsearch.metrics import measure_cost
    from sslsearch.models import create_model, load_model, model_info
    from sslsearch.trial import pick_device

    path = optional_model_argument(a)
    if path:
        info = model_info(path)
        model = load_model(path)
        shape = _input_shape(info, a.image_size)
        arch = info["arch"]
    elif a.arch:
        model = create_model(a.arch, a.num_classes, a.in_channels)
        known = MODEL_NAMES.get(a.arch)
        size = a.image_size or (known.input_size if known else 224)
        shape = (a.in_channels, size, size)
        arch = a.arch
    else:
        raise UserError("give --arch NAME or a model file (sslsearch profile MODEL)")
    if a.batch_size < 1 or a.repeats < 1:
        raise UserError("--batch-size and --repeats must be >= 1")
    device = pick_device(a.device)
    model = model.to(device).eval()
    cost = measure_cost(
        model,
        shape,
        latency=not a.no_latency,
        batch_size=a.batch_size,
        device=device,
        repeats=a.repeats,
        threads=a.threads,
    )
    d = cost.to_dict()
    if a.json:
        print_json(d)
    else:
        lat = (
            f"{cost.latency_ms:.3f} ms (median, batch {cost.latency_batch_size}, "
            f"{cost.latency_device}, {cost.latency_threads} threads)"
            if cost.latency_ms is not None
            else "not measured"
        )
        print(
            f"{arch} at {'x'.join(map(str, shape))}: {cost.flops / 1e9:.4f} GFLOPs "
            f"(multiply-adds), {cost.params / 1e6:.4f} M params, {cost.size_mb:.2f} MB, "
            f"latency {lat}"
        )
    return 0


# ---- evaluate -------------------------------------------------------------------------------


def add_evaluate(p: argparse.ArgumentParser) -> None:
    """Top-1/top-5 of a saved model on a dataset split (val by default: what the search saw)."""
    add_model_argument(p, "a model file written by sslsearch")
    p.add_argument("--dataset", default=None, help="default: the one the model was trained on")
    p.add_argument("--data-root", default=None)
    p.add_argument("--split", choices=("val", "test", "train"), default="val")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(a: argparse.Namespace) -> int:
    from sslsearch.data import load_datasets
    from sslsearch.models import load_model, model_info
    from sslsearch.trial import evaluate, pick_device, trained_with

    path = model_argument(a)
    info = model_info(path)
    data = trained_with(info)[0]  # trained by sslsearch: its data settings (same val split)
    changes: dict[str, Any] = {}
    if a.dataset:
        changes["name"] = a.dataset
    if a.data_root:
        changes["root"] = a.data_root
    if a.image_size:
        changes["image_size"] = a.image_size
    from dataclasses import replace

    data = replace(data, **changes)
    device = pick_device(a.device)
    model = load_model(path, device)
    ds = load_datasets(data)
    split = {"val": ds.val, "test": ds.test, "train": ds.train}[a.split]
    ev = evaluate(model, split, batch_size=a.batch_size, device=device)
    out = {
        "model": path,
        "dataset": data.name,
        "split": a.split,
        "top1": ev.top1,
        "top5": ev.top5,
        "loss": ev.loss,
        "images": ev.images,
    }
    if a.json:
        print_json(out)
    else:
        print(
            f"{path} on {data.name}/{a.split} ({ev.images} images): "
            f"top1 {ev.top1:.3f}  top5 {ev.top5:.3f}"
        )
    return 0

"""``trial`` and ``finetune``: train, prune and fine-tune one model from the command line."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from sslsearch.cli._args import (
    add_distill_arguments,
    add_model_argument,
    add_pruning_arguments,
    float_or_dict,
    model_argument,
    print_json,
    pruning_arguments,
    refuse_overwrite,
)
from sslsearch.config import PRUNE_TYPE_NAMES, PRUNE_WAY_NAMES, SSL_TYPE_NAMES

log = logging.getLogger("sslsearch")


# ---- trial ----------------------------------------------------------------------------------


def add_trial(p: argparse.ArgumentParser) -> None:
    """Run one trial: SSL training, pruning, fine-tuning, evaluation and cost measurement."""
    _add_model_and_data_arguments(p)
    _add_ssl_arguments(p)
    _add_pruning_choice_arguments(p)
    _add_recipe_arguments(p)
    add_distill_arguments(p, "default: the SSL model before pruning")
    _add_run_arguments(p)
    p.set_defaults(func=cmd_trial)


def _add_model_and_data_arguments(p: argparse.ArgumentParser) -> None:
    """The model and the data it trains on (each node's own copy)."""
    p.add_argument(
        "--arch",
        default="vgg_small",
        help="model (see `sslsearch list`), or your factory: module:function",
    )
    p.add_argument(
        "--dataset",
        default="digits",
        help="digits | cifar10 | cifar100 | imagefolder, or your dataset function: module:function",
    )
    p.add_argument("--data-root", default="data", help="where the dataset lives on this node")
    p.add_argument("--download", action="store_true", help="download the dataset if missing")
    p.add_argument("--image-size", type=int, default=None, help="resize inputs (seed: 224)")
    p.add_argument("--no-augment", action="store_true", help="no training augmentation")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument(
        "--per-class",
        type=int,
        default=None,
        help="train on a stratified subset: this many training images per class",
    )
    p.add_argument(
        "--in-memory",
        action="store_true",
        help="imagefolder: decode every image once into a cached tensor",
    )


def _add_ssl_arguments(p: argparse.ArgumentParser) -> None:
    """The SSL penalty: its grouping, strength and weighting."""
    p.add_argument(
        "--ssl-type",
        default=None,
        help=" | ".join(SSL_TYPE_NAMES) + " (default: the prune type)",
    )
    p.add_argument(
        "--ssl-lambda",
        type=float_or_dict,
        default=None,
        help="penalty strength, or per group kind: n=..,c=..,s=..,d=.. "
        "(default: the trial default, for the default weighting)",
    )
    p.add_argument(
        "--ssl-weighting",
        default=None,
        help="how groups are weighed: gradient (default) | flops | size | none (`sslsearch list`)",
    )
    p.add_argument(
        "--ssl-floor",
        default=None,
        help="how the proximal step keeps a layer's floor: hold (default) | scale | exempt",
    )
    p.add_argument(
        "--ssl-step",
        default=None,
        help="the penalty's step under momentum: momentum (default) | reset | loss | lr",
    )
    p.add_argument(
        "--allow-unmatched-prune",
        action="store_true",
        help="prune with a prune type whose structures the SSL penalty did not target "
        "(shape_wise SSL: no prune type removes shapes)",
    )


def _add_pruning_choice_arguments(p: argparse.ArgumentParser) -> None:
    """What is pruned, how units are scored and how far (the budget)."""
    p.add_argument("--prune-type", default="filter_wise", help=" | ".join(PRUNE_TYPE_NAMES))
    p.add_argument("--prune-way", default="group_lasso", help=" | ".join(PRUNE_WAY_NAMES))
    add_pruning_arguments(p)
    p.add_argument(
        "--latency-batch-size", type=int, default=1, help="batch size latency is measured at"
    )


def _add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    """The training recipe; unset: the trial's defaults."""
    p.add_argument("--epochs", type=int, default=None, help="SSL training epochs")
    p.add_argument("--finetune-epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--finetune-lr", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--schedule", choices=("cosine", "multistep", "constant"), default=None)
    p.add_argument("--warmup-epochs", type=float, default=None)
    p.add_argument("--label-smoothing", type=float, default=None)


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Where the trial runs, what it starts from and where its results go."""
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument(
        "--weights",
        "--warm-start",
        dest="warm_start",
        default=None,
        metavar="FILE",
        help="start SSL training from these weights: a dense model file or a state_dict, path "
        "or URI (the space's `weights:`; --warm-start: its old name; a pruned model: use "
        "`sslsearch finetune`)",
    )
    p.add_argument("--cache-dir", default=None, help="reuse SSL-trained models across trials")
    p.add_argument("--out", default=None, help="write model.pt and result.json here")
    p.add_argument("--json", action="store_true", help="print the final metrics as JSON")


def trial_config_from_args(a: argparse.Namespace) -> Any:
    from sslsearch.config import TrialConfig

    recipe = {
        k: getattr(a, k)
        for k in (
            "epochs",
            "finetune_epochs",
            "batch_size",
            "lr",
            "finetune_lr",
            "weight_decay",
            "schedule",
            "warmup_epochs",
            "label_smoothing",
            "distill_weight",
            "distill_temperature",
        )
        if getattr(a, k) is not None
    }
    ssl_type = a.ssl_type or a.prune_type
    return TrialConfig.from_dict(
        {
            "arch": a.arch,
            "data": {
                "name": a.dataset,
                "root": a.data_root,
                "image_size": a.image_size,
                "augment": not a.no_augment,
                "val_fraction": a.val_fraction,
                "download": a.download,
                "per_class": a.per_class,
                "in_memory": a.in_memory,
            },
            "recipe": recipe,
            "ssl_type": ssl_type,
            **({"ssl_lambda": a.ssl_lambda} if a.ssl_lambda is not None else {}),
            **({"ssl_weighting": a.ssl_weighting} if a.ssl_weighting is not None else {}),
            **({"ssl_floor": a.ssl_floor} if a.ssl_floor is not None else {}),
            **({"ssl_step": a.ssl_step} if a.ssl_step is not None else {}),
            "allow_unmatched_prune": a.allow_unmatched_prune,
            "prune_type": a.prune_type,
            "prune_way": a.prune_way,
            **pruning_arguments(a),
            "latency_batch_size": a.latency_batch_size,
            "seed": a.seed,
            "device": a.device,
            "threads": a.threads,
            "warm_start": a.warm_start,
            "teacher": a.teacher,
            "cache_dir": a.cache_dir,
            "out_dir": a.out,
        }
    )


def cmd_trial(a: argparse.Namespace) -> int:
    from sslsearch.report import front_table
    from sslsearch.trial import run_trial

    cfg = trial_config_from_args(a)
    result = run_trial(cfg)
    m = result.metrics
    if a.json:
        print_json({k: v for k, v in m.items() if k != "config"})
    else:
        # the same columns and per-table units as the search's Pareto tables
        print(front_table([m], None)[0])
        if m.get("distilled_from"):
            print(_distilled_text(m))
        if result.status != "ok":
            print(f"trial failed: {result.error}")
        if result.model_path:
            print(f"pruned model: {result.model_path}")
    return 0 if result.status == "ok" else 1


def _distilled_text(m: dict[str, Any]) -> str:
    return (
        f"fine-tuned with distillation from {m['distilled_from']} "
        f"(weight {m['distill_weight']:g}, temperature {m['distill_temperature']:g})"
    )


# ---- finetune -------------------------------------------------------------------------------


def add_finetune(p: argparse.ArgumentParser) -> None:
    """Fine-tune a saved model, pruned or not (no SSL penalty); write it and its metrics."""
    add_model_argument(p, "the model file to fine-tune (written by a trial, prune or finetune)")
    p.add_argument(
        "--out", required=True, help="the fine-tuned model file (metrics: same name, .json)"
    )
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--dataset", default=None, help="default: the one the model was trained on")
    p.add_argument("--data-root", default=None)
    p.add_argument("--download", action="store_true", help="download the dataset if missing")
    p.add_argument(
        "--epochs",
        "--finetune-epochs",
        dest="finetune_epochs",
        type=int,
        default=None,
        help="default: the model's recipe (finetune_epochs)",
    )
    p.add_argument(
        "--lr",
        "--finetune-lr",
        dest="finetune_lr",
        type=float,
        default=None,
        help="default: the model's recipe (finetune_lr)",
    )
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--schedule", choices=("cosine", "multistep", "constant"), default=None)
    p.add_argument("--label-smoothing", type=float, default=None)
    add_distill_arguments(p, "needed to distil: no SSL model here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=cmd_finetune)


def cmd_finetune(a: argparse.Namespace) -> int:
    from dataclasses import replace

    from sslsearch.config import from_mapping, to_mapping
    from sslsearch.models import model_info
    from sslsearch.trial import finetune, trained_with

    path = model_argument(a)
    out = Path(a.out)
    refuse_overwrite(out, a.force)
    data, recipe = trained_with(model_info(path))
    data_changes = {"name": a.dataset, "root": a.data_root, "download": a.download or None}
    data = replace(data, **{k: v for k, v in data_changes.items() if v is not None})
    recipe_changes = {
        k: getattr(a, k)
        for k in (
            "finetune_epochs",
            "finetune_lr",
            "batch_size",
            "weight_decay",
            "schedule",
            "label_smoothing",
            "distill_weight",
            "distill_temperature",
        )
        if getattr(a, k) is not None
    }
    if a.teacher is None and a.distill_weight is None:
        # the model's own recipe may have distilled, from a teacher not at hand: distil only
        # when asked to (--teacher)
        recipe_changes["distill_weight"] = 0.0
    # through from_mapping, so a bad value is one line naming its key (recipe.finetune_lr)
    recipe = from_mapping(type(recipe), {**to_mapping(recipe), **recipe_changes}, "recipe")
    r = finetune(
        path,
        data=data,
        recipe=recipe,
        seed=a.seed,
        device=a.device,
        threads=a.threads,
        out=out,
        teacher=a.teacher,
    )
    m = r.metrics
    if a.json:
        print_json({k: v for k, v in m.items() if k not in ("data", "recipe")})
    else:
        print(
            f"{path} fine-tuned {m['epochs']} epoch{'' if m['epochs'] == 1 else 's'} on "
            f"{m['dataset']}: val top1 "
            f"{m['top1_before']:.2f} -> {m['top1']:.2f} (test {m['test_top1']:.2f}), "
            f"{m['flops'] / 1e9:.4g} GFLOPs (multiply-adds), {m['params'] / 1e6:.4g} M params; "
            f"wrote {out} and {out.with_suffix('.json')}"
        )
        if m.get("distilled_from"):
            print(_distilled_text(m))
    return 0

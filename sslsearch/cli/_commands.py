"""Sub-commands. Each handler turns arguments into one library call and prints the result."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from sslsearch.config import PRUNE_TYPE_NAMES, PRUNE_WAY_NAMES, SSL_TYPE_NAMES
from sslsearch.errors import UserError

log = logging.getLogger("sslsearch")


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=1, sort_keys=False, default=str))


def _float_or_dict(text: str) -> Any:
    """--ssl-lambda 1e-4 or --ssl-lambda n=1e-4,c=2e-4."""
    if "=" in text:
        out = {}
        for part in text.split(","):
            k, _, v = part.partition("=")
            try:
                out[k.strip()] = float(v)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"bad lambda {part!r}; use n=1e-4,c=1e-4"
                ) from None
        return out
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def add_model_argument(p: argparse.ArgumentParser, what: str) -> None:
    """One name for a model file in every command: ``MODEL`` or ``--model`` (old: --checkpoint)."""
    p.add_argument("model_file", nargs="?", default=None, metavar="MODEL", help=f"{what}")
    p.add_argument(
        "--model",
        "--checkpoint",
        dest="model",
        default=None,
        metavar="MODEL",
        help="the same as MODEL (--checkpoint: its old name, still accepted)",
    )


def optional_model_argument(a: argparse.Namespace) -> str | None:
    if a.model_file and a.model and a.model_file != a.model:
        raise UserError(f"two model files given ({a.model_file}, --model {a.model}); give one")
    path: str | None = a.model_file or a.model
    return path


def model_argument(a: argparse.Namespace) -> str:
    path = optional_model_argument(a)
    if path is None:
        raise UserError(f"give a model file: sslsearch {a.command} MODEL (or --model MODEL)")
    return path


def _refuse_overwrite(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise UserError(f"{out} exists; pass --force to overwrite it")


# ---- trial ----------------------------------------------------------------------------------


def add_trial(p: argparse.ArgumentParser) -> None:
    """Run one trial: SSL training, pruning, fine-tuning, evaluation and cost measurement."""
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
    p.add_argument(
        "--ssl-type",
        default=None,
        help=" | ".join(SSL_TYPE_NAMES) + " (default: the prune type)",
    )
    p.add_argument(
        "--ssl-lambda",
        type=_float_or_dict,
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
        "--allow-unmatched-prune",
        action="store_true",
        help="prune with a prune type whose structures the SSL penalty did not target "
        "(shape_wise SSL: no prune type removes shapes)",
    )
    p.add_argument("--prune-type", default="filter_wise", help=" | ".join(PRUNE_TYPE_NAMES))
    p.add_argument("--prune-way", default="group_lasso", help=" | ".join(PRUNE_WAY_NAMES))
    add_pruning_arguments(p)
    p.add_argument(
        "--latency-batch-size", type=int, default=1, help="batch size latency is measured at"
    )
    p.add_argument("--epochs", type=int, default=None, help="SSL training epochs")
    p.add_argument("--finetune-epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--finetune-lr", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--schedule", choices=("cosine", "multistep", "constant"), default=None)
    p.add_argument("--warmup-epochs", type=float, default=None)
    p.add_argument("--label-smoothing", type=float, default=None)
    add_distill_arguments(p, "default: the SSL model before pruning")
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
    p.set_defaults(func=cmd_trial)


def add_distill_arguments(p: argparse.ArgumentParser, teacher_default: str) -> None:
    """Logit distillation in the fine-tune (recipe.distill_weight / distill_temperature)."""
    g = p.add_argument_group("distillation in the fine-tune")
    g.add_argument(
        "--distill-weight",
        type=float,
        default=None,
        help="share of the loss taken by the teacher's softened outputs, [0, 1] (0: off)",
    )
    g.add_argument(
        "--distill-temperature", type=float, default=None, help="softmax temperature (default 4)"
    )
    g.add_argument(
        "--teacher",
        default=None,
        metavar="FILE",
        help=f"the model file to distil from, same classes, path or URI ({teacher_default})",
    )


def add_pruning_arguments(p: argparse.ArgumentParser) -> None:
    """How far to prune: one budget (a share of the dense model's cost to keep) or a ratio."""
    g = p.add_argument_group("how far to prune (give one)")
    g.add_argument(
        "--flops-budget",
        type=float,
        default=None,
        help="keep at most this share of the dense model's FLOPs (multiply-adds), (0, 1]",
    )
    g.add_argument(
        "--params-budget", type=float, default=None, help="keep at most this share of the params"
    )
    g.add_argument(
        "--latency-budget",
        type=float,
        default=None,
        help="keep this share of the measured latency (device, threads and batch size of the run)",
    )
    g.add_argument(
        "--ratio", type=float, default=None, help="the reference project's knob: share of units"
    )
    g.add_argument("--blocks", type=int, default=None, help="depth_wise: residual blocks to remove")
    p.add_argument(
        "--min-width-share",
        type=float,
        default=None,
        help="each layer keeps at least this share of its width (default 0.1, at least 8 channels)",
    )


def pruning_arguments(a: argparse.Namespace) -> dict[str, Any]:
    """The pruning keys the flags gave (a trial given none prunes to a FLOPs budget of 0.5)."""
    out = {
        k: getattr(a, k)
        for k in ("flops_budget", "params_budget", "latency_budget", "ratio", "blocks")
        if getattr(a, k) is not None
    }
    if a.min_width_share is not None:
        out["min_width_share"] = a.min_width_share
    return out


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
        _print_json({k: v for k, v in m.items() if k != "config"})
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
    _refuse_overwrite(out, a.force)
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
        _print_json({k: v for k, v in m.items() if k not in ("data", "recipe")})
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
    _refuse_overwrite(out, a.force)
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
        _print_json(summary)
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
        _print_json(d)
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
        _print_json(out)
    else:
        print(
            f"{path} on {data.name}/{a.split} ({ev.images} images): "
            f"top1 {ev.top1:.3f}  top5 {ev.top5:.3f}"
        )
    return 0


# ---- list -----------------------------------------------------------------------------------


def add_list(p: argparse.ArgumentParser) -> None:
    """List models, datasets, ssl types and weightings, prune types and prune ways."""
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)


def cmd_list(a: argparse.Namespace) -> int:
    from sslsearch.data import get_dataset_spec, list_datasets
    from sslsearch.models import get_model_spec, list_models
    from sslsearch.pruning import list_prune_types
    from sslsearch.registry import SSL_WEIGHTINGS
    from sslsearch.sparsity import SSL_TYPE_GROUPS, describe_criteria

    d = {
        "models": {n: get_model_spec(n).description for n in list_models()},
        "datasets": {n: get_dataset_spec(n).description for n in list_datasets()},
        "ssl_types": dict(SSL_TYPE_GROUPS),
        "ssl_weightings": dict(SSL_WEIGHTINGS),
        "prune_types": list_prune_types(),
        # mean and sum are signed: their descriptions say they are not importance measures
        "prune_ways": describe_criteria(),
    }
    if a.json:
        _print_json(d)
        return 0
    for section, items in d.items():
        print(f"{section}:")
        if isinstance(items, dict):
            for k, v in items.items():
                print(f"  {k:14s} {v}")
        else:
            print("  " + ", ".join(items))
    return 0


# ---- search ---------------------------------------------------------------------------------


def add_search(p: argparse.ArgumentParser) -> None:
    """Search SSL lambda and pruning ratio with Ray Tune + Optuna for Pareto fronts."""
    from sslsearch.config import shipped_spaces

    p.add_argument(
        "--space",
        default=None,
        help=f"a shipped space's name ({', '.join(shipped_spaces())}) or a YAML file "
        "(default: default, digits; cifar10_cpu: CIFAR-10 on CPUs)",
    )
    p.add_argument("--name", default=None, help="experiment name (directory under --storage-path)")
    p.add_argument("--storage-path", default=None, help="local dir or URI (s3://...) for results")
    p.add_argument("--resume", action="store_true", help="continue an interrupted experiment")
    p.add_argument("--num-samples", type=int, default=None, help="number of trials")
    p.add_argument("--max-concurrent", type=int, default=None, help="trials at a time")
    p.add_argument(
        "--confirm-front",
        type=int,
        default=0,
        metavar="K",
        help="after the search, re-run every Pareto point with K more training seeds "
        "(SSL training included) and report mean and spread",
    )
    p.add_argument("--sampler", default=None, help="auto | gp | tpe | nsga2 | random")
    p.add_argument("--seed", type=int, default=None, help="sampler seed")
    p.add_argument("--data-root", default=None, help="dataset root on every node")
    p.add_argument("--epochs", type=int, default=None, help="SSL epochs per trial")
    p.add_argument("--finetune-epochs", type=int, default=None)
    p.add_argument("--cpus-per-trial", type=float, default=None)
    p.add_argument("--gpus-per-trial", type=float, default=None, help="a fraction shares a GPU")
    p.add_argument(
        "--early-stopping",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="stop points a finished point beat at the same fine-tune epoch (fine-tuning only)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any key of the space, e.g. --set recipe.lr=0.1 (repeatable)",
    )
    p.add_argument(
        "--address",
        default=None,
        help="join a running Ray cluster (auto or HOST:PORT) instead of starting one",
    )
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance")
    p.add_argument("--no-dashboard", action="store_true", help="start Ray without its dashboard")
    p.add_argument("--dashboard-port", type=int, default=8265)
    p.add_argument(
        "--study-storage",
        default=None,
        help="Optuna RDB URL (default: SQLite optuna.db in the experiment directory)",
    )
    p.add_argument(
        "--progress-every",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="how often to print the table of running trials",
    )
    p.set_defaults(func=cmd_search)


_FLAG_KEYS = {
    "name": "name",
    "storage_path": "storage_path",
    "num_samples": "budget.num_samples",
    "max_concurrent": "budget.max_concurrent",
    "sampler": "sampler.name",
    "seed": "sampler.seed",
    "data_root": "data.root",
    "epochs": "recipe.epochs",
    "finetune_epochs": "recipe.finetune_epochs",
    "cpus_per_trial": "resources.cpus",
    "gpus_per_trial": "resources.gpu",
    "early_stopping": "early_stopping.enabled",
}


def flag_overrides(a: argparse.Namespace) -> dict[str, str]:
    """Space overrides the search flags stand for, each with the flag as the user typed it."""
    out = {}
    for attr, key in _FLAG_KEYS.items():
        value = getattr(a, attr)
        if value is not None:
            flag = "--" + attr.replace("_", "-")
            if isinstance(value, bool):
                flag = flag if value else flag.replace("--", "--no-", 1)
            else:
                flag = f"{flag} {value}"
            out[f"{key}={json.dumps(value)}"] = flag
    return out


def check_space(a: argparse.Namespace) -> None:
    """Load and check the space torch-free (names, types, ranges): a typo costs well under 1 s.

    An error names what the user typed: the flag, the ``--set``, else the space file.
    """
    from sslsearch.config import ConfigError, check_names, load_space, override_for, space_file

    path = space_file(a.space)
    labels = flag_overrides(a)
    overrides = [*labels, *a.set]
    try:
        check_names(load_space(path, overrides))
    except ConfigError as e:
        where = e.where if e.where and e.where != path else override_for(e.key, overrides)
        if where and where.startswith("--set ") and where[len("--set ") :] in labels:
            where = labels[where[len("--set ") :]]
        raise e.located(where or path) from None


def search_options_from_args(a: argparse.Namespace) -> Any:
    from sslsearch.config import space_file
    from sslsearch.search import SearchOptions

    overrides = [*flag_overrides(a), *a.set]
    return SearchOptions(
        space=space_file(a.space),
        overrides=overrides,
        resume=a.resume,
        address=a.address,
        num_cpus=a.num_cpus,
        dashboard=not a.no_dashboard,
        dashboard_port=a.dashboard_port,
        study_storage=a.study_storage,
        verbose=a.verbose,
        progress_every_s=a.progress_every,
        confirm_front=a.confirm_front,
    )


def _progress_to_stdout() -> None:
    progress = logging.getLogger("sslsearch.progress")
    if not any(getattr(h, "_sslsearch", False) for h in progress.handlers):
        h = logging.StreamHandler(sys.stdout)
        h.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
        h._sslsearch = True  # type: ignore[attr-defined]
        progress.addHandler(h)
        progress.propagate = False


def cmd_search(a: argparse.Namespace) -> int:
    if a.num_samples is not None and a.num_samples < 1:
        raise UserError(f"--num-samples must be >= 1, got {a.num_samples}")
    if a.confirm_front < 0:
        raise UserError(f"--confirm-front must be >= 0, got {a.confirm_front}")
    if not a.resume:
        check_space(a)  # before torch and ray are imported
    from sslsearch.search import run_search

    _progress_to_stdout()
    outcome = run_search(search_options_from_args(a))
    counts = ", ".join(f"{v} {k}" for k, v in sorted(outcome.counts.items())) or "no trials"
    print(f"\nexperiment: {outcome.exp_dir}\ntrials: {counts} (see {outcome.trials_path})")
    if outcome.pareto is not None:
        _print_fronts(outcome.pareto)
    else:
        print("no completed trial: no Pareto front")
    if outcome.interrupted:
        print("the search was interrupted; continue it with the same command and --resume")
    return 0


def _print_fronts(pareto: dict[str, Any]) -> None:
    print("\n" + pareto["console"])
    files = ", ".join(pareto["files"].values())
    print(f"\nwritten: {files}")


# ---- export ---------------------------------------------------------------------------------


def add_export(p: argparse.ArgumentParser) -> None:
    """Pareto tables, plots, hypervolume and models from an experiment directory."""
    p.add_argument("experiment", help="experiment directory (local path or URI)")
    p.add_argument(
        "--format",
        default="md,csv,parquet,png,html",
        help="comma-separated: md,csv,parquet,png,html (report.html: interactive, offline)",
    )
    p.add_argument(
        "--objectives",
        default=None,
        help="objectives the fronts follow, e.g. top1,flops,latency_ms or flops:min "
        "(default: the space's, with their modes)",
    )
    p.add_argument(
        "--rescan",
        action="store_true",
        help="rebuild trials.parquet from the trial directories first",
    )
    p.set_defaults(func=cmd_export)


def cmd_export(a: argparse.Namespace) -> int:
    from sslsearch import storage
    from sslsearch.report import export_experiment

    exp = a.experiment
    if not storage.is_uri(exp):
        exp = str(Path(exp).expanduser().absolute())
    if not storage.is_dir(exp):
        raise UserError(f"experiment directory not found: {exp}")
    if a.rescan or not storage.exists(storage.join(exp, "trials.parquet")):
        from sslsearch.search import rebuild_trials

        log.info("rebuilding trials.parquet from the trial directories ...")
        rebuild_trials(exp)
    formats = [f.strip() for f in a.format.split(",") if f.strip()]
    objectives = [o.strip() for o in a.objectives.split(",")] if a.objectives else None
    _print_fronts(export_experiment(exp, formats, objectives))
    return 0

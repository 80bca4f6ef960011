"""Arguments and helpers the sub-commands share."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from sslsearch.errors import UserError

log = logging.getLogger("sslsearch")


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=1, sort_keys=False, default=str))


def float_or_dict(text: str) -> Any:
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


def refuse_overwrite(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise UserError(f"{out} exists; pass --force to overwrite it")


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

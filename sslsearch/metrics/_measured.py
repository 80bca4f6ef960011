"""Objectives measured by calling a function of the model (``ObjectiveDef.measure``): the
built-in peak activation memory, and a user's own objectives named by import path."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from sslsearch.config import ObjectiveDef
from sslsearch.errors import UserError
from sslsearch.imports import call_user, load_object


def peak_activation_mb(model: nn.Module, inputs: torch.Tensor) -> float:
    """Megabytes (10^6 bytes, fp32) of the largest input + output of any one leaf module in a
    forward pass of one image: the activation memory inference needs at its widest layer."""
    peak = [0]

    def size(x: Any) -> int:
        if isinstance(x, torch.Tensor):
            return x.numel()
        if isinstance(x, (tuple, list)):
            return sum(size(t) for t in x)
        return 0

    def hook(_m: nn.Module, args: Any, out: Any) -> None:
        peak[0] = max(peak[0], size(args) + size(out))

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(inputs[:1])
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return 4 * peak[0] / 1e6


def measure_objectives(
    defs: Sequence[ObjectiveDef], model: nn.Module, inputs: torch.Tensor
) -> dict[str, float]:
    """``{name: value}`` of each definition with a ``measure``, on ``model`` (put in eval mode)
    and ``inputs``. What a user's function raises, or a value that is not a finite number,
    is one UserError naming the objective."""
    out: dict[str, float] = {}
    for d in defs:
        if not d.measure:
            continue
        fn = load_object(d.measure, "objective")
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                value = call_user(
                    "objective", d.measure, f"{d.measure}(model, inputs)", fn, model, inputs
                )
        finally:
            model.train(was_training)
        try:
            x = float(value)
        except (TypeError, ValueError):
            x = math.nan
        if not math.isfinite(x):
            raise UserError(f"objective {d.measure!r} returned {value!r}, not a finite number")
        out[d.name] = x
    return out

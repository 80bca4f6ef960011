"""How the SSL penalty weighs groups against each other (``ssl_weighting``), so that one lambda
means the same trade-off on every layer and every network.

A group stays exactly zero under the proximal step while the task loss's pull on it (the norm of
its gradient) is below ``lambda * weight``. With every weight 1 (``none``, Wen et al.) that pull
decides alone, and it differs about tenfold between the narrow and the wide layers of one network
(vgg16_bn at 32x32, at init: median 1.86 on conv1_1, 0.15-0.37 on the 512-wide layers) and more
between networks: one lambda zeroes the wide layers of one network whole and nothing of another.
The weightings (``sslsearch.registry.SSL_WEIGHTINGS``):

* ``none``: 1.
* ``size``: sqrt of the unit's element count (Yuan and Lin), divided by its mean over the term's
  units.
* ``flops``: the FLOPs removing one unit saves in the dense model (MorphNet's FLOPs regulariser:
  the cost model of the budget pruner), divided by its mean over the term's units.
* ``gradient``: the median over a layer's units of the norm of the task loss's gradient,
  measured on ``CALIBRATION_BATCHES`` training batches before SSL training (mean gradient, train
  mode; the model, its BatchNorm statistics and the random stream are left as they were). lambda
  is then a share of each layer's own typical pull: "zero a unit whose pull on the loss is below
  lambda times its layer's". Residual blocks (depth_wise) share one weight, the median over
  blocks, so that blocks still compete; a shape group's weight is also multiplied by its layer's
  RMS shape norm (its penalty is relative to that norm).

Benchmarks/bench_lambda_transfer.py measured which one makes the lambda that works the same on
five networks; the default (``DEFAULT_SSL_WEIGHTING``) is the one it chose.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from sslsearch.errors import UserError
from sslsearch.pruning._savings import CostModel
from sslsearch.registry import unknown_name_message
from sslsearch.sparsity import Group, SSLPenalty, default_example
from sslsearch.sparsity._terms import Term
from sslsearch.vocabulary import DEFAULT_SSL_WEIGHTING, MIN_WIDTH_SHARE, SSL_WEIGHTINGS

CALIBRATION_BATCHES = 8  # training batches the gradient weighting averages over


def check_weighting(name: str) -> None:
    if name not in SSL_WEIGHTINGS:
        raise UserError(unknown_name_message("ssl weighting", name, sorted(SSL_WEIGHTINGS)))


def build_penalty(
    model: nn.Module,
    ssl_type: str,
    lam: float | Mapping[str, float],
    *,
    weighting: str = DEFAULT_SSL_WEIGHTING,
    example_inputs: torch.Tensor | None = None,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
    min_width_share: float = MIN_WIDTH_SHARE,
    elements_per_step: int = 4_000_000,
) -> SSLPenalty:
    """An SSL penalty with the groups weighed by ``weighting``.

    Args:
        model: the network, as SSL training starts (the weights are measured on it).
        ssl_type / lam: as ``SSLPenalty.build``.
        weighting: one of ``sslsearch.registry.SSL_WEIGHTINGS``.
        example_inputs: a batch at the training input size (FLOPs depend on it; default: the
            smallest input that runs).
        batches: training batches (inputs, labels); the ``gradient`` weighting needs them.
        min_width_share: the layer floor the proximal step keeps (the pruner's).

    Example:
        >>> pen = build_penalty(model, "filter_wise", 0.3, weighting="gradient",
        ...                     example_inputs=x[:1], batches=train_batches)
        >>> loss.backward(); optimizer.step(); pen.prox_(lr)
    """
    check_weighting(weighting)
    ex = example_inputs if example_inputs is not None else default_example(model)
    pen = SSLPenalty.build(model, ssl_type, lam, ex, elements_per_step, min_width_share)
    if weighting != "none":
        pen.set_weights(weighting, penalty_weights(pen, model, weighting, ex, batches))
    return pen


def penalty_weights(
    pen: SSLPenalty,
    model: nn.Module,
    weighting: str,
    example: torch.Tensor,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> dict[str, list[float]]:
    """Each term's per-group weights under ``weighting`` (by lambda key)."""
    check_weighting(weighting)
    if weighting == "none":
        return {t.key: [1.0] * len(t.groups) for t in pen.terms}
    if weighting == "size":
        return {
            t.key: _mean_one(t, [math.sqrt(_unit_elements(t, g)) for g in t.groups])
            for t in pen.terms
        }
    if weighting == "flops":
        return _flops_weights(pen, model, example)
    if batches is None:
        raise UserError("the gradient weighting calibrates on training batches: pass batches=")
    return _gradient_weights(pen, model, batches)


def _mean_one(t: Term, w: list[float]) -> list[float]:
    """``w`` divided by its mean over the term's units (a group counts once per unit)."""
    units = sum(g.units for g in t.groups)
    mean = sum(g.units * x for g, x in zip(t.groups, w)) / max(units, 1)
    return [x / mean if mean > 0 else 1.0 for x in w]


def _unit_elements(t: Term, g: Group) -> float:
    """Parameter elements of one unit of ``g`` in the term's part."""
    return sum(
        s.axis.param.numel() / max(s.axis.length, 1) * len(s.pos) for s in g.part(t.part)
    ) / max(g.units, 1)


def _flops_weights(
    pen: SSLPenalty, model: nn.Module, example: torch.Tensor
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    per_param: dict[str, float] | None = None
    for t in pen.terms:
        if t.groups and t.groups[0].kind == "channel":
            cm = CostModel.build(model, t.groups, example, "flops", 0.0)
            zero = np.zeros(len(t.groups))
            saved = cm.total(zero) - cm.after_each(zero, np.ones(len(t.groups)))
            w = [float(x) for x in saved]
        else:
            if per_param is None:
                per_param = CostModel.build(model, [], example, "flops", 0.0).param_costs()
            # a shape: its share of the conv's FLOPs (a column of the lowered GEMM); a block:
            # its branch's FLOPs
            w = [
                sum(per_param.get(s.axis.name, 0.0) / max(s.axis.length, 1) for s in g.slices)
                if g.kind == "shape"
                else sum(per_param.get(s.axis.name, 0.0) for s in g.slices)
                for g in t.groups
            ]
        out[t.key] = _mean_one(t, w)
    return out


def _gradient_weights(
    pen: SSLPenalty, model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> dict[str, list[float]]:
    grads = _mean_gradients(model, batches)
    out: dict[str, list[float]] = {}
    for t in pen.terms:
        axes = {id(s.axis): s.axis for g in t.groups for s in g.part(t.part)}
        gsq = {i: a.reduce(grads[id(a.param)].square()) for i, a in axes.items()}
        wsq = {i: a.fast_squares() for i, a in axes.items()} if t.relative else {}
        per_unit = [t.values(gsq, g).clamp_min(0).sqrt().double() for g in t.groups]
        if t.key == "d":  # blocks compete: one weight for all
            w = [float(torch.cat(per_unit).median())] * len(t.groups) if per_unit else []
        else:
            w = [float(n.median()) for n in per_unit]
        if t.relative:
            w = [
                x * float(t.values(wsq, g).clamp_min(0).sqrt().square().mean().sqrt())
                for x, g in zip(w, t.groups)
            ]
        positive = [x for x in w if x > 0]
        # a layer with no gradient at all (dead at the start) takes a thousandth of the typical
        # weight instead of escaping the penalty
        fallback = 1e-3 * float(torch.tensor(positive).median()) if positive else 1.0
        out[t.key] = [x if x > 0 else fallback for x in w]
    return out


def _mean_gradients(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> dict[int, torch.Tensor]:
    """The mean cross-entropy gradient over ``CALIBRATION_BATCHES`` batches, by id(param);
    the model's gradients, BatchNorm statistics, mode and the random stream are restored."""
    params = [p for p in model.parameters() if p.requires_grad]
    saved_grads = [p.grad for p in params]
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    rng = torch.get_rng_state()
    cuda_rng: Any = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    was = model.training
    sums = {id(p): torch.zeros_like(p) for p in params}
    n = 0
    try:
        model.train()
        for x, y in batches:
            if n >= CALIBRATION_BATCHES:
                break
            for p in params:
                p.grad = None
            loss = nn.functional.cross_entropy(model(x).float(), y)
            loss.backward()
            for p in params:
                if p.grad is not None:
                    sums[id(p)] += p.grad.detach()
            n += 1
    finally:
        for p, g in zip(params, saved_grads):
            p.grad = g
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        model.train(was)
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
    if n == 0:
        raise UserError("the gradient weighting got no training batch to calibrate on")
    return {k: v / n for k, v in sums.items()}

"""Pruners over the dependency groups the SSL penalty sums over (one group model): ``prune``,
the prune types, and the least share of the cost a prune type can reach (``floor_share``).

A unit (a channel with everything coupled to it: residual partners, BatchNorm, depthwise convs,
consumers' input slices; a grouped conv ties one channel of each conv group together) is
scored by the prune way over the prune type's part of its group, normalised per group.

Two ways to say how much goes:

* a **budget** (``flops_budget``, ``params_budget``, ``latency_budget``: the share of the dense
  model's cost to keep): units go lowest importance per unit of cost saved first, each move's
  saving computed exactly for the widths already chosen (``_select``), until the cost is within
  the budget; then chunks are given back while they fit. The result states how close it came.
* a **ratio** (the reference project's knob): one global threshold at the requested share of
  units, whatever that does to the cost.

Either way a layer keeps at least its floor (``min_width_share`` of its width, at least
``round_to`` channels: ``sslsearch.registry.min_width``), kept widths are multiples of
``round_to`` (or the full width), and the result lists every layer cut to its floor.

The steps, one module each: ``_units`` (scores, plans, applying a plan), ``_budget`` (the target
a budget sets and how close a pruning came), ``_channel_removal`` (by ratio or to a budget),
``_block_removal`` (depth_wise), ``_result`` (the request, the removal and ``PruneResult``).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from sslsearch.errors import NotPrunableError, UserError
from sslsearch.metrics import count_flops, count_params
from sslsearch.models import residual_blocks
from sslsearch.pruning._block_removal import _remove_blocks
from sslsearch.pruning._budget import _budget_of, _make_target, _Target
from sslsearch.pruning._channel_removal import _remove_channels
from sslsearch.pruning._latency import LatencyModel, LatencySpec
from sslsearch.pruning._result import PruneResult, _Removal, _Request, _result
from sslsearch.pruning._units import (
    DEFAULT_COST_POWER,
    DEFAULT_NORMALIZER,
    _apply_plan,
    _example,
    _plan_from_counts,
    _shape,
    candidate_groups,
)
from sslsearch.registry import Registry
from sslsearch.sparsity import CRITERIA, NORMALIZERS, build_groups
from sslsearch.vocabulary import MIN_WIDTH_SHARE, ROUND_TO, min_width

PRUNE_TYPES: Registry[str] = Registry("prune type")
for _t, _d in (
    ("filter_wise", "channels scored by their producers (filters, biases, BN scale/shift)"),
    ("channel_wise", "channels scored by their readers (consumers' input slices, BN scale/shift)"),
    (
        "filter_and_channel_wise",
        "one threshold over both pools: a channel goes if its filter or channel score is low",
    ),
    ("depth_wise", "the lowest-scoring residual blocks become their shortcut"),
):
    PRUNE_TYPES.add(_t, _d)


def list_prune_types() -> list[str]:
    return PRUNE_TYPES.names()


def floor_share(
    model: nn.Module,
    example_inputs: torch.Tensor | tuple[int, ...],
    *,
    prune_type: str,
    kind: str = "flops",
    min_width_share: float = MIN_WIDTH_SHARE,
    round_to: int = ROUND_TO,
) -> float:
    """The least share of the dense FLOPs (``kind`` "flops") or parameters ("params") that
    ``prune_type`` can reach on ``model``: every prunable layer cut to its floor. ``prune``
    refuses a budget below it. depth_wise has no layer floors: ValueError."""
    if kind not in ("flops", "params"):
        raise ValueError(f"kind must be 'flops' or 'params', got {kind!r}")
    if prune_type == "depth_wise" or prune_type not in PRUNE_TYPES:
        raise ValueError(f"floor_share needs a channel prune type, got {prune_type!r}")
    work = copy.deepcopy(model).eval()
    example = _example(work, example_inputs)
    shape = _shape(example)

    def count(m: nn.Module) -> float:
        return float(count_flops(m, shape) if kind == "flops" else count_params(m))

    dense = count(work)
    groups = build_groups(work, example)
    candidates = candidate_groups(groups[0].channel, prune_type)
    if not candidates or dense <= 0:
        return 1.0
    removed = np.asarray([g.units - g.min_units(min_width_share, round_to) for g in candidates])
    scores = [torch.arange(g.units, dtype=torch.float32) for g in candidates]  # which: any
    _apply_plan(work, example, _plan_from_counts(candidates, scores, removed), groups)
    return count(work) / dense


def _check_args(model: nn.Module, req: _Request, budget: tuple[str, float] | None) -> None:
    """One clear error for arguments that do not go together, before anything is copied."""
    prune_type, ratio, blocks = req.prune_type, req.ratio, req.blocks
    if req.normalizer not in NORMALIZERS:
        raise UserError(f"unknown normalizer {req.normalizer!r}; known: {', '.join(NORMALIZERS)}")
    PRUNE_TYPES.get(prune_type)
    CRITERIA.get(req.prune_way)
    if budget is not None and (ratio is not None or blocks is not None):
        raise UserError(f"give a {budget[0]}_budget or a ratio/blocks, not both")
    if prune_type == "depth_wise":
        if blocks is None and ratio is None and budget is None:
            raise UserError("depth_wise needs blocks=N, a ratio of the residual blocks or a budget")
        if blocks is not None and (isinstance(blocks, bool) or int(blocks) != blocks):
            raise UserError(f"blocks must be an integer, got {blocks!r}")
        if not residual_blocks(model):
            raise NotPrunableError(
                f"depth_wise needs residual blocks; {type(model).__name__} has none"
            )
    elif ratio is None and budget is None:
        raise UserError(f"{prune_type} needs a ratio in [0, 1) or a budget")
    if ratio is not None and not (0.0 <= float(ratio) < 1.0):
        raise UserError(f"ratio must be in [0, 1), got {ratio}")
    min_width(req.round_to + 1, req.min_width_share, req.round_to)  # validates share, round_to


def prune(
    model: nn.Module,
    example_inputs: torch.Tensor | tuple[int, ...],
    *,
    prune_type: str,
    prune_way: str = "group_lasso",
    ratio: float | None = None,
    blocks: int | None = None,
    flops_budget: float | None = None,
    params_budget: float | None = None,
    latency_budget: float | None = None,
    latency: LatencySpec | None = None,
    min_width_share: float = MIN_WIDTH_SHARE,
    round_to: int = ROUND_TO,
    inplace: bool = False,
    normalizer: str | None = None,
    cost_power: float = DEFAULT_COST_POWER,
) -> PruneResult:
    """Physically remove structure from ``model``; returns the smaller model and what changed.

    Args:
        model: the network (left untouched unless ``inplace``; on an error never changed).
        example_inputs: a batch, or an input shape (C, H, W); FLOPs are counted at that shape.
        prune_type: filter_wise, channel_wise, filter_and_channel_wise or depth_wise.
        prune_way: the criterion a unit is scored by (``sslsearch list``).
        flops_budget / params_budget / latency_budget: keep at most this share of the dense
            model's FLOPs (fvcore multiply-adds, as the report counts) or parameters, or this
            share of its measured latency (``latency``: batch size, device, threads). Met within
            1% of the dense cost or one rounding step (``PruneResult.budget_note`` says which);
            latency within 10% of the target.
        ratio: the reference project's knob instead of a budget: the share of units to remove
            (depth_wise: ``blocks`` to remove, or a ratio of the residual blocks).
        min_width_share: each layer keeps at least this share of its width (at least
            ``round_to`` channels); kept widths are multiples of ``round_to``.
        normalizer: how unit scores are made comparable across layers (``NORMALIZERS``;
            default: each divided by its layer's mean).
        cost_power: budget pruning ranks a chunk by its mean score / (cost saved per unit) **
            cost_power: 0 is importance alone, 1 importance per cost.

    Returns:
        PruneResult: the model, the ratio it came to, costs before and after, the budget reached.

    Example:
        >>> r = prune(model, (3, 32, 32), prune_type="filter_wise", flops_budget=0.5)
        >>> r.model, r.flops_after / r.flops_before, r.actual_ratio, r.budget_note
    """
    norm = normalizer or DEFAULT_NORMALIZER
    req = _Request(
        prune_type, prune_way, norm, ratio, blocks, min_width_share, round_to, cost_power
    )
    budget = _budget_of(flops_budget, params_budget, latency_budget)
    _check_args(model, req, budget)

    example = _example(model, example_inputs)
    input_shape = _shape(example)
    flops_before, params_before = count_flops(model, input_shape), count_params(model)
    target, lat_model = _make_target(
        model, budget, latency, input_shape, flops_before, params_before
    )
    done = _remove(model, example, req, target, lat_model, inplace)
    return _result(done, target, req, input_shape, flops_before, params_before)


def _remove(
    model: nn.Module,
    example: torch.Tensor,
    req: _Request,
    target: _Target | None,
    lat_model: LatencyModel | None,
    inplace: bool,
) -> _Removal:
    """Remove blocks or channels from ``model`` (``inplace``) or a copy, in eval mode; the
    result comes back in the mode the model was in. A budget prunes fresh copies of a backup
    while it misses, so an in-place pruning keeps one of the untouched model."""
    backup = copy.deepcopy(model) if inplace and target is not None else model
    work = model if inplace else copy.deepcopy(model)
    was_training = work.training
    work.eval()
    if req.prune_type == "depth_wise":
        done = _remove_blocks(work, example, req, target)
    else:
        done = _remove_channels(work, backup, example, req, target, lat_model)
    done.model.train(was_training)
    return done

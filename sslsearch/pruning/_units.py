"""Units of channel groups: their scores, plans of which go, and applying a plan to a model.

A unit (a channel with everything coupled to it: residual partners, BatchNorm, depthwise convs,
consumers' input slices; a grouped conv ties one channel of each conv group together) is
scored by the prune way over the prune type's part of its group, normalised per group. A plan
lists the units to remove per channel group (by name), lowest score first.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from sslsearch.errors import NotPrunableError
from sslsearch.sparsity import CRITERIA, Group, build_groups, default_example, normalize
from sslsearch.vocabulary import MIN_WIDTH_SHARE, ROUND_TO, min_width

# How unit scores are made comparable across layers, and how a budget weighs a unit's cost: a
# chunk's key is its mean score / (cost saved per unit) ** DEFAULT_COST_POWER. Both chosen by
# measurement at equal FLOPs (benchmarks/bench_budget.py, benchmarks/README.md "Budgets, measured").
DEFAULT_NORMALIZER = "mean"
DEFAULT_COST_POWER = 0.0


def round_keep(
    n_keep: int, width: int, share: float = MIN_WIDTH_SHARE, round_to: int = ROUND_TO
) -> int:
    """Kept width: at least the layer's floor (``min_width``), rounded up to ``round_to``."""
    floor = min_width(width, share, round_to)
    if floor >= width:
        return width
    n = max(n_keep, floor)
    return min(width, int(math.ceil(n / round_to) * round_to))


def _steps(g: Group, round_to: int) -> int:
    """Units per rounding step: ``round_to`` channels (a unit of a grouped conv is ``tie``)."""
    return max(1, math.ceil(round_to / g.tie))


# ---------------------------------------------------------------------------------------------
# scores


def unit_scores(
    group: Group, prune_type: str, prune_way: str, normalizer: str = DEFAULT_NORMALIZER
) -> torch.Tensor:
    """Each unit's score under ``prune_type``: filter part, channel part, or the lower of both.

    Scores are normalised per group (``normalizer``), so one global threshold compares like
    with like. For filter_and_channel_wise a unit is as removable as its weaker side: a channel
    whose output is zero, or that nobody reads, is dead either way.
    """
    crit = CRITERIA.get(prune_way)
    parts = {
        "filter_wise": ["filter"],
        "channel_wise": ["channel"],
        "filter_and_channel_wise": ["filter", "channel"],
    }[prune_type]
    out: torch.Tensor | None = None
    for part in parts:
        m = group.moments(part)
        sc = normalize(crit(m), m[:, 3], normalizer, crit.size_power)
        out = sc if out is None else torch.minimum(out, sc)
    assert out is not None
    return out


def candidate_groups(groups: list[Group], prune_type: str) -> list[Group]:
    """The channel groups ``prune_type`` can score and remove."""
    need = {"filter_wise": ["filter"], "channel_wise": ["channel"]}.get(
        prune_type, ["filter", "channel"]
    )
    return [g for g in groups if g.prunable and all(g.has(p) for p in need)]


# ---------------------------------------------------------------------------------------------
# plans: units to remove per channel group (by name), lowest score first


def _plan_ratio(
    groups: list[Group], scores: list[torch.Tensor], ratio: float, share: float, round_to: int
) -> dict[str, list[int]]:
    """One global threshold at ``ratio`` of all units; then each layer's floor and rounding,
    keeping the best-scoring of the would-be-removed units (deterministic)."""
    flat = torch.cat(scores)
    k = round(ratio * flat.numel())
    low = torch.zeros(flat.numel(), dtype=torch.bool)
    if k > 0:
        low[torch.argsort(flat, stable=True)[:k]] = True
    plan: dict[str, list[int]] = {}
    for g, mask, score in zip(groups, torch.split(low, [s.numel() for s in scores]), scores):
        width = g.units * g.tie
        n_keep = round_keep(width - g.tie * int(mask.sum()), width, share, round_to)
        keep_units = min(g.units, max(1, math.ceil(n_keep / g.tie)))
        # keep every unit not marked, then the best-scoring marked ones up to keep_units
        priority = torch.where(mask, score, torch.full_like(score, math.inf))
        keep = set(torch.argsort(priority, descending=True, stable=True)[:keep_units].tolist())
        drop = [u for u in range(g.units) if u not in keep]
        if drop:
            plan[g.name] = drop
    return plan


def _plan_from_counts(
    groups: list[Group], scores: list[torch.Tensor], removed: np.ndarray
) -> dict[str, list[int]]:
    plan: dict[str, list[int]] = {}
    for g, score, n in zip(groups, scores, removed.tolist()):
        if n > 0:
            plan[g.name] = sorted(torch.argsort(score, stable=True)[: int(n)].tolist())
    return plan


def _apply_plan(
    model: nn.Module, example: torch.Tensor, plan: dict[str, list[int]], groups: Any = None
) -> dict[str, list[int]]:
    """Remove the planned units of every channel group; returns removed channels by layer."""
    gs, dg, roots = groups if groups is not None else build_groups(model, example)
    by_name = {g.name: g for g in gs.channel}
    removed: dict[str, list[int]] = {}
    steps: list[tuple[Group, list[int]]] = []
    for name, units in plan.items():
        g = by_name[name]
        assert g.channels is not None
        drop = sorted(g.channels[units].flatten().tolist())
        steps.append((g, drop))
        for lname, idx in g.out_layers.items():
            removed[lname] = idx[drop].tolist()
    for g, drop in steps:
        root, handler = roots[g.name]
        pruning_group = dg.get_pruning_group(root, handler, drop)
        if not dg.check_pruning_group(pruning_group):
            raise NotPrunableError(
                f"layer {g.name}: removing {len(drop)} channels would empty a layer"
            )
        pruning_group.prune()
    return removed


def _at_floor(
    groups: list[Group], plan: dict[str, list[int]], share: float, round_to: int
) -> list[str]:
    out = []
    for g in groups:
        floor = g.min_units(share, round_to)
        if floor < g.units and g.units - len(plan.get(g.name, [])) <= floor:
            out.append(g.name)
    return out


# ---------------------------------------------------------------------------------------------
# inputs


def _example(
    model: nn.Module, example_inputs: torch.Tensor | tuple[int, ...] | None
) -> torch.Tensor:
    if isinstance(example_inputs, torch.Tensor):
        return example_inputs
    if example_inputs is None:
        return default_example(model)
    param = next(model.parameters())
    return torch.zeros((1, *example_inputs), device=param.device)


def _shape(example: torch.Tensor) -> tuple[int, ...]:
    return tuple(example.shape[1:])

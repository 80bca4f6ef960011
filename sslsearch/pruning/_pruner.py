"""Pruners over the dependency groups the SSL penalty sums over (one group model).

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
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from sslsearch.errors import NotPrunableError, UserError
from sslsearch.metrics import count_flops, count_params
from sslsearch.models import ResidualShortcut, residual_blocks, residual_branch_parameters
from sslsearch.pruning._cost import CostModel
from sslsearch.pruning._latency import LatencyModel, LatencySpec, TableCostModel
from sslsearch.pruning._select import select_for_budget
from sslsearch.registry import (
    BUDGET_KINDS,
    MIN_WIDTH_SHARE,
    ROUND_TO,
    Registry,
    budget_problem,
    min_width,
)
from sslsearch.sparsity import (
    CRITERIA,
    NORMALIZERS,
    Group,
    build_groups,
    default_example,
    model_groups,
    normalize,
)

log = logging.getLogger(__name__)

# How unit scores are made comparable across layers, and how a budget weighs a unit's cost: a
# chunk's key is its mean score / (cost saved per unit) ** DEFAULT_COST_POWER. Both chosen by
# measurement at equal FLOPs (benchmarks/bench_budget.py, docs/results.md "Budgets, measured").
DEFAULT_NORMALIZER = "mean"
DEFAULT_COST_POWER = 0.0
BUDGET_TOLERANCE = 0.01  # a budget is met within 1% of the dense cost, or one rounding step
LATENCY_TOLERANCE = 0.10  # a latency budget: within 10% of the target (measured, noisy)
_TRIES = 8  # prunes of a fresh copy while the true cost misses the budget


@dataclass
class PruneResult:
    model: nn.Module
    prune_type: str
    prune_way: str
    ratio: float  # requested share of groups to remove (budget pruning: the share it came to)
    actual_ratio: float  # removed groups / all groups, after the floors and the rounding
    groups_total: int
    groups_removed: int
    flops_before: int
    flops_after: int
    params_before: int
    params_after: int
    # original indices of removed output channels, by layer name (every coupled layer listed)
    removed_channels: dict[str, list[int]] = field(default_factory=dict)
    removed_blocks: list[str] = field(default_factory=list)
    # removed units by channel group (root layer name): unit ids of sslsearch.sparsity.Group
    removed_units: dict[str, list[int]] = field(default_factory=dict)
    # budget pruning: the kind, the share of the dense cost asked for and reached, and how
    # close the rounding let it come ("within 1%" or the step that could not be added)
    budget_kind: str | None = None
    budget: float | None = None
    budget_achieved: float | None = None
    budget_note: str = ""
    # a latency budget whose closest try is still over the target beyond the tolerance (a
    # count budget is always met): the point's status is then ``budget_missed``, not ``ok``
    budget_missed: bool = False
    budget_step: float | None = None  # share of the dense cost of the finest step left out
    latency_ms_before: float | None = None
    latency_ms_after: float | None = None
    min_width_share: float = MIN_WIDTH_SHARE
    at_floor: list[str] = field(default_factory=list)  # layers cut to their floor

    def summary(self) -> dict[str, object]:
        return {
            "prune_type": self.prune_type,
            "prune_way": self.prune_way,
            "ratio": self.ratio,
            "actual_ratio": self.actual_ratio,
            "groups_total": self.groups_total,
            "groups_removed": self.groups_removed,
            "flops_before": self.flops_before,
            "flops_after": self.flops_after,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "removed_blocks": list(self.removed_blocks),
            "budget_kind": self.budget_kind,
            "budget": self.budget,
            "budget_achieved": self.budget_achieved,
            "budget_note": self.budget_note,
            "budget_missed": self.budget_missed,
            "budget_step": self.budget_step,
            "latency_ms_before": self.latency_ms_before,
            "latency_ms_after": self.latency_ms_after,
            "min_width_share": self.min_width_share,
            "at_floor": list(self.at_floor),
        }


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
# budgets


@dataclass(frozen=True)
class _Target:
    kind: str  # flops | params | latency
    share: float  # of the dense cost, kept
    dense: float  # the dense cost (count, or measured milliseconds)
    measure: Callable[[nn.Module], float]  # the true cost of a pruned model
    tolerance: float  # relative to the dense cost (count kinds) or to the target (latency)

    @property
    def absolute(self) -> float:
        return self.share * self.dense


BUDGET_MISSED = "budget_missed"  # a point's status when its pruning missed the budget


def _missed(target: _Target | None, achieved: float | None) -> bool:
    """Over the budget beyond its tolerance (only a timed latency can be: counts are exact)."""
    if target is None or achieved is None:
        return False
    return achieved / target.dense > target.share * (1 + target.tolerance) + 1e-12


def _note(target: _Target, achieved: float, finest: tuple[str, float] | None) -> str:
    gap = target.share - achieved
    if target.kind == "latency":
        within = abs(achieved - target.share) <= target.tolerance * target.share
        return (
            f"measured {achieved:.1%} of the dense latency for a target of {target.share:.1%}: "
            + ("within" if within else "OUTSIDE")
            + f" {target.tolerance:.0%} of the target"
        )
    if gap <= target.tolerance + 1e-12:
        return f"within {target.tolerance:.0%} of the target"
    if finest is not None:
        name, step = finest
        return (
            f"{gap:.1%} under the target: the finest step left ({name}) "
            f"costs {step / target.dense:.1%}"
        )
    return f"{gap:.1%} under the target: nothing left to give back"


def _cost_model(
    target: _Target,
    model: nn.Module,
    groups: list[Group],
    example: torch.Tensor,
    latency: LatencyModel | None,
) -> CostModel:
    if target.kind == "latency":
        assert latency is not None
        return latency.cost_model(model, groups, example)
    return CostModel.build(model, groups, example, target.kind, target.dense)


@dataclass
class _Attempt:
    model: nn.Module
    plan: dict[str, list[int]]
    removed: dict[str, list[int]]
    cost: float
    finest: tuple[str, float] | None


def _prune_channels_to_budget(
    model: nn.Module,
    example: torch.Tensor,
    candidates: list[Group],
    scores: list[torch.Tensor],
    target: _Target,
    share: float,
    round_to: int,
    cost_power: float,
    latency: LatencyModel | None,
    fresh: Callable[[], nn.Module],
    groups: Any,
) -> tuple[nn.Module, dict[str, list[int]], dict[str, list[int]], float, tuple[str, float] | None]:
    """Select on the cost model, prune, measure the true cost; move the model's goal by the
    miss and prune again (a fresh copy) while the true cost misses the budget. A count must end
    at or under the budget; a latency as near the target as timing allows (the closest of the
    tries is kept, its note says whether it is within the tolerance)."""
    cm = _cost_model(target, model, candidates, example, latency)
    floors = np.asarray([g.min_units(share, round_to) for g in candidates])
    steps = np.asarray([_steps(g, round_to) for g in candidates])
    np_scores = [s.double().cpu().numpy() for s in scores]
    floor_plan = np.asarray([g.units for g in candidates]) - floors
    floor_ms = 0.0
    if isinstance(cm, TableCostModel):
        at_floors = fresh()
        _apply_plan(at_floors, example, _plan_from_counts(candidates, scores, floor_plan))
        floor_ms = target.measure(at_floors)
        cm.calibrate(target.dense, floor_plan, floor_ms)
        del at_floors
    # a latency's floor is measured (tables only predict it)
    floor_cost = floor_ms if isinstance(cm, TableCostModel) else cm.total(floor_plan)
    slack = 1 + target.tolerance if target.kind == "latency" else 1.0
    if floor_cost > target.absolute * slack:
        raise NotPrunableError(
            f"{target.kind}_budget {target.share:g} is below what the layer floors allow "
            f"(about {floor_cost / target.dense:.3g} of the dense {target.kind} at "
            f"min_width_share={share:g}); raise the budget or lower min_width_share"
        )
    if isinstance(cm, TableCostModel):
        return _prune_to_latency(
            model,
            example,
            candidates,
            scores,
            np_scores,
            target,
            cm,
            floors,
            steps,
            cost_power,
            fresh,
            groups,
            floor_plan,
            floor_ms,
        )
    goal = target.absolute
    best: _Attempt | None = None
    for attempt in range(_TRIES):
        sel = select_for_budget(np_scores, cm, max(goal, floor_cost), floors, steps, cost_power)
        plan = _plan_from_counts(candidates, scores, sel.removed)
        work = model if attempt == 0 else fresh()
        removed = _apply_plan(work, example, plan, groups if attempt == 0 else None)
        true = target.measure(work)
        finest = None
        if sel.finest_step is not None:
            finest = (candidates[sel.finest_step[0]].name, sel.finest_step[1])
        if true <= target.absolute:
            best = _Attempt(work, plan, removed, true, finest)
            break
        goal -= (true - target.absolute) + 1e-9 * target.dense
        log.info("%s budget: true cost %.4g, target %.4g; retrying", target.kind, true, goal)
    if best is None:
        raise NotPrunableError(
            f"{target.kind}_budget {target.share:g}: the pruned model's {target.kind} "
            f"({true / target.dense:.3f} of dense) did not meet the budget after {_TRIES} tries"
        )
    return best.model, best.plan, best.removed, best.cost, best.finest


def _prune_to_latency(
    model: nn.Module,
    example: torch.Tensor,
    candidates: list[Group],
    scores: list[torch.Tensor],
    np_scores: list[np.ndarray],
    target: _Target,
    table: TableCostModel,
    floors: np.ndarray,
    steps: np.ndarray,
    cost_power: float,
    fresh: Callable[[], nn.Module],
    groups: Any,
    floor_plan: np.ndarray,
    floor_ms: float,
) -> tuple[nn.Module, dict[str, list[int]], dict[str, list[int]], float, tuple[str, float] | None]:
    """A latency budget: a few tries on the latency tables, then a safeguarded secant search
    on the measured latency over the FLOPs kept, which is monotone along the selection's order
    where the tables are not (per-call overheads, kernels that change with the width, tables
    timed under load). Every try is a fresh prune timed beside the dense model; the closest try
    is kept, its note says whether it is within the tolerance."""
    dense_flops = float(count_flops(model, _shape(example)))
    flops = CostModel.build(model, candidates, example, "flops", dense_flops)
    aim = target.absolute
    # (FLOPs, measured ms) of every model timed so far: the floor model and the dense one
    seen = [(flops.total(floor_plan), floor_ms), (dense_flops, target.dense)]
    best: _Attempt | None = None
    tried: set[float] = set()

    def attempt(cm: CostModel, goal: float) -> bool:
        """Prune a fresh copy to ``goal`` on ``cm``; True once the target is hit (3%)."""
        nonlocal best
        sel = select_for_budget(np_scores, cm, goal, floors, steps, cost_power)
        f = flops.total(sel.removed)
        if f in tried:
            return False
        tried.add(f)
        plan = _plan_from_counts(candidates, scores, sel.removed)
        first = best is None
        work = model if first else fresh()
        removed = _apply_plan(work, example, plan, groups if first else None)
        true = target.measure(work)
        seen.append((f, true))
        finest = None
        if sel.finest_step is not None:
            finest = (candidates[sel.finest_step[0]].name, sel.finest_step[1])
        if best is None or abs(true - aim) < abs(best.cost - aim):
            best = _Attempt(work, plan, removed, true, finest)
        log.info(
            "latency budget: %.4g ms at %.1f%% of the FLOPs, target %.4g ms",
            true,
            100 * f / dense_flops,
            aim,
        )
        return abs(true - aim) <= 0.03 * aim

    goal = aim
    floor_cost = table.total(floor_plan)
    for _ in range(3):  # the tables' own prediction, corrected by the measured miss
        if attempt(table, max(goal, floor_cost)):
            break
        goal *= aim / max(seen[-1][1], 1e-12)
    else:
        for _ in range(_TRIES - 3):
            pts = sorted(seen)
            hi = next((i for i, (_, ms) in enumerate(pts) if ms > aim), len(pts) - 1)
            (f0, m0), (f1, m1) = pts[max(hi - 1, 0)], pts[hi]
            if f1 - f0 <= 1e-9 * dense_flops:
                break
            t = (aim - m0) / (m1 - m0) if m1 > m0 else 0.5
            g = f0 + min(max(t, 0.1), 0.9) * (f1 - f0)  # never at a known end: progress
            if attempt(flops, g):
                break
    assert best is not None
    return best.model, best.plan, best.removed, best.cost, best.finest


def _block_costs(model: nn.Module, example: torch.Tensor, kind: str, dense: float) -> list[float]:
    """Each residual block's cost: its branch's parameters' share of ``kind`` (flops, params)."""
    per = CostModel.build(model, [], example, kind, dense).param_costs()
    names = {id(p): n for n, p in model.named_parameters()}
    return [
        sum(per.get(names[id(p)], 0.0) for p in residual_branch_parameters(b))
        for _, b in residual_blocks(model)
    ]


def _replace_blocks(model: nn.Module, names: list[str]) -> None:
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        block = parent.get_submodule(child)
        # registered under the same name, so Sequential keeps its order
        setattr(parent, child, ResidualShortcut(getattr(block, "downsample", None)))


def _block_scores(model: nn.Module, example: torch.Tensor, way: str, normalizer: str) -> np.ndarray:
    gs = model_groups(model, example)
    crit = CRITERIA.get(way)
    m = torch.cat([g.moments() for g in gs.block])
    return normalize(crit(m), m[:, 3], normalizer, crit.size_power).double().numpy()


def _prune_blocks(
    model: nn.Module, example: torch.Tensor, way: str, blocks: int
) -> tuple[int, int, list[str]]:
    found = residual_blocks(model)
    if not found:
        raise NotPrunableError(f"depth_wise needs residual blocks; {type(model).__name__} has none")
    if not 0 <= blocks < len(found):
        raise UserError(
            f"blocks must be in [0, {len(found) - 1}] for {type(model).__name__} "
            f"({len(found)} residual blocks), got {blocks}"
        )
    gs = model_groups(model, example)
    crit = CRITERIA.get(way)
    scores = torch.cat([crit(g.moments()) for g in gs.block])
    order = torch.argsort(scores, stable=True)[:blocks].tolist()
    removed = sorted(gs.block[i].name for i in order)
    _replace_blocks(model, removed)
    return len(found), blocks, removed


def _prune_blocks_to_budget(
    model: nn.Module,
    example: torch.Tensor,
    way: str,
    target: _Target,
    normalizer: str,
    cost_power: float,
) -> tuple[list[str], float, tuple[str, float] | None]:
    """Blocks go lowest importance per cost first (a block's cost: its branch's FLOPs, or
    parameters for a parameter budget) until the true cost meets the budget; then blocks that
    still fit are given back, the most valuable first. A block is the rounding step here."""
    names = [n for n, _ in residual_blocks(model)]
    proxy = "params" if target.kind == "params" else "flops"
    shape = _shape(example)
    dense = float(count_params(model) if proxy == "params" else count_flops(model, shape))
    costs = np.asarray(_block_costs(model, example, proxy, dense))
    scores = _block_scores(model, example, way, normalizer)
    key = np.maximum(scores, 0.0) / np.maximum(costs, 1e-30) ** cost_power
    order = [int(i) for i in np.argsort(key, kind="stable")]
    ceiling = target.absolute * (1 + target.tolerance if target.kind == "latency" else 1.0)

    def cost_of(removed: set[int]) -> float:
        work = copy.deepcopy(model)
        _replace_blocks(work, [names[i] for i in removed])
        return target.measure(work)

    n, true = 0, target.dense
    while true > ceiling:
        n += 1
        if n >= len(names):
            raise NotPrunableError(
                f"{target.kind}_budget {target.share:g}: removing every residual block but one "
                f"keeps {true / target.dense:.3f} of the dense {target.kind}"
            )
        true = cost_of(set(order[:n]))
    removed = set(order[:n])
    for i in sorted(order[:n], key=lambda i: -key[i]):
        cost = cost_of(removed - {i})
        if cost <= ceiling:
            removed.discard(i)
            true = cost
    _replace_blocks(model, [names[i] for i in sorted(removed)])
    left = [i for i in range(len(names)) if i not in removed]
    finest = None
    if left:
        i = min(left, key=lambda i: costs[i])
        finest = (names[i], float(costs[i] / dense * target.dense))
    return sorted(names[i] for i in removed), true, finest


def _shape(example: torch.Tensor) -> tuple[int, ...]:
    return tuple(example.shape[1:])


# ---------------------------------------------------------------------------------------------
# public entry


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


def _example(
    model: nn.Module, example_inputs: torch.Tensor | tuple[int, ...] | None
) -> torch.Tensor:
    if isinstance(example_inputs, torch.Tensor):
        return example_inputs
    if example_inputs is None:
        return default_example(model)
    param = next(model.parameters())
    return torch.zeros((1, *example_inputs), device=param.device)


def _budget_of(
    flops_budget: float | None, params_budget: float | None, latency_budget: float | None
) -> tuple[str, float] | None:
    values = dict(zip(BUDGET_KINDS, (flops_budget, params_budget, latency_budget)))
    given = [(k, v) for k, v in values.items() if v is not None]
    if len(given) > 1:
        raise UserError(
            f"give one budget, not {len(given)}: {', '.join(f'{k}_budget' for k, _ in given)}"
        )
    if not given:
        return None
    kind, v = given[0]
    problem = budget_problem(kind, v)
    if problem:
        raise UserError(f"{kind}_budget must be {problem}")
    return kind, float(v)


def _check_args(
    model: nn.Module,
    prune_type: str,
    prune_way: str,
    ratio: float | None,
    blocks: int | None,
    budget: tuple[str, float] | None,
    normalizer: str,
) -> None:
    if normalizer not in NORMALIZERS:
        raise UserError(f"unknown normalizer {normalizer!r}; known: {', '.join(NORMALIZERS)}")
    PRUNE_TYPES.get(prune_type)
    CRITERIA.get(prune_way)
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
    budget = _budget_of(flops_budget, params_budget, latency_budget)
    norm = normalizer or DEFAULT_NORMALIZER
    _check_args(model, prune_type, prune_way, ratio, blocks, budget, norm)
    min_width(round_to + 1, min_width_share, round_to)  # validates share and round_to

    example = _example(model, example_inputs)
    input_shape = _shape(example)
    flops_before, params_before = count_flops(model, input_shape), count_params(model)
    target, lat_model = _make_target(
        model, budget, latency, input_shape, flops_before, params_before
    )
    backup = copy.deepcopy(model) if inplace and target is not None else model
    work = model if inplace else copy.deepcopy(model)
    was_training = work.training
    work.eval()
    if prune_type == "depth_wise":
        done = _remove_blocks(work, example, prune_way, target, norm, cost_power, blocks, ratio)
    else:
        done = _remove_channels(
            work,
            backup,
            example,
            prune_type,
            prune_way,
            norm,
            target,
            ratio,
            min_width_share,
            round_to,
            cost_power,
            lat_model,
        )
    done.model.train(was_training)
    return _result(
        done,
        target,
        prune_type,
        prune_way,
        ratio,
        min_width_share,
        input_shape,
        flops_before,
        params_before,
    )


@dataclass
class _Removal:
    """What one pruning removed (the steps of ``prune``)."""

    model: nn.Module
    total: int  # groups (or blocks) that could go
    gone: int
    removed_channels: dict[str, list[int]] = field(default_factory=dict)
    removed_blocks: list[str] = field(default_factory=list)
    removed_units: dict[str, list[int]] = field(default_factory=dict)
    at_floor: list[str] = field(default_factory=list)
    achieved: float | None = None  # the cost reached, in the budget's unit
    finest: tuple[str, float] | None = None  # the finest step left out: (layer, its cost)


def _make_target(
    model: nn.Module,
    budget: tuple[str, float] | None,
    latency: LatencySpec | None,
    input_shape: tuple[int, ...],
    flops_before: int,
    params_before: int,
) -> tuple[_Target | None, LatencyModel | None]:
    """The budget as a target to meet (its dense cost and how a model's cost is measured)."""
    if budget is None:
        return None, None
    kind, share = budget
    if kind == "latency":
        lat_model = LatencyModel(latency or LatencySpec(), input_shape)
        dense_ms = lat_model.measure(model)
        reference = copy.deepcopy(model).eval()  # timed beside every pruned model

        def timed(m: nn.Module) -> float:
            return dense_ms * lat_model.relative(m, reference)

        return _Target(kind, share, dense_ms, timed, LATENCY_TOLERANCE), lat_model
    dense = float(flops_before if kind == "flops" else params_before)
    count: Callable[[nn.Module], float] = (
        (lambda m: float(count_flops(m, input_shape)))
        if kind == "flops"
        else (lambda m: float(count_params(m)))
    )
    return _Target(kind, share, dense, count, BUDGET_TOLERANCE), None


def _remove_blocks(
    work: nn.Module,
    example: torch.Tensor,
    prune_way: str,
    target: _Target | None,
    norm: str,
    cost_power: float,
    blocks: int | None,
    ratio: float | None,
) -> _Removal:
    """depth_wise: residual blocks become their shortcut, to the budget or by count."""
    total = len(residual_blocks(work))
    if target is not None:
        removed, achieved, finest = _prune_blocks_to_budget(
            work, example, prune_way, target, norm, cost_power
        )
        return _Removal(
            work, total, len(removed), removed_blocks=removed, achieved=achieved, finest=finest
        )
    n = int(blocks) if blocks is not None else round(float(ratio or 0.0) * total)
    total, gone, removed = _prune_blocks(work, example, prune_way, n)
    return _Removal(work, total, gone, removed_blocks=removed)


def _remove_channels(
    work: nn.Module,
    backup: nn.Module,
    example: torch.Tensor,
    prune_type: str,
    prune_way: str,
    norm: str,
    target: _Target | None,
    ratio: float | None,
    min_width_share: float,
    round_to: int,
    cost_power: float,
    lat_model: LatencyModel | None,
) -> _Removal:
    """The channel prune types: score every unit of the candidate groups, then remove to the
    budget (``_prune_channels_to_budget``) or the lowest ``ratio`` of them."""
    groups = build_groups(work, example)
    candidates = candidate_groups(groups[0].channel, prune_type)
    if not candidates:
        raise NotPrunableError(f"{type(work).__name__} has no channel group prunable {prune_type}")
    scores = [unit_scores(g, prune_type, prune_way, norm) for g in candidates]
    total = sum(g.units for g in candidates)
    achieved: float | None = None
    finest: tuple[str, float] | None = None
    if target is not None:

        def fresh() -> nn.Module:
            m = copy.deepcopy(backup)
            m.eval()
            return m

        work, units, channels, achieved, finest = _prune_channels_to_budget(
            work,
            example,
            candidates,
            scores,
            target,
            min_width_share,
            round_to,
            cost_power,
            lat_model,
            fresh,
            groups,
        )
    else:
        units = _plan_ratio(candidates, scores, float(ratio or 0.0), min_width_share, round_to)
        channels = _apply_plan(work, example, units, groups)
    return _Removal(
        work,
        total,
        sum(len(v) for v in units.values()),
        removed_channels=channels,
        removed_units=units,
        at_floor=_at_floor(candidates, units, min_width_share, round_to),
        achieved=achieved,
        finest=finest,
    )


def _result(
    done: _Removal,
    target: _Target | None,
    prune_type: str,
    prune_way: str,
    ratio: float | None,
    min_width_share: float,
    input_shape: tuple[int, ...],
    flops_before: int,
    params_before: int,
) -> PruneResult:
    """The PruneResult of a finished pruning, logged in one line (and its floored layers)."""
    work, achieved, finest, total, gone = (
        done.model,
        done.achieved,
        done.finest,
        done.total,
        done.gone,
    )
    note = _note(target, achieved / target.dense, finest) if target and achieved else ""
    result = PruneResult(
        model=work,
        prune_type=prune_type,
        prune_way=prune_way,
        ratio=float(ratio) if ratio is not None else gone / max(total, 1),
        actual_ratio=gone / max(total, 1),
        groups_total=total,
        groups_removed=gone,
        flops_before=flops_before,
        flops_after=int(achieved)
        if target and target.kind == "flops" and achieved is not None
        else count_flops(work, input_shape),
        params_before=params_before,
        params_after=count_params(work),
        removed_channels=done.removed_channels,
        removed_blocks=done.removed_blocks,
        removed_units=done.removed_units,
        budget_kind=target.kind if target else None,
        budget=target.share if target else None,
        budget_achieved=achieved / target.dense if target and achieved is not None else None,
        budget_note=note,
        budget_missed=_missed(target, achieved),
        budget_step=finest[1] / target.dense if target and finest else None,
        latency_ms_before=target.dense if target and target.kind == "latency" else None,
        latency_ms_after=achieved if target and target.kind == "latency" else None,
        min_width_share=min_width_share,
        at_floor=done.at_floor,
    )
    log.info(
        "pruned %s/%s (%s): actual ratio %.3f, FLOPs %d -> %d, params %d -> %d%s",
        prune_type,
        prune_way,
        f"{result.budget_kind} budget {result.budget:g}" if target else f"ratio {result.ratio:g}",
        result.actual_ratio,
        flops_before,
        result.flops_after,
        params_before,
        result.params_after,
        f"; {note}" if note else "",
    )
    if done.at_floor:
        log.info(
            "layers cut to their floor (min_width_share %g): %s", min_width_share, done.at_floor
        )
    return result


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str) -> None:
    """Export an (often pruned) model to ONNX with a dynamic batch dimension.

    Needs the ``onnx`` extra (``pip install 'sslsearch[onnx]'``: onnx and onnxscript). Weights
    are written beside ``path`` as ``<path>.data`` (ONNX external data); keep both files.
    """
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"ONNX export needs {' and '.join(missing)}: pip install 'sslsearch[onnx]'")
    model = model.eval()
    x = torch.zeros((1, *input_shape), device=next(model.parameters()).device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            path,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            verbose=False,
        )

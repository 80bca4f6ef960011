"""Channel removal: by the reference project's ratio, or to a budget (select on a cost model,
prune, measure the true cost, move the goal by the miss and prune a fresh copy again)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from sslsearch.errors import NotPrunableError
from sslsearch.metrics import count_flops
from sslsearch.pruning._budget import _Target
from sslsearch.pruning._latency import LatencyModel, TableCostModel
from sslsearch.pruning._result import _Removal, _Request
from sslsearch.pruning._savings import CostModel
from sslsearch.pruning._select import select_for_budget
from sslsearch.pruning._units import (
    _apply_plan,
    _at_floor,
    _plan_from_counts,
    _plan_ratio,
    _shape,
    _steps,
    candidate_groups,
    unit_scores,
)
from sslsearch.sparsity import Group, build_groups

log = logging.getLogger(__name__)

_TRIES = 8  # prunes of a fresh copy while the true cost misses the budget


def _remove_channels(
    work: nn.Module,
    backup: nn.Module,
    example: torch.Tensor,
    req: _Request,
    target: _Target | None,
    lat_model: LatencyModel | None,
) -> _Removal:
    """The channel prune types: score every unit of the candidate groups, then remove to the
    budget (``_prune_channels_to_budget``) or the lowest ``ratio`` of them."""
    share, round_to = req.min_width_share, req.round_to
    groups = build_groups(work, example)
    candidates = candidate_groups(groups[0].channel, req.prune_type)
    if not candidates:
        raise NotPrunableError(
            f"{type(work).__name__} has no channel group prunable {req.prune_type}"
        )
    scores = [unit_scores(g, req.prune_type, req.prune_way, req.normalizer) for g in candidates]
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
            share,
            round_to,
            req.cost_power,
            lat_model,
            fresh,
            groups,
        )
    else:
        units = _plan_ratio(candidates, scores, float(req.ratio or 0.0), share, round_to)
        channels = _apply_plan(work, example, units, groups)
    return _Removal(
        work,
        total,
        sum(len(v) for v in units.values()),
        removed_channels=channels,
        removed_units=units,
        at_floor=_at_floor(candidates, units, share, round_to),
        achieved=achieved,
        finest=finest,
    )


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

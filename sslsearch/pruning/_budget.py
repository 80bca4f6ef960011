"""What a budget asks: the share of the dense FLOPs, parameters or latency to keep, how a
pruned model's true cost is measured, and how close a pruning came (its note, whether it missed).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from sslsearch.errors import UserError
from sslsearch.metrics import count_flops, count_params
from sslsearch.pruning._latency import LatencyModel, LatencySpec
from sslsearch.vocabulary import BUDGET_KINDS, budget_problem

BUDGET_TOLERANCE = 0.01  # a budget is met within 1% of the dense cost, or one rounding step
LATENCY_TOLERANCE = 0.10  # a latency budget: within 10% of the target (measured, noisy)


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

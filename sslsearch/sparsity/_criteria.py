"""How a unit of a group is scored (the prune way), from its moments.

A unit's moments (sum, sum|w|, sum w^2, element count) add up over the slices of its group, so
every criterion is a function of them. One registry entry carries everything about a name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from sslsearch.registry import Registry


@dataclass(frozen=True)
class Criterion:
    from_moments: Callable[[torch.Tensor], torch.Tensor]  # (units, 4) -> (units,)
    signed: bool  # a signed score is not an importance: a live unit may score below a dead one
    description: str
    size_power: float = 0.0  # the score grows as (element count) ** size_power

    def __call__(self, m: torch.Tensor) -> torch.Tensor:
        return self.from_moments(m)


CRITERIA: Registry[Criterion] = Registry("prune way")
CRITERIA.add(
    "group_lasso",
    Criterion(
        lambda m: m[:, 2].clamp_min(0).sqrt(),
        False,
        "L2 norm of the unit (what SSL drives to 0)",
        0.5,
    ),
)
CRITERIA.add("mean_abs", Criterion(lambda m: m[:, 1] / m[:, 3], False, "mean |w| over the unit"))
CRITERIA.add("sum_abs", Criterion(lambda m: m[:, 1], False, "sum of |w| over the unit", 1.0))
CRITERIA.add(
    "mean",
    Criterion(
        lambda m: m[:, 0] / m[:, 3],
        True,
        "mean w: SIGNED, not an importance measure (reference-project parity only)",
    ),
)
CRITERIA.add(
    "sum",
    Criterion(
        lambda m: m[:, 0],
        True,
        "sum of w: SIGNED, not an importance measure (reference-project parity only)",
        1.0,
    ),
)


def list_criteria() -> list[str]:
    return CRITERIA.names()


def describe_criteria() -> dict[str, str]:
    return {n: CRITERIA.get(n).description for n in CRITERIA.names()}


def moments(values: torch.Tensor, dim: int) -> torch.Tensor:
    """(rows, 4) float64 moments of a matrix's rows (dim=1) or columns (dim=0)."""
    v = values.detach().double()
    if v.dim() != 2 or dim not in (0, 1):
        raise ValueError(f"moments over dim {dim} of a {v.dim()}-d tensor are not supported")
    if dim == 0:
        v = v.t()
    n = torch.full((v.shape[0], 1), float(v.shape[1]), dtype=torch.float64)
    return torch.cat(
        [v.sum(1, keepdim=True), v.abs().sum(1, keepdim=True), (v * v).sum(1, keepdim=True), n], 1
    )


def scores_from_moments(prune_way: str, m: torch.Tensor) -> torch.Tensor:
    return CRITERIA.get(prune_way)(m.double())


def criterion_scores(prune_way: str, groups: torch.Tensor) -> torch.Tensor:
    """Score each row of a (groups, elements) matrix with the named criterion."""
    return scores_from_moments(prune_way, moments(groups, 1))


NORMALIZERS = ("mean", "element", "sum", "none")


def normalize(
    scores: torch.Tensor, counts: torch.Tensor, how: str, size_power: float = 0.0
) -> torch.Tensor:
    """Make one group's unit scores comparable with other groups' under one global threshold.

    ``mean``: divide by the group's mean |score| (Torch-Pruning's ``normalizer="mean"``), so
    every layer's units are measured against their own layer. ``element``: divide by the
    unit's element count to the criterion's ``size_power`` (a sum by the count, an L2 norm by
    its square root): per-element magnitudes. ``sum``: divide by the group's total |score|,
    so every layer holds the same importance in all, shared among its units (a unit of a wide
    layer weighs less). ``none``: raw scores.
    """
    if how == "none":
        return scores
    if how == "element":
        return scores / counts.clamp_min(1) ** size_power
    if how == "mean":
        return scores / scores.abs().mean().clamp_min(1e-30)
    if how == "sum":
        return scores / scores.abs().sum().clamp_min(1e-30)
    raise ValueError(f"unknown normalizer {how!r}; known: {', '.join(NORMALIZERS)}")

"""How a group is scored (the prune way). Each takes a (groups, elements) matrix."""

from __future__ import annotations

from collections.abc import Callable

import torch

from sslsearch.registry import Registry

Criterion = Callable[[torch.Tensor], torch.Tensor]

CRITERIA: Registry[Criterion] = Registry("prune way")
CRITERIA.add("group_lasso", lambda g: torch.linalg.vector_norm(g, dim=1))  # L2 norm of the group
CRITERIA.add("mean_abs", lambda g: g.abs().mean(dim=1))
CRITERIA.add("mean", lambda g: g.mean(dim=1))
CRITERIA.add("sum_abs", lambda g: g.abs().sum(dim=1))
CRITERIA.add("sum", lambda g: g.sum(dim=1))


def list_criteria() -> list[str]:
    return CRITERIA.names()


def criterion_scores(prune_way: str, groups: torch.Tensor) -> torch.Tensor:
    """Score each row of ``groups`` with the named criterion (no gradient, float64 for ties)."""
    fn = CRITERIA.get(prune_way)
    with torch.no_grad():
        return fn(groups.detach().double())

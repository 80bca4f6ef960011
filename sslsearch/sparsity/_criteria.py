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


# The same criteria from a group's moments (sum, sum of |w|, sum of w^2, element count), which
# add up over the parts of a group: a channel coupled across several layers is scored without
# gathering its weights into one matrix.
_FROM_MOMENTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "group_lasso": lambda m: m[:, 2].sqrt(),
    "mean_abs": lambda m: m[:, 1] / m[:, 3],
    "mean": lambda m: m[:, 0] / m[:, 3],
    "sum_abs": lambda m: m[:, 1],
    "sum": lambda m: m[:, 0],
}


_CHUNK = 1 << 22  # elements per temporary (16 MB in fp32): bounded memory on a 100M-weight layer


def _reduce_rows(mat: torch.Tensor) -> torch.Tensor:
    """(G, K) -> (G, 3): sum, sum|w|, sum w^2 of each row, as matrix-vector products."""
    g, k = mat.shape
    ones = torch.ones(k, dtype=mat.dtype, device=mat.device)
    step = max(1, _CHUNK // max(k, 1))
    parts = []
    for a in range(0, g, step):
        c = mat[a : a + step]
        parts.append(torch.stack([c @ ones, c.abs() @ ones, (c * c) @ ones], dim=1))
    return torch.cat(parts).double() if parts else torch.zeros(0, 3, dtype=torch.float64)


def _reduce_cols(mat: torch.Tensor) -> torch.Tensor:
    """(R, G) -> (G, 3): the same per column (a strided reduction is several times slower)."""
    r, g = mat.shape
    step = max(1, _CHUNK // max(g, 1))
    out = torch.zeros(g, 3, dtype=torch.float64, device=mat.device)
    for a in range(0, r, step):
        c = mat[a : a + step]
        ones = torch.ones(c.shape[0], dtype=mat.dtype, device=mat.device)
        out += torch.stack([ones @ c, ones @ c.abs(), ones @ (c * c)], dim=1).double()
    return out


def moments(values: torch.Tensor, dim: int | tuple[int, ...]) -> torch.Tensor:
    """(groups, 4) float64 moments of ``values`` reduced over ``dim``: sum, sum|w|, sum w^2, n.

    Supported: the rows of a matrix (dim=1: output filters), its columns (dim=0: inputs of a
    Linear) and the input channels of a conv weight (dim=(0, 2, 3)).
    """
    v = values.detach()
    if not v.is_floating_point():
        v = v.float()
    if v.dim() == 2 and dim in (1, (1,)):
        m, count = _reduce_rows(v), v.shape[1]
    elif v.dim() == 2 and dim in (0, (0,)):
        m, count = _reduce_cols(v), v.shape[0]
    elif v.dim() == 4 and dim == (0, 2, 3):
        o, c, kh, kw = v.shape
        m = _reduce_cols(v.reshape(o, c * kh * kw)).view(c, kh * kw, 3).sum(1)
        count = o * kh * kw
    else:
        raise ValueError(f"moments over dim {dim} of a {v.dim()}-d tensor are not supported")
    return torch.cat(
        [m, torch.full((m.shape[0], 1), float(count), dtype=torch.float64, device=m.device)], 1
    )


def scores_from_moments(prune_way: str, m: torch.Tensor) -> torch.Tensor:
    CRITERIA.get(prune_way)
    return _FROM_MOMENTS[prune_way](m)

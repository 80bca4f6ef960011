"""Non-dominated sorting and hypervolume: small pure numpy functions.

Every objective is first turned into a minimisation (maximised ones are negated), as Optuna's
multi-objective code does; then ``a`` dominates ``b`` when it is no worse in every objective and
better in at least one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def to_minimization(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """(n, k) values -> the same with "max" columns negated."""
    v = np.asarray(values, dtype=np.float64).reshape(len(values), len(directions))
    sign = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    return v * sign


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a <= b) and np.any(a < b))


def non_dominated_mask(points: np.ndarray) -> np.ndarray:
    """Boolean mask of the Pareto-optimal rows of (n, k) minimisation ``points``."""
    p = np.asarray(points, dtype=np.float64)
    n = len(p)
    mask = np.ones(n, dtype=bool)
    if n == 0:
        return mask
    # row i is dominated if some j is <= everywhere and < somewhere
    le = np.all(p[None, :, :] <= p[:, None, :], axis=2)  # [i, j]: p_j <= p_i
    lt = np.any(p[None, :, :] < p[:, None, :], axis=2)
    dominated = np.any(le & lt, axis=1)
    mask &= ~dominated
    return mask


def pareto_front(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Indices of the non-dominated rows of ``values`` (raw units, with their directions)."""
    return np.flatnonzero(non_dominated_mask(to_minimization(values, directions)))


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Volume dominated by minimisation ``points`` and bounded by ``reference`` (exact).

    Points not strictly better than the reference in every objective contribute nothing.
    2 objectives: a sweep; more: slicing along the last objective (fine for fronts of hundreds).
    """
    ref = np.asarray(reference, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64).reshape(-1, len(ref))
    p = p[np.all(p < ref, axis=1)]
    if len(p) == 0:
        return 0.0
    p = p[non_dominated_mask(p)]
    if p.shape[1] == 1:
        return float(ref[0] - p[:, 0].min())
    if p.shape[1] == 2:
        order = np.argsort(p[:, 0])
        xs, ys = p[order, 0], p[order, 1]
        vol, prev_y = 0.0, ref[1]
        for x, y in zip(xs, ys):
            if y < prev_y:
                vol += (ref[0] - x) * (prev_y - y)
                prev_y = y
        return float(vol)
    order = np.argsort(p[:, -1])
    p = p[order]
    vol = 0.0
    for i in range(len(p)):
        upper = p[i + 1, -1] if i + 1 < len(p) else ref[-1]
        depth = upper - p[i, -1]
        if depth > 0:
            vol += depth * hypervolume(p[: i + 1, :-1], ref[:-1])
    return float(vol)

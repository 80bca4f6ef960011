"""Non-dominated sorting and hypervolume: small pure numpy functions.

Every objective is first turned into a minimisation (maximised ones are negated), as Optuna's
multi-objective code does; then ``a`` dominates ``b`` when it is no worse in every objective and
better in at least one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def minimization_signs(directions: Sequence[str]) -> np.ndarray:
    """One factor per objective that turns it into a minimisation: -1 for "max", else 1."""
    return np.array([-1.0 if d == "max" else 1.0 for d in directions])


def to_minimization(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """(n, k) values -> the same with "max" columns negated."""
    v = np.asarray(values, dtype=np.float64).reshape(len(values), len(directions))
    return v * minimization_signs(directions)


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """Minimisation vector ``a`` is no worse than ``b`` everywhere and better somewhere."""
    return bool(np.all(a <= b) and np.any(a < b))


PAIRWISE_MAX = 512  # up to this many rows every pair is compared at once (n^2 k booleans)


def non_dominated_mask(points: np.ndarray) -> np.ndarray:
    """Boolean mask of the Pareto-optimal rows of (n, k) minimisation ``points``.

    Up to ``PAIRWISE_MAX`` rows: every pair at once. More (10,000 points): a sweep in
    lexicographic order, where a row's dominators come first (a dominator is no worse anywhere
    and better somewhere, so it sorts first) and a dominated dominator is itself dominated by a
    kept row, so each row is checked against the rows kept so far: O(n * front) time and
    memory instead of n^2 k booleans (a gigabyte at 10,000 points and 3 objectives).
    """
    p = np.asarray(points, dtype=np.float64)
    n = len(p)
    if n == 0:
        return np.ones(0, dtype=bool)
    p = p.reshape(n, -1)
    if n <= PAIRWISE_MAX:
        # row i is dominated if some j is <= everywhere and < somewhere
        le = np.all(p[None, :, :] <= p[:, None, :], axis=2)  # [i, j]: p_j <= p_i
        lt = np.any(p[None, :, :] < p[:, None, :], axis=2)
        return ~np.any(le & lt, axis=1)
    mask = np.zeros(n, dtype=bool)
    kept = np.empty_like(p)
    m = 0
    for i in np.lexsort(p.T[::-1]):
        x = p[i]
        f = kept[:m]
        if m and bool(np.any(np.all(f <= x, axis=1) & np.any(f < x, axis=1))):
            continue
        mask[i] = True
        kept[m] = x
        m += 1
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

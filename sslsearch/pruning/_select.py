"""Which units to remove for a budget: a greedy knapsack over the channel groups.

Each group removes its units lowest score first, in chunks that keep its width on the rounding
grid (multiples of ``round_to`` channels, or its full width) and never below its floor. At every
step the move with the least importance per unit of cost saved goes next: the chunk's mean score
divided by ``saving ** cost_power``, where the saving is the move's exact marginal cost given
every width already chosen (removing a channel shrinks its producers, its BatchNorm and every
consumer's input; ``CostModel.after_each``). ``cost_power`` 0 ranks by importance alone (a
global threshold, Torch-Pruning's global pruning), 1 by importance per cost (the knapsack ratio
rule). Once the cost is within the target, chunks are given back, most valuable first, while
they still fit: the result sits as close under the target as the grid allows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sslsearch.pruning._savings import CostModel


@dataclass
class Selection:
    removed: np.ndarray  # units removed per group (the lowest-scored first)
    cost: float  # modelled cost after removal
    finest_step: tuple[int, float] | None  # (group, cost) of the cheapest chunk left out


class Unreachable(Exception):
    """The floors keep more than the target allows."""

    def __init__(self, floor_cost: float) -> None:
        super().__init__(floor_cost)
        self.floor_cost = floor_cost


def _down(kept: np.ndarray, step: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """Units the next chunk of each group removes (0 where the group is at its floor)."""
    nxt = np.maximum(floor, ((kept - 1) // step) * step)
    return np.where(kept > floor, kept - nxt, 0)


def _up(kept: np.ndarray, step: np.ndarray, units: np.ndarray) -> np.ndarray:
    """Units the last chunk of each group gives back (0 where nothing is removed)."""
    nxt = np.minimum(units, (kept // step + 1) * step)
    return np.where(kept < units, nxt - kept, 0)


def select_for_budget(
    scores: list[np.ndarray],
    cost: CostModel,
    target: float,
    floors: np.ndarray,
    steps: np.ndarray,
    cost_power: float,
) -> Selection:
    """Units to remove per group so that ``cost.total`` is at most ``target``.

    ``scores[g]``: unit scores of group g (any scale comparable across groups; lower goes
    first); ``floors[g]``: the fewest units g keeps; ``steps[g]``: its rounding step in units.
    """
    units = np.asarray([len(s) for s in scores], dtype=np.int64)
    order = [np.sort(np.asarray(s, dtype=np.float64)) for s in scores]
    csum = [np.concatenate([[0.0], np.cumsum(o)]) for o in order]
    floors = np.minimum(np.asarray(floors, dtype=np.int64), units)
    steps = np.maximum(np.asarray(steps, dtype=np.int64), 1)
    removed = np.zeros(len(units), dtype=np.int64)
    now = cost.total(removed)

    def chunk_mean(g: int, lo: int, hi: int) -> float:
        return float((csum[g][hi] - csum[g][lo]) / max(hi - lo, 1))

    def keys(k: np.ndarray, after: np.ndarray, sign: int) -> np.ndarray:
        saving = sign * (now - after) / np.maximum(k, 1)
        out = np.full(len(units), np.inf)
        for g in np.nonzero(k)[0]:
            lo, hi = (
                (removed[g], removed[g] + k[g]) if sign > 0 else (removed[g] - k[g], removed[g])
            )
            mean = max(chunk_mean(int(g), int(lo), int(hi)), 0.0)
            # a move that saves nothing (a measured table's noise) goes after every other
            out[g] = mean / saving[g] ** cost_power if saving[g] > 0 else 1e30 * (1 + mean)
        return out

    while now > target:
        k = _down(units - removed, steps, floors)
        if not k.any():
            raise Unreachable(now)
        after = cost.after_each(removed, k)
        g = int(np.argmin(keys(k, after, +1)))
        removed[g] += k[g]
        now = float(after[g])
    # give back what still fits, the most valuable per cost first
    while True:
        k = _up(units - removed, steps, units)
        if not k.any():
            break
        after = cost.after_each(removed, -k)
        fits = (k > 0) & (after <= target)
        if not fits.any():
            break
        key = np.where(fits, keys(k, after, -1), -np.inf)
        g = int(np.argmax(key))
        removed[g] -= k[g]
        now = float(after[g])
    k = _up(units - removed, steps, units)
    finest = None
    if k.any():
        inc = cost.after_each(removed, -k) - now
        inc[k == 0] = np.inf
        g = int(np.argmin(inc))
        finest = (g, float(inc[g]))
    return Selection(removed, now, finest)

"""Early stopping of points during fine-tuning, sound for several objectives.

After pruning a point's costs (FLOPs, params, size) are exact; only its top-1 still moves, and
how it moves depends on the fine-tune's learning-rate schedule (a multi-step schedule lifts
top-1 by several points right after each drop). So a point is compared like with like: at
fine-tune epoch ``e`` its best top-1 so far, plus ``margin``, against each finished point's
validation top-1 at the same epoch ``e`` (``finetune_val_top1`` in its result), with the exact
costs of both. A finished point at least as good in every objective (better in one) stops it.

Never at epoch 0 (nothing fine-tuned yet), never before one whole epoch after the first drop of
the learning rate (``first_check_epoch``), never after the last epoch (the point is done), and
never on an objective it cannot bound before the end (latency, top-5: the point is then not
dominated). SSL models are never ranked: this runs only during fine-tuning.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from sslsearch import storage
from sslsearch.config import Recipe, known_objectives
from sslsearch.trial._run import RESULT_FILE

log = logging.getLogger(__name__)

CURVE_KEY = "finetune_val_top1"  # a point's validation top-1 after each fine-tune epoch


def _bounded(metric: str) -> bool:
    """Known during the fine-tune: the best top-1 so far, or a cost exact once pruned."""
    d = known_objectives().get(metric)
    return metric == "top1" or (d is not None and d.exact_after_pruning)


def first_check_epoch(recipe: Recipe) -> int:
    """The first fine-tune epoch at which a point may be stopped: the first epoch trained wholly
    after the first drop of the fine-tune learning rate.

    multistep: the first milestone (``min(milestones) * finetune_epochs``); cosine: half the
    epochs (where the rate has halved); constant: half the epochs too (no drop: before it top-1
    still climbs fastest). E.g. 20 epochs at milestones (0.5, 0.75): epoch 11; 4 cosine: 3.
    """
    n = recipe.finetune_epochs
    if recipe.schedule == "multistep" and recipe.milestones:
        drop = min(recipe.milestones) * n
    else:
        drop = n / 2
    return math.ceil(drop - 1e-9) + 1


def dominated_reason(
    candidate: dict[str, float],
    finished: Sequence[dict[str, Any]],
    objectives: Sequence[tuple[str, str]],
) -> str | None:
    """Why ``candidate`` is dominated by a finished row, or None.

    ``objectives``: (metric, "max" | "min") pairs. Rows other than ``status == "ok"`` never
    dominate; an objective the candidate lacks (not known before the end) or a row lacks never
    dominates either.
    """
    from sslsearch.report import dominates, minimization_signs

    names = [m for m, _ in objectives]
    signs = minimization_signs([d for _, d in objectives])
    cand = _vector(candidate, names)
    if cand is None:
        return None
    for row in finished:
        r = _vector(row, names) if row.get("status") == "ok" else None
        if r is not None and dominates(r * signs, cand * signs):
            vals = ", ".join(f"{m} {float(row[m]):.4g}" for m in names)
            return f"dominated by point {row.get('trial_id', '?')} ({vals})"
    return None


def _vector(values: dict[str, Any], names: Sequence[str]) -> np.ndarray | None:
    """The named values as floats; None when one is missing or not finite."""
    got = [values.get(n) for n in names]
    if any(v is None for v in got):
        return None
    out = np.asarray(got, dtype=np.float64)
    return out if bool(np.all(np.isfinite(out))) else None


class FrontStop:
    """Stop a point whose fine-tune so far a finished point's, at the same epoch, dominates.

    Called after fine-tune epoch ``e`` with the point's ``candidate``: its exact costs, ``top1``
    (its best validation top-1 up to ``e``), ``epoch`` (``e``), ``epochs`` (its fine-tune
    epochs) and ``first_check`` (``first_check_epoch`` of its recipe). It stops (returns a
    reason) only when ``e >= max(first_check, grace_epochs, 1)``, ``e < epochs`` and a finished
    ``ok`` point with a curve of the same length had, at epoch ``e``, top-1 >= the candidate's
    + ``margin`` at costs <= the candidate's (strictly better in one objective). A candidate
    without these keys is never stopped.

    Reads the finished points from ``points_dir`` (shared by every node): at each check it
    lists the directory and reads only the results it has not read before (a finished point's
    result never changes), so a check costs one listing, not one read per point.
    """

    def __init__(
        self,
        points_dir: str,
        objectives: Sequence[tuple[str, str]],
        margin: float = 1.0,
        grace_epochs: int = 0,
    ) -> None:
        self.points_dir = points_dir
        self.objectives = list(objectives)
        self.margin = margin
        self.grace_epochs = grace_epochs
        self._read: dict[str, dict[str, Any]] = {}  # point id -> its result, read once

    def finished(self) -> list[dict[str, Any]]:
        for name in storage.listdir(self.points_dir):
            if name in self._read:
                continue
            path = storage.join(self.points_dir, name, RESULT_FILE)
            try:
                self._read[name] = json.loads(storage.read_bytes(path).decode())
            except (OSError, ValueError):
                continue  # not finished yet: asked again at the next check
        return list(self._read.values())

    def __call__(self, candidate: dict[str, Any]) -> str | None:
        epoch = int(candidate.get("epoch", 0))
        epochs = int(candidate.get("epochs", 0))
        first = candidate.get("first_check")
        if first is None or epoch < max(int(first), self.grace_epochs, 1) or epoch >= epochs:
            return None
        if any(not _bounded(m) for m, _ in self.objectives):
            return None  # an objective known only at the end (latency, top-5): never dominated
        bound = {m: float(v) for m, v in candidate.items() if _bounded(m)}
        bound["top1"] += self.margin
        at_epoch = []  # each finished point as it was at this epoch: its top-1 then, exact costs
        for row in self.finished():
            curve = row.get(CURVE_KEY)
            if row.get("status") == "ok" and isinstance(curve, list) and len(curve) == epochs:
                at_epoch.append({**row, "top1": curve[epoch - 1]})
        why = dominated_reason(bound, at_epoch, self.objectives)
        if why is None:
            return None
        return (
            f"fine-tune epoch {epoch}/{epochs}: its top-1 so far "
            f"{float(candidate['top1']):.2f} + margin {self.margin:g} is {why} at the same epoch"
        )

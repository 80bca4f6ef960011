"""Early stopping of points that fits several objectives.

A point is stopped only for what it could still contribute: after pruning its costs are exact,
and its top-1 is bounded by an optimistic value. If a finished point of the experiment is at
least as good in every objective as that bound (and better in one), the stopped point could
never have joined a front, so fine-tuning it further is waste. SSL models are never ranked:
this runs only during fine-tuning.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any

from sslsearch import storage
from sslsearch.trial._run import RESULT_FILE

log = logging.getLogger(__name__)


def dominated_reason(
    candidate: dict[str, float],
    finished: Sequence[dict[str, Any]],
    objectives: Sequence[tuple[str, str]],
) -> str | None:
    """Why ``candidate`` (optimistic values) is dominated by a finished row, or None.

    ``objectives``: (metric, "max" | "min") pairs. Rows other than ``status == "ok"`` and
    metrics the candidate does not know yet never dominate.
    """
    for row in finished:
        if row.get("status") != "ok":
            continue
        better = False
        for metric, mode in objectives:
            c, r = candidate.get(metric), row.get(metric)
            if c is None or r is None or not math.isfinite(float(r)):
                break
            c, r = float(c), float(r)
            if (r < c) if mode == "max" else (r > c):
                break
            better = better or r != c
        else:
            if better:
                vals = ", ".join(f"{m} {float(row[m]):.4g}" for m, _ in objectives)
                return (
                    f"early stopping: even its optimistic result is dominated by point "
                    f"{row.get('trial_id', '?')} ({vals})"
                )
    return None


class FrontStop:
    """Stop a point whose optimistic result a finished point of the experiment dominates.

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

    def __call__(self, candidate: dict[str, float]) -> str | None:
        if candidate.get("epoch", 0.0) < self.grace_epochs:
            return None
        bound = dict(candidate)
        for k in ("top1", "top5"):
            if k in bound:
                bound[k] = bound[k] + self.margin
        return dominated_reason(bound, self.finished(), self.objectives)

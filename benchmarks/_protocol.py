"""One protocol for every benchmark that compares methods (benchmarks/README.md: "How we compare").

* **Paired seeds.** Each seed runs every method; what is compared is the per-seed difference.
  At least ``MIN_SEEDS`` seeds.
* **Splits.** Every choice (lambda, weight decay, which candidate stands for a budget, which
  points form a front) is made on the validation split; headline figures are on the test split,
  which chooses nothing. ``Point`` carries both.
* **Intervals.** The median of the paired differences with a percentile bootstrap 95% interval
  (``paired_interval``), and each side's median with its own interval.
* **Hypervolume on two axes.** Accuracy (top-1 / 100, maximised) against the cost as a share of
  the dense model's (minimised), reference (0, 1): ``hv_linear`` as the product reports it, and
  ``hv_log`` with the cost on a log axis over ``LOG_DECADES`` decades below the dense cost, so
  that the cheap end (1-10% of the FLOPs), where pruning methods differ most, counts.
* **Equal candidates.** A side's front is chosen on validation from its own points; both sides
  get the same number of trained models and fine-tuned points per budget.
* **Rows as they go.** ``Rows`` appends each finished unit of work to a JSON-lines file at once
  and a rerun skips what is there: a benchmark that runs for hours resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _common import Col

from sslsearch.report._pareto import hypervolume

MIN_SEEDS = 5
LOG_DECADES = 2.0  # hv_log's cost axis: 1% .. 100% of the dense cost
BOOTSTRAP = 10_000


@dataclass(frozen=True)
class Point:
    """A pruned, fine-tuned model as a benchmark sees it."""

    cost: float  # share of the dense cost (FLOPs) kept, in (0, 1]
    val: float  # validation top-1, %: what chooses
    test: float  # test top-1, %: what is reported


def front_on_val(points: Sequence[Point]) -> list[Point]:
    """The points no other point beats on (validation top-1, cost): the front a user gets."""
    out = []
    for p in points:
        if not any(
            (q.val >= p.val and q.cost <= p.cost) and (q.val > p.val or q.cost < p.cost)
            for q in points
        ):
            out.append(p)
    return sorted(out, key=lambda p: p.cost)


def _hv(points: Sequence[Point], split: str, x: Callable[[float], float]) -> float:
    if not points:
        return 0.0
    arr = np.array([[x(p.cost), -getattr(p, split) / 100.0] for p in points])
    return hypervolume(arr, np.array([1.0, 0.0]))


def log_axis(cost: float) -> float:
    """A cost share on the log axis: 1 at the dense cost, 0 at 10^-LOG_DECADES of it."""
    return min(1.0, max(0.0, 1.0 + math.log10(max(cost, 1e-12)) / LOG_DECADES))


def hv_linear(points: Sequence[Point], split: str = "test") -> float:
    """Hypervolume of ``points`` on ``split``'s top-1 against the cost share (linear axis)."""
    return _hv(points, split, lambda c: c)


def hv_log(points: Sequence[Point], split: str = "test") -> float:
    """Hypervolume with the cost on a log axis (``log_axis``)."""
    return _hv(points, split, log_axis)


def front_scores(points: Sequence[Point]) -> dict[str, float]:
    """The front chosen on validation, scored on both splits and both axes."""
    front = front_on_val(points)
    return {
        "points": len(points),
        "front_points": len(front),
        "hv_test": hv_linear(front, "test"),
        "hv_log_test": hv_log(front, "test"),
        "hv_val": hv_linear(front, "val"),
        "hv_log_val": hv_log(front, "val"),
    }


def best_on_val(candidates: Sequence[Point]) -> Point:
    """The candidate a user would keep for one budget: the best on validation."""
    return max(candidates, key=lambda p: (p.val, -p.cost))


def bootstrap_median(values: Sequence[float], seed: int = 0) -> tuple[float, float, float]:
    """(median, low, high): the median and its percentile-bootstrap 95% interval."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return (math.nan, math.nan, math.nan)
    if len(v) == 1:
        return (float(v[0]),) * 3  # type: ignore[return-value]
    rng = np.random.default_rng(seed)
    meds = np.median(rng.choice(v, size=(BOOTSTRAP, len(v)), replace=True), axis=1)
    return float(np.median(v)), float(np.quantile(meds, 0.025)), float(np.quantile(meds, 0.975))


def paired_interval(a: Sequence[float], b: Sequence[float], seed: int = 0) -> dict[str, Any]:
    """a - b per seed: median difference, its 95% interval, and each side's median."""
    if len(a) != len(b):
        raise ValueError("paired values need one of each per seed")
    diff = [x - y for x, y in zip(a, b)]
    med, lo, hi = bootstrap_median(diff, seed)
    return {
        "n": len(diff),
        "median_a": float(np.median(a)) if len(a) else math.nan,
        "median_b": float(np.median(b)) if len(b) else math.nan,
        "median_diff": med,
        "ci_low": lo,
        "ci_high": hi,
        "a_wins": sum(d > 0 for d in diff),
        "differences": diff,
    }


def interval_text(stats: Mapping[str, Any], digits: int = 3) -> str:
    """'+0.012 [-0.004, +0.030]'."""
    f = f"{{:+.{digits}f}}"
    return (
        f"{f.format(stats['median_diff'])} "
        f"[{f.format(stats['ci_low'])}, {f.format(stats['ci_high'])}]"
    )


def paired_columns(a: str, b: str) -> list[Col]:
    """The table columns of ``paired_interval`` rows: seeds, each side's median, the median
    difference with its interval, and in how many seeds ``a`` was ahead."""
    return [
        Col("n", "seeds", "d"),
        Col("median_a", a, ".4f"),
        Col("median_b", b, ".4f"),
        Col("text", f"{a} - {b} [95% CI]", "s"),
        Col("a_wins", f"{a} ahead in", "d"),
    ]


class Rows:
    """An append-only JSON-lines file of finished units of work, keyed: resume by skipping."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:  # a line cut by a kill: run it again
                        continue
                    self.rows[row["key"]] = row
        self.started = time.time()
        self.done_here = 0

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def add(self, key: str, row: Mapping[str, Any]) -> dict[str, Any]:
        full = {"key": key, **row}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(full, default=float) + "\n")
            f.flush()
        self.rows[key] = full
        self.done_here += 1
        return full

    def progress(self, key: str, total: int, todo_left: int) -> None:
        """One line: how many are done, this one, and the time left at this run's pace."""
        done = len(self.rows)
        rate = (time.time() - self.started) / max(self.done_here, 1)
        eta = f", about {rate * todo_left / 60:.0f} min left" if self.done_here else ""
        print(f"[{done}/{total}] {key}{eta}", file=sys.stderr, flush=True)

    def where(self, **match: Any) -> list[dict[str, Any]]:
        return [r for r in self.rows.values() if all(r.get(k) == v for k, v in match.items())]


def seeds_or_die(seeds: Iterable[int]) -> list[int]:
    s = list(seeds)
    if len(s) < MIN_SEEDS:
        print(
            f"note: {len(s)} seeds; the protocol asks for at least {MIN_SEEDS} for a headline",
            file=sys.stderr,
        )
    return s


__all__ = [
    "LOG_DECADES",
    "MIN_SEEDS",
    "Point",
    "Rows",
    "best_on_val",
    "bootstrap_median",
    "front_on_val",
    "front_scores",
    "hv_linear",
    "hv_log",
    "interval_text",
    "log_axis",
    "paired_columns",
    "paired_interval",
    "seeds_or_die",
]

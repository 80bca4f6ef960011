"""What a trials.parquet row is: its role, the dense baseline, and the numbers derived from it.

Roles (the ``role`` column; a table without it is all ``search``):

- ``search``: a point the search chose (SSL training, pruning, fine-tuning);
- ``reference``: the same pruning and fine-tuning after plain training (ssl_lambda = 0), the
  no-SSL front that shows what SSL adds;
- ``baseline``: the dense, unpruned model trained with the same recipe (SSL epochs + fine-tune
  epochs, without the penalty), the reference point of every table, plot and hypervolume.

A row whose ``confirm_of`` names another trial re-evaluates that Pareto point with another seed;
fronts are built from the other rows and the re-evaluations give each point a mean and spread.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sslsearch.config import BUDGET_KEYS, PRUNING_KEYS, known_objectives, objective
from sslsearch.errors import UserError

ROLES = ("search", "reference", "baseline")
ROLE_LABELS = {"search": "SSL", "reference": "no-SSL (lambda = 0)", "baseline": "dense baseline"}


def is_accuracy(metric: str) -> bool:
    """An objective whose reference is 0..100 % rather than the dense model's value."""
    d = known_objectives().get(metric)
    return d is not None and d.reference == "percent"


def before_column(metric: str) -> str | None:
    """The column of ``metric`` on the unpruned architecture (in every row: the dense cost for
    experiments without a trained baseline), or None."""
    d = known_objectives().get(metric)
    return d.before if d is not None else None


def noisy_metrics() -> list[str]:
    """Averaged over the baseline's runs (the test split's too); the rest is its first run's."""
    noisy = [d.name for d in known_objectives().values() if d.noisy]
    return noisy + [f"test_{m}" for m in noisy if is_accuracy(m)]


def pruning_target(row: Mapping[str, Any]) -> str | None:
    """What a point was pruned to, in words: "FLOPs <= 50%" for a budget, "30.00%" for the
    reference project's ratio, "N=3" for depth_wise blocks; None when the row has none."""
    for key in BUDGET_KEYS:
        x = number(row.get(key))
        if x is not None:
            return f"{_BUDGET_WORDS[key]} <= {100 * x:.3g}%"
    blocks = number(row.get("blocks"))
    if row.get("prune_type") == "depth_wise" and blocks is not None and blocks >= 0:
        return f"N={int(blocks)}"
    x = number(row.get("ratio"))
    return None if x is None else f"{100 * x:.2f}%"


_BUDGET_WORDS = {"flops_budget": "FLOPs", "params_budget": "params", "latency_budget": "latency"}


CHOICE_KEYS = ("prune_type", "prune_way", *PRUNING_KEYS)  # what a pruning choice is


def _exact(v: Any) -> Any:
    """A value as compared: floats to 12 significant digits (0.9 and 0.9000000000000001 are
    one value; a NaN is one value too), everything else as it is."""
    if isinstance(v, float):
        return None if v != v else float(f"{v:.12g}")
    return v


def pruning_choice(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """(prune_type, prune_way, flops/params/latency budget, ratio, blocks, min_width_share) of
    ``row``, floats compared to 12 significant digits: equal for points pruned the same way."""
    return tuple(_exact(row.get(k)) for k in CHOICE_KEYS)


def row_identity(row: Mapping[str, Any], metrics: Sequence[str]) -> tuple[Any, ...]:
    """What a front's table shows of ``row``: its role, SSL settings, pruning choice and the
    values of ``metrics``. Two rows with one identity would be two identical lines."""
    ssl = (row.get("ssl_type"), _exact(row.get("ssl_lambda")))
    return (
        role_of(row),
        *ssl,
        *pruning_choice(row),
        *(_exact(number(row.get(m))) for m in metrics),
    )


def number(v: Any) -> float | None:
    """``v`` as a finite float, else None (nulls, NaN, text)."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def role_of(row: Mapping[str, Any]) -> str:
    return str(row.get("role") or "search")


def is_confirmation(row: Mapping[str, Any]) -> bool:
    return bool(row.get("confirm_of"))


def completed(
    rows: Iterable[Mapping[str, Any]], metrics: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The ``ok`` rows with a finite value for every one of ``metrics``."""
    return [
        dict(r)
        for r in rows
        if r.get("status") == "ok" and all(number(r.get(m)) is not None for m in metrics)
    ]


def front_rows(rows: Iterable[Mapping[str, Any]], role: str) -> list[dict[str, Any]]:
    """The rows a front of ``role`` is built from: completed, not a re-evaluation."""
    return [r for r in completed(rows) if role_of(r) == role and not is_confirmation(r)]


def objective_modes(objectives: Sequence[str | Sequence[str]]) -> list[tuple[str, str]]:
    """``["top1", ("flops", "min")]`` -> ``[("top1", "max"), ("flops", "min")]``.

    A bare name takes its usual direction (``sslsearch.config.objective``); a pair keeps the
    space's ``mode``. A user's objective is known once its experiment's metadata was read.
    """
    out: list[tuple[str, str]] = []
    for o in objectives:
        name, mode = (o, None) if isinstance(o, str) else (str(o[0]), str(o[1]))
        if mode not in (None, "max", "min"):
            raise UserError(f"objective {name!r}: mode must be max or min, got {mode!r}")
        try:
            out.append((name, objective(name, mode).direction))
        except KeyError:
            known = ", ".join(known_objectives())
            raise UserError(f"unknown objective {name!r}; known: {known}") from None
    return out


@dataclass
class Baseline:
    """The dense model: metric values (mean over its runs where noisy) and how many runs."""

    values: dict[str, Any]
    runs: int
    top1_std: float | None = None
    trial_ids: list[str] = field(default_factory=list)

    def get(self, metric: str) -> float | None:
        return number(self.values.get(metric))


def baseline_of(rows: Iterable[Mapping[str, Any]]) -> Baseline | None:
    """The completed ``baseline`` rows folded into one (None when the experiment has none)."""
    runs = [r for r in completed(rows, ["top1"]) if role_of(r) == "baseline"]
    if not runs:
        return None
    values = dict(runs[0])
    for m in noisy_metrics():
        xs = [x for r in runs if (x := number(r.get(m))) is not None]
        values[m] = sum(xs) / len(xs) if xs else None
    tops = [float(r["top1"]) for r in runs]
    std = _std(tops) if len(tops) > 1 else None
    return Baseline(values, len(runs), std, [str(r.get("trial_id")) for r in runs])


def _std(xs: Sequence[float]) -> float:
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def status_counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How many rows have each ``status``, in order of first appearance."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r.get("status"))] = counts.get(str(r.get("status")), 0) + 1
    return counts


def dense_value(
    metric: str, baseline: Baseline | None, rows: Sequence[Mapping[str, Any]]
) -> tuple[float | None, str]:
    """The dense model's ``metric`` and where it came from, or (None, "") when unknown."""
    if baseline is not None and baseline.get(metric) is not None:
        return baseline.get(metric), "dense baseline"
    col = before_column(metric)
    if col:
        xs = [x for r in rows if (x := number(r.get(col))) is not None]
        if xs:
            return max(xs), f"unpruned architecture, {col}"
    return None, ""


def same_latency_setup(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Latencies compare only at the same batch size, device and thread count."""
    keys = ("latency_batch_size", "latency_device", "latency_threads")
    return all(a.get(k) is None or b.get(k) is None or a.get(k) == b.get(k) for k in keys)


def derived(row: Mapping[str, Any], baseline: Baseline | None) -> dict[str, float | None]:
    """Top-1 drop (points), FLOPs and params reduction (x) and measured speed-up (x).

    Reductions are against the dense baseline, else against the unpruned architecture
    (``flops_before``/``params_before``, known without a trained baseline); the drop and the
    speed-up need the baseline (its accuracy and its latency at the same batch/device/threads).
    """

    def ratio(dense: float | None, x: float | None) -> float | None:
        return dense / x if dense is not None and x else None

    top1 = number(row.get("top1"))
    flops_dense, _ = dense_value("flops", baseline, [row])
    params_dense, _ = dense_value("params", baseline, [row])
    base_top1 = baseline.get("top1") if baseline else None
    base_lat = baseline.get("latency_ms") if baseline else None
    if baseline is not None and not same_latency_setup(baseline.values, row):
        base_lat = None
    return {
        "top1_drop": base_top1 - top1 if base_top1 is not None and top1 is not None else None,
        "flops_reduction": ratio(flops_dense, number(row.get("flops"))),
        "params_reduction": ratio(params_dense, number(row.get("params"))),
        "speedup": ratio(base_lat, number(row.get("latency_ms"))),
    }


def latency_setup(rows: Iterable[Mapping[str, Any]]) -> str:
    """'batch 1, cpu, 1 thread(s)' from the rows' latency columns ('' when none was measured)."""
    seen = {
        (r.get("latency_batch_size"), r.get("latency_device"), r.get("latency_threads"))
        for r in rows
        if number(r.get("latency_ms")) is not None
    }
    parts = []
    for bs, dev, th in sorted(seen, key=str):
        bits = [f"batch {bs}" if bs is not None else "", str(dev or ""), ""]
        if th is not None:
            bits[2] = f"{th} thread" + ("s" if int(th) != 1 else "")
        parts.append(", ".join(b for b in bits if b))
    return "; ".join(parts)

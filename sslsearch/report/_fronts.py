"""Pareto fronts of an experiment: which fronts, their points, hypervolumes and seed means.

Which fronts follow the space's objectives: accuracy against each cost objective (top1 vs
FLOPs, top1 vs size, top1 vs latency, ...), the measured-latency front even when latency was not
an objective, and one front over all objectives when there are more than two. Each front is
built twice, from the SSL points (role ``search``) and from the no-SSL points (role
``reference``), against one reference point so that the two hypervolumes compare: 0 % accuracy
and the dense baseline's cost (the unpruned architecture's FLOPs/params/size without a trained
baseline; the worst trial's value only when neither is known).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sslsearch.config import objective
from sslsearch.report._pareto import (
    hypervolume,
    minimization_signs,
    non_dominated_mask,
    to_minimization,
)
from sslsearch.report._rows import (
    Baseline,
    completed,
    dense_value,
    front_rows,
    is_accuracy,
    number,
    objective_modes,
    row_identity,
)

ALL_OBJECTIVES = "all_objectives"


@dataclass
class Front:
    name: str
    objectives: list[str]
    directions: list[str]
    rows: list[dict[str, Any]]  # the non-dominated points, sorted by the front's own cost
    hypervolume: float  # normalised: a share of the unit box
    reference: dict[str, float]  # in raw units
    scale: dict[str, float]
    role: str = "search"  # "search" (SSL) or "reference" (no-SSL, lambda = 0)
    reference_source: dict[str, str] = field(default_factory=dict)
    considered: int = 0  # completed points the front was chosen from

    @property
    def cost(self) -> str | None:
        """The objective this front is sorted by (its first minimised one)."""
        return next((o for o, d in zip(self.objectives, self.directions) if d == "min"), None)


@dataclass(frozen=True)
class FrontSpec:
    name: str
    objectives: list[tuple[str, str]]
    in_space: bool  # False: shown because it was measured (latency), not searched


def front_specs(
    objectives: Sequence[str | Sequence[str]], latency_measured: bool = True
) -> list[FrontSpec]:
    """The fronts an experiment with ``objectives`` shows, in order."""
    objs = objective_modes(objectives)
    acc = next(((o, d) for o, d in objs if is_accuracy(o)), ("top1", "max"))
    costs = [(o, d) for o, d in objs if not is_accuracy(o)]
    specs = [
        FrontSpec(objective(o).front_name.replace("top1", acc[0], 1), [acc, (o, d)], True)
        for o, d in costs
    ]
    if latency_measured and "latency_ms" not in [o for o, _ in costs]:
        specs.append(FrontSpec("top1_vs_latency", [("top1", "max"), ("latency_ms", "min")], False))
    if len(objs) > 2 or not costs:
        specs.append(FrontSpec(ALL_OBJECTIVES, objs, True))
    return specs


def reference_point(
    rows: Sequence[Mapping[str, Any]],
    objectives: Sequence[tuple[str, str]],
    baseline: Baseline | None,
) -> tuple[dict[str, float], dict[str, float], dict[str, str]]:
    """(reference, scale, source) per objective, in raw units.

    Accuracy is normalised by 100 %, a cost by the dense model's value. A maximised objective's
    reference is 0, a minimised one's the dense value (100 % for an accuracy), so a point adds
    volume only if it is better than the dense model at its cost.
    """
    reference, scale, source = {}, {}, {}
    for o, d in objectives:
        if is_accuracy(o):
            scale[o], src = 100.0, "100 %"
        else:
            dense, src = dense_value(o, baseline, rows)
            if dense is None:
                seen = [x for r in rows if (x := number(r.get(o))) is not None]
                dense, src = (max(seen) if seen else 1.0), "worst trial (no dense baseline)"
            scale[o] = dense if dense > 0 else 1.0
        reference[o] = 0.0 if d == "max" else scale[o]
        source[o] = "0" if d == "max" else src
    return reference, scale, source


def _sort_key(cost: str | None, acc: str | None) -> Any:
    def key(r: Mapping[str, Any]) -> tuple[float, float, str]:
        c = number(r.get(cost)) if cost else 0.0
        a = number(r.get(acc)) if acc else 0.0
        return (c if c is not None else np.inf, -(a or 0.0), str(r.get("trial_id")))

    return key


def compute_front(
    rows: Sequence[Mapping[str, Any]],
    objectives: Sequence[str | Sequence[str]],
    name: str | None = None,
    *,
    baseline: Baseline | None = None,
    role: str = "search",
    reference: tuple[dict[str, float], dict[str, float], dict[str, str]] | None = None,
) -> Front:
    """The non-dominated completed rows for ``objectives`` (names or (name, mode) pairs).

    ``rows`` are taken as given (the caller picks the role); ``reference`` is
    ``reference_point(...)`` when several fronts must share one, else it is computed from
    ``rows`` and ``baseline``.
    """
    objs = objective_modes(objectives)
    names, directions = [o for o, _ in objs], [d for _, d in objs]
    ok = completed(rows, names)
    ref, scale, source = reference or reference_point(ok, objs, baseline)
    values = np.array([[float(r[o]) for o in names] for r in ok]).reshape(len(ok), len(names))
    mask = non_dominated_mask(to_minimization(values, directions)) if ok else np.zeros(0, bool)
    front = Front(
        name or "_vs_".join(names),
        names,
        directions,
        [ok[i] for i in np.flatnonzero(mask)],
        0.0,
        ref,
        scale,
        role,
        source,
        len(ok),
    )
    acc = next((o for o in names if is_accuracy(o)), None)
    front.rows.sort(key=_sort_key(front.cost, acc))
    front.rows = merge_identical(front.rows, names)
    if ok:
        s = np.array([scale[o] for o in names])
        r = np.array([ref[o] for o in names]) / s
        front.hypervolume = hypervolume(
            to_minimization(values / s, directions), to_minimization(r[None, :], directions)[0]
        )
    return front


def merge_identical(rows: list[dict[str, Any]], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """``rows`` with each set of identical rows (``row_identity``: role, SSL settings, pruning
    choice and ``metrics``) listed once, as its first; every row gets ``identical_points``, how
    many points it stands for. Identical points are all non-dominated when one is, and the
    front's hypervolume is the same with one of them."""
    kept: dict[tuple[Any, ...], dict[str, Any]] = {}
    count: dict[tuple[Any, ...], int] = {}
    for r in rows:
        key = row_identity(r, metrics)
        kept.setdefault(key, r)
        count[key] = count.get(key, 0) + 1
    for key, r in kept.items():
        r["identical_points"] = count[key]
    return list(kept.values())


def hypervolume_history(
    rows: Sequence[Mapping[str, Any]],
    objectives: Sequence[str | Sequence[str]],
    reference: tuple[dict[str, float], dict[str, float], dict[str, str]],
) -> list[tuple[str, float]]:
    """(trial_id, hypervolume of the front of the trials up to it) in completion order.

    The front of a prefix is the front of (the previous front + the new point), and a point
    that a point of the front weakly dominates changes neither: it is skipped, so 10,000
    points cost a front update only for the few hundred that join it.
    """
    objs = objective_modes(objectives)
    names = [o for o, _ in objs]
    signs = minimization_signs([d for _, d in objs])
    ok = sorted(
        completed(rows, names),
        key=lambda r: (number(r.get("finished_at")) or 0.0, str(r.get("trial_dir") or "")),
    )
    out: list[tuple[str, float]] = []
    front: list[dict[str, Any]] = []
    losses = np.zeros((0, len(names)))  # the front's, every objective minimised
    hv = 0.0
    for r in ok:
        x = np.array([float(r[o]) for o in names]) * signs
        if len(losses) and bool((losses <= x).all(axis=1).any()):
            out.append((str(r.get("trial_id")), hv))
            continue
        f = compute_front([*front, r], objs, reference=reference)
        front, hv = f.rows, f.hypervolume
        losses = np.array([[float(p[o]) for o in names] for p in front]) * signs
        out.append((str(r.get("trial_id")), hv))
    return out


# ---- confirmations (several seeds per Pareto point) ------------------------------------------


def points_to_confirm(
    rows: Sequence[Mapping[str, Any]],
    objectives: Sequence[str | Sequence[str]],
    roles: Sequence[str] = ("search", "reference"),
) -> list[str]:
    """Trial ids of every point on a front the export shows (for ``--confirm-front K``).

    Pure: the search calls it with the rows of trials.parquet and the space's objectives as
    ``[(metric, mode), ...]`` and re-runs each returned point with K more seeds, writing rows
    with ``confirm_of`` = that id. Re-evaluations are never themselves returned; ids come in the
    order of the first front's cost, each once.
    """
    latency = any(number(r.get("latency_ms")) is not None for r in rows)
    out: list[str] = []
    for role in roles:
        pts = front_rows(rows, role)
        for spec in front_specs(objectives, latency):
            for r in compute_front(pts, spec.objectives).rows:
                tid = str(r.get("trial_id"))
                if tid not in out:
                    out.append(tid)
    return out


def _mean_std(xs: Sequence[float]) -> tuple[float, float | None]:
    a = np.asarray(xs, dtype=np.float64)
    return float(a.mean()), (float(a.std(ddof=1)) if len(a) > 1 else None)


def with_seed_means(front: Front, rows: Sequence[Mapping[str, Any]]) -> Front:
    """``front`` with each point's re-runs (its completed re-evaluations with other seeds,
    ``confirm_of`` = its id) summarised apart from the selected run, and whether the point
    stays non-dominated on the re-runs' means.

    The selected run was chosen because it scored well on validation, so it is kept out of the
    means: they say what the same settings give again. Adds per point ``n_seeds`` (its
    re-runs; 0 for none), ``<objective>_mean``, ``top1_mean``, ``top1_std`` (None below two
    re-runs), ``test_top1_mean`` and ``on_mean_front`` (a point without re-runs is placed by its
    own values); a front without any re-evaluation comes back unchanged.
    """
    redo: dict[str, list[Mapping[str, Any]]] = {}
    for r in completed(rows, front.objectives):
        if r.get("confirm_of"):
            redo.setdefault(str(r["confirm_of"]), []).append(r)
    if not any(str(p.get("trial_id")) in redo for p in front.rows):
        return front
    metrics = list(dict.fromkeys([*front.objectives, "top1", "test_top1"]))
    means = []
    for p in front.rows:
        runs = redo.get(str(p.get("trial_id")), [])
        p["n_seeds"] = len(runs)
        p["top1_std"] = None
        for m in metrics:
            xs = [x for r in runs if (x := number(r.get(m))) is not None]
            if xs:
                p[f"{m}_mean"], sd = _mean_std(xs)
                if m == "top1":
                    p["top1_std"] = sd
        means.append([float(p.get(f"{o}_mean", p[o])) for o in front.objectives])
    mask = non_dominated_mask(to_minimization(np.array(means), front.directions))
    for p, keep in zip(front.rows, mask):
        p["on_mean_front"] = bool(keep)
    return front

"""Everything the exports show, computed once from the rows: every writer reads a Summary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sslsearch.report._fronts import (
    Front,
    FrontSpec,
    compute_front,
    front_specs,
    reference_point,
    with_seed_means,
)
from sslsearch.report._rows import (
    Baseline,
    baseline_of,
    completed,
    front_rows,
    latency_setup,
    number,
    objective_modes,
)
from sslsearch.report._screen_agreement import screen_agreement


@dataclass
class FrontPair:
    """One front (e.g. top1 vs FLOPs), from the SSL points and from the no-SSL points."""

    spec: FrontSpec
    ssl: Front
    no_ssl: Front | None  # None when the experiment has no lambda = 0 point

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def fronts(self) -> list[Front]:
        return [self.ssl] + ([self.no_ssl] if self.no_ssl is not None else [])


@dataclass
class Summary:
    title: str
    rows: list[dict[str, Any]]  # every trial, as read
    objectives: list[tuple[str, str]]  # (metric, mode) as searched
    baseline: Baseline | None
    pairs: list[FrontPair]
    latency_setup: str  # e.g. "batch 1, cpu, 1 thread"
    screens: list[dict[str, Any]] = field(default_factory=list)  # screens.parquet's rows
    agreement: tuple[float | None, int] = (None, 0)  # screen_agreement(rows)

    @property
    def fronts(self) -> list[Front]:
        return [f for p in self.pairs for f in p.fronts]

    @property
    def confirmed(self) -> bool:
        return any(r.get("confirm_of") for r in self.rows)


def summarize(
    rows: Sequence[Mapping[str, Any]],
    objectives: Sequence[str | Sequence[str]],
    title: str,
    screens: Sequence[Mapping[str, Any]] = (),
) -> Summary:
    """Everything the exports show. ``screens``: screened values (screens.parquet), drawn as
    curves and counted, never on a front."""
    objs = objective_modes(objectives)
    every = [dict(r) for r in rows]
    baseline = baseline_of(rows)
    ssl_rows, ref_rows = front_rows(rows, "search"), front_rows(rows, "reference")
    ok = completed(rows)
    latency = any(number(r.get("latency_ms")) is not None for r in ssl_rows + ref_rows)
    pairs = []
    for spec in front_specs(objs, latency):
        ref = reference_point(ok, spec.objectives, baseline)
        fronts = [
            with_seed_means(
                compute_front(
                    pts, spec.objectives, spec.name, baseline=baseline, role=role, reference=ref
                ),
                rows,
            )
            for role, pts in (("search", ssl_rows), ("reference", ref_rows))
            if role == "search" or pts
        ]
        pairs.append(FrontPair(spec, fronts[0], fronts[1] if len(fronts) > 1 else None))
    return Summary(
        title,
        every,
        objs,
        baseline,
        pairs,
        latency_setup(ok),
        [dict(r) for r in screens],
        screen_agreement(rows),
    )

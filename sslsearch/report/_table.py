"""Tables in the seed's layout (shared/seed-results.md), in units that suit the numbers.

FLOPs are multiply-adds counted by fvcore (one fused multiply-add = one flop). Each table picks
its own units (FLOPs and params in K, M or G; sizes in KB, MB or GB: the largest that keeps the
table's largest value >= 1) and states them in the column headers, e.g. ``flops/M``.
"model size" is the true size of the fp32 state (10^6 bytes per MB); the seed's column of that
name held parameter counts in millions, which sslsearch shows separately as ``params``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sslsearch.config import known_objectives
from sslsearch.report._rows import Baseline, derived, number, pruning_target

# What a point is: the seed's first six columns, in every table.
_ID_COLUMNS = (
    "arch",
    "prune type",
    "prune way",
    "ssl lambda",
    "pruning ratio",
    "actual pruning ratio",
)
# The seed's single-trial row (fixed units: G FLOPs, MB, M params).
SEED_COLUMNS = (
    *_ID_COLUMNS,
    "flops/G",
    "model size/MB",
    "FLOPs after pruning",
    "Model size after pruning",
    "params/M after",
    "top1",
    "top5",
)


@dataclass(frozen=True)
class Unit:
    factor: float  # raw value / factor = shown value
    suffix: str  # e.g. "M" (counts) or "MB" (sizes)


def count_unit(values: Iterable[Any]) -> Unit:
    """K, M or G: the largest whose value of the biggest number is >= 1."""
    top = max((abs(x) for v in values if (x := number(v)) is not None), default=0.0)
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if top >= factor:
            return Unit(factor, suffix)
    return Unit(1.0, "")


def size_unit(values_mb: Iterable[Any]) -> Unit:
    """KB, MB or GB for sizes given in MB (10^6 bytes)."""
    top = max((abs(x) for v in values_mb if (x := number(v)) is not None), default=0.0)
    if top >= 1000:
        return Unit(1000.0, "GB")
    if top >= 1 or top == 0:
        return Unit(1.0, "MB")
    return Unit(1e-3, "KB")


def metric_unit(metric: str, values: Iterable[Any]) -> tuple[Unit, str]:
    """The unit ``metric``'s ``values`` are shown in, and its axis label with that unit: counts
    in K/M/G, sizes in KB/MB/GB, anything else in its own unit."""
    d = known_objectives().get(metric)
    if d is None:
        return Unit(1.0, ""), metric
    if d.unit == "MB":
        u = size_unit(values)
    elif not d.unit:
        u = count_unit(values) if d.column_type == "int64" else Unit(1.0, "")
    else:
        u = Unit(1.0, d.unit)
    return u, f"{d.label} ({u.suffix})" if u.suffix else d.label


def fmt(v: Any, unit: Unit | None = None, digits: int = 4) -> str:
    """Four significant digits, never in exponent notation; '-' for a missing value."""
    x = number(v)
    if x is None:
        return "-"
    if unit is not None:
        x /= unit.factor
    s = f"{x:.{digits}g}"
    if "e" in s:
        decimals = digits - 1 - math.floor(math.log10(abs(x)))
        s = f"{x:.0f}" if abs(x) >= 1 else f"{x:.{decimals}f}".rstrip("0")
    return s


def _pct(v: Any) -> str:
    x = number(v)
    return "-" if x is None else f"{100 * x:.2f}%"


def _fixed(v: Any, decimals: int = 2) -> str:
    x = number(v)
    return "-" if x is None else f"{x:.{decimals}f}"


def _times(v: Any) -> str:
    x = number(v)
    return "-" if x is None else f"{x:.2f}x"


# objectives every front table shows; any other objective of the front gets a column of its own
SHOWN = ("top1", "top5", "flops", "params", "size_mb", "latency_ms")


@dataclass(frozen=True)
class TableUnits:
    flops: Unit
    params: Unit
    size: Unit
    # (metric, unit, header) of each other objective of the front (a user's, peak activation)
    extra: tuple[tuple[str, Unit, str], ...] = ()

    @staticmethod
    def of(
        rows: Sequence[Mapping[str, Any]],
        baseline: Baseline | None = None,
        objectives: Sequence[str] = (),
    ) -> TableUnits:
        """Units for a table of ``rows`` (and the baseline row shown above them) whose front
        has ``objectives``."""
        every = [*rows, *([baseline.values] if baseline else [])]
        extra = []
        for m in objectives:
            if m not in SHOWN:
                u, _ = metric_unit(m, [r.get(m) for r in every])
                extra.append((m, u, f"{m}/{u.suffix}" if u.suffix else m))
        return TableUnits(
            count_unit(r.get(k) for r in every for k in ("flops", "flops_before")),
            count_unit(r.get(k) for r in every for k in ("params", "params_before")),
            size_unit(r.get(k) for r in every for k in ("size_mb", "size_mb_before")),
            tuple(extra),
        )


def front_columns(units: TableUnits, latency: bool = False, confirmed: bool = False) -> list[str]:
    """The seed's columns (FLOPs and size of the dense model, then after pruning), then the
    comparison with the dense baseline, then latency and the seeds' mean where there are any."""
    f, p, s = units.flops.suffix, units.params.suffix, units.size.suffix
    cols = [
        *_ID_COLUMNS,
        f"flops/{f}" if f else "flops",
        f"model size/{s}",
        f"FLOPs after pruning/{f}" if f else "FLOPs after pruning",
        f"Model size after pruning/{s}",
        f"params after pruning/{p}" if p else "params after pruning",
        "top1",
        "top5",
        "test top1",
        "top-1 drop",
        "FLOPs reduction",
        "params reduction",
        *(header for _, _, header in units.extra),
    ]
    if latency:
        cols += ["latency/ms", "speed-up"]
    if confirmed:
        cols += ["re-runs", "re-run top1 mean ± sd", "re-run test top1 mean", "on re-run front"]
    return cols


def front_cells(
    m: Mapping[str, Any],
    baseline: Baseline | None,
    units: TableUnits,
    is_baseline: bool = False,
) -> dict[str, str]:
    """One row of a front table (the keys of ``front_columns`` for ``units``)."""
    cols = front_columns(units, latency=True, confirmed=True)
    target = pruning_target(m)
    lam = number(m.get("ssl_lambda"))
    d = derived(m, baseline)
    dense = baseline.values if baseline else m
    values = [
        str(m.get("arch") or ""),
        "dense baseline" if is_baseline else str(m.get("prune_type") or ""),
        "-" if is_baseline else str(m.get("prune_way") or ""),
        "0" if is_baseline else ("-" if lam is None else f"{lam:.3g}"),
        "0%" if is_baseline else (target or "-"),
        "0%" if is_baseline else _pct(m.get("actual_ratio")),
        fmt(dense.get("flops") if baseline else m.get("flops_before"), units.flops),
        fmt(dense.get("size_mb") if baseline else m.get("size_mb_before"), units.size),
        fmt(m.get("flops"), units.flops),
        fmt(m.get("size_mb"), units.size),
        fmt(m.get("params"), units.params),
        _fixed(m.get("top1")),
        _fixed(m.get("top5")),
        _fixed(m.get("test_top1")),
        "-" if d["top1_drop"] is None else f"{d['top1_drop']:.2f}",
        _times(d["flops_reduction"]),
        _times(d["params_reduction"]),
        *(fmt(m.get(metric), unit) for metric, unit, _ in units.extra),
        fmt(m.get("latency_ms"), None, 3),
        _times(d["speedup"]),
        str(m.get("n_seeds") or 0),
        _mean_sd(m),
        _fixed(m.get("test_top1_mean")),
        ""
        if m.get("on_mean_front") is None
        else ("yes" if m["on_mean_front"] else "no (dominated)"),
    ]
    return dict(zip(cols, values))


def _mean_sd(m: Mapping[str, Any]) -> str:
    mean, sd = number(m.get("top1_mean")), number(m.get("top1_std"))
    if mean is None:
        return "-"
    return f"{mean:.2f} ± {sd:.2f}" if sd is not None else f"{mean:.2f}"


def front_table(
    rows: Sequence[Mapping[str, Any]],
    baseline: Baseline | None,
    latency: bool = False,
    confirmed: bool = False,
    objectives: Sequence[str] = (),
) -> tuple[str, TableUnits]:
    """A Markdown table of ``rows`` (already sorted), the dense baseline as its first row;
    ``objectives``: the front's (one not always shown gets its own column)."""
    units = TableUnits.of(rows, baseline, objectives)
    cols = front_columns(units, latency, confirmed)
    body = [front_cells(baseline.values, baseline, units, True)] if baseline else []
    body += [front_cells(r, baseline, units) for r in rows]
    return markdown_table(body, cols), units


def seed_row(m: Mapping[str, Any]) -> dict[str, str]:
    """One trial's final metrics as the seed's row (G FLOPs, MB, M params; SEED_COLUMNS)."""
    units = TableUnits(Unit(1e9, "G"), Unit(1e6, "M"), Unit(1.0, "MB"))
    c = front_cells(m, None, units)
    return {
        **{k: c[k] for k in _ID_COLUMNS},
        "flops/G": c["flops/G"],
        "model size/MB": c["model size/MB"],
        "FLOPs after pruning": c["FLOPs after pruning/G"],
        "Model size after pruning": c["Model size after pruning/MB"],
        "params/M after": c["params after pruning/M"],
        "top1": _fixed(m.get("top1"), 3),
        "top5": _fixed(m.get("top5"), 3),
    }


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub Markdown table with centred columns (the seed's style)."""
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    head = "| " + " | ".join(c.center(w) for c, w in zip(columns, widths)) + " |"
    rule = "|" + "|".join(":" + "-" * w + ":" for w in widths) + "|"
    body = ["| " + " | ".join(v.center(w) for v, w in zip(row, widths)) + " |" for row in cells]
    return "\n".join([head, rule, *body])

"""pareto.md and the console's fronts: per front, the SSL and no-SSL tables under the baseline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sslsearch.report._fronts import ALL_OBJECTIVES, Front
from sslsearch.report._rows import ROLE_LABELS, Baseline, number
from sslsearch.report._screen_agreement import agreement_text, headline
from sslsearch.report._summary import FrontPair, Summary
from sslsearch.report._table import (
    fmt,
    front_table,
    markdown_table,
    metric_unit,
)


def value_text(metric: str, value: float | None) -> str:
    """``2.393 M`` FLOPs, ``1.16 MB``, ``0.21 ms``, ``99.30 %``."""
    if value is None:
        return "-"
    if metric in ("top1", "top5"):
        return f"{value:.2f} %"
    if metric == "latency_ms":
        return f"{fmt(value, None, 3)} ms"
    u, _ = metric_unit(metric, [value])
    return f"{fmt(value, u)}{' ' + u.suffix if u.suffix else ''}"


def baseline_text(b: Baseline | None, latency_setup: str) -> str:
    if b is None:
        return (
            "No dense baseline in this experiment (no row with role `baseline`): top-1 drop and "
            "speed-up are not shown; FLOPs and params reductions are against the unpruned "
            "architecture (flops_before, params_before), and hypervolumes use it as reference."
        )
    v = b.values
    recipe = ""
    if number(v.get("epochs")) is not None:
        recipe = (
            f" ({int(v['epochs'])} SSL-stage epochs + {int(v.get('finetune_epochs') or 0)} "
            "fine-tune epochs, no penalty, no pruning)"
        )
    how = f"trained with the search's recipe{recipe}"
    weights = v.get("weights")
    if weights:
        name = str(weights).rstrip("/").rsplit("/", 1)[-1]
        trained = (number(v.get("epochs")) or 0) + (number(v.get("finetune_epochs")) or 0)
        how = (
            f"trained from the given weights ({name}) with the search's recipe{recipe}"
            if trained > 0
            else f"from the given weights ({name}), measured as they are (no training)"
        )
    runs = f", mean of {b.runs} seeds (sd {b.top1_std:.2f})" if b.top1_std is not None else ""
    lat = ""
    if b.get("latency_ms") is not None:
        lat = f", latency {value_text('latency_ms', b.get('latency_ms'))}"
        lat += f" ({latency_setup})" if latency_setup else ""
    return (
        f"Dense baseline: {v.get('arch')} {how}: "
        f"top-1 {value_text('top1', b.get('top1'))}{runs}"
        + (f" (test {value_text('top1', b.get('test_top1'))})" if b.get("test_top1") else "")
        + ", "
        f"{value_text('flops', b.get('flops'))} FLOPs, {value_text('params', b.get('params'))} "
        f"params, {value_text('size_mb', b.get('size_mb'))}{lat}."
    )


def distill_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line on logit distillation in the points' fine-tunes ("" when none distilled)."""
    kinds: dict[tuple[str, float, float], int] = {}
    for r in rows:
        source = r.get("distilled_from")
        if source:
            key = (
                str(source),
                float(r.get("distill_weight") or 0.0),
                float(r.get("distill_temperature") or 0.0),
            )
            kinds[key] = kinds.get(key, 0) + 1
    if not kinds:
        return ""
    parts = [
        f"{n} from {source} (weight {w:g}, temperature {t:g})"
        for (source, w, t), n in sorted(kinds.items())
    ]
    return (
        f"Fine-tunes distilled from a teacher's logits (recipe.distill_weight; column "
        f"distilled_from): {'; '.join(parts)}, of {len(rows)} trials."
    )


def _title(pair: FrontPair) -> str:
    f = pair.ssl
    text = " vs ".join(f.objectives)
    if pair.name == ALL_OBJECTIVES:
        text = f"all objectives: {' vs '.join(f.objectives)}"
    if not pair.spec.in_space:
        text += " (measured; not a search objective)"
    return text


def _reference_line(f: Front) -> str:
    parts = [
        f"{o} {value_text(o, f.reference[o])}"
        + (f" ({f.reference_source[o]})" if d == "min" and f.reference_source.get(o) else "")
        for o, d in zip(f.objectives, f.directions)
    ]
    return (
        "Hypervolume reference point: "
        + ", ".join(parts)
        + "; each objective divided by its dense (or 100 %) value, so 1.0 is the unit box."
    )


def identical_text(f: Front) -> str:
    """'; 3 identical points listed once' ('' when every row is one point)."""
    extra = sum(int(r.get("identical_points") or 1) - 1 for r in f.rows)
    return f"; {extra} identical point{'s' if extra != 1 else ''} listed once" if extra else ""


def _front_section(f: Front, s: Summary, level: str, latency: bool) -> list[str]:
    label = ROLE_LABELS[f.role]
    head = f"{level}{label} front ({len(f.rows)} of {f.considered} points, "
    head += f"hypervolume {f.hypervolume:.4f}{identical_text(f)})"
    confirmed = any(r.get("n_seeds") for r in f.rows)
    table, _ = front_table(
        f.rows, s.baseline, latency=latency, confirmed=confirmed, objectives=f.objectives
    )
    out = ["", head, "", table if f.rows or s.baseline else "(no points)"]
    if confirmed:
        out += [
            "",
            "Seeds: each point's re-runs with other seeds (`confirm_of`), apart from the run "
            "the search selected (which scored well on validation, so its own top1 is "
            "optimistic); re-run top1 mean ± sample sd (validation), re-run test top1 mean; "
            '"no (dominated)": another point is better on the re-runs\' means.',
        ]
    return out


def pair_section(
    pair: FrontPair, s: Summary, levels: tuple[str, str] = ("## ", "### ")
) -> list[str]:
    latency = "latency_ms" in pair.ssl.objectives or any(
        number(r.get("latency_ms")) is not None for f in pair.fronts for r in f.rows
    )
    lines = ["", f"{levels[0]}{_title(pair)}", ""]
    hv = [f"{ROLE_LABELS[f.role]} {f.hypervolume:.4f}" for f in pair.fronts]
    lines.append(f"Hypervolume: {', '.join(hv)}.")
    if pair.no_ssl is None:
        lines[-1] += " No lambda = 0 points (role `reference`): no no-SSL front."
    lines.append(_reference_line(pair.ssl))
    if "latency_ms" in pair.ssl.objectives and s.latency_setup:
        lines.append(
            f"Latency measured at {s.latency_setup}; speed-up = baseline latency / latency."
        )
    for f in pair.fronts:
        lines += _front_section(f, s, levels[1], latency)
    return lines


def _counts_text(s: Summary) -> str:
    return headline(s.rows, s.screens) + "."


def screen_lines(s: Summary) -> list[str]:
    """The screen's rank agreement (and its warning), as lines ([] when nothing was screened)."""
    text = agreement_text(*s.agreement)
    return [text] if text else []


SPLITS = (
    "top1/top5 are on the validation split, which chose every front (and every other choice "
    "of the search); test top1 is on the test split, which chose nothing: quote it."
)


def markdown(s: Summary) -> str:
    """The whole pareto.md."""
    lines = [f"# Pareto fronts: {s.title}", "", _counts_text(s), ""]
    if screen_lines(s):
        lines += [*screen_lines(s), ""]
    lines.append(
        "FLOPs are multiply-adds counted by fvcore (one fused multiply-add = one flop); each table "
        "states its units in the column headers (K = 10^3, M = 10^6, G = 10^9). Model size is the "
        'fp32 state (MB = 10^6 bytes); the seed\'s "model size/MB" column held parameter counts, '
        f"shown here as params. {SPLITS} "
        "top-1 drop is in points (validation; baseline minus point), reductions and speed-up are dense / pruned. Each front is sorted "
        "by its own cost."
    )
    lines += ["", baseline_text(s.baseline, s.latency_setup)]
    if distill_text(s.rows):
        lines += ["", distill_text(s.rows)]
    for pair in s.pairs:
        lines += pair_section(pair, s)
    return "\n".join(lines) + "\n"


def console(s: Summary) -> str:
    """What the search and ``sslsearch export`` print: the fronts of two objectives."""
    lines = [
        _counts_text(s),
        *screen_lines(s),
        baseline_text(s.baseline, s.latency_setup),
        SPLITS,
    ]
    for pair in s.pairs:
        if pair.name != ALL_OBJECTIVES:
            lines += pair_section(pair, s, ("Pareto front ", ""))
    return "\n".join(lines)


__all__ = ["console", "markdown", "markdown_table"]

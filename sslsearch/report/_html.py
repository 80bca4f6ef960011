"""report.html: one self-contained interactive page per experiment (plotly, opens offline).

plotly.js is embedded inline (no CDN), every trial's row is embedded as JSON
(``<script type="application/json" id="sslsearch-data">``) and drawn as a table, the fronts
(SSL and no-SSL) carry each point's parameters in their hover text, the dense baseline is a
star, and the page adds the hypervolume over trials and the training curves of the Pareto points.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sslsearch.report._fronts import ALL_OBJECTIVES, Front, hypervolume_history
from sslsearch.report._html_screens import flops_share, screen_traces
from sslsearch.report._markdown import SPLITS, baseline_text, distill_text, identical_text
from sslsearch.report._plot import axis_unit
from sslsearch.report._rows import (
    ROLE_LABELS,
    derived,
    front_rows,
    number,
    pruning_target,
    role_of,
)
from sslsearch.report._screen_agreement import agreement_text, agreement_warning, headline
from sslsearch.report._summary import FrontPair, Summary
from sslsearch.report._table import TableUnits, front_cells, front_columns

DATA_ID = "sslsearch-data"
COLORS = {"search": "#d62728", "reference": "#1f77b4"}
TRIAL_COLORS = {"search": "#999999", "reference": "#9ecae1"}
TRIAL_COLUMNS = (
    "trial_id",
    "role",
    "status",
    "confirm_of",
    "seed",
    "ssl_model_id",
    "ssl_type",
    "ssl_lambda",
    "prune_type",
    "prune_way",
    "flops_budget",
    "params_budget",
    "latency_budget",
    "ratio",
    "blocks",
    "actual_ratio",
    "at_floor",
    "top1",
    "top5",
    "test_top1",
    "flops",
    "params",
    "size_mb",
    "latency_ms",
    "screen_top1",
    "ssl_reused",
    "trial_seconds",
    "error",
)
_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1300px;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:12px;margin:.5em 0 1.5em}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:center;white-space:nowrap}
th{background:#f4f4f4;cursor:pointer}
tr.baseline td{font-weight:600;background:#fffbe6}
tr.dominated td{color:#999}
.scroll{overflow-x:auto}
.note{color:#555;font-size:13px}
.warn{color:#a40;font-size:13px;font-weight:600}
"""
_SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function(th, i){
  th.addEventListener('click', function(){
    var tb = th.closest('table').tBodies[0], rows = Array.from(tb.rows);
    var dir = th.dataset.dir === 'asc' ? -1 : 1; th.dataset.dir = dir === 1 ? 'asc' : 'desc';
    rows.sort(function(a, b){
      var x = a.cells[i].textContent, y = b.cells[i].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      if (!isNaN(nx) && !isNaN(ny)) return dir * (nx - ny);
      return dir * x.localeCompare(y);
    });
    rows.forEach(function(r){ tb.appendChild(r); });
  });
});
"""


def _plain(v: Any) -> Any:
    """JSON-safe: non-finite floats become null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def embedded_data(s: Summary) -> dict[str, Any]:
    """What the page embeds as JSON: every trial, the fronts' ids and hypervolumes, the baseline."""
    return {
        "title": s.title,
        "objectives": s.objectives,
        "trials": [
            {k: _plain(v) for k, v in r.items() if k not in ("config", "history")} for r in s.rows
        ],
        "screens": [{k: _plain(v) for k, v in r.items()} for r in s.screens],
        "screen_rank_agreement": {"kendall_tau": s.agreement[0], "points": s.agreement[1]},
        "baseline": None
        if s.baseline is None
        else {"trial_ids": s.baseline.trial_ids, "runs": s.baseline.runs},
        "fronts": [
            {
                "name": f.name,
                "role": f.role,
                "objectives": f.objectives,
                "directions": f.directions,
                "hypervolume": f.hypervolume,
                "reference": f.reference,
                "trial_ids": [str(r.get("trial_id")) for r in f.rows],
            }
            for f in s.fronts
        ],
    }


def _opt(v: Any) -> str:
    x = number(v)
    return "-" if x is None else f"{x:.2f}"


def _hover(r: Mapping[str, Any], s: Summary) -> str:
    d = derived(r, s.baseline)
    bits = [
        f"trial {r.get('trial_id')} ({ROLE_LABELS.get(role_of(r), '?')})",
        f"ssl {r.get('ssl_type')} lambda={number(r.get('ssl_lambda')) or 0:.3g}",
        f"prune {r.get('prune_type')} / {r.get('prune_way')} {pruning_target(r) or ''}"
        f" actual ratio={number(r.get('actual_ratio')) or 0:.3f}",
        f"top1 {number(r.get('top1')) or 0:.2f}  top5 {number(r.get('top5')) or 0:.2f}"
        f" (validation)  test top1 {_opt(r.get('test_top1'))}",
        f"FLOPs {r.get('flops')}  params {r.get('params')}  size {r.get('size_mb')} MB",
        f"latency {r.get('latency_ms')} ms",
    ]
    if d["top1_drop"] is not None:
        bits.append(f"top-1 drop {d['top1_drop']:.2f}")
    if d["flops_reduction"] is not None:
        bits.append(f"FLOPs {d['flops_reduction']:.2f}x fewer")
    if d["speedup"] is not None:
        bits.append(f"speed-up {d['speedup']:.2f}x")
    if r.get("n_seeds"):
        bits.append(
            f"{r['n_seeds']} re-runs: top1 {number(r.get('top1_mean')) or 0:.2f}"
            f" ± {number(r.get('top1_std')) or 0:.2f}, test top1 {_opt(r.get('test_top1_mean'))}"
        )
    return "<br>".join(html.escape(b) for b in bits)


def _front_figure(pair: FrontPair, s: Summary) -> Any:
    import plotly.graph_objects as go

    acc, cost = pair.ssl.objectives
    base = s.baseline.values if s.baseline else {}
    trials = {role: front_rows(s.rows, role) for role in COLORS}
    u, label, scale = axis_unit(
        cost, [r.get(cost) for rs in trials.values() for r in rs] + [base.get(cost)]
    )

    def xy(rows: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[float], list[str]]:
        keep = [
            r for r in rows if number(r.get(cost)) is not None and number(r.get(acc)) is not None
        ]
        return (
            [float(r[cost]) / u.factor for r in keep],
            [float(r[acc]) for r in keep],
            [_hover(r, s) for r in keep],
        )

    fig = go.Figure()
    for role, rows in trials.items():
        if rows:
            x, y, text = xy(rows)
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="markers",
                    name=f"{ROLE_LABELS[role]} trials",
                    marker={"color": TRIAL_COLORS[role], "size": 7},
                    hovertext=text,
                    hoverinfo="text",
                )
            )
    for f in pair.fronts:
        x, y, text = xy(f.rows)
        err = [number(r.get("top1_std")) or 0.0 for r in f.rows]
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines+markers",
                line={"shape": "hv", "color": COLORS[f.role]},
                marker={"size": 10},
                name=f"{ROLE_LABELS[f.role]} front (HV {f.hypervolume:.3f})",
                hovertext=text,
                hoverinfo="text",
                error_y={"type": "data", "array": err, "visible": any(err)},
            )
        )
    if cost == "flops":  # the screens, off until clicked in the legend
        for trace in screen_traces(s, lambda r: (number(r.get("flops")) or 0.0) / u.factor):
            trace.update(visible="legendonly")
            fig.add_trace(trace)
    if s.baseline is not None and number(base.get(cost)) is not None:
        fig.add_trace(
            go.Scatter(
                x=[float(base[cost]) / u.factor],
                y=[float(base[acc])],
                mode="markers",
                name="dense baseline",
                marker={"symbol": "star", "size": 16, "color": "black"},
                hovertext=[_hover(base, s)],
                hoverinfo="text",
            )
        )
    if cost == "latency_ms" and s.latency_setup:
        label += f"; {s.latency_setup}"
    fig.update_layout(
        title=f"{acc} vs {cost}" + ("" if pair.spec.in_space else " (measured, not searched)"),
        xaxis_title=label,
        xaxis_type=scale,
        yaxis_title=f"{acc} (%, validation)",
        height=460,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
        legend={"x": 1, "xanchor": "right", "y": 0},
    )
    return fig


def _screen_figure(s: Summary) -> Any:
    """Top-1 against the FLOPs share kept: every screen, and the fine-tuned points' final top-1."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for trace in screen_traces(s, flops_share):
        fig.add_trace(trace)
    done = [r for r in front_rows(s.rows, "search") if flops_share(r) is not None]
    if done:
        fig.add_trace(
            go.Scatter(
                x=[flops_share(r) for r in done],
                y=[float(r["top1"]) for r in done],
                mode="markers",
                name="fine-tuned points (final top-1)",
                marker={"color": COLORS["search"], "size": 8},
                hovertext=[_hover(r, s) for r in done],
                hoverinfo="text",
            )
        )
    fig.update_layout(
        title="screens: top-1 right after pruning, before fine-tuning",
        xaxis_title="FLOPs kept (% of the dense model, fvcore multiply-adds)",
        yaxis_title="top1 (%, validation)",
        height=460,
    )
    return fig


def _hv_figure(s: Summary) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    for pair in s.pairs:
        for f in pair.fronts:
            pts = front_rows(s.rows, f.role)
            hist = hypervolume_history(
                pts,
                list(zip(f.objectives, f.directions)),
                (f.reference, f.scale, f.reference_source),
            )
            fig.add_trace(
                go.Scatter(
                    x=list(range(1, len(hist) + 1)),
                    y=[h for _, h in hist],
                    mode="lines+markers",
                    name=f"{pair.name} {ROLE_LABELS[f.role]}",
                    hovertext=[t for t, _ in hist],
                    line={"dash": "solid" if f.role == "search" else "dot"},
                )
            )
    fig.update_layout(
        title="hypervolume of the front after each completed trial",
        xaxis_title="completed trials (by finish time)",
        yaxis_title="hypervolume (normalised)",
        height=400,
    )
    return fig


def _curves_figure(s: Summary, history: Callable[[Mapping[str, Any]], list[dict[str, Any]]]) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    seen: dict[str, dict[str, Any]] = {}
    for f in s.fronts:
        for r in f.rows:
            seen.setdefault(str(r.get("trial_id")), r)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("validation top-1 (%)", "training loss"))
    drawn = 0
    for tid, r in seen.items():
        h = history(r)
        if not h:
            continue
        drawn += 1
        x = [e["global_epoch"] for e in h]
        name = f"{tid} ({ROLE_LABELS.get(role_of(r), '?')}, lambda={number(r.get('ssl_lambda')) or 0:.2g})"
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[e.get("val_top1") for e in h],
                name=name,
                legendgroup=tid,
                mode="lines",
                hovertext=[f"{e['phase']} epoch {e['epoch']}" for e in h],
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[e.get("loss") for e in h],
                name=name,
                legendgroup=tid,
                showlegend=False,
                mode="lines",
            ),
            row=1,
            col=2,
        )
    fig.update_xaxes(title_text="epoch (SSL, then fine-tuning)")
    fig.update_layout(height=420, title="training curves of the Pareto points")
    return fig if drawn else None


def _html_table(
    columns: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    classes: Sequence[str] | None = None,
    sortable: bool = False,
) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for i, r in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        cells = "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in columns)
        body.append(f"<tr{cls}>{cells}</tr>")
    attr = ' class="sortable"' if sortable else ""
    return (
        f'<div class="scroll"><table{attr}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.6g}"
    return str(v)


def _front_html(f: Front, s: Summary, latency: bool) -> str:
    confirmed = any(r.get("n_seeds") for r in f.rows)
    units = TableUnits.of(f.rows, s.baseline, f.objectives)
    cols = front_columns(units, latency, confirmed)
    rows = [front_cells(s.baseline.values, s.baseline, units, True)] if s.baseline else []
    classes = ["baseline"] if s.baseline else []
    for r in f.rows:
        rows.append(front_cells(r, s.baseline, units))
        classes.append("dominated" if r.get("on_mean_front") is False else "")
    head = (
        f"<h3>{html.escape(ROLE_LABELS[f.role])} front: {len(f.rows)} of {f.considered} "
        f"points, hypervolume {f.hypervolume:.4f}{html.escape(identical_text(f))}</h3>"
    )
    return head + _html_table(cols, rows, classes)


def _figure_html(fig: Any) -> str:
    return str(
        fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            config={"displaylogo": False, "responsive": True},
        )
    )


def render(s: Summary, history: Callable[[Mapping[str, Any]], list[dict[str, Any]]]) -> str:
    """The page; ``history(row)`` gives a trial's epochs (for the training curves)."""
    from plotly.offline import get_plotlyjs

    parts = [f"<h1>sslsearch experiment: {html.escape(s.title)}</h1>"]
    parts.append(
        f'<p class="note">{html.escape(headline(s.rows, s.screens))}. '
        f"Objectives: {html.escape(', '.join(f'{o} ({d})' for o, d in s.objectives))}. "
        f"FLOPs are multiply-adds counted by fvcore. {html.escape(SPLITS)}</p>"
    )
    parts.append(f"<p>{html.escape(baseline_text(s.baseline, s.latency_setup))}</p>")
    agreement = agreement_text(*s.agreement)
    if agreement:
        cls = "warn" if agreement_warning(s.agreement[0]) else "note"
        parts.append(f'<p class="{cls}" id="screen-agreement">{html.escape(agreement)}</p>')
    if distill_text(s.rows):
        parts.append(f'<p class="note">{html.escape(distill_text(s.rows))}</p>')
    for pair in s.pairs:
        latency = "latency_ms" in pair.ssl.objectives or any(
            number(r.get("latency_ms")) is not None for f in pair.fronts for r in f.rows
        )
        parts.append(f"<h2>{html.escape(' vs '.join(pair.ssl.objectives))}</h2>")
        if pair.name != ALL_OBJECTIVES:
            parts.append(_figure_html(_front_figure(pair, s)))
        if pair.no_ssl is None:
            parts.append(
                '<p class="note">No lambda = 0 points in this experiment: no no-SSL front.</p>'
            )
        parts += [_front_html(f, s, latency) for f in pair.fronts]
    if s.screens:
        parts += [
            "<h2>Screens (before fine-tuning)</h2>",
            '<p class="note">Each SSL model pruned at every screened value, BN statistics '
            "re-estimated, validation top-1 measured without fine-tuning: low fidelity, never a "
            "front point. Large markers: the values that were fine-tuned (their final top-1 is "
            "the filled marker above). The same curves are in the FLOPs front's legend, off by "
            "default.</p>",
            _figure_html(_screen_figure(s)),
        ]
    parts += ["<h2>Hypervolume over trials</h2>", _figure_html(_hv_figure(s))]
    curves = _curves_figure(s, history)
    parts.append("<h2>Training curves of the Pareto points</h2>")
    parts.append(
        _figure_html(curves)
        if curves is not None
        else '<p class="note">No per-epoch history found in the trial directories.</p>'
    )
    named = [*TRIAL_COLUMNS, *(m for m, _ in s.objectives if m not in TRIAL_COLUMNS)]
    cols = [c for c in named if any(r.get(c) is not None for r in s.rows) or c == "role"]
    trial_rows = [{**r, "role": role_of(r)} for r in s.rows]
    parts += [
        f"<h2>All trials ({len(s.rows)})</h2>",
        '<p class="note">Click a column header to sort.</p>',
        _html_table(cols, trial_rows, sortable=True),
    ]
    data = json.dumps(embedded_data(s), default=str).replace("</", "<\\/")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>sslsearch: {html.escape(s.title)}</title><style>{_CSS}</style>"
        f"<script>{get_plotlyjs()}</script></head><body>\n"
        + "\n".join(parts)
        + f'\n<script type="application/json" id="{DATA_ID}">{data}</script>'
        + f"\n<script>{_SORT_JS}</script>\n</body></html>\n"
    )

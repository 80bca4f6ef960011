"""report.html's screens: each SSL model's pruning curve before fine-tuning, as plotly traces."""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sslsearch.report._rows import number
from sslsearch.report._screen_agreement import screen_curves
from sslsearch.report._summary import Summary

SCREEN_GROUP = "screen (before fine-tuning)"


def flops_share(r: Mapping[str, Any]) -> float | None:
    flops, before = number(r.get("flops")), number(r.get("flops_before"))
    return 100 * flops / before if flops is not None and before else None


def _screen_name(c: Sequence[Mapping[str, Any]]) -> str:
    r = c[0]
    name = f"{r.get('ssl_type')} lambda={number(r.get('ssl_lambda')) or 0:.3g} ({r.get('job_id')}"
    if r.get("rung") is not None:
        name += f", rung {r.get('rung')}"
    if r.get("status") == "stopped":
        name += ", stopped"
    return name + ")"


def _screen_hover(r: Mapping[str, Any]) -> str:
    share = flops_share(r)
    bits = [
        f"screen (before fine-tuning) of SSL model {r.get('ssl_model_id')}",
        f"{r.get('key')} = {number(r.get('value')) or 0:.4g}"
        + (f", FLOPs {share:.1f}% of dense" if share is not None else ""),
        f"top1 {number(r.get('top1')) or 0:.2f} (pruned + BN re-estimated, no fine-tune)",
        f"after {r.get('epochs_trained')} SSL epochs",
    ]
    if r.get("chosen"):
        bits.append(f"fine-tuned as point {r.get('point_id')}")
    return "<br>".join(html.escape(b) for b in bits)


def screen_traces(s: Summary, x: Callable[[Mapping[str, Any]], float | None]) -> list[Any]:
    """One thin dashed curve per SSL model's screen (and rung), in one legend group; the
    fine-tuned values marked large."""
    import plotly.graph_objects as go

    traces = []
    for i, c in enumerate(screen_curves(s.screens)):
        c = [r for r in c if x(r) is not None and number(r.get("top1")) is not None]
        if not c:
            continue
        traces.append(
            go.Scatter(
                x=[x(r) for r in c],
                y=[float(r["top1"]) for r in c],
                mode="lines+markers",
                name=_screen_name(c),
                legendgroup=SCREEN_GROUP,
                legendgrouptitle={"text": SCREEN_GROUP} if i == 0 else None,
                line={"width": 1, "dash": "dot" if c[0].get("status") == "stopped" else "dash"},
                marker={
                    "size": [11 if r.get("chosen") else 4 for r in c],
                    "symbol": ["diamond-open" if r.get("chosen") else "circle" for r in c],
                },
                hovertext=[_screen_hover(r) for r in c],
                hoverinfo="text",
            )
        )
    return traces

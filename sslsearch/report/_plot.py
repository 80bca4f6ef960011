"""pareto.png: one panel per two-objective front, SSL and no-SSL side by side, the baseline marked."""

from __future__ import annotations

import io
from typing import Any

from sslsearch.config import known_objectives
from sslsearch.report._fronts import ALL_OBJECTIVES, Front
from sslsearch.report._rows import ROLE_LABELS, front_rows, number
from sslsearch.report._summary import FrontPair, Summary
from sslsearch.report._table import Unit, metric_unit

COLORS = {"search": "C3", "reference": "C0"}
TRIAL_COLORS = {"search": "0.55", "reference": "#9ecae1"}


def axis_unit(metric: str, values: list[Any]) -> tuple[Unit, str, str]:
    """The unit a cost axis is drawn in, its label and its scale (linear | log)."""
    u, label = metric_unit(metric, values)
    d = known_objectives().get(metric)
    return u, label, d.axis if d is not None else "linear"


def _xy(
    rows: list[dict[str, Any]], acc: str, cost: str, u: Unit
) -> tuple[list[float], list[float]]:
    pts = [(number(r.get(cost)), number(r.get(acc))) for r in rows]
    ok = [(c / u.factor, a) for c, a in pts if c is not None and a is not None]
    return [c for c, _ in ok], [a for _, a in ok]


def _panel(ax: Any, pair: FrontPair, s: Summary) -> None:
    acc, cost = pair.ssl.objectives
    base = s.baseline.values if s.baseline else {}
    trials = {role: front_rows(s.rows, role) for role in COLORS}
    u, label, scale = axis_unit(
        cost, [r.get(cost) for rs in trials.values() for r in rs] + [base.get(cost)]
    )
    for role, rows in trials.items():
        if rows:
            xs, ys = _xy(rows, acc, cost, u)
            ax.scatter(
                xs,
                ys,
                s=16,
                color=TRIAL_COLORS[role],
                zorder=2,
                label=f"{ROLE_LABELS[role]} trials ({len(xs)})",
            )
    for f in pair.fronts:
        _front(ax, f, acc, cost, u)
    if s.baseline is not None and number(base.get(cost)) is not None:
        bx, by = float(base[cost]) / u.factor, float(base[acc])
        ax.scatter([bx], [by], marker="*", s=160, color="k", zorder=5, label="dense baseline")
        ax.axhline(by, color="0.3", ls=":", lw=1)
        ax.axvline(bx, color="0.3", ls=":", lw=1)
    elif number(pair.ssl.reference.get(cost)) is not None:
        ax.axvline(
            pair.ssl.reference[cost] / u.factor,
            color="0.3",
            ls="--",
            lw=1,
            label="unpruned architecture",
        )
    if cost == "latency_ms" and s.latency_setup:
        label += f"; {s.latency_setup}"
    ax.set_xlabel(label)
    ax.set_xscale(scale)
    ax.set_ylabel(f"{acc} accuracy (%, validation)")
    hv = ", ".join(f"{ROLE_LABELS[f.role].split(' ')[0]} {f.hypervolume:.3f}" for f in pair.fronts)
    ax.set_title(
        f"{acc} vs {cost}{'' if pair.spec.in_space else ' (measured)'}: HV {hv}", fontsize=10
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)


def _front(ax: Any, f: Front, acc: str, cost: str, u: Unit) -> None:
    xs, ys = _xy(f.rows, acc, cost, u)
    if not xs:
        return
    color = COLORS[f.role]
    label = f"{ROLE_LABELS[f.role]} front ({len(xs)})"
    ax.step(xs, ys, where="post", color=color, lw=1.8, label=label, zorder=3)
    ax.scatter(xs, ys, s=30, color=color, zorder=4)
    for r, x in zip(f.rows, xs):
        if r.get("n_seeds"):
            sd = number(r.get("top1_std")) or 0.0
            face = color if r.get("on_mean_front") else "white"
            ax.errorbar(
                [x],
                [float(r["top1_mean"])],
                yerr=[sd],
                fmt="D",
                ms=5,
                color=color,
                mfc=face,
                capsize=3,
                zorder=4,
            )


def plot(s: Summary) -> bytes:
    """The PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [p for p in s.pairs if p.name != ALL_OBJECTIVES]
    cols = min(len(pairs), 3) or 1
    rows = (len(pairs) + cols - 1) // cols or 1
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.6 * rows), squeeze=False)
    for ax, pair in zip(axes.flat, pairs):
        _panel(ax, pair, s)
    for ax in list(axes.flat)[len(pairs) :]:
        ax.set_visible(False)
    fig.suptitle(s.title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()

"""Screens (each SSL model's pruning curve before fine-tuning) and how well they predict.

A screen prunes an SSL model at many values, re-estimates BN statistics and measures validation
top-1 without fine-tuning: low fidelity, never a front point. Whether it ranks points as
fine-tuning does is measured in every search: Kendall's tau-b between the screened top-1 of each
fine-tuned point (``screen_top1``) and its final top-1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from sslsearch.report._rows import is_confirmation, number, role_of, status_counts

AGREEMENT_FLOOR = 0.5  # below: the screen is not trusted to choose the points


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b of two paired samples (ties in either counted as in scipy's default):
    ``(concordant - discordant) / sqrt((n0 - ties_x) * (n0 - ties_y))`` over the n0 = n(n-1)/2
    pairs. None for fewer than 3 pairs or when either sample is constant (no ranking)."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"kendall_tau: paired samples needed, got {a.shape} and {b.shape}")
    n = len(a)
    if n < 3:
        return None
    i, j = np.triu_indices(n, k=1)  # every pair once: O(n^2), fine for a search's points
    sx, sy = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    n0 = n * (n - 1) / 2
    ties_x, ties_y = float((sx == 0).sum()), float((sy == 0).sum())
    denom = np.sqrt((n0 - ties_x) * (n0 - ties_y))
    if denom == 0:
        return None
    return float((sx * sy).sum() / denom)


def screened_points(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The ok search points with a screened and a final top-1 (not re-evaluations)."""
    return [
        r
        for r in rows
        if r.get("status") == "ok"
        and role_of(r) == "search"
        and not is_confirmation(r)
        and number(r.get("screen_top1")) is not None
        and number(r.get("top1")) is not None
    ]


def screen_agreement(rows: Iterable[Mapping[str, Any]]) -> tuple[float | None, int]:
    """(Kendall tau-b between screened and final top-1, how many points it is over) for the
    ok search points of ``rows`` (trials.parquet) that have a ``screen_top1``; tau is None for
    fewer than 3 such points (or no spread).

    Example:
        >>> screen_agreement([{"status": "ok", "screen_top1": s, "top1": t}
        ...                   for s, t in [(40, 90), (50, 92), (60, 91)]])
        (0.3333333333333333, 3)
    """
    pts = screened_points(rows)
    tau = kendall_tau([float(r["screen_top1"]) for r in pts], [float(r["top1"]) for r in pts])
    return tau, len(pts)


def agreement_text(tau: float | None, points: int) -> str:
    """The report's line on the screen's rank agreement ('' when the search did not screen)."""
    if points == 0:
        return ""
    if tau is None:
        return (
            f"Screen rank agreement: not measured ({points} fine-tuned point(s) with a screen; "
            "Kendall tau needs 3 with distinct values)."
        )
    text = (
        f"Screen rank agreement (Kendall tau-b between screened and final top-1 over {points} "
        f"fine-tuned points): {tau:.2f}."
    )
    warning = agreement_warning(tau)
    return f"{text} {warning}" if warning else text


def agreement_warning(tau: float | None) -> str:
    """One line when the screen ranks points unlike fine-tuning (tau below AGREEMENT_FLOOR)."""
    if tau is None or tau >= AGREEMENT_FLOOR:
        return ""
    return (
        f"The screen ranks points unlike fine-tuning (Kendall tau {tau:.2f} < "
        f"{AGREEMENT_FLOOR}): fine-tune more points per SSL model (economy.points_per_ssl)."
    )


def screen_curves(screens: Iterable[Mapping[str, Any]]) -> list[list[dict[str, Any]]]:
    """The screened values grouped into one curve per SSL model and rung (in the order they
    came), each sorted by FLOPs."""
    curves: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for r in screens:
        curves.setdefault((str(r.get("job_id")), r.get("rung")), []).append(dict(r))
    return [
        sorted(c, key=lambda r: (number(r.get("flops")) or 0.0, number(r.get("value")) or 0.0))
        for c in curves.values()
    ]


def headline(rows: Sequence[Mapping[str, Any]], screens: Sequence[Mapping[str, Any]] = ()) -> str:
    """What an experiment holds, each kind counted apart, e.g. "16 search points (16 ok) from
    4 SSL models; 64 screened; 9 references (lambda = 0); dense baseline"."""
    search = [r for r in rows if role_of(r) == "search" and not is_confirmation(r)]
    refs = [r for r in rows if role_of(r) == "reference" and not is_confirmation(r)]
    redo = [r for r in rows if is_confirmation(r)]
    base = [r for r in rows if role_of(r) == "baseline"]
    excluded = "" if _all_ok(search) else "; only ok points are on the fronts, the rest excluded"
    parts = [f"{_n(len(search), 'search point')} ({_statuses(search)}{excluded})"]
    models = {r.get("ssl_model_id") for r in search if r.get("ssl_model_id")}
    if models:
        parts[0] += f" from {_n(len(models), 'SSL model')}"
    if screens:
        curves = screen_curves(screens)
        stopped = {str(c[0].get("job_id")) for c in curves if c[0].get("status") == "stopped"}
        text = f"{len(screens)} screened"
        if stopped:
            text += f" ({_n(len(stopped), 'SSL model')} stopped by multi-fidelity)"
        parts.append(text)
    if refs:
        parts.append(f"{_n(len(refs), 'reference')} (lambda = 0{_unless_ok(refs)})")
    if redo:
        parts.append(f"{_n(len(redo), 're-evaluation')} (--confirm-front{_unless_ok(redo)})")
    if base:
        parts.append("dense baseline" + ("" if _all_ok(base) else f" ({_statuses(base)})"))
    else:
        parts.append("no dense baseline")
    cpu = trials_cpu_seconds(rows)
    if cpu is not None:
        parts.append(f"the trials used {_cpu_text(cpu)}")
    return "; ".join(parts)


def trials_cpu_seconds(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """The CPU seconds the trials used: each job's last ``cpu_seconds`` (its CPU time when its
    last point ended), summed over jobs; None when no row has one."""
    last: dict[str, float] = {}
    for r in rows:
        cpu = number(r.get("cpu_seconds"))
        if cpu is not None:
            job = str(r.get("trial_dir") or r.get("trial_id"))
            last[job] = max(last.get(job, 0.0), cpu)
    return sum(last.values()) if last else None


def _cpu_text(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} CPU-hours"
    if seconds >= 60:
        return f"{seconds / 60:.1f} CPU-minutes"
    return f"{seconds:.0f} CPU-seconds"


def _n(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _statuses(rows: Sequence[Mapping[str, Any]]) -> str:
    counts = status_counts(rows)
    ok = counts.pop("ok", 0)
    return ", ".join([f"{ok} ok", *(f"{v} {k}" for k, v in sorted(counts.items()))])


def _all_ok(rows: Sequence[Mapping[str, Any]]) -> bool:
    return all(r.get("status") == "ok" for r in rows)


def _unless_ok(rows: Sequence[Mapping[str, Any]]) -> str:
    return "" if _all_ok(rows) else f"; {_statuses(rows)}"

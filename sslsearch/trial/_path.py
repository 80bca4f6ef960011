"""A lambda path: one SSL training whose lambda steps up, each step's end an SSL model.

A job of the search's ``economy.lambda_path`` has points at several lambdas (the searcher
gives each step's points their own ``ssl_lambda``, lowest first). ``run_path`` trains the
first step as any SSL model (the recipe's epochs), then each next one ``path_epochs`` more,
starting from the step before's SSL model (its stored file is the next step's starting
weights: its content is part of the next SSL model's id) with the learning-rate schedule
restarted. Each step is an ordinary ``run_points`` (screened and chosen like any SSL model),
its state kept in its own directory (step 0: ``state_dir``; step s: ``<state_dir>/step<s>``),
so a resumed job re-reports the steps it finished and goes on where it was. The job's CPU
seconds and start carry from step to step.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from sslsearch import storage
from sslsearch.config import TrialConfig
from sslsearch.trial._cache import SSLCache
from sslsearch.trial._pipeline import TrialResult, run_points, stored_point, write_point
from sslsearch.trial._run import STEP_DIR, Report

log = logging.getLogger(__name__)


def step_dir(state_dir: str, step: int) -> str:
    """Where step ``step`` of a lambda path keeps its state and screen (step 0: the job's)."""
    return state_dir if step == 0 else storage.join(state_dir, STEP_DIR.format(step))


def path_steps(cfgs: Sequence[TrialConfig]) -> list[list[int]]:
    """The points' indices grouped by SSL model, in the order their steps come (first seen)."""
    steps: dict[str, list[int]] = {}
    for i, c in enumerate(cfgs):
        steps.setdefault(c.ssl_key(), []).append(i)
    return list(steps.values())


def run_path(
    cfgs: Sequence[TrialConfig],
    report: Report | None = None,
    state_dir: str | None = None,
    tags: dict[str, Any] | None = None,
    point_ids: Sequence[str] | None = None,
    points_dir: str | None = None,
    *,
    path_epochs: int,
    runner: Callable[..., list[TrialResult]] = run_points,
    **kwargs: Any,
) -> list[TrialResult]:
    """Run the steps of a lambda path in turn (``cfgs``: every step's points, each step's at
    its own lambda, lowest first; the first step's settings as they are, later steps' starting
    weights and SSL epochs set here: ``path_epochs``). The other arguments are
    ``run_points``'s, and ``kwargs`` (``stop``, ``screen``) go to every step's ``runner``
    (``run_points``). Returns one TrialResult per point of ``cfgs``, in order.

    A step that gives no SSL model (SSL training failed) fails the steps after it: they have
    nothing to start from.

    Example:
        >>> cfg = TrialConfig(ssl_lambda=0.1, cache_dir="ssl_models")
        >>> run_path([cfg, cfg.with_(ssl_lambda=0.14)], path_epochs=3)  # 2 SSL models, 1 run
    """
    points = list(cfgs)
    if not points:
        raise ValueError("run_path needs at least one point")
    steps = path_steps(points)
    if len(steps) > 1 and not points[0].cache_dir:
        raise ValueError(
            "a lambda path starts each step from the last one's stored SSL model: "
            "give the points a cache_dir"
        )
    ids = list(point_ids) if point_ids is not None else [None] * len(points)
    out: list[TrialResult | None] = [None] * len(points)
    start_from: str | None = None  # the previous step's SSL model file
    cpu, started_at = 0.0, time.time()
    for s, idx in enumerate(steps):
        step_cfgs = [points[i] for i in idx]
        if s > 0:
            if start_from is None:
                why = (
                    f"step {s + 1} of the lambda path has no SSL model to start from: "
                    f"step {s}'s SSL training failed"
                )
                step_tags = {**(tags or {}), "path_step": s}
                for i in idx:
                    out[i] = _failed(points[i], ids[i], i, why, report, step_tags, points_dir)
                continue
            step_cfgs = [
                c.with_(
                    warm_start=start_from,
                    recipe=replace(c.recipe, epochs=path_epochs, warmup_epochs=0),
                )
                for c in step_cfgs
            ]
        log.info(
            "lambda path step %d/%d: lambda %s, %d point(s)%s",
            s + 1,
            len(steps),
            step_cfgs[0].ssl_lambda,
            len(idx),
            f", {path_epochs} SSL epochs from step {s}'s model" if s else "",
        )
        results = runner(
            step_cfgs,
            report,
            state_dir=step_dir(state_dir, s) if state_dir else None,
            tags={**(tags or {}), "path_step": s},  # on every report: the dashboard's curves
            point_ids=[ids[i] for i in idx] if point_ids is not None else None,
            points_dir=points_dir,
            cpu_before=cpu,
            started_at=started_at,
            **kwargs,
        )
        for i, r in zip(idx, results):
            out[i] = r
        finals = [r.metrics for r in results]
        cpu = max([cpu, *(float(f.get("cpu_seconds") or 0.0) for f in finals)])
        started_at = min(
            [started_at, *(float(f["started_at"]) for f in finals if f.get("started_at"))]
        )
        model_id = next((f["ssl_model_id"] for f in finals if f.get("ssl_model_id")), None)
        cache = points[0].cache_dir
        start_from = SSLCache(cache).path(model_id) if model_id and cache else None
    return [r for r in out if r is not None]


def _failed(
    cfg: TrialConfig,
    pid: str | None,
    index: int,
    why: str,
    report: Report | None,
    tags: dict[str, Any] | None,
    points_dir: str | None,
) -> TrialResult:
    """A point of a step that cannot start: written and reported as failed (a result already
    written, by an earlier run of the job, is kept)."""
    kept = stored_point(points_dir, pid)
    if kept is not None:
        return TrialResult(str(kept["status"]), kept, kept.get("error"))
    final = {
        **(tags or {}),
        "final": True,
        "status": "failed",
        "error": why,
        "point": index,
        "ssl_lambda": cfg.ssl_lambda,
        **cfg.amount(),
        "config": json.dumps(cfg.to_dict(), sort_keys=True),
    }
    if pid is not None:
        final["trial_id"] = pid
        if points_dir:
            write_point(points_dir, pid, final)
    log.warning("point %s failed: %s", pid or index, why)
    if report is not None:
        report(final)
    return TrialResult("failed", final, why)

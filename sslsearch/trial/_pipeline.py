"""A trial: one SSL model (stage 1) and the points pruned and fine-tuned from it (stage 2).

``run_points`` never imports ray. It reports every epoch and every finished point through a
callback ``report(metrics)`` (a point's final metrics have ``final: True`` and its ``point``
index). What it needs to resume it writes itself, whole, to ``state_dir`` (``StateStore``:
after every epoch and point), and each finished point goes to ``points_dir`` at once
(``<points_dir>/<point id>/result.json`` and ``model.pt``): a crash loses at most the epoch in
progress, and a restart with the same ``state_dir`` continues. The search package adapts the
callback to ``ray.tune.report``; alone, reports go to the log. ``run_trial`` is one point.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sslsearch import storage
from sslsearch.config import TrialConfig
from sslsearch.errors import NotPrunableError
from sslsearch.models import save_model
from sslsearch.storage import write_text_atomic
from sslsearch.trial._point import (
    base_final,
    finetune_point,
    measure_point,
    prune_point,
    read_teachers,
)
from sslsearch.trial._run import (
    MODEL_FILE,
    RESULT_FILE,
    STATE_VERSION,
    STEP_DIR_RE,
    PointState,
    PointStopped,
    Report,
    Run,
    SSLStopped,
    StopCheck,
)
from sslsearch.trial._rungs import Rungs, rung_hook
from sslsearch.trial._screen import SCREEN_FILE, SCREEN_KEYS, ScreenSpec, choose, screen_model
from sslsearch.trial._screen import screen_record as _screen_record
from sslsearch.trial._ssl import SSLModel, load_ssl_model, train_ssl_model
from sslsearch.trial._state import StateStore
from sslsearch.trial._train import NonFiniteLoss
from sslsearch.trial._validate import check_trial_start, validate_trial

log = logging.getLogger(__name__)


@dataclass
class TrialResult:
    status: str  # "ok", "failed" or "stopped"
    metrics: dict[str, Any]
    error: str | None = None
    model_path: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def _log_report(metrics: dict[str, Any]) -> None:
    """Progress of a trial run alone: one line per epoch."""
    if metrics.get("final"):
        return
    ssl = metrics["phase"] == "ssl"
    figures = (
        f"  exactly zero {100 * metrics['exact_zero_share']:.1f}%, removable FLOPs "
        f"{100 * metrics['removable_flops_share']:.1f}%"
        + (f", {metrics['ssl_at_floor']} layer(s) at the floor" if metrics["ssl_at_floor"] else "")
        if ssl
        else ""
    )
    log.info(
        "%-8s epoch %d/%d: loss %.4f%s  val top1 %.2f top5 %.2f%s",
        metrics["phase"],
        metrics["epoch"],
        metrics["epochs"],
        metrics["loss"],
        f" + penalty {metrics['penalty']:.4g}" if ssl else "",
        metrics["val_top1"],
        metrics["val_top5"],
        figures,
    )


def point_id(trial_id: str, point: int) -> str:
    """The id of a point: its trial's id and its index (one row, one Optuna trial each)."""
    return f"{trial_id}-{point}"


def _same_ssl(cfgs: Sequence[TrialConfig]) -> None:
    keys = {c.ssl_key() for c in cfgs}
    if len(keys) != 1:
        raise ValueError("the points of one trial must share their SSL settings")


def _point_files(points_dir: str, pid: str) -> tuple[str, str]:
    d = storage.join(points_dir, pid)
    return storage.join(d, RESULT_FILE), storage.join(d, MODEL_FILE)


def stored_point(points_dir: str | None, pid: str | None) -> dict[str, Any] | None:
    """The final result of point ``pid`` written under ``points_dir``, if it finished."""
    if not points_dir or not pid:
        return None
    path = _point_files(points_dir, pid)[0]
    try:
        return dict(json.loads(storage.read_bytes(path).decode()))
    except (OSError, ValueError):  # not there (FileNotFoundError is an OSError) or not whole
        return None


def write_point(
    points_dir: str, pid: str, final: dict[str, Any], model_payload: Any | None = None
) -> None:
    """Persist a finished point: its model first, then its result (what makes it finished)."""
    result_path, model_path = _point_files(points_dir, pid)
    if model_payload is not None:
        buf = io.BytesIO()
        torch.save(model_payload, buf)
        storage.write_bytes_atomic(model_path, buf.getvalue())
    storage.write_text_atomic(result_path, json.dumps(final, indent=1))


def run_points(
    cfgs: Sequence[TrialConfig | dict[str, Any]],
    report: Report | None = None,
    state_dir: str | None = None,
    tags: dict[str, Any] | None = None,
    point_ids: Sequence[str] | None = None,
    points_dir: str | None = None,
    stop: StopCheck | None = None,
    screen: ScreenSpec | None = None,
    rungs: Rungs | None = None,
    cpu_before: float = 0.0,
    started_at: float | None = None,
) -> list[TrialResult]:
    """Train (or reuse) one SSL model, then prune, fine-tune and measure each point from it.

    Args:
        cfgs: one TrialConfig per point; they must share everything that determines the SSL
            model (``TrialConfig.ssl_key``) and differ only in the pruning choice.
        report: ``report(metrics)`` after every epoch and every point.
        state_dir: where the states to resume from are kept (a directory or an object-store
            URI; ``StateStore``). A state there, written by an earlier run of the same points,
            is resumed from; None: nothing is kept (a crash starts over).
        tags: added to every report and result (e.g. the search's trial id).
        point_ids: one id per point, added to its final metrics as ``trial_id``.
        points_dir: where each finished point's result.json and model.pt are written at once
            (a directory or an object-store URI); a point already there is not run again.
        stop: early stopping, asked after each fine-tuning epoch (never during SSL training)
            with the point's optimistic metrics; a reason ends the point as ``stopped``.
        screen: screen the SSL model at ``screen.values`` first and give the points the
            values that add the most hypervolume (``_screen``); each point's amount is then
            its chosen value, whatever ``cfgs`` asked. The screen goes to
            ``<state_dir>/screen.json``.
        rungs: multi-fidelity (needs ``screen``): at each rung's SSL epoch the SSL model is
            screened as it is and ``rungs.promote`` says whether it goes on; a stopped one's
            points end ``stopped`` (``stopped_by: multi_fidelity``), never fine-tuned.
        cpu_before, started_at: the CPU seconds the job had used and when it started, when
            these points are one part of it (a lambda path's step); a resumed state has its own.

    Returns:
        One TrialResult per point, in order.

    Example:
        >>> cfg = TrialConfig(ratio=0.3)
        >>> results = run_points([cfg, cfg.with_(ratio=0.6)])  # one SSL training, two points
    """
    points = _checked_points(cfgs, screen, rungs)
    ids = list(point_ids) if point_ids is not None else [None] * len(points)
    started = time.perf_counter()
    run = _new_run(points, report, tags, state_dir)
    run.cpu_before = cpu_before
    run.point_state.started_at = started_at or run.point_state.started_at
    resume = _resume(run, state_dir)
    if resume is not None and resume["phase"] == "done":
        return _rereport(run)

    started_at = run.point_state.started_at or time.time()
    try:
        ssl = _ssl_model(run, points[0], resume, screen, rungs, state_dir)
    except (SSLStopped, NonFiniteLoss) as e:
        end = {**_no_ssl_model_end(e), "started_at": started_at}
        return _end_without_ssl_model(run, points, ids, points_dir, end)
    if resume is not None and resume["phase"] == "ssl":
        resume = None  # spent on SSL training

    if screen is not None:
        points = _screened(run, points, ids, ssl, screen, state_dir)

    while run.point < len(points):
        i = run.point
        stored = stored_point(points_dir, ids[i])
        if stored is not None:  # finished before a crash, after its trial's last checkpoint
            log.info("point %s already finished: keeping its result", ids[i])
            _point_done(run, points, ids, points_dir, stored, None, write=False)
        else:
            final, model = _run_point(run, points[i], ssl, resume, stop)
            final["trial_seconds"] = time.perf_counter() - started
            final["started_at"] = started_at
            final.update(_screen_columns(run))
            _point_done(run, points, ids, points_dir, final, model)
        resume = None  # spent on the first point not yet done
    return _results(run)


def _checked_points(
    cfgs: Sequence[TrialConfig | dict[str, Any]], screen: ScreenSpec | None, rungs: Rungs | None
) -> list[TrialConfig]:
    """The points as TrialConfigs, each valid, all sharing one SSL model."""
    points = [c if isinstance(c, TrialConfig) else TrialConfig.from_dict(c) for c in cfgs]
    if not points:
        raise ValueError("run_points needs at least one point")
    if rungs is not None and screen is None:
        raise ValueError("multi-fidelity rungs judge screens: give run_points a screen")
    for c in points:
        validate_trial(c)
    _same_ssl(points)
    return points


def _new_run(
    points: Sequence[TrialConfig],
    report: Report | None,
    tags: dict[str, Any] | None,
    state_dir: str | None,
) -> Run:
    """The trial's run, its states kept in ``state_dir``: its data loaded and checked against
    the first point, the teachers its points distil from read."""
    store = StateStore(state_dir, version=STATE_VERSION) if state_dir else None
    run = Run(points[0], report or _log_report, tags or {}, store)
    check_trial_start(points[0], run.data)
    read_teachers(run, points)
    run.point_state.started_at = time.time()
    return run


def _resume(run: Run, state_dir: str | None) -> dict[str, Any] | None:
    """The newest whole state an earlier run of this trial kept, restored into ``run``."""
    resume = run.store.load() if run.store is not None else None
    if resume is not None:
        log.info(
            "resuming from %s (%s phase, point %s)", state_dir, resume["phase"], resume.get("point")
        )
        run.restore(resume)
    return resume


def _ssl_model(
    run: Run,
    first: TrialConfig,
    resume: dict[str, Any] | None,
    screen: ScreenSpec | None,
    rungs: Rungs | None,
    state_dir: str | None,
) -> SSLModel:
    """Stage 1: train the SSL model (or go on from ``resume``; with ``rungs``, screened at each
    rung), or load it when the trial was past SSL training."""
    if resume is None or resume["phase"] == "ssl":
        hook = None
        if rungs is not None and screen is not None:
            hook = rung_hook(run, first, screen, rungs, state_dir)
        return train_ssl_model(run, resume, hook)
    return load_ssl_model(run)


def _no_ssl_model_end(e: SSLStopped | NonFiniteLoss) -> dict[str, Any]:
    """How the points end when stage 1 gives no SSL model: stopped by the multi-fidelity rule,
    or failed (a loss that is not finite)."""
    if isinstance(e, SSLStopped):
        log.info("%s", e)
        return {"status": "stopped", "error": str(e), "stopped_by": "multi_fidelity"}
    reason = f"SSL training failed: {e}"
    log.warning("%s", reason)
    return {"status": "failed", "error": reason}


def _run_point(
    run: Run,
    cfg: TrialConfig,
    ssl: SSLModel,
    resume: dict[str, Any] | None,
    stop: StopCheck | None,
) -> tuple[dict[str, Any], nn.Module | None]:
    """Stage 2 for point ``run.point``: prune, fine-tune (or go on fine-tuning from ``resume``)
    and measure. A point that fails or is stopped early ends with its reason and no model."""
    i = run.point
    try:
        if resume is not None and resume["phase"] == "finetune":
            model = finetune_point(run, cfg, ssl, None, resume, stop)
        else:
            model = prune_point(run, cfg, ssl)
            model = finetune_point(run, cfg, ssl, model, None, stop)
        return measure_point(run, cfg, ssl, model), model
    except (NonFiniteLoss, NotPrunableError) as e:  # this point fails, not its job
        log.warning("point %d failed: %s", i, e)
        return {**base_final(run, cfg, ssl), "status": "failed", "error": str(e)}, None
    except PointStopped as e:
        log.info("point %d stopped early: %s", i, e)
        final = {**base_final(run, cfg, ssl), "status": "stopped", "error": str(e)}
        final["stopped_by"] = "early_stopping"
        return final, None


def _end_without_ssl_model(
    run: Run,
    points: Sequence[TrialConfig],
    ids: Sequence[str | None],
    points_dir: str | None,
    end: dict[str, Any],
) -> list[TrialResult]:
    """Every point not yet done ends with ``end`` (its status and reason): there is no SSL
    model to prune (SSL training failed, or the multi-fidelity rule stopped it)."""
    for i in range(run.point, len(points)):
        run.point = i
        run.point_state = PointState()
        _point_done(run, points, ids, points_dir, {**base_final(run, points[i], None), **end}, None)
    return _results(run)


def _screened(
    run: Run,
    points: list[TrialConfig],
    ids: Sequence[str | None],
    ssl: SSLModel,
    spec: ScreenSpec,
    state_dir: str | None,
) -> list[TrialConfig]:
    """The points with their amounts chosen by the screen (screened now, or kept in the
    state of an earlier run of this trial)."""
    if run.screen is None:
        t0 = time.perf_counter()
        asked = points[0].amount().get(spec.key)
        rows = screen_model(run, points[0], ssl, spec.with_asked(points[0]))
        own = _own_dir(state_dir)
        picks = choose(rows, len(points), spec.objectives, spec.other_screens(own))
        # the sampler's own value, when chosen, stays point 0's; the others by value
        picks.sort(key=lambda j: (rows[j]["value"] != asked, rows[j]["value"]))
        for i, j in enumerate(picks):
            rows[j]["chosen"], rows[j]["point_id"] = True, ids[i]
        run.screen = {
            "key": spec.key,
            "values": [rows[j]["value"] for j in picks],
            "top1": [rows[j]["top1"] for j in picks],
            "candidates": len(rows),
        }
        seconds = time.perf_counter() - t0
        log.info(
            "screened %d values of %s in %.1fs; fine-tuning %s",
            len(rows),
            spec.key,
            seconds,
            ", ".join(f"{rows[j]['value']:.4g} (val top1 {rows[j]['top1']:.1f})" for j in picks),
        )
        if state_dir:
            record = _screen_record(run, points[0], ssl, spec, rows, seconds)
            storage.write_text_atomic(storage.join(state_dir, SCREEN_FILE), json.dumps(record))
        run.checkpoint(run.state("prune", 0, None, None))
    key, values = run.screen["key"], run.screen["values"]
    chosen = [p.with_(**{**dict.fromkeys(SCREEN_KEYS), key: v}) for p, v in zip(points, values)]
    return chosen + list(points[len(values) :])  # more points than screened values: as asked


def _own_dir(state_dir: str | None) -> str | None:
    """The SSL model's directory among the search's jobs: the job's name, or ``<job>/step<s>``
    for a step of a lambda path (``ScreenSpec.other_screens`` leaves it out)."""
    if not state_dir:
        return None
    parts = state_dir.replace("\\", "/").rstrip("/").split("/")
    return "/".join(parts[-2:]) if STEP_DIR_RE.match(parts[-1]) else parts[-1]


def _screen_columns(run: Run) -> dict[str, Any]:
    """A point's screen columns: its screened val top-1 and how many values were screened."""
    if run.screen is None or run.point >= len(run.screen["values"]):
        return {"screen_top1": None, "screen_candidates": 0}
    return {
        "screen_top1": run.screen["top1"][run.point],
        "screen_candidates": run.screen["candidates"],
    }


def _point_done(
    run: Run,
    points: Sequence[TrialConfig],
    ids: Sequence[str | None],
    points_dir: str | None,
    final: dict[str, Any],
    model: nn.Module | None,
    write: bool = True,
) -> None:
    """Persist and report a finished point, then checkpoint the start of the next one."""
    i = run.point
    cfg = points[i]
    final = {**run.tags, **final, "point": i}
    pid = ids[i]
    if pid is not None:
        final["trial_id"] = pid
    if write and points_dir and pid is not None:
        payload = run.payload(model, {"metrics": json.dumps(final)}) if model is not None else None
        write_point(points_dir, pid, final, payload)
    if cfg.out_dir and model is not None and write:
        out = Path(cfg.out_dir)
        save_model(
            model,
            out / MODEL_FILE,
            arch=cfg.arch,
            num_classes=run.data.num_classes,
            in_channels=run.data.channels,
            input_shape=run.input_shape,
            meta={"metrics": json.dumps(final)},
        )
        write_text_atomic(str(out / RESULT_FILE), json.dumps(final, indent=1))
        final["model_path"] = str(out / MODEL_FILE)
    run.points_done.append(final)
    run.point = i + 1
    if run.point == len(points):
        run.emit(final, run.state("done", 0, None, None))
    else:
        run.point_state = run.point_state.next_point()
        run.emit(final, run.state("prune", 0, None, None))


def _results(run: Run) -> list[TrialResult]:
    return [
        TrialResult(str(f["status"]), f, f.get("error"), f.get("model_path"), list(run.history))
        for f in run.points_done
    ]


def _rereport(run: Run) -> list[TrialResult]:
    """A finished trial restarted: report every point's final again (no training)."""
    log.info("trial already finished; re-reporting its results")
    for f in run.points_done:
        run.emit(f, None)
    return _results(run)


def ensure_ssl_model(cfg: TrialConfig | dict[str, Any], report: Report | None = None) -> str:
    """Train ``cfg``'s SSL model into its store (``cfg.cache_dir``) unless it is there; no
    pruning. Returns its id: a later ``run_points`` of the same SSL model only prunes and
    fine-tunes (the search trains its lambda = 0 model this way beside the trials)."""
    c = cfg if isinstance(cfg, TrialConfig) else TrialConfig.from_dict(cfg)
    if not c.cache_dir:
        raise ValueError("ensure_ssl_model needs cfg.cache_dir: where the SSL model is stored")
    validate_trial(c)
    run = Run(c, report or _log_report, {}, None)
    check_trial_start(c, run.data)
    return train_ssl_model(run).id


def run_trial(
    cfg: TrialConfig | dict[str, Any],
    report: Report | None = None,
    state_dir: str | None = None,
    tags: dict[str, Any] | None = None,
) -> TrialResult:
    """Run one point end to end: SSL training (or the stored SSL model), prune, fine-tune,
    measure; with ``state_dir``, keep its states there and resume from the newest whole one.

    ``tags`` (e.g. the search's trial id) are added to every report and to the final result.
    """
    return run_points([cfg], report, state_dir, tags)[0]

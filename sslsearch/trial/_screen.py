"""The screen: an SSL model's whole pruning curve, cheaply, before any point is fine-tuned.

After SSL training a job prunes its SSL model at every value of a dense grid over the space's
amount range (a FLOPs or parameter budget, or a ratio), re-estimates BatchNorm statistics on
training batches (with ``ScreenSpec.steps``, then trains each pruned copy that many steps:
``recover``) and measures validation top-1: seconds per value. It then
fine-tunes only the ``k`` values whose screened results add the most hypervolume (greedy
hypervolume contribution over the space's objectives, each divided by its dense value), so
the points of an SSL model land where its curve is good rather than on fixed stops.

The screen is written whole to ``<state_dir>/screen.json`` (``SCREEN_FILE``; the report draws
one curve per SSL model from it) and kept in the trial's state: a job killed after its screen
resumes with the same choices, one killed during it screens again (no SSL training is redone).
Screened values are never points: only the chosen ones become rows and Optuna trials.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from torch import nn

from sslsearch import storage
from sslsearch.config import TrialConfig
from sslsearch.errors import NotPrunableError
from sslsearch.metrics import size_mb
from sslsearch.report import hypervolume, reference_point, to_minimization
from sslsearch.trial._point import (
    measure_defs,
    measured_defs,
    point_seed,
    pruned_copy,
    scalar_lambda,
)
from sslsearch.trial._run import STEP_DIR_RE, Run
from sslsearch.trial._ssl import SSLModel
from sslsearch.trial._train import evaluate, lr_at, make_optimizer, train_one_epoch

log = logging.getLogger(__name__)

SCREEN_FILE = "screen.json"
SCREEN_KEYS = ("flops_budget", "params_budget", "ratio")  # amounts a screen can sweep


@dataclass(frozen=True)
class ScreenSpec:
    """What a job screens: ``values`` of the amount ``key``, choosing by ``objectives``
    (``(metric, direction)``; metrics a screen does not measure, such as latency, are left
    out of the choice). ``steps``: a short recovery of each pruned copy before it is measured
    (``recover``; 0: BatchNorm re-estimation alone). ``others``: the directory whose
    ``<job>/screen.json`` are the other SSL models' screens (the search's jobs): the values
    chosen are those that add most to what they already cover (None: to this screen alone)."""

    key: str
    values: tuple[float, ...]
    objectives: tuple[tuple[str, str], ...] = (("top1", "max"), ("flops", "min"))
    others: str | None = None
    steps: int = 0  # > 0: each pruned copy trains this many steps before it is measured
    paths: bool = False  # the jobs are lambda paths: each later step's screen is in <job>/step<s>/

    def __post_init__(self) -> None:
        if self.key not in SCREEN_KEYS:
            raise ValueError(f"a screen sweeps one of {SCREEN_KEYS}, not {self.key!r}")
        if len(self.values) < 1:
            raise ValueError("a screen needs at least one value")
        if self.steps < 0:
            raise ValueError(f"a screen's recovery steps are >= 0, not {self.steps}")

    def with_asked(self, cfg: TrialConfig) -> ScreenSpec:
        """This screen with the value ``cfg`` asks for (the sampler's) among its values."""
        asked = cfg.amount().get(self.key)
        extra = {float(asked)} if asked is not None else set()
        return replace(self, values=tuple(sorted(set(self.values) | extra)))

    def other_screens(self, own: str | None) -> list[dict[str, Any]]:
        """The screened rows of the other SSL models of the search (finished screens, of the
        same amount; ``own``: this SSL model's directory under ``others``, left out: the job's
        name, or ``<job>/step<s>`` for a lambda path's later step)."""
        if not self.others or not storage.exists(self.others):
            return []
        rows: list[dict[str, Any]] = []
        for path in self._screen_files(own):
            try:
                record = json.loads(storage.read_bytes(path).decode())
            except (OSError, ValueError):  # not there, or being written
                continue
            if record.get("key") == self.key:
                rows += record.get("rows", [])
        return rows

    def _screen_files(self, own: str | None) -> list[str]:
        """The screens of the other SSL models: each job's, and its lambda path's steps'."""
        assert self.others is not None
        files = []
        for name in storage.listdir(self.others):
            job = storage.join(self.others, name)
            if name != own:
                files.append(storage.join(job, SCREEN_FILE))
            if self.paths:
                files += [
                    storage.join(job, d, SCREEN_FILE)
                    for d in storage.listdir(job)
                    if STEP_DIR_RE.match(d) and f"{name}/{d}" != own
                ]
        return files


def screen_model(
    run: Run, cfg: TrialConfig, ssl: SSLModel, spec: ScreenSpec
) -> list[dict[str, Any]]:
    """Prune the SSL model at every value of ``spec`` (BN re-estimated, no fine-tune) and
    measure each: validation top-1 and exact costs, one row per value, in order. A value the
    model cannot be pruned to (a budget below its layer floors) is left out."""
    rows = []
    seed = point_seed(cfg.seed, 0)  # every value sees the same BN batches
    for v in spec.values:
        t0 = time.perf_counter()
        c = cfg.with_(**{**dict.fromkeys(SCREEN_KEYS), spec.key: float(v)})
        try:
            model, pruned = pruned_copy(run, c, ssl, seed)
        except NotPrunableError as e:  # below what the layer floors allow: not a candidate
            log.info("screen %s=%.4g skipped: %s", spec.key, v, e)
            continue
        if spec.steps:
            recover(run, c, model, spec.steps, seed)
        s = pruned.summary()
        top1 = evaluate(
            model, run.data.val, batch_size=cfg.recipe.eval_batch_size, device=run.device
        ).top1
        rows.append(
            {
                "value": float(v),
                "top1": float(top1),
                "flops": float(s["flops_after"]),
                "params": float(s["params_after"]),
                "size_mb": float(size_mb(model)),
                "flops_before": float(s["flops_before"]),
                "params_before": float(s["params_before"]),
                "size_mb_before": float(ssl.size_mb),
                # the other objectives known once pruned (e.g. peak activation memory)
                **measure_defs(run, measured_defs(cfg, exact=True), model),
                "seconds": time.perf_counter() - t0,
                "chosen": False,
                "point_id": None,
            }
        )
        log.debug(
            "screen %s=%.4g: val top1 %.2f, FLOPs %.1f%%",
            spec.key,
            v,
            top1,
            100 * s["flops_after"] / max(s["flops_before"], 1e-12),
        )
    return rows


def recover(
    run: Run, cfg: TrialConfig, model: nn.Module, steps: int, seed: int, *, anneal: bool = True
) -> None:
    """Train a pruned copy ``steps`` steps in place, as a fine-tune would start, before it is
    screened: SGD at the recipe's ``finetune_lr`` decayed to 0 along a cosine over the steps
    (a fine-tune's end, so the copy is measured settled, not mid-step), on training batches
    seeded by ``seed``, no penalty. Measured on the CIFAR-10 tier (benchmarks/README.md: the
    screen on real images): right after pruning a cheap budget or a lightly sparse SSL model
    looks far worse than it ends after the fine-tune, and the plain screen ranks SSL models in
    reverse of their fine-tuned top-1 (Kendall tau -0.28); 25 such steps give 0.35, 100 give
    0.40. ``anneal=False`` holds the lr instead (measured there too: the copy is then measured
    mid-step and ranks worse)."""
    rec = cfg.recipe
    schedule = replace(rec, schedule="cosine" if anneal else "constant")
    opt = make_optimizer(model, rec.finetune_lr, rec)
    epochs = (
        run.data.train.batches(
            rec.batch_size, shuffle=True, augment=cfg.data.augment, seed=seed + e, device=run.device
        )
        for e in itertools.count()
    )
    train_one_epoch(
        model,
        itertools.islice(itertools.chain.from_iterable(epochs), steps),
        opt,
        lr_fn=lambda p: lr_at(p, rec.finetune_lr, 1, schedule, 0.0),  # p: share of the steps
        steps_per_epoch=steps,
        epoch=0,
        penalty=None,
        label_smoothing=rec.label_smoothing,
        device=run.device,
        amp=run.amp,
        channels_last=run.channels_last,
        scaler=run.scaler,
    )
    model.eval()


def _normalised(
    rows: Sequence[dict[str, Any]], objectives: Sequence[tuple[str, str]]
) -> tuple[np.ndarray, np.ndarray]:
    """Every row's objectives and the reference point, as the report's hypervolume takes them
    (``report.reference_point``: top-1 divided by 100 %, a cost by the dense model's, each
    minimised), over the objectives the rows measure (top-1 alone when none)."""
    objs = [(m, d) for m, d in objectives if rows and m in rows[0]] or [("top1", "max")]
    names, directions = [m for m, _ in objs], [d for _, d in objs]
    ref, scale, _ = reference_point(rows, objs, None)
    s = np.array([scale[m] for m in names])
    values = np.array([[float(r[m]) for m in names] for r in rows]).reshape(len(rows), len(names))
    r = np.array([ref[m] for m in names]) / s
    return to_minimization(values / s, directions), to_minimization(r[None, :], directions)[0]


def choose(
    rows: Sequence[dict[str, Any]],
    k: int,
    objectives: Sequence[tuple[str, str]],
    context: Sequence[dict[str, Any]] = (),
) -> list[int]:
    """Indices of the ``k`` screened rows to fine-tune: greedily the one that adds the most
    hypervolume to those already chosen and to ``context`` (the other SSL models' screens: a
    value they already cover adds nothing). When fewer than ``k`` add anything (the rest are
    dominated), the others are spread: each time the row farthest (in the amount, on a log
    scale) from every chosen one, on the best remaining front first."""
    every, ref = _normalised([*rows, *context], objectives)
    losses, ctx = every[: len(rows)], every[len(rows) :]

    def hv(points: np.ndarray) -> float:
        return hypervolume(points, ref) if len(points) else 0.0

    chosen: list[int] = []
    base = hv(ctx)
    left = list(range(len(rows)))
    while left and len(chosen) < k:
        gains = [hv(np.vstack([ctx, losses[[*chosen, i]]])) - base for i in left]
        best = int(np.argmax(gains))
        if gains[best] <= 1e-12:
            break
        chosen.append(left.pop(best))
        base += gains[best]
    pos = [math.log(max(r["value"], 1e-12)) for r in rows]
    while left and len(chosen) < k:
        sub = losses[left]
        scores = [
            (
                not bool(((sub <= sub[j]).all(1) & (sub < sub[j]).any(1)).any()),  # on the front
                min((abs(pos[i] - pos[c]) for c in chosen), default=0.0),  # gap to the chosen
            )
            for j, i in enumerate(left)
        ]
        chosen.append(left.pop(max(range(len(left)), key=lambda j: scores[j])))
    return chosen


def screen_record(
    run: Run,
    cfg: TrialConfig,
    ssl: SSLModel,
    spec: ScreenSpec,
    rows: list[dict[str, Any]],
    seconds: float,
    status: str = "ok",
    rung: int | None = None,
) -> dict[str, Any]:
    """The screen as ``screen.json`` holds it."""
    return {
        "job_id": run.tags.get("job_id"),
        "ssl_model_id": ssl.id,
        "ssl_lambda": scalar_lambda(cfg),
        "ssl_type": cfg.ssl_type,
        "key": spec.key,
        "objectives": [list(o) for o in spec.objectives],
        "epochs_trained": run.global_epoch,
        "steps": spec.steps,  # the recovery steps each value trained before it was measured
        "rung": rung,
        "status": status,
        "seconds": seconds,
        "rows": rows,
    }


def contributions(
    screens: Sequence[Sequence[dict[str, Any]]], objectives: Sequence[tuple[str, str]]
) -> list[float]:
    """Each screen's hypervolume contribution to the union of all of them: what the front of
    every screened value loses without that SSL model's values (0: all of them dominated by
    the others'). Objectives as ``choose`` takes them."""
    objs = [(m, d) for m, d in objectives if all(s and m in s[0] for s in screens)]
    every, ref = _normalised([r for s in screens for r in s], objs)
    ends = np.cumsum([0, *(len(s) for s in screens)])
    total = hypervolume(every, ref) if len(every) else 0.0
    out = []
    for i in range(len(screens)):
        others = np.delete(every, np.s_[ends[i] : ends[i + 1]], axis=0)
        out.append(total - (hypervolume(others, ref) if len(others) else 0.0))
    return out


def fair_contributions(
    screens: Sequence[Sequence[dict[str, Any]]], objectives: Sequence[tuple[str, str]]
) -> tuple[list[float], list[int | None]]:
    """Each screen's contribution with near-duplicates handled, and its nearest neighbour.

    Two good SSL models with close lambdas cover each other: each alone adds nearly nothing to
    the union (``contributions``), and both could rank below a mediocre unique one. So a screen
    is credited with the larger of its own contribution and half of what it and its nearest
    neighbour (the screen whose dominated region overlaps its own the most) add together: a
    pair of near-duplicates shares the volume it adds as a pair."""
    objs = [(m, d) for m, d in objectives if all(s and m in s[0] for s in screens)]
    every, ref = _normalised([r for s in screens for r in s], objs)
    ends = np.cumsum([0, *(len(s) for s in screens)])
    n = len(screens)
    part = [np.arange(ends[i], ends[i + 1]) for i in range(n)]

    def hv(idx: np.ndarray) -> float:
        return hypervolume(every[idx], ref) if len(idx) else 0.0

    def without(*drop: int) -> np.ndarray:
        return np.concatenate([part[j] for j in range(n) if j not in drop] or [np.arange(0)])

    total = hv(np.arange(len(every)))
    own = [hv(part[i]) for i in range(n)]
    out: list[float] = []
    nearest: list[int | None] = []
    for i in range(n):
        solo = total - hv(without(i))
        overlap = [
            own[i] + own[j] - hv(np.concatenate([part[i], part[j]])) if j != i else -1.0
            for j in range(n)
        ]
        j = int(np.argmax(overlap)) if n > 1 else None
        pair = total - hv(without(i, j)) if j is not None else solo
        out.append(max(solo, pair / 2))
        nearest.append(j)
    return out, nearest


def own_hypervolume(rows: Sequence[dict[str, Any]], objectives: Sequence[tuple[str, str]]) -> float:
    """The hypervolume of one screen alone (ties between zero contributions are broken by it)."""
    return hypervolume(*_normalised(rows, objectives)) if rows else 0.0

"""Multi-fidelity over SSL training: screen an SSL model part-way and stop the unpromising.

At each rung (an SSL epoch, e.g. a quarter and a half of the recipe's epochs) a job screens
its SSL model as it is (``_screen.screen_model``: pruned at the screen's values, BN
re-estimated, validation top-1; no training) and asks ``promote(rung, record)`` whether to go
on. The search package answers from the other jobs' screens at the same rung (successive
halving by hypervolume contribution: ``_screen.contributions``). A stopped SSL model's points
end ``stopped`` with the rule's reason, are never fine-tuned and never feed a front; its rung
screens stay in ``<state_dir>/screen-r<rung>.json``. Each decision is kept in the trial's state:
a resumed job does not ask again, and one killed while deciding decides again.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sslsearch import storage
from sslsearch.config import TrialConfig
from sslsearch.metrics import size_mb
from sslsearch.trial._run import Run, SSLStopped
from sslsearch.trial._screen import ScreenSpec, screen_model, screen_record
from sslsearch.trial._ssl import SSLModel

log = logging.getLogger(__name__)

Promote = Callable[[int, dict[str, Any]], tuple[bool, str]]


def rung_file(rung: int) -> str:
    """The name of a job's screen at ``rung`` (in its state directory)."""
    return f"screen-r{rung}.json"


_RUNG_FILE = re.compile(r"^screen-r(\d+)\.json$")


def rung_of(name: str) -> int | None:
    """The rung a file name written by ``rung_file`` holds; None for any other name."""
    m = _RUNG_FILE.match(name)
    return int(m.group(1)) if m else None


def rung_epochs(fractions: tuple[float, ...], epochs: int) -> tuple[int, ...]:
    """The SSL epochs of the rungs: each fraction of ``epochs``, rounded, at least 1 and
    before the last epoch (a rung at the end would be the final screen), once each."""
    out = sorted({min(max(1, round(f * epochs)), epochs - 1) for f in fractions})
    return tuple(e for e in out if 0 < e < epochs)


@dataclass(frozen=True)
class Rungs:
    """Where a job's SSL training is judged (``epochs``) and who judges (``promote``)."""

    epochs: tuple[int, ...]
    promote: Promote


def rung_hook(
    run: Run,
    cfg: TrialConfig,
    spec: ScreenSpec,
    rungs: Rungs,
    state_dir: str | None,
) -> Callable[[int, nn.Module, torch.optim.Optimizer], None]:
    """The ``after_epoch`` of SSL training: at a rung, screen, ask, record, stop or go on."""

    def hook(epoch: int, model: nn.Module, opt: torch.optim.Optimizer) -> None:
        if epoch not in rungs.epochs:
            return
        rung = rungs.epochs.index(epoch)
        done = run.rungs.get(str(rung))
        if done is None:
            with torch.random.fork_rng(devices=[]):  # the training's random stream unchanged
                done = _decide(run, cfg, spec, rungs, state_dir, rung, epoch, model)
            run.checkpoint(run.state("ssl", epoch, model, opt))  # the decision, kept
        if done == "stopped":
            raise SSLStopped(run.rung_reason)

    return hook


def _decide(
    run: Run,
    cfg: TrialConfig,
    spec: ScreenSpec,
    rungs: Rungs,
    state_dir: str | None,
    rung: int,
    epoch: int,
    model: nn.Module,
) -> str:
    t0 = time.perf_counter()
    now = SSLModel(
        id=f"rung{rung}", model=model, ssl_top1=math.nan, size_mb=size_mb(model), trained=True
    )
    rows = screen_model(run, cfg, now, spec.with_asked(cfg))  # prunes copies: model untouched
    record = screen_record(run, cfg, now, spec, rows, time.perf_counter() - t0, rung=rung)
    record["ssl_model_id"] = None  # not a stored model: the SSL model part-way
    record["epochs_trained"] = epoch
    go, why = rungs.promote(rung, record)
    record["status"] = "ok" if go else "stopped"
    record["reason"] = why
    if state_dir:
        storage.write_text_atomic(storage.join(state_dir, rung_file(rung)), json.dumps(record))
    run.rungs[str(rung)] = record["status"]
    run.rung_reason = (
        f"multi-fidelity: stopped after {epoch} of {cfg.recipe.epochs} SSL epochs ({why})"
    )
    log.info("rung %d (%d SSL epochs): %s (%s)", rung, epoch, "goes on" if go else "stopped", why)
    return str(record["status"])

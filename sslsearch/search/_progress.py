"""A compact live view of the search for the console (our lines, not Tune's tables)."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from ray.tune import Callback

from sslsearch.config import AMOUNT_KEYS
from sslsearch.pruning import BUDGET_MISSED
from sslsearch.search._cluster import PendingWatch

log = logging.getLogger("sslsearch.progress")


def _fmt(v: Any, spec: str, default: str = "-") -> str:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return default
    return default if math.isnan(x) else format(x, spec)


def describe_params(cfg: dict[str, Any]) -> str:
    parts = [f"lambda={_fmt(cfg.get('ssl_lambda'), '.2e')}"]
    points = cfg.get("points")
    if isinstance(points, list) and len(points) > 1:
        return f"{parts[0]} {len(points)} points"
    if cfg.get("blocks") is not None and int(cfg["blocks"]) >= 0:  # a point's result: -1 = none
        parts.append(f"blocks={cfg['blocks']}")
    else:
        for k in AMOUNT_KEYS:
            v = cfg.get(k)
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                parts.append(
                    f"{k.replace('_budget', '')}<={_fmt(v, '.3f')}"
                    if k != "ratio"
                    else f"ratio={_fmt(v, '.3f')}"
                )
                break
    for k in ("prune_type", "prune_way"):
        if k in cfg:
            parts.append(str(cfg[k]))
    if cfg.get("ssl_type") not in (None, cfg.get("prune_type")):
        parts.append(f"ssl={cfg['ssl_type']}")
    return " ".join(parts)


def _pct(v: Any) -> float:
    try:
        return 100.0 * float(v)
    except (TypeError, ValueError):
        return math.nan


def _at_floor(layers: Any) -> str:
    """', 2 layers at the floor' for the SSL model's layers held at their floor (or '')."""
    n = len([x for x in str(layers).split(",") if x]) if layers else 0
    return f", {n} layer{'s' if n != 1 else ''} at the floor" if n else ""


class ProgressCallback(Callback):
    """One line per finished point; every ``every_s`` seconds a table of the running trials.

    ``done``: points finished before this run (a resumed search counts on from there). Its
    per-step work looks at Tune's list of every trial at most once a second: the driver's cost
    per point stays flat with thousands of trials.
    """

    def __init__(self, num_samples: int, every_s: float = 15.0, done: int = 0) -> None:
        self.num_samples = num_samples
        self.every_s = every_s
        self._last_table = 0.0
        self._last_look = 0.0
        self._latest: dict[str, dict[str, Any]] = {}
        self._done = done
        self._started = time.monotonic()
        self.max_running = 0  # most trials RUNNING at once (the driver's view)
        self._running: set[str] = set()
        self.pending = PendingWatch()  # warns when trials wait with none running

    def __getstate__(self) -> dict[str, Any]:  # pickled into tuner.pkl: keep only settings
        return {"num_samples": self.num_samples, "every_s": self.every_s, "done": self._done}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["num_samples"], state["every_s"], state.get("done", 0))  # type: ignore[misc]

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._running.add(trial.trial_id)
        self.max_running = max(self.max_running, len(self._running))
        log.info("start    %s %s", trial.trial_id, describe_params(trial.config))

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        self._latest[trial.trial_id] = result
        if result.get("final") and "point" in result:
            self._point_line(result)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._running.discard(trial.trial_id)
        r = self._latest.pop(trial.trial_id, None) or trial.last_result or {}
        if not r.get("final"):
            self._done += 1
            log.info(
                "[%d/%d] %s %s: interrupted at epoch %s",
                self._done,
                self.num_samples,
                trial.trial_id,
                describe_params(trial.config),
                r.get("global_epoch", "?"),
            )

    def _point_line(self, r: dict[str, Any]) -> None:
        self._done += 1
        pid = r.get("point_id") or r.get("trial_id", "?")  # Tune's trial id in trial_id
        head = f"[{self._done}/{self.num_samples}] {pid} {describe_params(r)}"
        if r.get("status") in ("ok", BUDGET_MISSED):
            floor = [x for x in str(r.get("at_floor") or "").split(",") if x]
            log.info(
                "%s: %stop1 %s (test %s)  FLOPs %sM%s  size %sMB  actual ratio %s%s  SSL: zero %s%% "
                "removable FLOPs %s%%%s  (%ss)",
                head,
                "BUDGET MISSED (off the fronts): " if r.get("status") == BUDGET_MISSED else "",
                _fmt(r.get("top1"), ".2f"),
                _fmt(r.get("test_top1"), ".2f"),
                _fmt(float(r.get("flops", math.nan)) / 1e6, ".3f"),
                f" (budget reached: {_fmt(100 * r['budget_achieved'], '.1f')}%)"
                if isinstance(r.get("budget_achieved"), (int, float))
                else "",
                _fmt(r.get("size_mb"), ".3f"),
                _fmt(r.get("actual_ratio"), ".3f"),
                f"  {len(floor)} layer(s) at their floor" if floor else "",
                _fmt(_pct(r.get("exact_zero_share")), ".1f"),
                _fmt(_pct(r.get("removable_flops_share")), ".1f"),
                _at_floor(r.get("ssl_at_floor")),
                _fmt(r.get("point_seconds"), ".1f"),
            )
        elif r.get("status") == "stopped":
            log.info("%s: stopped: %s", head, r.get("error"))
        else:
            log.info("%s: FAILED: %s", head, r.get("error"))

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._running.discard(trial.trial_id)
        self._done += 1
        self._latest.pop(trial.trial_id, None)
        log.info(
            "[%d/%d] %s %s: ERROR (details in %s/error.txt)",
            self._done,
            self.num_samples,
            trial.trial_id,
            describe_params(trial.config),
            trial.path,
        )

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._running.discard(trial.trial_id)
        log.info("retry    %s from its last state (its worker or node failed)", trial.trial_id)

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        now = time.monotonic()
        if now - self._last_look < 1.0:
            return
        self._last_look = now
        self.pending.check(trials, now)
        if now - self._last_table < self.every_s:
            return
        self._last_table = now
        running = [t for t in trials if t.status == "RUNNING"]
        if not running:
            return
        lines = [f"{'trial':10s} {'params':44s} {'phase':8s} {'epoch':>7s} {'val top1':>8s}"]
        for t in running:
            r = self._latest.get(t.trial_id, {})
            epoch = f"{r.get('epoch', '-')}/{r.get('epochs', '-')}" if r else "-"
            lines.append(
                f"{t.trial_id:10s} {describe_params(t.config)[:44]:44s} {r.get('phase', 'start')!s:8s} "
                f"{epoch:>7s} {_fmt(r.get('val_top1'), '.2f'):>8s}"
            )
        elapsed = now - self._started
        log.info(
            "%d/%d done, %d running, %.0fs elapsed\n%s",
            self._done,
            self.num_samples,
            len(running),
            elapsed,
            "\n".join(lines),
        )

"""Which Optuna sampler proposes the points, and what it sees (its cost per ask is bounded).

The experiment's study records every point; the sampler proposes on a *view* of it: an
in-memory Optuna study of its own (``SamplerView``, public ask/tell/add_trial only). While the
experiment has fewer than ``sampler.max_history`` finished points the view holds all of them,
so the sampler sees what it would see on the study itself. Past that, the view keeps the
points of the best non-dominated fronts (at least ``ELITE`` points) plus the ``max_history``
most recent ones, and is rebuilt when it has grown by half of that. TPE's "good" set (at most
25 points for several objectives) lies in those fronts, and TPE weighs the most recent points
highest: it proposes nearly what it would on the whole study, at a cost per ask that stops
growing (``benchmarks/bench_scale.py``, 2-core VM: a TPE ask at 10,000 points costs 377 CPU-ms
on the whole study, 20.5 through the view; 25 at 1,000 either way). A GP ask fits a Gaussian
process per objective, superlinear in the points (2.9 CPU-s at 100 points, 6.6 at 400): past
``sampler.gp_max_points`` finished points GP hands over to TPE, and says so in the log.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from sslsearch.config import SearchSpace
from sslsearch.report import minimization_signs, non_dominated_mask
from sslsearch.search._plan import SearchPlan, plan_search

log = logging.getLogger(__name__)

ELITE = 50  # points of the best fronts every view keeps (2x TPE's largest "good" set)
ELITE_MAX = 4 * ELITE  # a front larger than this is cut to its most recent points


def make_sampler(
    plan: SearchPlan | SearchSpace,
    name: str | None = None,
    seed: int | None = None,
    startup: int | None = None,
) -> Any:
    """The Optuna sampler ``name`` (default: the space's) with the space's settings; its own
    random start-up ``startup`` finished trials (default: ``startup_trials`` SSL models'
    worth of points; ``SamplerView`` counts SSL models itself and passes 1)."""
    plan = plan if isinstance(plan, SearchPlan) else plan_search(plan)
    s = plan.space.sampler
    name = name or plan.sampler
    seed = s.seed if seed is None else seed
    n = plan.space.budget.num_samples
    if startup is None:
        startup = plan.startup_trials * plan.points_per_ssl
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, n // 3)))
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True)


@dataclass
class Record:
    """A finished point as the sampler sees it."""

    seq: int  # order of arrival
    params: dict[str, Any]
    distributions: dict[str, BaseDistribution]
    values: list[float]
    job: str = ""  # the job (SSL model) it came from


def first_fronts(losses: np.ndarray, need: int) -> list[int]:
    """Indices of the first non-dominated fronts of ``losses`` (rows, every column minimised)
    until they hold at least ``need`` points (whole fronts, in front order)."""
    idx = np.arange(len(losses))
    chosen: list[int] = []
    while idx.size and len(chosen) < need:
        front = non_dominated_mask(losses[idx])
        chosen += idx[front].tolist()
        idx = idx[~front]
    return chosen


class SamplerView:
    """The study the sampler proposes on: bounded, and GP handing over to TPE at scale.

    ``propose`` asks it for a point's parameters (some fixed); ``record`` gives it the point's
    outcome. ``define_by_run`` is the space's suggest function (``_params.DefineByRun``).

    Example:
        >>> view = SamplerView(plan_search(space), define_by_run(space))
        >>> searched, params = view.propose("job-0", {})  # the sampler's choice
        >>> view.record("job-0", params, dists, TrialState.COMPLETE, [97.9, 1.2e6, 0.3])
    """

    def __init__(self, plan: SearchPlan, define_by_run: Callable[[Any], dict[str, Any]]) -> None:
        self.plan = plan
        space = self.space = plan.space
        self.define_by_run = define_by_run
        self.signs = minimization_signs([d for _, d in plan.objectives])
        self.kind = plan.sampler
        bounded = self.kind in ("gp", "tpe")  # NSGA-II keeps generations on its own trials
        self.max_history = space.sampler.max_history if bounded else None
        self.gp_max = space.sampler.gp_max_points if self.kind == "gp" else None
        self.model = "gp" if self.kind == "gp" else self.kind  # what proposes now
        self.finished = 0  # COMPLETE points recorded in all
        self.elite: list[Record] = []
        self.recent: list[Record] = []  # COMPLETE points since the view was last cut, in order
        self.rebuilds = 0
        # point id -> its trial in this view and the parameters it was asked with, while it runs
        self._asked: dict[str, tuple[int, dict[str, Any]]] = {}
        # the random start-up counts SSL models (jobs with a finished point), not points
        self.startup = plan.startup_trials if self.kind in ("gp", "tpe") else 0
        self.models: set[str] = set()
        self._random = optuna.samplers.RandomSampler(seed=space.sampler.seed)
        self.study = self._new_study([])

    def describe(self) -> str:
        parts = [f"sampler {self.kind}"]
        if self.startup:
            parts.append(f"at random until {self.startup} SSL models have finished points")
        if self.gp_max is not None:
            parts.append(f"GP until {self.gp_max} finished points, then TPE")
        if self.max_history is not None:
            parts.append(
                f"it sees every point up to {self.max_history}, then the best fronts "
                f"(>= {ELITE} points) and the {self.max_history} most recent"
            )
        return "; ".join(parts)

    # ---- what the sampler sees ---------------------------------------------------------------

    def _new_study(self, records: list[Record]) -> optuna.Study:
        seed = self.space.sampler.seed + 1000 * self.rebuilds
        own = 1 if self.kind in ("gp", "tpe") else None  # the view runs the start-up itself
        sampler = make_sampler(self.plan, self.model, seed, startup=own)
        directions = [
            optuna.study.StudyDirection.MAXIMIZE if s < 0 else optuna.study.StudyDirection.MINIMIZE
            for s in self.signs
        ]
        study = optuna.create_study(directions=directions, sampler=sampler)
        if records:
            study.add_trials(
                [
                    optuna.trial.create_trial(
                        params=r.params, distributions=r.distributions, values=r.values
                    )
                    for r in records
                ]
            )
        return study

    def load(self, records: list[Record]) -> None:
        """Start from the finished points of an earlier run (a resumed search), in order."""
        self.finished = len(records)
        self.models = {r.job for r in records}
        if self.gp_max is not None and self.finished > self.gp_max:
            self.model = "tpe"
        if self.max_history is None:
            self.recent = list(records)
        else:
            step = self.max_history
            for i in range(0, len(records), step):  # exact: the first fronts are down-closed
                self.elite = self._elite(self.elite + records[i : i + step])
            self.recent = records[-self.max_history :]
        self._rebuild(cut=False)

    def _elite(self, records: list[Record]) -> list[Record]:
        if not records:
            return []
        losses = np.array([r.values for r in records]) * self.signs
        chosen = [records[i] for i in first_fronts(losses, ELITE)]
        if len(chosen) > ELITE_MAX:
            chosen = chosen[:ELITE] + sorted(chosen[ELITE:], key=lambda r: r.seq)[-ELITE:]
        return chosen

    def _rebuild(self, cut: bool = True) -> None:
        if cut and self.max_history is not None:
            self.elite = self._elite(self.elite + self.recent)
            self.recent = self.recent[-self.max_history :]
        seen = {id(r) for r in self.recent}
        records = sorted(
            [r for r in self.elite if id(r) not in seen] + self.recent, key=lambda r: r.seq
        )
        self.rebuilds += 1
        self._asked.clear()  # points asked from the old view are added when they finish
        self.study = self._new_study(records)

    def _after_record(self) -> None:
        if self.gp_max is not None and self.model == "gp" and self.finished > self.gp_max:
            self.model = "tpe"
            log.info(
                "%d finished points: GP hands over to TPE (a GP ask grows with the cube of the "
                "points; sampler.gp_max_points)",
                self.finished,
            )
            self._rebuild()
        elif self.max_history is not None and len(self.recent) >= self.max_history * 3 // 2:
            self._rebuild()

    # ---- asking and telling ------------------------------------------------------------------

    def propose(
        self, pid: str, fixed: dict[str, Any], random: bool = False
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Point ``pid``'s searched parameters (``fixed`` ones as given, the others the
        sampler's choice, or random ones) and all its parameters (the space's fixed values
        too)."""
        if fixed:
            self.study.enqueue_trial(fixed, skip_if_exists=False)
        model = self.study.sampler
        if random or len(self.models) < self.startup:
            self.study.sampler = self._random  # still in the random start-up
        try:
            trial = self.study.ask()
            const = self.define_by_run(trial)
        finally:
            self.study.sampler = model
        self._asked[pid] = (trial.number, dict(trial.params))
        return dict(trial.params), {**const, **trial.params}

    def rename(self, pid: str, new: str) -> None:
        """The proposal asked as point ``pid`` is point ``new``'s."""
        if new != pid and pid in self._asked:
            self._asked[new] = self._asked.pop(pid)

    def withdraw(self, pid: str) -> None:
        """Forget the proposal of point ``pid`` (closed as FAIL: no sampler learns from it)."""
        asked = self._asked.pop(pid, None)
        if asked is not None:
            self.study.tell(asked[0], None, state=TrialState.FAIL, skip_if_finished=True)

    def in_startup(self) -> bool:
        """Whether the next proposal is random (fewer SSL models finished than the start-up)."""
        return len(self.models) < self.startup

    def record(
        self,
        pid: str,
        params: dict[str, Any],
        distributions: dict[str, BaseDistribution],
        state: TrialState,
        values: list[float] | None,
    ) -> None:
        """Point ``pid`` finished (``values`` when COMPLETE). A point that ran with other
        parameters than it was asked (a screened job chose its amount) is added as what it
        ran; its asked trial is closed as FAIL, which no sampler learns from."""
        asked = self._asked.pop(pid, None)
        number = asked[0] if asked is not None else None
        if asked is not None and asked[1] != dict(params):
            self.study.tell(asked[0], None, state=TrialState.FAIL, skip_if_finished=True)
            number = None
        job = pid.rsplit("-", 1)[0]
        if state == TrialState.COMPLETE:
            assert values is not None
            self.finished += 1
            self.models.add(job)
            self.recent.append(
                Record(self.finished, dict(params), dict(distributions), values, job)
            )
        if number is not None:
            self.study.tell(number, values, state=state, skip_if_finished=True)
        elif state == TrialState.COMPLETE:
            self.study.add_trial(
                optuna.trial.create_trial(params=params, distributions=distributions, values=values)
            )
        if state == TrialState.COMPLETE:
            self._after_record()

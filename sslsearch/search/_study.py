"""The Optuna study of an experiment, brought in line with the experiment directory.

Every point is one Optuna trial (user attribute ``trial_id``: its point id; ``job_id``: its
job). Results reach the study by one road, ``StudyBook.sync``: it reads the points' results
from the experiment directory and tells the study what it does not know yet, at each point's
report, at each job's end, on resume and at the search's end. A point with a result but no
trial (a worker recorded it itself, or the driver died before asking it) is added with
``study.add_trial``. How a result's ``status`` maps to an Optuna state is one table,
``STATES``.

Public Optuna APIs only, with one exception, kept to ``set_reason``: a point that is not
COMPLETE gets its reason as the user attribute ``reason`` *before* it is told (a finished
trial is read-only), and the trial may have been asked by an earlier driver process, so there
is no live ``optuna.Trial`` to call ``set_user_attr`` on. ``set_reason`` goes through the
public methods of the storage object we created (``get_study_id_from_name``,
``get_trial_id_from_study_id_trial_number``, ``set_trial_user_attr``), which Optuna documents
as meant for storage implementers rather than users (not ``study._storage`` nor
``trial._trial_id``). ``tests/test_study.py`` fails loudly if they change.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from sslsearch.config import Choices, Range, SearchSpace
from sslsearch.search._experiment import point_result

log = logging.getLogger(__name__)

POINT_ID_ATTR = "trial_id"  # the point's id: trials.parquet's trial_id
JOB_ID_ATTR = "job_id"  # the job (one Tune trial's work) the point belongs to
REASON_ATTR = "reason"  # why a point is not COMPLETE

# A point's status in its result.json -> its Optuna state. "stopped" is early stopping (an
# explicit status, never read from the reason); "error" is written by the driver for a job
# whose Tune trial failed for good at the end of a search.
STATES: dict[str, TrialState] = {
    "ok": TrialState.COMPLETE,
    "stopped": TrialState.PRUNED,
    "failed": TrialState.FAIL,
    "error": TrialState.FAIL,
}


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB storage (SQLite by default) that optuna-dashboard and optuna.load_study can open."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    return optuna.storages.RDBStorage(url, **kwargs)


def classify(
    result: dict[str, Any], metrics: list[str]
) -> tuple[TrialState, list[float] | None, str | None]:
    """Optuna state, objective values and reason of a point's final result."""
    status = str(result.get("status"))
    state = STATES.get(status, TrialState.FAIL)
    if state != TrialState.COMPLETE:
        return state, None, str(result.get("error") or status)
    values = [result.get(m) for m in metrics]
    if any(v is None or not math.isfinite(float(v)) for v in values):
        return TrialState.FAIL, None, f"non-finite objective values {values}"
    return state, [float(v) for v in values], None  # type: ignore[arg-type]


def distributions(space: SearchSpace, params: dict[str, Any]) -> dict[str, BaseDistribution]:
    """The Optuna distribution of each searched parameter in ``params`` (as ``DefineByRun``
    suggests it), for a point the sampler did not ask."""
    out: dict[str, BaseDistribution] = {}
    for name, spec in space.searched().items():
        if name not in params or params[name] is None:
            continue
        if isinstance(spec, Choices):
            out[name] = optuna.distributions.CategoricalDistribution(list(spec.choices))
        elif isinstance(spec, Range) and spec.integer:
            step = int(spec.step) if spec.step else 1
            out[name] = optuna.distributions.IntDistribution(
                int(spec.low), int(spec.high), log=spec.log, step=step
            )
        else:
            out[name] = optuna.distributions.FloatDistribution(
                spec.low, spec.high, log=spec.log, step=spec.step
            )
    return out


@dataclass
class SyncCounts:
    told: int = 0  # RUNNING trials finished from their result
    added: int = 0  # results without a trial, added
    seconds: float = 0.0
    done: set[str] = field(default_factory=set)  # points with a result on disk (of those asked)


class StudyBook:
    """The experiment's study and what the driver knows of it (point id -> trial number).

    Open it once per search; ``ask`` records a new point the sampler proposed, ``sync`` brings
    the study in line with the directory. The index is read from the study once, so nothing
    per point copies the study.
    """

    def __init__(self, url: str, name: str, space: SearchSpace, exp_dir: str) -> None:
        import warnings

        self.space = space
        self.exp_dir = exp_dir
        self.metrics = [o.metric for o in space.objectives]
        self.storage = make_storage(url)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.study = optuna.create_study(
                storage=self.storage,
                study_name=name,
                directions=[
                    "maximize" if o.direction == "max" else "minimize" for o in space.objectives
                ],
                # never samples: every parameter of a point is fixed by the sampler's view
                # (SamplerView) and enqueued with it
                sampler=optuna.samplers.RandomSampler(seed=space.sampler.seed),
                load_if_exists=True,
            )
        self.study_id = self.storage.get_study_id_from_name(name)
        self.number: dict[str, int] = {}  # point id -> trial number
        self.finished: set[str] = set()  # points whose trial is finished
        self.params: dict[str, tuple[dict[str, Any], dict[str, BaseDistribution]]] = {}
        for t in self.study.get_trials(deepcopy=False):
            pid = t.user_attrs.get(POINT_ID_ATTR)
            if pid is None:
                continue
            self.number[str(pid)] = t.number
            if t.state.is_finished():
                self.finished.add(str(pid))
            else:
                self.params[str(pid)] = (dict(t.params), dict(t.distributions))
        self.view: Any = None  # SamplerView: told every finished point (set by the searcher)

    def running(self) -> dict[str, dict[str, Any]]:
        """Points with a RUNNING trial: point id -> user attributes (read from the study)."""
        out = {}
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            pid = t.user_attrs.get(POINT_ID_ATTR)
            if pid is not None:
                out[str(pid)] = {**t.user_attrs, "params": dict(t.params)}
        return out

    def complete_records(
        self,
    ) -> list[tuple[dict[str, Any], dict[str, BaseDistribution], list[float]]]:
        """Every COMPLETE trial's parameters, distributions and values, in order (once, on
        resume, for the sampler's view)."""
        return [
            (dict(t.params), dict(t.distributions), list(t.values))
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        ]

    def ask(
        self, pid: str, job_id: str, params: dict[str, Any], define_by_run: Any
    ) -> dict[str, Any]:
        """A new trial for point ``pid`` with ``params`` (the searched values) fixed; returns
        the point's whole parameter set (fixed space values included)."""
        self.study.enqueue_trial(
            params, user_attrs={POINT_ID_ATTR: pid, JOB_ID_ATTR: job_id}, skip_if_exists=False
        )
        trial = self.study.ask()
        full = dict(define_by_run(trial))
        full.update(trial.params)
        self.number[pid] = trial.number
        self.params[pid] = (dict(trial.params), dict(trial.distributions))
        return full

    def set_reason(self, number: int, reason: str) -> None:
        """The reason of a trial not yet finished (the module docstring says why this way)."""
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        self.storage.set_trial_user_attr(trial_id, REASON_ATTR, reason[:500])

    def _record(self, pid: str, result: dict[str, Any]) -> str:
        """Tell the study the final ``result`` of point ``pid``: "told" or "added"."""
        state, values, reason = classify(result, self.metrics)
        number = self.number.get(pid)
        if number is None:
            params = {k: result.get(k) for k in self.space.searched()}
            dists = distributions(self.space, params)
            params = {k: v for k, v in params.items() if k in dists}
            attrs = {
                POINT_ID_ATTR: pid,
                JOB_ID_ATTR: str(result.get("job_id") or pid.rsplit("-", 1)[0]),
            }
            if reason:
                attrs[REASON_ATTR] = reason[:500]
            frozen = optuna.trial.create_trial(
                state=state, params=params, distributions=dists, values=values, user_attrs=attrs
            )
            self.study.add_trial(frozen)
            how = "added"
        else:
            params, dists = self.params.pop(pid, ({}, {}))
            if reason:
                self.set_reason(number, reason)
            self.study.tell(number, values, state=state, skip_if_finished=True)
            how = "told"
        self.finished.add(pid)
        if self.view is not None:
            self.view.record(pid, params, dists, state, values)
        return how

    def sync(self, pids: Iterable[str]) -> SyncCounts:
        """Bring the study in line with the directory for the points ``pids``: each one not
        finished in the study whose result is on disk is told (or added). The only road by
        which results reach the study. Returns what it did; ``done`` holds every point of
        ``pids`` that has a result (finished in the study counts as having one)."""
        t0 = time.process_time()
        out = SyncCounts()
        for pid in pids:
            if pid in self.finished:
                out.done.add(pid)
                continue
            result = point_result(self.exp_dir, pid)
            if result is None:
                continue
            try:
                how = self._record(pid, result)
            except Exception as e:  # never leave the search on a bad record
                log.warning("could not record point %s in the study: %s", pid, e)
                continue
            out.done.add(pid)
            if how == "told":
                out.told += 1
            else:
                out.added += 1
        out.seconds = time.process_time() - t0
        return out

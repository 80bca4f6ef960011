"""The Optuna study of an experiment, brought in line with the experiment directory.

Every finished point is one Optuna trial, added once, when its result is in the experiment
directory, with ``study.add_trial``: its searched parameters and their distributions, its
objective values (COMPLETE) or its reason (PRUNED, FAIL), user attributes ``trial_id`` (its
point id) and ``job_id``. Results reach the study by this one road, ``StudyBook.sync``: at
each point's final report, at each job's end, when a search opens (a resume: points that
finished after the last driver heard of them) and at its end. A point
the sampler never proposed (a worker recorded it itself) is added the same way. How a result's
``status`` maps to an Optuna state is one table, ``STATES``.

Points in progress are not in the study (the directory's ``jobs/`` holds them): no trial is
ever RUNNING, so nothing is left to reconcile after a crash, and a trial is written once, in
one transaction (asking and telling through the RDB storage cost about ten commits a point).
The sampler proposes on its own in-memory view (``_sampler.SamplerView``). Public Optuna APIs
only.
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
from sslsearch.pruning import BUDGET_MISSED
from sslsearch.search._experiment import point_result
from sslsearch.search._params import SPREAD_PARAMS
from sslsearch.search._plan import SearchPlan

log = logging.getLogger(__name__)

POINT_ID_ATTR = "trial_id"  # the point's id: trials.parquet's trial_id
JOB_ID_ATTR = "job_id"  # the job (one Tune trial's work) the point belongs to
REASON_ATTR = "reason"  # why a point is not COMPLETE

# A point's status in its result.json -> its Optuna state. "stopped" is early stopping (an
# explicit status, never read from the reason); "error" is written by the driver for a job
# whose Tune trial failed for good at the end of a search.
STATES: dict[str, TrialState] = {
    "ok": TrialState.COMPLETE,
    # measured truly (its objectives are what it is), so the sampler learns from it; it is
    # kept off the fronts, which take ok points only
    BUDGET_MISSED: TrialState.COMPLETE,
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
        v = params.get(name)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if name == "blocks" and int(v) < 0:  # a result's "no blocks"
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


def chosen_params(result: dict[str, Any], asked: dict[str, Any]) -> dict[str, Any]:
    """The pruning amounts a point really ran with, where they differ from what it was asked
    (a screened job chooses each point's amount after SSL training: its result has it)."""
    out = {}
    for k in SPREAD_PARAMS:
        v = result.get(k)
        if k in asked and v is not None and math.isfinite(float(v)) and float(v) >= 0:
            out[k] = int(v) if k == "blocks" else float(v)
    return out


@dataclass
class SyncCounts:
    added: int = 0  # results added to the study now
    seconds: float = 0.0  # CPU spent
    done: set[str] = field(default_factory=set)  # of the points asked about, those finished


class StudyBook:
    """The experiment's study and the point ids it holds; ``sync`` adds finished points.

    Open it once per search: the ids are read from the study once, so nothing per point
    reads or copies the study. ``expect`` tells it the parameters a point was asked with
    (a point recorded by a worker brings its own in its result).
    """

    def __init__(self, url: str, name: str, plan: SearchPlan, exp_dir: str) -> None:
        import warnings

        self.space = plan.space
        self.exp_dir = exp_dir
        self.metrics = [m for m, _ in plan.objectives]
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.study = optuna.create_study(
                storage=make_storage(url),
                study_name=name,
                directions=[
                    optuna.study.StudyDirection.MAXIMIZE
                    if d == "max"
                    else optuna.study.StudyDirection.MINIMIZE
                    for _, d in plan.objectives
                ],
                # never asked: points are proposed on the sampler's own view (SamplerView)
                sampler=optuna.samplers.RandomSampler(seed=plan.space.sampler.seed),
                load_if_exists=True,
            )
            if self.study.metric_names != self.metrics:
                # optuna-dashboard and load_study show "top1", "flops"..., not "Objective 0"
                self.study.set_metric_names(self.metrics)
        self.finished: set[str] = {
            str(t.user_attrs[POINT_ID_ATTR])
            for t in self.study.get_trials(deepcopy=False)
            if POINT_ID_ATTR in t.user_attrs
        }
        self.asked: dict[str, tuple[str, dict[str, Any]]] = {}  # unfinished: job id, params
        self.view: Any = None  # SamplerView: given every point added (set by the searcher)

    def expect(self, pid: str, job_id: str, params: dict[str, Any]) -> None:
        """Point ``pid`` of job ``job_id`` was asked with ``params``."""
        if pid not in self.finished:
            self.asked[pid] = (job_id, params)

    def complete_records(
        self,
    ) -> list[tuple[dict[str, Any], dict[str, BaseDistribution], list[float], str]]:
        """Every COMPLETE trial's parameters, distributions, values and job id, in order (once,
        when a search opens, for the sampler's view)."""
        return [
            (
                dict(t.params),
                dict(t.distributions),
                list(t.values),
                str(t.user_attrs.get(JOB_ID_ATTR)),
            )
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        ]

    def _add(self, pid: str, result: dict[str, Any]) -> None:
        """Add point ``pid``, finished with ``result``, to the study (and the sampler's view)."""
        state, values, reason = classify(result, self.metrics)
        job_id, params = self.asked.pop(
            pid, (str(result.get("job_id") or pid.rsplit("-", 1)[0]), result)
        )
        params = {**params, **chosen_params(result, params)}
        dists = distributions(self.space, params)
        searched = {k: params[k] for k in dists}
        attrs = {POINT_ID_ATTR: pid, JOB_ID_ATTR: job_id}
        if reason:
            attrs[REASON_ATTR] = reason[:500]
        self.study.add_trial(
            optuna.trial.create_trial(
                state=state,
                params=searched,
                distributions=dists,
                values=values,
                user_attrs=attrs,
            )
        )
        self.finished.add(pid)
        if self.view is not None:
            self.view.record(pid, searched, dists, state, values)

    def sync(self, pids: Iterable[str]) -> SyncCounts:
        """Bring the study in line with the directory for the points ``pids``: each one not
        in the study whose result is on disk is added. The only road by which results reach
        the study."""
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
                self._add(pid, result)
            except Exception as e:  # never leave the search on a bad record
                log.warning("could not add point %s to the study: %s", pid, e)
                continue
            out.done.add(pid)
            out.added += 1
        out.seconds = time.process_time() - t0
        return out

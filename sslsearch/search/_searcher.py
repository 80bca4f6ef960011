"""OptunaSearch that only ever records a trial as COMPLETE with its true final values.

Ray's OptunaSearch tells Optuna a trial's *last reported* values when the trial ends. With
per-epoch reports, a trial stopped early (ASHA), interrupted or failed would then enter the
study, and its Pareto front, with half-trained numbers. Here a trial is COMPLETE only when its
last result is the final one (``final: True, status: "ok"``); early-stopped trials are PRUNED
and failed ones FAIL, with the reason kept as a user attribute. Each Optuna trial also records
its Tune trial id, so that a resumed search can reconcile the study with the results on disk.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from sslsearch.config import SearchSpace

log = logging.getLogger(__name__)
TUNE_ID_ATTR = "tune_trial_id"


class ParetoOptunaSearch(OptunaSearch):
    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        params = super().suggest(trial_id)
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and TUNE_ID_ATTR not in ot_trial.user_attrs:
            ot_trial.set_user_attr(TUNE_ID_ATTR, trial_id)
        return params

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        return  # multi-objective studies take no intermediate values

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if trial_id in self._completed_trials:
            return
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:
            return
        state, values, reason = classify(result, error, self.metric)
        study: Any = self._ot_study
        try:
            stored = study._storage.get_trial(ot_trial._trial_id)
            if stored.state.is_finished():  # already reconciled from disk after a crash
                self._completed_trials.add(trial_id)
                return
            if reason:
                ot_trial.set_user_attr("reason", reason[:500])
            study.tell(ot_trial, values, state=state)
        except Exception as e:  # never leave an orphan RUNNING trial behind
            log.warning("could not record trial %s as %s (%s); marking it FAIL", trial_id, state, e)
            study.tell(ot_trial, None, state=TrialState.FAIL, skip_if_finished=True)
        self._completed_trials.add(trial_id)


def classify(
    result: dict[str, Any] | None, error: bool, metrics: str | list[str]
) -> tuple[TrialState, list[float] | None, str | None]:
    """Optuna state, objective values and reason for a trial that ended with ``result``."""
    names = metrics if isinstance(metrics, list) else [metrics]
    if error:
        return TrialState.FAIL, None, "the trial raised an error (see error.txt in its directory)"
    if not result or not result.get("final"):
        return TrialState.PRUNED, None, "stopped before its final result (early stopping)"
    if result.get("status") != "ok":
        return TrialState.FAIL, None, str(result.get("error") or "failed")
    values = [result.get(m) for m in names]
    if any(v is None or not math.isfinite(float(v)) for v in values):
        return TrialState.FAIL, None, f"non-finite objective values {values}"
    return TrialState.COMPLETE, [float(v) for v in values], None  # type: ignore[arg-type]


def make_sampler(space: SearchSpace) -> optuna.samplers.BaseSampler:
    s = space.sampler
    n = space.budget.num_samples
    startup = s.n_startup_trials if s.n_startup_trials is not None else max(2, min(10, n // 3))
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    if s.name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=s.seed, population_size=max(4, min(50, n // 3)))
    if s.name == "gp":
        return optuna.samplers.GPSampler(seed=s.seed, n_startup_trials=startup)
    return optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=startup, multivariate=True)


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB storage (SQLite by default) that optuna-dashboard and optuna.load_study can open."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    return optuna.storages.RDBStorage(url, **kwargs)


def make_searcher(
    space: SearchSpace, storage_url: str, study_name: str, define_by_run: Any
) -> ParetoOptunaSearch:
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return ParetoOptunaSearch(
            space=define_by_run,
            metric=[o.metric for o in space.objectives],
            mode=[o.direction for o in space.objectives],
            sampler=make_sampler(space),
            study_name=study_name,
            storage=make_storage(storage_url),
        )


def _load_study(storage_url: str, study_name: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=study_name, storage=make_storage(storage_url))
    except KeyError:  # no such study (the search never got to create it)
        return None


def reconcile_study(
    storage_url: str, study_name: str, finals: dict[str, dict[str, Any]], metrics: list[str]
) -> int:
    """After a crash, RUNNING Optuna trials whose Tune trial finished on disk get their true
    final values (or FAIL). Returns how many trials were fixed."""
    study = _load_study(storage_url, study_name)
    if study is None:
        return 0
    fixed = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        tune_id = t.user_attrs.get(TUNE_ID_ATTR)
        if tune_id is None or tune_id not in finals:
            continue
        state, values, reason = classify(finals[tune_id], False, metrics)
        if state == TrialState.PRUNED:
            continue  # still unfinished on disk: Tune may resume it
        if reason:
            study._storage.set_trial_user_attr(t._trial_id, "reason", reason[:500])
        study.tell(t.number, values, state=state, skip_if_finished=True)
        fixed += 1
    return fixed


def fail_orphans(storage_url: str, study_name: str, known: set[str]) -> int:
    """RUNNING trials the finished search no longer knows of (lost with a crashed driver)."""
    study = _load_study(storage_url, study_name)
    if study is None:
        return 0
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get(TUNE_ID_ATTR) not in known:
            study._storage.set_trial_user_attr(t._trial_id, "reason", "lost with the driver")
            study.tell(t.number, None, state=TrialState.FAIL, skip_if_finished=True)
            n += 1
    return n

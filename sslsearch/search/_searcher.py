"""OptunaSearch that asks several points per SSL model and records each point as COMPLETE only
with its true final values.

A Tune trial trains one SSL model and then several points from it. Its first point is asked
through OptunaSearch as usual; the others are asked right after with the SSL settings
(lambda, ssl type) fixed through ``study.enqueue_trial``, so the sampler chooses their pruning
(ratio, blocks, criterion, prune type) knowing the points before. Each point is its own Optuna
trial, told when the trial reports that point's final result.

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
from ray.tune.search import ConcurrencyLimiter, SearchGenerator
from ray.tune.search.optuna import OptunaSearch

from sslsearch.config import Choices, SearchSpace, space_from_mapping
from sslsearch.search._params import points_per_ssl, spread_params, ssl_params

log = logging.getLogger(__name__)
TUNE_ID_ATTR = "tune_trial_id"  # the Ray Tune trial a point belongs to
POINT_ID_ATTR = "trial_id"  # the point's id: trials.parquet's trial_id


def point_id(trial_id: str, point: int) -> str:
    from sslsearch.trial import point_id as _pid

    return _pid(trial_id, point)


def stored_point(points_dir: str | None, pid: str) -> dict[str, Any] | None:
    from sslsearch.trial import stored_point as _stored

    return _stored(points_dir, pid)


class ParetoOptunaSearch(OptunaSearch):
    def __init__(
        self,
        *args: Any,
        points_per_ssl: int = 1,
        num_points: int = 0,
        points_dir: str | None = None,
        **kw: Any,
    ):
        super().__init__(*args, **kw)
        self.points_per_ssl = points_per_ssl
        self.points_dir = points_dir  # where finished points are written: the disk's word
        self.num_points = num_points  # budget.num_samples: points in all (0: unbounded)
        self.points_asked = 0
        self.point_numbers: dict[str, list[int]] = {}  # Tune trial -> Optuna trial numbers
        self.point_params: dict[str, list[dict[str, Any]]] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        fresh = trial_id not in self._ot_trials
        params = super().suggest(trial_id)
        if params is None or not isinstance(params, dict):
            return params
        ot_trial = self._ot_trials[trial_id]
        if fresh or trial_id not in self.point_numbers:
            ot_trial.set_user_attr(TUNE_ID_ATTR, trial_id)
            ot_trial.set_user_attr(POINT_ID_ATTR, point_id(trial_id, 0))
            points = [dict(params)]
            numbers = [ot_trial.number]
            left = self.num_points - self.points_asked if self.num_points else 1 << 30
            k = max(1, min(self.points_per_ssl, left))
            space = space_from_mapping(self._space.space_dict)  # type: ignore[union-attr]
            shared = ssl_params(space)
            fixed = {n: v for n, v in ot_trial.params.items() if n in shared}
            study: Any = self._ot_study
            for i in range(1, k):
                along = spread_params(space, ot_trial.params, i, k)
                study.enqueue_trial({**fixed, **along}, skip_if_exists=False)
                t = study.ask()
                t.set_user_attr(TUNE_ID_ATTR, trial_id)
                t.set_user_attr(POINT_ID_ATTR, point_id(trial_id, i))
                points.append(self._suggest_from_define_by_run_func(self._space, t))  # type: ignore[arg-type]
                numbers.append(t.number)
            self.points_asked += k
            self.point_numbers[trial_id] = numbers
            self.point_params[trial_id] = points
        return {**params, "points": self.point_params.get(trial_id, [dict(params)])}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if result.get("final") and "point" in result:
            self._tell_point(trial_id, int(result["point"]), result, False)

    def _tell_point(
        self, trial_id: str, point: int, result: dict[str, Any] | None, error: bool
    ) -> None:
        numbers = self.point_numbers.get(trial_id)
        if numbers is None or point >= len(numbers):
            return
        state, values, reason = classify(result, error, self.metric)
        tell(self._ot_study, numbers[point], state, values, reason)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if trial_id in self._completed_trials:
            return
        if result and result.get("final") and "point" in result and not error:
            self._tell_point(trial_id, int(result["point"]), result, False)
        numbers = self.point_numbers.get(trial_id, [])
        if error:
            # Not FAIL yet: a resume re-runs errored trials (Tuner.restore(resume_errored=True))
            # and a FAIL could never become COMPLETE. The points stay RUNNING, marked; the
            # search's end (close_errored) fails those still unfinished.
            for number in numbers:
                mark_errored(self._ot_study, number)
        else:
            for i in range(len(numbers)):
                # points told on their result are finished already (tell skips them); a point
                # whose result this driver never heard (it finished just before a driver
                # crash, and the resumed trial started after it) is told from the disk
                stored = stored_point(getattr(self, "points_dir", None), point_id(trial_id, i))
                self._tell_point(trial_id, i, stored, False)
        self._completed_trials.add(trial_id)


class BudgetedSearch(SearchGenerator):
    """Tune's SearchGenerator whose budget a resume can raise (``--resume --num-samples N``).

    Tune restores a search's trial count from its own saved state, so a larger
    ``budget.num_samples`` in the experiment's space.yaml would be ignored; this generator reads
    the budget from ``budget_file`` whenever its state is restored and raises the searcher's
    points to it, and Tune's trial count (SSL models) to what those points need. It never
    lowers them.
    """

    def __init__(self, searcher: ParetoOptunaSearch, max_concurrent: int, budget_file: str):
        super().__init__(ConcurrencyLimiter(searcher, max_concurrent=max_concurrent))
        self.budget_file = budget_file

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        points = read_budget(self.budget_file)
        base: Any = self.searcher
        while hasattr(base, "searcher"):
            base = base.searcher
        if points is None or not isinstance(base, ParetoOptunaSearch):
            return
        if points <= base.num_points or base.num_points == 0:
            return
        log.info("budget raised: %d points (was %d)", points, base.num_points)
        base.num_points = points
        # Tune trials still to create: each asks up to points_per_ssl of the points left
        left = points - base.points_asked
        trials = self._counter + -(-left // base.points_per_ssl)
        if trials > self.total_samples:
            self._total_samples = trials  # SearchGenerator's own count, saved in its state
            self._finished = False


def read_budget(space_file: str) -> int | None:
    """``budget.num_samples`` of the space file kept with an experiment; None if unreadable."""
    import yaml

    from sslsearch import storage
    from sslsearch.config import space_from_mapping

    try:
        space = space_from_mapping(yaml.safe_load(storage.read_bytes(space_file).decode()))
    except Exception as e:  # moved or unreadable: keep the saved budget
        log.warning("could not read the budget from %s: %s", space_file, e)
        return None
    return space.budget.num_samples


def set_user_attr(study: Any, trial: Any, key: str, value: Any) -> None:
    """Set a user attribute on ``trial``, a FrozenTrial of ``study`` not yet finished.

    The one place that reaches into Optuna's private API (``study._storage``,
    ``trial._trial_id``): Optuna sets user attributes only through the live ``Trial`` object
    of the process that asked it, and the trials marked here were asked earlier, or by a
    driver that has since died. ``tests/test_searcher.py`` checks it on the installed Optuna.
    """
    study._storage.set_trial_user_attr(trial._trial_id, key, value)


ERRORED_ATTR = "errored"  # set on the points of a Tune trial that raised (still RUNNING)


def mark_errored(study: Any, number: int) -> None:
    trial = study.trials[number] if number < len(study.trials) else None
    if trial is not None and not trial.state.is_finished():
        set_user_attr(study, trial, ERRORED_ATTR, True)


def close_errored(
    storage_url: str,
    study_name: str,
    errors: dict[str, str],
    unfinished: dict[str, str] | None = None,
) -> int:
    """At the end of a search (not an interrupted one), the points of errored trials that are
    still RUNNING become FAIL with their error (``errors``: point id -> error); a later
    resume then leaves errored trials as they are (``errored_closed``). Points that never
    reached their final result (``unfinished``: e.g. the time budget ran out, or Tune lost
    the trial with a killed driver) become PRUNED: none stays RUNNING."""
    study = _load_study(storage_url, study_name)
    if study is None:
        return 0
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get(POINT_ID_ATTR)
        if pid in errors:
            set_user_attr(study, t, ERRORED_ATTR, True)
            close_trial(study, t, TrialState.FAIL, reason=errors[pid])
            n += 1
        elif unfinished and pid in unfinished:
            close_trial(study, t, TrialState.PRUNED, reason=unfinished[pid])
            n += 1
    return n


def point_params(storage_url: str, study_name: str) -> dict[str, dict[str, Any]]:
    """Point id -> the parameters the study asked for it (every trial, any state)."""
    study = _load_study(storage_url, study_name)
    if study is None:
        return {}
    return {
        str(t.user_attrs[POINT_ID_ATTR]): dict(t.params)
        for t in study.get_trials(deepcopy=False)
        if POINT_ID_ATTR in t.user_attrs
    }


def errored_closed(storage_url: str, study_name: str) -> bool:
    """Whether an earlier run of the experiment closed errored trials as FAIL (then a resume
    must not re-run them: a FAIL cannot become COMPLETE)."""
    study = _load_study(storage_url, study_name)
    if study is None:
        return False
    return any(
        t.user_attrs.get(ERRORED_ATTR)
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    )


def close_trial(
    study: Any,
    trial: Any,
    state: TrialState,
    values: list[float] | None = None,
    reason: str | None = None,
) -> None:
    """Finish ``trial`` (a FrozenTrial of ``study``, RUNNING) as ``state``, with its reason."""
    if reason:
        set_user_attr(study, trial, "reason", reason[:500])
    study.tell(trial.number, values, state=state, skip_if_finished=True)


def tell(
    study: Any,
    number: int,
    state: TrialState,
    values: list[float] | None,
    reason: str | None,
) -> None:
    """Tell the study once; never leave an orphan RUNNING trial behind."""
    try:
        trial = study.trials[number] if number < len(study.trials) else None
        if trial is None or trial.state.is_finished():
            return
        close_trial(study, trial, state, values, reason)
    except Exception as e:
        log.warning("could not record trial %s as %s (%s); marking it FAIL", number, state, e)
        study.tell(number, None, state=TrialState.FAIL, skip_if_finished=True)


def classify(
    result: dict[str, Any] | None, error: bool, metrics: str | list[str]
) -> tuple[TrialState, list[float] | None, str | None]:
    """Optuna state, objective values and reason for a trial that ended with ``result``."""
    names = metrics if isinstance(metrics, list) else [metrics]
    if error:
        return TrialState.FAIL, None, "the trial raised an error (see error.txt in its directory)"
    if not result or not result.get("final"):
        return TrialState.PRUNED, None, "stopped before its final result"
    if result.get("status") == "stopped":
        return TrialState.PRUNED, None, str(result.get("error") or "early stopping")
    if result.get("status") != "ok":
        return TrialState.FAIL, None, str(result.get("error") or "failed")
    values = [result.get(m) for m in names]
    if any(v is None or not math.isfinite(float(v)) for v in values):
        return TrialState.FAIL, None, f"non-finite objective values {values}"
    return TrialState.COMPLETE, [float(v) for v in values], None  # type: ignore[arg-type]


def is_conditional(space: SearchSpace) -> bool:
    """Whether the space asks for different parameters per trial (GP would sample randomly)."""
    specs = space.param_specs()
    pt = specs.get("prune_type")
    if not isinstance(pt, Choices) or "blocks" not in specs:
        return False
    return "depth_wise" in pt.choices and any(c != "depth_wise" for c in pt.choices)


def sampler_name(space: SearchSpace) -> str:
    """The sampler ``auto`` stands for: GP (best in bench_search_efficiency.py), but TPE on a
    conditional space, where Optuna's GP falls back to random sampling."""
    name = space.sampler.name
    if name == "auto":
        return "tpe" if is_conditional(space) else "gp"
    if name == "gp" and is_conditional(space):
        log.warning("sampler gp on a conditional space: Optuna's GP samples it at random")
    return name


def make_sampler(space: SearchSpace) -> optuna.samplers.BaseSampler:
    s = space.sampler
    n = space.budget.num_samples
    startup = s.n_startup_trials if s.n_startup_trials is not None else max(2, min(10, n // 3))
    k = points_per_ssl(space)
    if s.n_startup_trials is None and k > 1:
        # the first two trials' points are asked before any finishes: random anyway
        startup = min(startup, 2 * k)
    name = sampler_name(space)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=s.seed, population_size=max(4, min(50, n // 3)))
    if name == "gp":
        return optuna.samplers.GPSampler(seed=s.seed, n_startup_trials=startup)
    return optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=startup, multivariate=True)


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB storage (SQLite by default) that optuna-dashboard and optuna.load_study can open."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    return optuna.storages.RDBStorage(url, **kwargs)


def make_searcher(
    space: SearchSpace,
    storage_url: str,
    study_name: str,
    define_by_run: Any,
    points_dir: str | None = None,
) -> ParetoOptunaSearch:
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return ParetoOptunaSearch(
            points_per_ssl=points_per_ssl(space),
            num_points=space.budget.num_samples,
            points_dir=points_dir,
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
        pid = t.user_attrs.get(POINT_ID_ATTR)
        if pid is None or pid not in finals:
            continue
        state, values, reason = classify(finals[pid], False, metrics)
        if state == TrialState.PRUNED:
            continue  # still unfinished on disk: Tune may resume it
        close_trial(study, t, state, values, reason)
        fixed += 1
    return fixed


def fail_orphans(storage_url: str, study_name: str, known: set[str]) -> int:
    """RUNNING trials the finished search no longer knows of (lost with a crashed driver)."""
    study = _load_study(storage_url, study_name)
    if study is None:
        return 0
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get(POINT_ID_ATTR) not in known:
            close_trial(study, t, TrialState.FAIL, reason="lost with the driver")
            n += 1
    return n

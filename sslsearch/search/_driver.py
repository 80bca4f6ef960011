"""Run (or resume) a search: checks -> Ray -> experiment files -> Tuner.fit -> the references
-> results -> export.

Every run, the first and each ``--resume``, is a fresh Ray Tune run over the same experiment
directory: the searcher reads the directory (``PointSearcher.open``) and hands out the jobs
with unfinished points first. Tune's own files live in ``<experiment>/tune/`` and are never
read back."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sslsearch import storage
from sslsearch.config import SearchSpace
from sslsearch.report import read_rows
from sslsearch.search._cluster import Cluster, connect, shutdown, tune_environment
from sslsearch.search._finish import finish, is_search_point
from sslsearch.search._references import (
    baseline_before_points,
    confirm_front,
    run_references,
    start_baseline,
    start_reference_model,
    wait_baseline,
)
from sslsearch.search._results import UNFINISHED
from sslsearch.search._setup import (
    SearchOptions,
    check_resources,
    checked_space,
    choose_study_url,
    prepare,
    write_experiment,
)
from sslsearch.search._trainable import make_trainable
from sslsearch.search._user import stage_weights, user_modules

log = logging.getLogger(__name__)
TUNE_DIR = "tune"  # Ray Tune's own files (its snapshots, trial directories): never read back


@dataclass
class SearchOutcome:
    exp_dir: str
    trials_path: str
    counts: dict[str, int]
    pareto: dict[str, Any] | None
    interrupted: bool = False
    cluster: Cluster | None = None
    max_running: int = 0  # most trials running at once


def run_search(opts: SearchOptions) -> SearchOutcome:
    """Run the search ``opts`` asks for, or resume it: check everything that can be checked
    before Ray starts, start or join Ray, run Tune until the searcher has its points (or the
    time budget or a Ctrl-C ends it), then write the results and the Pareto outputs."""
    space, exp_dir = prepare(opts)
    space, clamped = checked_space(opts, space)
    modules = user_modules(space)
    study_url = choose_study_url(opts, exp_dir, space)
    cluster = _connect(opts, modules)
    try:
        space = _announce(opts, space, exp_dir, study_url, cluster)
        t0 = time.monotonic()
        write_experiment(opts, space, exp_dir, study_url, clamped)
        searcher, interrupted, max_running = _drive(opts, space, exp_dir, study_url)
        log.info(
            "search finished in %.1fs (driver CPU: %.1fs asking points, %.1fs recording them)",
            time.monotonic() - t0,
            searcher.ask_seconds,
            searcher.sync_seconds,
        )
    finally:
        shutdown(cluster)
    path, counts, pareto, interrupted = _wrap_up(space, exp_dir, study_url, searcher, interrupted)
    return SearchOutcome(exp_dir, path, counts, pareto, interrupted, cluster, max_running)


def _connect(opts: SearchOptions, modules: Sequence[str]) -> Cluster:
    """Start a local Ray instance or join ``opts.address``, shipping the user's modules."""
    tune_environment()
    return connect(
        opts.address,
        num_cpus=opts.num_cpus,
        num_gpus=opts.num_gpus,
        dashboard=opts.dashboard,
        dashboard_port=opts.dashboard_port,
        verbose=opts.verbose,
        user_modules=modules,
    )


def _announce(
    opts: SearchOptions, space: SearchSpace, exp_dir: str, study_url: str, cluster: Cluster
) -> SearchSpace:
    """Say where the search runs and what it runs; returns the space with its resources checked
    against the cluster (``check_resources``)."""
    log.info(
        "Ray: %s, %d node(s), %g CPUs, %g GPUs",
        cluster.address,
        cluster.nodes,
        cluster.cpus,
        cluster.gpus,
    )
    log.info("%s", cluster.access_hint())
    log.info(
        "Optuna study: %s (study '%s'; open with optuna-dashboard %s)",
        study_url,
        space.name,
        study_url,
    )
    space = check_resources(space, cluster)
    log.info(
        "%s experiment '%s' in %s: %d trials, %d at a time, %g CPU + %g GPU each",
        "resuming" if opts.resume else "starting",
        space.name,
        exp_dir,
        space.budget.num_samples,
        space.budget.max_concurrent,
        space.resources.cpus,
        space.resources.gpu,
    )
    e = space.economy
    if e.lambda_path:
        log.info(
            "lambda path: each job trains %d SSL models in one run (lambda x%g a step, %d SSL "
            "epochs each after the first's %d), %d point(s) from each",
            e.lambda_path,
            e.path_ratio,
            e.path_epochs,
            space.recipe.epochs,
            e.points_per_ssl,
        )
    return space


def _drive(
    opts: SearchOptions, space: SearchSpace, exp_dir: str, study_url: str
) -> tuple[Any, bool, int]:
    """The searcher, Tune and the tasks beside the trials, until Tune returns and the references
    and re-evaluations are done. Returns the searcher, whether the search was interrupted and
    the most trials that ran at once."""
    from sslsearch.search._progress import ProgressCallback
    from sslsearch.search._searcher import PointSearcher

    runs = stage_weights(space, exp_dir)  # trials read the experiment's copy
    searcher = PointSearcher(runs, exp_dir, study_url)
    searcher.open()
    progress = ProgressCallback(space.budget.num_samples, opts.progress_every_s, searcher.done)
    tuner = _tuner(runs, exp_dir, searcher, progress, opts)
    baseline = start_baseline(runs, exp_dir)
    reference_model = start_reference_model(runs, exp_dir)
    # Tune's hint after a Ctrl-C ("resume with Tuner.restore") is not how a search resumes,
    # and its result grid looks for per-trial logs a search does not write
    logging.getLogger("ray.tune.tune").setLevel(logging.ERROR)
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    try:
        baseline = baseline_before_points(runs, exp_dir, baseline)
        t_fit = time.monotonic()
        tuner.fit()
        # Tune returns normally after a Ctrl-C too: ended by itself, or cut by the time budget
        budget_s = space.budget.time_budget_s
        cut = budget_s is not None and time.monotonic() - t_fit >= budget_s
        interrupted = not searcher.ended_by_itself() and not cut
        if not interrupted:
            run_references(runs, exp_dir, reference_model)
            wait_baseline(baseline)
            confirm_front(runs, exp_dir, opts.confirm_front)
    except KeyboardInterrupt:
        interrupted = True
    return searcher, interrupted, progress.max_running


def _tuner(
    space: SearchSpace, exp_dir: str, searcher: Any, progress: Any, opts: SearchOptions
) -> Any:
    """A fresh Tune run over the experiment (the first run and every resume alike)."""
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    trainable = tune.with_resources(
        make_trainable(
            space.to_dict(), exp_dir, max(1, int(space.resources.cpus)), runner=opts.runner
        ),
        {"cpu": space.resources.cpus, "gpu": space.resources.gpu},
    )
    return tune.Tuner(
        trainable,
        # No metric/mode here: in TuneConfig they would turn the multi-objective searcher into a
        # single-objective one. The searcher owns the objectives and says when it is finished
        # (Searcher.FINISHED), so Tune's own sample count is unbounded.
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=space.budget.max_concurrent),
            # Early stopping acts on points inside a trial (trial/_early.py), never through a
            # Tune scheduler: that would stop a whole SSL model and every point after it.
            num_samples=-1,
            reuse_actors=opts.reuse_actors,
            time_budget_s=space.budget.time_budget_s,
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=exp_dir,
            # a job keeps its own states (jobs/<id>/): Tune keeps no checkpoint of it
            failure_config=tune.FailureConfig(max_failures=space.budget.max_failures),
            callbacks=[progress],
            verbose=0,
        ),
    )


def _wrap_up(
    space: SearchSpace, exp_dir: str, study_url: str, searcher: Any, interrupted: bool
) -> tuple[str, dict[str, int], dict[str, Any] | None, bool]:
    """After Ray: the experiment tidied, failed jobs' points made errors (a search that was not
    interrupted), the results written and exported. Returns trials.parquet's path, the search
    points' counts by status, the Pareto export and whether the search is unfinished."""
    storage.remove_temp_files(exp_dir)  # every writer is gone: whatever is left is debris
    if searcher is not None and not interrupted:
        searcher.close()  # jobs that failed for good: their points become errors
    path, counts, pareto = finish(exp_dir, space, study_url)
    rows = [r for r in read_rows(path) if is_search_point(r)]
    unfinished = space.budget.num_samples - sum(1 for r in rows if r["status"] != UNFINISHED)
    interrupted = interrupted or (unfinished > 0 and space.budget.time_budget_s is None)
    return path, counts, pareto, interrupted

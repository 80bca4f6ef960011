"""Run (or resume) a search: validate -> experiment dir -> Ray -> Tuner.fit -> results -> export.

Every run, the first and each ``--resume``, is a fresh Ray Tune run over the same experiment
directory: the searcher reads the directory (``PointSearcher.open``) and hands out the jobs
with unfinished points first. Tune's own files live in ``<experiment>/tune/`` and are never
read back."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from sslsearch import storage
from sslsearch.config import SearchSpace, load_space, space_from_mapping, spaces_dir
from sslsearch.errors import UserError
from sslsearch.report._rows import CHOICE_KEYS, pruning_choice
from sslsearch.search._cluster import Cluster, check_trial_fits, connect, shutdown, tune_environment
from sslsearch.search._experiment import JOBS_DIR, POINTS_DIR
from sslsearch.search._params import points_per_ssl
from sslsearch.search._results import (
    TRIALS_FILE,
    UNFINISHED,
    collect_trials,
    write_screens,
    write_trials,
)
from sslsearch.search._trainable import make_trainable
from sslsearch.search._user import absolute_weights, look_beside, stage_weights, user_modules
from sslsearch.trial import check_user_parts, clamp_budget_ranges, validate_space

log = logging.getLogger(__name__)
SPACE_FILE = "space.yaml"
CLAMPED_FILE = "clamped_ranges.json"  # budget ranges raised to the model's floors
STUDY_FILE = "optuna.db"
STUDY_URL_FILE = "study_url"  # the Optuna storage URL, kept with the experiment for --resume
TUNE_DIR = "tune"  # Ray Tune's own files (its snapshots, trial directories): never read back
DEFAULT_SPACE = spaces_dir() / "default.yaml"  # shipped as package data (sslsearch.config)


@dataclass
class SearchOptions:
    """What the command line (or a caller) asks for; space keys can be overridden."""

    space: str | None = None  # YAML file; None: search_spaces/default.yaml
    overrides: list[str] = field(default_factory=list)  # "key.path=value"
    resume: bool = False
    address: str | None = None  # join a cluster (auto | HOST:PORT); None: start a local one
    num_cpus: int | None = None  # of a local Ray instance (None: all cores)
    num_gpus: int | None = None
    dashboard: bool = True
    dashboard_port: int = 8265
    study_storage: str | None = None  # Optuna RDB URL; default: SQLite in the experiment dir
    verbose: bool = False
    progress_every_s: float = 15.0
    reuse_actors: bool = True  # one worker process per concurrent slot, not per trial
    confirm_front: int = 0  # re-run each Pareto point with this many more training seeds
    # The trial each job runs: sslsearch.trial.run_points (None), or a test double with its
    # signature for measuring the search itself (benchmarks/bench_scale.py). Shipped to the
    # workers with the trainable, so it must pickle (cloudpickle) to code they can run.
    runner: Any = None


@dataclass
class SearchOutcome:
    exp_dir: str
    trials_path: str
    counts: dict[str, int]
    pareto: dict[str, Any] | None
    interrupted: bool = False
    cluster: Cluster | None = None
    max_running: int = 0  # most trials running at once


def _space_file(opts: SearchOptions) -> str:
    if opts.space:
        return opts.space
    if DEFAULT_SPACE.is_file():
        return str(DEFAULT_SPACE)
    raise UserError("no --space given and search_spaces/default.yaml was not found")


def _absolute_data_root(space: SearchSpace) -> SearchSpace:
    root = space.data.root
    if storage.is_uri(root) or os.path.isabs(os.path.expanduser(root)):
        return replace(space, data=replace(space.data, root=os.path.expanduser(root)))
    return replace(space, data=replace(space.data, root=str(Path(root).absolute())))


def _exp_dir(space: SearchSpace) -> str:
    base = space.storage_path
    if not storage.is_uri(base):
        base = str(Path(base).expanduser().absolute())
    return storage.join(base, space.name)


def prepare(opts: SearchOptions) -> tuple[SearchSpace, str]:
    """Everything that can be checked before Ray starts: a bad input stops here, exit code 2."""
    if opts.resume:
        return _prepare_resume(opts)
    path = _space_file(opts)
    look_beside(path)  # the space may name modules beside its file (arch: my_models:cnn)
    space = load_space(path, opts.overrides)
    validate_space(space, path)
    space = absolute_weights(_absolute_data_root(space))
    exp_dir = _exp_dir(space)
    base = exp_dir.rstrip("/").rsplit("/", 1)[0]
    try:
        storage.check_writable(base)
    except OSError as e:
        raise UserError(f"storage path {space.storage_path} is not writable: {e}") from None
    if storage.exists(exp_dir) and storage.listdir(exp_dir):
        raise UserError(
            f"experiment '{space.name}' already exists at {exp_dir}; pass --resume to continue "
            f"it, or --name NEW to start another (nothing was changed)"
        )
    return space, exp_dir


def _prepare_resume(opts: SearchOptions) -> tuple[SearchSpace, str]:
    # The name and storage path come from the flags (or the space file's defaults).
    raw_name_overrides = [
        o for o in opts.overrides if o.split("=", 1)[0] in ("name", "storage_path")
    ]
    others = [o for o in opts.overrides if o not in raw_name_overrides]
    look_beside(opts.space)
    base = (
        load_space(_space_file(opts), raw_name_overrides)
        if opts.space or DEFAULT_SPACE.is_file()
        else SearchSpace()
    )
    exp_dir = _exp_dir(base)
    saved = storage.join(exp_dir, SPACE_FILE)
    if not storage.exists(saved) or not storage.exists(storage.join(exp_dir, STUDY_URL_FILE)):
        raise UserError(
            f"nothing to resume: no experiment '{base.name}' at {exp_dir} "
            f"(give the same --name and --storage-path as the first run)"
        )
    if not storage.exists(storage.join(exp_dir, JOBS_DIR)) and any(
        storage.exists(storage.join(exp_dir, f)) for f in (POINTS_DIR, TRIALS_FILE)
    ):
        raise UserError(
            f"experiment '{base.name}' at {exp_dir} was made by an older sslsearch (it has no "
            f"{JOBS_DIR}/ directory) and cannot be resumed by this one; its results stay as they "
            "are (`sslsearch export` still reads them): start a new search with --name NEW"
        )
    raw = yaml.safe_load(storage.read_bytes(saved).decode())
    space = space_from_mapping(raw, saved)
    budget = [o for o in others if o.split("=", 1)[0].strip() == BUDGET_KEY]
    changed = _changed_keys(raw, [o for o in others if o not in budget])
    raised = None
    if budget:
        from sslsearch.config import apply_overrides

        try:
            wanted = space_from_mapping(apply_overrides(raw, budget[-1:])).budget.num_samples
        except UserError:
            wanted = -1
        if wanted < space.budget.num_samples:
            changed.append(
                f"{BUDGET_KEY} (was {space.budget.num_samples}; --resume can only raise it)"
            )
        elif wanted > space.budget.num_samples:
            raised = replace(space, budget=replace(space.budget, num_samples=wanted))
    if changed:
        raise UserError(
            "--resume continues an experiment as it was started; it cannot change "
            + ", ".join(changed)
        )
    if raised is not None:
        log.info(
            "--resume: budget raised from %d to %d points (budget.num_samples)",
            space.budget.num_samples,
            raised.budget.num_samples,
        )
        return raised, exp_dir
    return space, exp_dir


BUDGET_KEY = "budget.num_samples"  # the one key --resume may change (raise only)


def _budget_raised(exp_dir: str, space: SearchSpace) -> bool:
    saved = yaml.safe_load(storage.read_bytes(storage.join(exp_dir, SPACE_FILE)).decode())
    return bool(space.budget.num_samples > space_from_mapping(saved).budget.num_samples)


def _changed_keys(saved: dict[str, Any], overrides: list[str]) -> list[str]:
    """The override keys whose value differs from the saved experiment's (the same command
    with --resume repeats them unchanged)."""
    from sslsearch.config import apply_overrides

    changed = []
    for o in overrides:
        key = o.split("=", 1)[0].strip()
        try:
            new = space_from_mapping(apply_overrides(saved, [o])).to_dict()
        except UserError:
            changed.append(key)
            continue
        old = space_from_mapping(saved).to_dict()
        if new != old:
            changed.append(f"{key} (was {_get(old, key)!r})")
    return changed


def _get(d: dict[str, Any], dotted: str) -> Any:
    node: Any = d
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _check_resources(space: SearchSpace, cluster: Cluster) -> SearchSpace:
    res = space.resources
    if res.gpu > 0 and cluster.gpus == 0:
        if not res.cpu_fallback:
            raise UserError(
                f"resources.gpu={res.gpu} but the Ray cluster has no GPU (set "
                "resources.cpu_fallback: true to run on CPU)"
            )
        log.warning("the Ray cluster has no GPU: running trials on CPU (resources.cpu_fallback)")
        space = replace(space, resources=replace(res, gpu=0.0))
    check_trial_fits(space.resources.cpus, space.resources.gpu, cluster)
    return space


def _study_url(opts: SearchOptions, exp_dir: str, space: SearchSpace) -> str:
    """The study's URL: --study-storage, else the one kept with the experiment, else SQLite
    in the experiment directory (for object storage: in the current directory)."""
    kept = storage.join(exp_dir, STUDY_URL_FILE)
    if opts.resume and storage.exists(kept):
        url = storage.read_bytes(kept).decode().strip()
        if opts.study_storage and opts.study_storage != url:
            raise UserError(
                f"--resume: the experiment's Optuna study is {url}, not {opts.study_storage}"
            )
        return url
    if opts.study_storage:
        return opts.study_storage
    if storage.is_uri(exp_dir):
        local = Path(f"sslsearch-{space.name}-optuna.db").absolute()
        log.warning("experiment on %s: the Optuna study is kept locally in %s", exp_dir, local)
        return f"sqlite:///{local}"
    return f"sqlite:///{storage.join(exp_dir, STUDY_FILE)}"


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


def ssl_trainings(space: SearchSpace) -> int:
    """Tune trials (SSL models) for ``budget.num_samples`` points."""
    return -(-space.budget.num_samples // points_per_ssl(space))


def _metadata(space: SearchSpace, study_url: str, exp_dir: str) -> dict[str, str]:
    import optuna
    import ray
    import torch

    clamped = storage.join(exp_dir, CLAMPED_FILE)
    return {
        "sslsearch.space": json.dumps(space.to_dict()),
        # ranges raised to the model's floors (clamp_budget_ranges): as stated and as searched
        **(
            {"sslsearch.clamped": storage.read_bytes(clamped).decode()}
            if storage.exists(clamped)
            else {}
        ),
        "sslsearch.objectives": json.dumps(space.objective_pairs()),
        "sslsearch.study": study_url,
        "sslsearch.versions": json.dumps(
            {"ray": ray.__version__, "optuna": optuna.__version__, "torch": torch.__version__}
        ),
    }


def rebuild_trials(exp_dir: str) -> None:
    """trials.parquet and screens.parquet written again from the trial directories, with the
    metadata a search gives them when the experiment's space file is there."""
    meta = None
    saved = storage.join(exp_dir, SPACE_FILE)
    if storage.exists(saved):
        space = space_from_mapping(yaml.safe_load(storage.read_bytes(saved).decode()), saved)
        url_file = storage.join(exp_dir, STUDY_URL_FILE)
        url = storage.read_bytes(url_file).decode().strip() if storage.exists(url_file) else ""
        meta = _metadata(space, url, exp_dir)
    write_trials(exp_dir, meta)
    write_screens(exp_dir)  # the screened values beside it (none: nothing written)


def finish(
    exp_dir: str, space: SearchSpace, study_url: str
) -> tuple[str, dict[str, int], dict[str, Any] | None]:
    """Write trials.parquet and screens.parquet from the experiment directory, export the
    Pareto outputs and log what the experiment holds (and whether its screen can be trusted)."""
    from sslsearch.report import (
        NoResultsError,
        agreement_warning,
        export_experiment,
        headline,
        screen_agreement,
    )

    path, table = write_trials(exp_dir, _metadata(space, study_url, exp_dir))
    screens = write_screens(exp_dir)
    rows = table.to_pylist()
    counts: dict[str, int] = {}
    for r in rows:
        if is_search_point(r):
            counts[r["status"]] = counts.get(r["status"], 0) + 1
    log.info("%s", headline(rows, screens[1].to_pylist() if screens else []))
    tau, n = screen_agreement(rows)
    if tau is not None:
        log.info("screen rank agreement (Kendall tau, %d fine-tuned points): %.2f", n, tau)
    if agreement_warning(tau):
        log.warning("%s", agreement_warning(tau))
    try:
        pareto = export_experiment(exp_dir)
    except NoResultsError as e:
        log.warning("%s", e)
        pareto = None
    return path, counts, pareto


def run_search(opts: SearchOptions) -> SearchOutcome:
    space, exp_dir = prepare(opts)
    data = None
    clamped: dict[str, Any] = {}
    if opts.address is None:
        data = _check_local_data(space)
        _check_local_gpus(space, opts.num_gpus)
    if not opts.resume:  # a resume reads the experiment's copy of the weights
        check_user_parts(space, data)
        stated = space
        space = clamp_budget_ranges(space, data)  # written to the experiment as sampled
        clamped = {
            f"params.{k}": {"stated": stated.params[k], "searched": v}
            for k, v in space.params.items()
            if v != stated.params.get(k)
        }
    modules = user_modules(space)
    study_url = _study_url(opts, exp_dir, space)
    tune_environment()
    cluster = connect(
        opts.address,
        num_cpus=opts.num_cpus,
        num_gpus=opts.num_gpus,
        dashboard=opts.dashboard,
        dashboard_port=opts.dashboard_port,
        verbose=opts.verbose,
        user_modules=modules,
    )
    interrupted = False
    max_running = 0
    searcher: Any = None
    try:
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
        space = _check_resources(space, cluster)
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
        t0 = time.monotonic()
        text = yaml.safe_dump(space.to_dict(), sort_keys=False)
        if not opts.resume:  # written only once Ray is up: a failed start leaves nothing behind
            storage.makedirs(exp_dir)
            storage.write_text_atomic(storage.join(exp_dir, SPACE_FILE), text)
            storage.write_text_atomic(storage.join(exp_dir, STUDY_URL_FILE), study_url + "\n")
            if clamped:  # the range the user stated, beside the one searched
                storage.write_text_atomic(
                    storage.join(exp_dir, CLAMPED_FILE), json.dumps(clamped, indent=1)
                )
        else:
            if _budget_raised(exp_dir, space):
                storage.write_text_atomic(storage.join(exp_dir, SPACE_FILE), text)
            # temporary files of writers a killed run left (a minute old: none still renaming)
            left = storage.remove_temp_files(exp_dir, older_than_s=60)
            if left:
                log.info("resume: removed %d temporary file(s) a killed run left", len(left))
        from sslsearch.search._progress import ProgressCallback
        from sslsearch.search._searcher import PointSearcher

        runs = stage_weights(space, exp_dir)  # trials read the experiment's copy
        searcher = PointSearcher(runs, exp_dir, study_url)
        searcher.open()
        progress = ProgressCallback(space.budget.num_samples, opts.progress_every_s, searcher.done)
        tuner = _tuner(runs, exp_dir, searcher, progress, opts)
        baseline = _start_baseline(runs, exp_dir)
        reference_model = _start_reference_model(runs, exp_dir)
        # Tune's hint after a Ctrl-C ("resume with Tuner.restore") is not how a search resumes,
        # and its result grid looks for per-trial logs a search does not write
        logging.getLogger("ray.tune.tune").setLevel(logging.ERROR)
        logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
        try:
            baseline = _baseline_before_points(runs, exp_dir, baseline)
            t_fit = time.monotonic()
            tuner.fit()
            # Tune returns normally after a Ctrl-C too: ended by itself, or cut by the time budget
            budget_s = space.budget.time_budget_s
            cut = budget_s is not None and time.monotonic() - t_fit >= budget_s
            interrupted = not searcher.ended_by_itself() and not cut
            if not interrupted:
                _run_references(runs, exp_dir, reference_model)
                _wait_baseline(baseline)
                _confirm_front(runs, exp_dir, opts.confirm_front)
        except KeyboardInterrupt:
            interrupted = True
        max_running = progress.max_running
        log.info(
            "search finished in %.1fs (driver CPU: %.1fs asking points, %.1fs recording them)",
            time.monotonic() - t0,
            searcher.ask_seconds,
            searcher.sync_seconds,
        )
    finally:
        shutdown(cluster)
    storage.remove_temp_files(exp_dir)  # every writer is gone: whatever is left is debris
    if searcher is not None and not interrupted:
        searcher.close()  # jobs that failed for good: their points become errors
    path, counts, pareto = finish(exp_dir, space, study_url)
    rows = [r for r in pq_rows(path) if is_search_point(r)]
    unfinished = space.budget.num_samples - sum(1 for r in rows if r["status"] != UNFINISHED)
    interrupted = interrupted or (unfinished > 0 and space.budget.time_budget_s is None)
    return SearchOutcome(exp_dir, path, counts, pareto, interrupted, cluster, max_running)


def is_search_point(row: dict[str, Any]) -> bool:
    """A point the sampler proposed (one Optuna trial): not the baseline, a lambda = 0
    reference or a re-evaluation of a Pareto point with another seed."""
    return row["role"] == "search" and not row.get("confirm_of")


def pq_rows(path: str) -> list[dict[str, Any]]:
    import io

    import pyarrow.parquet as pq

    return list(pq.read_table(io.BytesIO(storage.read_bytes(path))).to_pylist())


def _start_baseline(space: SearchSpace, exp_dir: str) -> Any:
    """The dense baseline as a Ray task that runs beside the trials (once per experiment)."""
    if not space.reference.baseline:
        return None
    import ray

    from sslsearch.search._trainable import baseline_job
    from sslsearch.trial import BASELINE_ID, RESULT_FILE

    if storage.exists(storage.join(exp_dir, BASELINE_ID, RESULT_FILE)):
        return None  # made by an earlier run of this experiment
    task = ray.remote(baseline_job).options(
        num_cpus=space.resources.cpus, num_gpus=space.resources.gpu, max_retries=2
    )
    return task.remote(space.to_dict(), exp_dir, max(1, int(space.resources.cpus)))


def _baseline_before_points(space: SearchSpace, exp_dir: str, ref: Any) -> Any:
    """When the points distil from the dense baseline, it is trained first (not beside the
    trials): a search without its teacher stops here with one line. Returns what is left to
    wait for."""
    from sslsearch.search._trainable import distill_teacher

    teacher = distill_teacher(space, exp_dir)
    if space.recipe.distill_weight > 0 and teacher is None:
        log.info(
            "distillation: no dense baseline (reference.baseline): each point's SSL model teaches"
        )
    if teacher is None:
        return ref
    log.info("distillation: the points distil from the dense baseline, trained first")
    error = _wait_baseline(ref)
    if not storage.exists(teacher):
        raise UserError(
            f"the points distil from the dense baseline (recipe.distill_weight "
            f"{space.recipe.distill_weight}), but it has no model ({teacher}): "
            f"{error or 'see baseline/result.json'}"
        )
    return None


def distinct_choices(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One pruning choice per distinct (prune_type, prune_way, amount, blocks, min_width_share)
    of ``rows`` (search points, in the order they were asked), each with its ssl_type and the
    ``trial_id`` of its first point: the reference of that choice is ``ref-<trial_id>``, the
    same id on every run of the experiment, so a resume finds it on disk."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        key = pruning_choice(r)
        if key not in out:
            keys = ("ssl_type", *CHOICE_KEYS, "trial_id")
            out[key] = {k: r[k] for k in keys if r.get(k) is not None}
    return list(out.values())


def _start_reference_model(space: SearchSpace, exp_dir: str) -> Any:
    """The references' lambda = 0 model as a Ray task beside the trials (it depends on no
    choice of the search), so that at the end only its points are left to fine-tune, on every
    slot at once, instead of one slot training it while the others wait."""
    if not space.reference.lambda0:
        return None
    import ray

    from sslsearch.search._trainable import reference_model_job

    task = ray.remote(reference_model_job).options(
        num_cpus=space.resources.cpus, num_gpus=space.resources.gpu, max_retries=2
    )
    return task.remote(space.to_dict(), exp_dir, max(1, int(space.resources.cpus)))


def _run_references(space: SearchSpace, exp_dir: str, model_task: Any = None) -> None:
    """lambda = 0 reference points, one per distinct pruning choice of the finished search
    points (at lambda = 0 the SSL model is the same for all: a choice fine-tuned twice would
    only list the same point twice). ``model_task``: the task training their model (waited
    for; if it failed, the first reference task trains it)."""
    if not space.reference.lambda0:
        return
    import ray

    from sslsearch.search._results import collect_trials
    from sslsearch.search._trainable import reference_job

    trained = False
    if model_task is not None:
        log.info("references (lambda = 0): waiting for their model, trained beside the trials")
        try:
            log.info("reference model (lambda = 0): %s", ray.get(model_task))
            trained = True
        except Exception as e:  # the first reference task trains it instead
            log.warning(
                "the reference model task failed: %s", str(e).strip().splitlines()[-1][:300]
            )
    choices = distinct_choices(
        [r for r in collect_trials(exp_dir) if is_search_point(r) and r["status"] == "ok"]
    )
    # One SSL model at lambda = 0 for every choice (reference_job): trained beside the trials,
    # else by the first task before the other choices are fine-tuned from it, in up to
    # budget.max_concurrent tasks at once.
    task = ray.remote(reference_job).options(
        num_cpus=space.resources.cpus, num_gpus=space.resources.gpu, max_retries=2
    )
    threads = max(1, int(space.resources.cpus))
    k = max(1, space.budget.max_concurrent)
    log.info(
        "references (lambda = 0): pruning and fine-tuning %d point(s), one per distinct pruning "
        "choice of the search, %d at a time",
        len(choices),
        min(k, max(1, len(choices))),
    )
    try:
        n = 0
        if not trained and choices:
            n = ray.get(task.remote(space.to_dict(), exp_dir, threads, choices[:1]))
            choices = choices[1:]
        rest = [choices[i::k] for i in range(k)]
        n += sum(ray.get([task.remote(space.to_dict(), exp_dir, threads, c) for c in rest if c]))
        log.info("reference points (lambda = 0): %d", n)
    except Exception as e:  # the search's results stand without them
        log.warning("the reference points failed: %s", str(e).strip().splitlines()[-1][:300])


def confirm_jobs(
    space: SearchSpace, rows: list[dict[str, Any]], seeds: int
) -> list[list[dict[str, Any]]]:
    """The re-evaluations ``--confirm-front seeds`` asks for, grouped by SSL model.

    Every point on a front the export shows (SSL and no-SSL, ``points_to_confirm``) is re-run
    with the training seeds ``space.seed + 1 .. space.seed + seeds``. Points that share their
    SSL settings and seed share one group: one SSL model, trained once, serves them all.
    """
    from sslsearch.report import points_to_confirm

    if seeds <= 0:
        return []
    objectives = space.objective_pairs()
    by_id = {r["trial_id"]: r for r in rows if not r.get("confirm_of")}
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for tid in points_to_confirm(rows, objectives):
        r = by_id[tid]
        cfg = json.loads(r["config"])
        ssl = json.dumps({k: cfg.get(k) for k in ("ssl_type", "ssl_lambda")}, sort_keys=True)
        for k in range(1, seeds + 1):
            seed = space.seed + k
            job = {"trial_id": tid, "role": r["role"], "config": r["config"], "seed": seed}
            groups.setdefault((f"{r['role']}:{ssl}", seed), []).append(job)
    return list(groups.values())


def _confirm_front(space: SearchSpace, exp_dir: str, seeds: int) -> None:
    """Re-evaluate the Pareto points with ``seeds`` more training seeds (Ray tasks, one per SSL
    model and seed); rows with ``confirm_of``, never in the Optuna study nor on a front."""
    if seeds <= 0:
        return
    import ray

    from sslsearch.search._experiment import CONFIRM_DIR
    from sslsearch.search._results import collect_trials
    from sslsearch.search._trainable import confirm_id, confirm_job
    from sslsearch.trial import RESULT_FILE

    def done(job: dict[str, Any]) -> bool:
        pid = confirm_id(job["trial_id"], job["seed"])
        return storage.exists(storage.join(exp_dir, CONFIRM_DIR, pid, RESULT_FILE))

    groups = [
        todo
        for g in confirm_jobs(space, collect_trials(exp_dir), seeds)
        if (todo := [j for j in g if not done(j)])
    ]
    n = sum(len(g) for g in groups)
    log.info("confirming the Pareto points: %d re-evaluations in %d group(s)", n, len(groups))
    task = ray.remote(confirm_job).options(
        num_cpus=space.resources.cpus, num_gpus=space.resources.gpu, max_retries=2
    )
    threads = max(1, int(space.resources.cpus))
    refs = [task.remote(exp_dir, threads, g) for g in groups]
    for ref in refs:
        try:
            ray.get(ref)
        except Exception as e:  # the search's results stand without them
            log.warning("a re-evaluation failed: %s", str(e).strip().splitlines()[-1][:300])


def _wait_baseline(ref: Any) -> str | None:
    """Wait for the dense baseline's task; its error, if it failed."""
    if ref is None:
        return None
    import ray

    try:
        log.info("dense baseline: %s", ray.get(ref))
    except Exception as e:  # the search's results stand without it
        error = str(e).strip().splitlines()[-1][:300]
        log.warning("the dense baseline failed: %s", error)
        return error
    return None


def _check_local_gpus(space: SearchSpace, num_gpus: int | None) -> None:
    """A local Ray instance has the GPUs torch sees (or --num-gpus): refuse before starting."""
    if space.resources.gpu <= 0 or space.resources.cpu_fallback:
        return
    import torch

    gpus = num_gpus if num_gpus is not None else torch.cuda.device_count()
    if gpus == 0:
        raise UserError(
            f"resources.gpu={space.resources.gpu} but this machine has no GPU "
            "(set resources.cpu_fallback: true to run on CPU, or --address a GPU cluster)"
        )


def _check_local_data(space: SearchSpace) -> Any:
    """On one machine the data must be there before anything starts (clusters: per node)."""
    from sslsearch.data import load_datasets

    return load_datasets(space.data)


__all__ = [
    "TRIALS_FILE",
    "SearchOptions",
    "SearchOutcome",
    "collect_trials",
    "distinct_choices",
    "finish",
    "prepare",
    "rebuild_trials",
    "run_search",
]

"""What a search settles before its trials run: the options, the space as checked and clamped,
the experiment directory (new, or the one ``--resume`` continues), the Optuna study's URL and the
experiment's own files. A bad input stops the search here with one line (exit code 2), before
``write_experiment`` writes anything."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from sslsearch import storage
from sslsearch.config import SearchSpace, load_space, space_from_mapping, spaces_dir
from sslsearch.errors import UserError
from sslsearch.search._cluster import Cluster, check_trial_fits
from sslsearch.search._experiment import JOBS_DIR, POINTS_DIR
from sslsearch.search._results import TRIALS_FILE
from sslsearch.search._user import absolute_weights, look_beside
from sslsearch.trial import check_user_parts, clamp_budget_ranges, validate_space

log = logging.getLogger(__name__)
SPACE_FILE = "space.yaml"
CLAMPED_FILE = "clamped_ranges.json"  # budget ranges raised to the model's floors
STUDY_FILE = "optuna.db"
STUDY_URL_FILE = "study_url"  # the Optuna storage URL, kept with the experiment for --resume
DEFAULT_SPACE = spaces_dir() / "default.yaml"  # shipped as package data (sslsearch.config)
BUDGET_KEY = "budget.num_samples"  # the one key --resume may change (raise only)


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


def checked_space(opts: SearchOptions, space: SearchSpace) -> tuple[SearchSpace, dict[str, Any]]:
    """The space as the search samples it: its data and GPUs checked first on one machine, and
    (a first run) the user's parts checked and the budget ranges raised to the model's floors.
    Also returns each raised range as stated and as searched (nothing raised: empty)."""
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
    return space, clamped


def check_resources(space: SearchSpace, cluster: Cluster) -> SearchSpace:
    """A trial's resources against the Ray cluster: on CPU when it has no GPU and the space
    allows it (resources.cpu_fallback), refused (one line) when no node can hold a trial."""
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


def choose_study_url(opts: SearchOptions, exp_dir: str, space: SearchSpace) -> str:
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


def write_experiment(
    opts: SearchOptions, space: SearchSpace, exp_dir: str, study_url: str, clamped: dict[str, Any]
) -> None:
    """The experiment's own files: the space, the study's URL and the raised ranges (a first run),
    or the space again when a resume raised its budget, and the temporary files a killed run left
    removed."""
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

"""``list``, ``search`` and ``export``: the search and what it writes."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from sslsearch.cli._args import print_json
from sslsearch.errors import UserError

log = logging.getLogger("sslsearch")


# ---- list -----------------------------------------------------------------------------------


def add_list(p: argparse.ArgumentParser) -> None:
    """List models, datasets, ssl types and weightings, prune types and prune ways."""
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)


def cmd_list(a: argparse.Namespace) -> int:
    from sslsearch.data import get_dataset_spec, list_datasets
    from sslsearch.models import get_model_spec, list_models
    from sslsearch.pruning import list_prune_types
    from sslsearch.sparsity import SSL_TYPE_GROUPS, describe_criteria
    from sslsearch.vocabulary import SSL_FLOOR_RULES, SSL_STEP_RULES, SSL_WEIGHTINGS

    d = {
        "models": {n: get_model_spec(n).description for n in list_models()},
        "datasets": {n: get_dataset_spec(n).description for n in list_datasets()},
        "ssl_types": dict(SSL_TYPE_GROUPS),
        "ssl_weightings": dict(SSL_WEIGHTINGS),
        "ssl_floor_rules": dict(SSL_FLOOR_RULES),
        "ssl_step_rules": dict(SSL_STEP_RULES),
        "prune_types": list_prune_types(),
        # mean and sum are signed: their descriptions say they are not importance measures
        "prune_ways": describe_criteria(),
    }
    if a.json:
        print_json(d)
        return 0
    for section, items in d.items():
        print(f"{section}:")
        if isinstance(items, dict):
            for k, v in items.items():
                print(f"  {k:14s} {v}")
        else:
            print("  " + ", ".join(items))
    return 0


# ---- search ---------------------------------------------------------------------------------


def add_search(p: argparse.ArgumentParser) -> None:
    """Search SSL lambda and pruning ratio with Ray Tune + Optuna for Pareto fronts."""
    from sslsearch.config import shipped_spaces

    p.add_argument(
        "--space",
        default=None,
        help=f"a shipped space's name ({', '.join(shipped_spaces())}) or a YAML file "
        "(default: default, digits; cifar10_cpu: CIFAR-10 on CPUs)",
    )
    p.add_argument("--name", default=None, help="experiment name (directory under --storage-path)")
    p.add_argument("--storage-path", default=None, help="local dir or URI (s3://...) for results")
    p.add_argument("--resume", action="store_true", help="continue an interrupted experiment")
    p.add_argument("--num-samples", type=int, default=None, help="number of trials")
    p.add_argument("--max-concurrent", type=int, default=None, help="trials at a time")
    p.add_argument(
        "--confirm-front",
        type=int,
        default=0,
        metavar="K",
        help="after the search, re-run every Pareto point with K more training seeds "
        "(SSL training included) and report mean and spread",
    )
    p.add_argument("--sampler", default=None, help="auto | gp | tpe | nsga2 | random")
    p.add_argument("--seed", type=int, default=None, help="sampler seed")
    p.add_argument("--data-root", default=None, help="dataset root on every node")
    p.add_argument("--epochs", type=int, default=None, help="SSL epochs per trial")
    p.add_argument("--finetune-epochs", type=int, default=None)
    p.add_argument("--cpus-per-trial", type=float, default=None)
    p.add_argument("--gpus-per-trial", type=float, default=None, help="a fraction shares a GPU")
    p.add_argument(
        "--early-stopping",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="stop points a finished point beat at the same fine-tune epoch (fine-tuning only)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any key of the space, e.g. --set recipe.lr=0.1 (repeatable)",
    )
    p.add_argument(
        "--address",
        default=None,
        help="join a running Ray cluster (auto or HOST:PORT) instead of starting one",
    )
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance")
    p.add_argument("--no-dashboard", action="store_true", help="start Ray without its dashboard")
    p.add_argument("--dashboard-port", type=int, default=8265)
    p.add_argument(
        "--study-storage",
        default=None,
        help="Optuna RDB URL (default: SQLite optuna.db in the experiment directory)",
    )
    p.add_argument(
        "--progress-every",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="how often to print the table of running trials",
    )
    p.set_defaults(func=cmd_search)


_FLAG_KEYS = {
    "name": "name",
    "storage_path": "storage_path",
    "num_samples": "budget.num_samples",
    "max_concurrent": "budget.max_concurrent",
    "sampler": "sampler.name",
    "seed": "sampler.seed",
    "data_root": "data.root",
    "epochs": "recipe.epochs",
    "finetune_epochs": "recipe.finetune_epochs",
    "cpus_per_trial": "resources.cpus",
    "gpus_per_trial": "resources.gpu",
    "early_stopping": "early_stopping.enabled",
}


def flag_overrides(a: argparse.Namespace) -> dict[str, str]:
    """Space overrides the search flags stand for, each with the flag as the user typed it."""
    out = {}
    for attr, key in _FLAG_KEYS.items():
        value = getattr(a, attr)
        if value is not None:
            flag = "--" + attr.replace("_", "-")
            if isinstance(value, bool):
                flag = flag if value else flag.replace("--", "--no-", 1)
            else:
                flag = f"{flag} {value}"
            out[f"{key}={json.dumps(value)}"] = flag
    return out


def check_space(a: argparse.Namespace) -> None:
    """Load and check the space torch-free (names, types, ranges): a typo costs well under 1 s.

    An error names what the user typed: the flag, the ``--set``, else the space file.
    """
    from sslsearch.config import ConfigError, check_names, load_space, override_for, space_file

    path = space_file(a.space)
    labels = flag_overrides(a)
    overrides = [*labels, *a.set]
    try:
        check_names(load_space(path, overrides))
    except ConfigError as e:
        where = e.where if e.where and e.where != path else override_for(e.key, overrides)
        if where and where.startswith("--set ") and where[len("--set ") :] in labels:
            where = labels[where[len("--set ") :]]
        raise e.located(where or path) from None


def search_options_from_args(a: argparse.Namespace) -> Any:
    from sslsearch.config import space_file
    from sslsearch.search import SearchOptions

    overrides = [*flag_overrides(a), *a.set]
    return SearchOptions(
        space=space_file(a.space),
        overrides=overrides,
        resume=a.resume,
        address=a.address,
        num_cpus=a.num_cpus,
        dashboard=not a.no_dashboard,
        dashboard_port=a.dashboard_port,
        study_storage=a.study_storage,
        verbose=a.verbose,
        progress_every_s=a.progress_every,
        confirm_front=a.confirm_front,
    )


def _progress_to_stdout() -> None:
    progress = logging.getLogger("sslsearch.progress")
    if not any(getattr(h, "_sslsearch", False) for h in progress.handlers):
        h = logging.StreamHandler(sys.stdout)
        h.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
        h._sslsearch = True  # type: ignore[attr-defined]
        progress.addHandler(h)
        progress.propagate = False


def cmd_search(a: argparse.Namespace) -> int:
    if a.num_samples is not None and a.num_samples < 1:
        raise UserError(f"--num-samples must be >= 1, got {a.num_samples}")
    if a.confirm_front < 0:
        raise UserError(f"--confirm-front must be >= 0, got {a.confirm_front}")
    if not a.resume:
        check_space(a)  # before torch and ray are imported
    from sslsearch.search import run_search

    _progress_to_stdout()
    outcome = run_search(search_options_from_args(a))
    counts = ", ".join(f"{v} {k}" for k, v in sorted(outcome.counts.items())) or "no trials"
    print(f"\nexperiment: {outcome.exp_dir}\ntrials: {counts} (see {outcome.trials_path})")
    if outcome.pareto is not None:
        _print_fronts(outcome.pareto)
    else:
        print("no completed trial: no Pareto front")
    if outcome.interrupted:
        print("the search was interrupted; continue it with the same command and --resume")
    return 0


def _print_fronts(pareto: dict[str, Any]) -> None:
    print("\n" + pareto["console"])
    files = ", ".join(pareto["files"].values())
    print(f"\nwritten: {files}")


# ---- export ---------------------------------------------------------------------------------


def add_export(p: argparse.ArgumentParser) -> None:
    """Pareto tables, plots, hypervolume and models from an experiment directory."""
    p.add_argument("experiment", help="experiment directory (local path or URI)")
    p.add_argument(
        "--format",
        default="md,csv,parquet,png,html",
        help="comma-separated: md,csv,parquet,png,html (report.html: interactive, offline)",
    )
    p.add_argument(
        "--objectives",
        default=None,
        help="objectives the fronts follow, e.g. top1,flops,latency_ms or flops:min "
        "(default: the space's, with their modes)",
    )
    p.add_argument(
        "--rescan",
        action="store_true",
        help="rebuild trials.parquet from the trial directories first",
    )
    p.set_defaults(func=cmd_export)


def cmd_export(a: argparse.Namespace) -> int:
    from sslsearch import storage
    from sslsearch.report import export_experiment

    exp = a.experiment
    if not storage.is_uri(exp):
        exp = str(Path(exp).expanduser().absolute())
    if not storage.is_dir(exp):
        raise UserError(f"experiment directory not found: {exp}")
    if a.rescan or not storage.exists(storage.join(exp, "trials.parquet")):
        from sslsearch.search import rebuild_trials

        log.info("rebuilding trials.parquet from the trial directories ...")
        rebuild_trials(exp)
    formats = [f.strip() for f in a.format.split(",") if f.strip()]
    objectives = [o.strip() for o in a.objectives.split(",")] if a.objectives else None
    _print_fronts(export_experiment(exp, formats, objectives))
    return 0

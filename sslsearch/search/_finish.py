"""What a search ends with, and ``rebuild_trials`` writes again: trials.parquet and
screens.parquet from the experiment directory, with the experiment's metadata (its space, the
raised ranges, the objectives, the study, the versions), the Pareto outputs and the lines that
sum the experiment up."""

from __future__ import annotations

import json
import logging
from typing import Any

import yaml

from sslsearch import storage
from sslsearch.config import SearchSpace, space_from_mapping
from sslsearch.search._results import write_screens, write_trials
from sslsearch.search._setup import CLAMPED_FILE, SPACE_FILE, STUDY_URL_FILE

log = logging.getLogger(__name__)


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


def is_search_point(row: dict[str, Any]) -> bool:
    """A point the sampler proposed (one Optuna trial): not the baseline, a lambda = 0
    reference or a re-evaluation of a Pareto point with another seed."""
    return row["role"] == "search" and not row.get("confirm_of")

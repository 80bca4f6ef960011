"""A trial, never importing ray: SSL training -> SSL model (stage 1); SSL model + pruning choice
-> pruned, fine-tuned, measured point (stage 2). ``run_trial`` is one point, ``run_points``
several from one SSL model, ``run_path`` the SSL models of a lambda path and their points."""

from __future__ import annotations

from sslsearch.trial._baseline import (
    BASELINE_ID,
    baseline_config,
    measure_weights_baseline,
    run_baseline,
)
from sslsearch.trial._cache import SSLCache
from sslsearch.trial._distill import Distiller, distill_kl, read_teacher
from sslsearch.trial._early import dominated_reason
from sslsearch.trial._finetune import FinetuneResult, finetune, trained_with
from sslsearch.trial._path import path_steps, run_path, step_dir
from sslsearch.trial._pipeline import (
    TrialResult,
    ensure_ssl_model,
    point_id,
    run_points,
    run_trial,
    stored_point,
    write_point,
)
from sslsearch.trial._point import describe
from sslsearch.trial._run import (
    MODEL_FILE,
    RESULT_FILE,
    STATE_VERSION,
    Report,
    StopCheck,
    step_of,
)
from sslsearch.trial._rungs import Promote, Rungs, rung_epochs, rung_file, rung_of
from sslsearch.trial._screen import (
    SCREEN_FILE,
    SCREEN_KEYS,
    ScreenSpec,
    choose,
    contributions,
    fair_contributions,
    own_hypervolume,
)
from sslsearch.trial._ssl import SSLModel, ssl_model_id, train_ssl_model
from sslsearch.trial._start_weights import load_weights, read_weights, weights_digest
from sslsearch.trial._state import HISTORY_FILE, StateStore, read_history
from sslsearch.trial._train import EvalStats, NonFiniteLoss, evaluate, pick_device
from sslsearch.trial._validate import (
    check_combination,
    check_user_parts,
    clamp_budget_ranges,
    validate_space,
    validate_trial,
)

__all__ = [
    "BASELINE_ID",
    "HISTORY_FILE",
    "MODEL_FILE",
    "RESULT_FILE",
    "SCREEN_FILE",
    "SCREEN_KEYS",
    "STATE_VERSION",
    "Distiller",
    "EvalStats",
    "FinetuneResult",
    "NonFiniteLoss",
    "Promote",
    "Report",
    "Rungs",
    "SSLCache",
    "SSLModel",
    "ScreenSpec",
    "StateStore",
    "StopCheck",
    "TrialResult",
    "baseline_config",
    "check_combination",
    "check_user_parts",
    "choose",
    "clamp_budget_ranges",
    "contributions",
    "describe",
    "distill_kl",
    "dominated_reason",
    "ensure_ssl_model",
    "evaluate",
    "fair_contributions",
    "finetune",
    "load_weights",
    "measure_weights_baseline",
    "own_hypervolume",
    "path_steps",
    "pick_device",
    "point_id",
    "read_history",
    "read_teacher",
    "read_weights",
    "run_baseline",
    "run_path",
    "run_points",
    "run_trial",
    "rung_epochs",
    "rung_file",
    "rung_of",
    "ssl_model_id",
    "step_dir",
    "step_of",
    "stored_point",
    "train_ssl_model",
    "trained_with",
    "validate_space",
    "validate_trial",
    "weights_digest",
    "write_point",
]

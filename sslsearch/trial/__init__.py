"""One trial end to end (never imports ray): train with SSL, prune, fine-tune, measure."""

from __future__ import annotations

from sslsearch.trial._cache import SSLCache
from sslsearch.trial._finetune import FinetuneResult, finetune, trained_with
from sslsearch.trial._pipeline import (
    MODEL_FILE,
    RESULT_FILE,
    STATE_FILE,
    Report,
    TrialResult,
    describe,
    run_trial,
)
from sslsearch.trial._train import EvalStats, NonFiniteLoss, evaluate, pick_device
from sslsearch.trial._validate import check_combination, validate_space, validate_trial

__all__ = [
    "MODEL_FILE",
    "RESULT_FILE",
    "STATE_FILE",
    "EvalStats",
    "FinetuneResult",
    "NonFiniteLoss",
    "Report",
    "SSLCache",
    "TrialResult",
    "check_combination",
    "describe",
    "evaluate",
    "finetune",
    "pick_device",
    "run_trial",
    "trained_with",
    "validate_space",
    "validate_trial",
]

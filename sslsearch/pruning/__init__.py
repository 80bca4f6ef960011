"""Physical pruning: remove filters, channels or residual blocks and return a smaller model,
to a budget of FLOPs, parameters or latency, or to the reference project's ratio; what an SSL
model's zeros would save (``sparsity_report``) and the SSL weightings that need the cost model."""

from __future__ import annotations

from sslsearch.pruning._budget import BUDGET_MISSED
from sslsearch.pruning._latency import LatencySpec
from sslsearch.pruning._onnx import export_onnx
from sslsearch.pruning._penalty_weights import (
    CALIBRATION_BATCHES,
    DEFAULT_SSL_WEIGHTING,
    build_penalty,
    check_weighting,
    penalty_weights,
)
from sslsearch.pruning._pruner import PRUNE_TYPES, floor_share, list_prune_types, prune
from sslsearch.pruning._result import PruneResult
from sslsearch.pruning._sparsity_figures import SparsityMeter, sparsity_report
from sslsearch.pruning._units import round_keep

__all__ = [
    "BUDGET_MISSED",
    "CALIBRATION_BATCHES",
    "DEFAULT_SSL_WEIGHTING",
    "PRUNE_TYPES",
    "LatencySpec",
    "PruneResult",
    "SparsityMeter",
    "build_penalty",
    "check_weighting",
    "export_onnx",
    "floor_share",
    "list_prune_types",
    "penalty_weights",
    "prune",
    "round_keep",
    "sparsity_report",
]

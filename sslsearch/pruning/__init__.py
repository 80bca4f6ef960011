"""Physical pruning: remove filters, channels or residual blocks and return a smaller model,
to a budget of FLOPs, parameters or latency, or to the reference project's ratio."""

from __future__ import annotations

from sslsearch.pruning._latency import LatencySpec
from sslsearch.pruning._pruner import (
    PRUNE_TYPES,
    PruneResult,
    export_onnx,
    list_prune_types,
    prune,
    round_keep,
)

__all__ = [
    "PRUNE_TYPES",
    "LatencySpec",
    "PruneResult",
    "export_onnx",
    "list_prune_types",
    "prune",
    "round_keep",
]

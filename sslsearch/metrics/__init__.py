"""Cost model: FLOPs (fvcore; one fused multiply-add counts as one flop), parameters, size and
measured latency. Pure functions of a model and an input shape."""

from __future__ import annotations

from sslsearch.metrics._cost import (
    Cost,
    Latency,
    count_flops,
    count_params,
    measure_cost,
    measure_latency,
    size_mb,
)
from sslsearch.metrics._measured import measure_objectives, peak_activation_mb

__all__ = [
    "Cost",
    "Latency",
    "count_flops",
    "count_params",
    "measure_cost",
    "measure_latency",
    "measure_objectives",
    "peak_activation_mb",
    "size_mb",
]

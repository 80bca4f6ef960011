"""sslsearch: search Structured Sparsity Learning strength and pruning ratio for Pareto fronts of
accuracy vs FLOPs (multiply-adds, fvcore) and accuracy vs size.

The Python API covers one model at a time; the search itself is ``sslsearch.search`` (the only
package that imports ray and optuna) or ``python launch/search.py``.
"""

from __future__ import annotations

from sslsearch.config import DataConfig, Recipe, SearchSpace, TrialConfig, load_space
from sslsearch.errors import UserError
from sslsearch.metrics import count_flops, count_params, measure_cost, measure_latency, size_mb
from sslsearch.models import create_model, list_models, load_model, save_model
from sslsearch.pruning import PruneResult, export_onnx, prune
from sslsearch.sparsity import group_sparsity, ssl_penalty
from sslsearch.trial import TrialResult, run_trial

__version__ = "0.1.0"

__all__ = [
    "DataConfig",
    "PruneResult",
    "Recipe",
    "SearchSpace",
    "TrialConfig",
    "TrialResult",
    "UserError",
    "count_flops",
    "count_params",
    "create_model",
    "export_onnx",
    "group_sparsity",
    "list_models",
    "load_model",
    "load_space",
    "measure_cost",
    "measure_latency",
    "prune",
    "run_trial",
    "save_model",
    "size_mb",
    "ssl_penalty",
]

"""sslsearch: search Structured Sparsity Learning strength and pruning ratio for Pareto fronts of
accuracy vs FLOPs (multiply-adds, fvcore) and accuracy vs size.

The Python API covers one model at a time; the search itself is ``sslsearch.search`` (the only
package that imports ray and optuna) or ``python launch/search.py``.

Names are imported on first use, so ``import sslsearch`` (and the command line's argument
parsing and config checks) does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the subpackage that defines it
_EXPORTS = {
    "DataConfig": "sslsearch.config",
    "Recipe": "sslsearch.config",
    "SearchSpace": "sslsearch.config",
    "TrialConfig": "sslsearch.config",
    "load_space": "sslsearch.config",
    "UserError": "sslsearch.errors",
    "count_flops": "sslsearch.metrics",
    "count_params": "sslsearch.metrics",
    "measure_cost": "sslsearch.metrics",
    "measure_latency": "sslsearch.metrics",
    "size_mb": "sslsearch.metrics",
    "create_model": "sslsearch.models",
    "list_models": "sslsearch.models",
    "load_model": "sslsearch.models",
    "save_model": "sslsearch.models",
    "PruneResult": "sslsearch.pruning",
    "export_onnx": "sslsearch.pruning",
    "prune": "sslsearch.pruning",
    "build_penalty": "sslsearch.pruning",
    "sparsity_report": "sslsearch.pruning",
    "ssl_penalty": "sslsearch.sparsity",
    "FinetuneResult": "sslsearch.trial",
    "TrialResult": "sslsearch.trial",
    "finetune": "sslsearch.trial",
    "run_trial": "sslsearch.trial",
}

__all__ = [
    "DataConfig",
    "FinetuneResult",
    "PruneResult",
    "Recipe",
    "SearchSpace",
    "TrialConfig",
    "TrialResult",
    "UserError",
    "build_penalty",
    "count_flops",
    "count_params",
    "create_model",
    "export_onnx",
    "finetune",
    "list_models",
    "load_model",
    "load_space",
    "measure_cost",
    "measure_latency",
    "prune",
    "run_trial",
    "save_model",
    "size_mb",
    "sparsity_report",
    "ssl_penalty",
]

if TYPE_CHECKING:
    from sslsearch.config import DataConfig, Recipe, SearchSpace, TrialConfig, load_space
    from sslsearch.errors import UserError
    from sslsearch.metrics import count_flops, count_params, measure_cost, measure_latency, size_mb
    from sslsearch.models import create_model, list_models, load_model, save_model
    from sslsearch.pruning import PruneResult, build_penalty, export_onnx, prune, sparsity_report
    from sslsearch.sparsity import ssl_penalty
    from sslsearch.trial import FinetuneResult, TrialResult, finetune, run_trial


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sslsearch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # next access skips this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

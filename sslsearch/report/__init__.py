"""Results out: trial tables, Pareto fronts, hypervolume, Markdown/CSV/Parquet/PNG exports.

Depends only on config, numpy, pyarrow and matplotlib (never on torch, ray or optuna).
"""

from __future__ import annotations

from sslsearch.report._export import (
    FORMATS,
    Front,
    NoResultsError,
    compute_front,
    export_experiment,
    read_trials,
)
from sslsearch.report._pareto import (
    hypervolume,
    non_dominated_mask,
    pareto_front,
    to_minimization,
)
from sslsearch.report._table import SEED_COLUMNS, markdown_table, seed_row

__all__ = [
    "FORMATS",
    "SEED_COLUMNS",
    "Front",
    "NoResultsError",
    "compute_front",
    "export_experiment",
    "hypervolume",
    "markdown_table",
    "non_dominated_mask",
    "pareto_front",
    "read_trials",
    "seed_row",
    "to_minimization",
]

"""Results out: trial tables, Pareto fronts (SSL and no-SSL), the dense baseline, hypervolume,
Markdown/CSV/Parquet/PNG exports and an interactive report.html.

Depends only on config, numpy, pyarrow, matplotlib and plotly (never on torch, ray or optuna).
"""

from __future__ import annotations

from sslsearch.report._arrow import read_parquet, read_rows
from sslsearch.report._export import (
    FORMATS,
    NoResultsError,
    export_experiment,
    read_screens,
    read_trials,
    resolve_objectives,
)
from sslsearch.report._fronts import (
    Front,
    compute_front,
    front_specs,
    points_to_confirm,
    reference_point,
    with_seed_means,
)
from sslsearch.report._pareto import (
    dominates,
    hypervolume,
    minimization_signs,
    non_dominated_mask,
    pareto_front,
    to_minimization,
)
from sslsearch.report._rows import ROLES, Baseline, baseline_of, derived, objective_modes
from sslsearch.report._schema import (
    OBJECTIVE_DEFS_KEY,
    pareto_columns,
    reserved_columns,
    trial_columns,
)
from sslsearch.report._screen_agreement import (
    AGREEMENT_FLOOR,
    agreement_warning,
    headline,
    kendall_tau,
    screen_agreement,
    trials_cpu_seconds,
)
from sslsearch.report._summary import Summary, summarize
from sslsearch.report._table import SEED_COLUMNS, front_table, markdown_table, seed_row

__all__ = [
    "AGREEMENT_FLOOR",
    "FORMATS",
    "OBJECTIVE_DEFS_KEY",
    "ROLES",
    "SEED_COLUMNS",
    "Baseline",
    "Front",
    "NoResultsError",
    "Summary",
    "agreement_warning",
    "baseline_of",
    "compute_front",
    "derived",
    "dominates",
    "export_experiment",
    "front_specs",
    "front_table",
    "headline",
    "hypervolume",
    "kendall_tau",
    "markdown_table",
    "minimization_signs",
    "non_dominated_mask",
    "objective_modes",
    "pareto_columns",
    "pareto_front",
    "points_to_confirm",
    "read_parquet",
    "read_rows",
    "read_screens",
    "read_trials",
    "reference_point",
    "reserved_columns",
    "resolve_objectives",
    "screen_agreement",
    "seed_row",
    "summarize",
    "to_minimization",
    "trial_columns",
    "trials_cpu_seconds",
    "with_seed_means",
]

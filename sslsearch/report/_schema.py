"""The results schema: every column of trials.parquet and pareto.* (and so pareto.csv) with its
Arrow type, written once. An objective's columns (its value, ``test_<name>`` for an accuracy,
``<name>_before`` on the unpruned model) come from its definition (``sslsearch.config.BUILTIN``
and the experiment's own objectives), never from a list of their own."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from sslsearch.config import BUILTIN, ObjectiveDef

Column = tuple[str, pa.DataType]
OBJECTIVE_DEFS_KEY = "sslsearch.objective_defs"  # trials.parquet metadata: the definitions


def _arrow(d: ObjectiveDef) -> pa.DataType:
    return pa.int64() if d.column_type == "int64" else pa.float64()


def _accuracy_columns(defs: Sequence[ObjectiveDef] = tuple(BUILTIN.values())) -> list[Column]:
    acc = [d for d in defs if d.reference == "percent"]
    return [(d.name, _arrow(d)) for d in acc] + [(f"test_{d.name}", _arrow(d)) for d in acc]


def _cost_columns(defs: Sequence[ObjectiveDef] = tuple(BUILTIN.values())) -> list[Column]:
    return [(d.name, _arrow(d)) for d in defs if d.reference != "percent"]


def _before_columns(defs: Sequence[ObjectiveDef] = tuple(BUILTIN.values())) -> list[Column]:
    return [(d.before, _arrow(d)) for d in defs if d.before]


_TRIAL: list[Column] = [
    ("trial_id", pa.string()),
    ("trial_dir", pa.string()),
    ("status", pa.string()),  # ok | budget_missed | failed | stopped | error | unfinished
    ("error", pa.string()),
    # what stopped a `stopped` point: early_stopping (during its fine-tune) or multi_fidelity
    # (its SSL model, at a rung: never fine-tuned)
    ("stopped_by", pa.string()),
    ("ssl_model_id", pa.string()),  # the SSL model the point was pruned from (null: baseline)
    ("role", pa.string()),  # search | reference (lambda = 0) | baseline (dense, unpruned)
    ("confirm_of", pa.string()),  # trial_id of the Pareto point this row re-evaluates
    ("arch", pa.string()),
    ("dataset", pa.string()),
    ("image_size", pa.int64()),
    ("ssl_type", pa.string()),
    ("ssl_lambda", pa.float64()),
    ("ssl_weighting", pa.string()),
    ("ssl_floor", pa.string()),
    ("ssl_step", pa.string()),
    ("prune_type", pa.string()),
    ("prune_way", pa.string()),
    ("ratio", pa.float64()),
    ("blocks", pa.int64()),
    ("flops_budget", pa.float64()),
    ("params_budget", pa.float64()),
    ("latency_budget", pa.float64()),
    ("min_width_share", pa.float64()),
    ("seed", pa.int64()),
    ("epochs", pa.int64()),
    ("finetune_epochs", pa.int64()),
    ("weights", pa.string()),  # the starting weights SSL training read (null: from scratch)
    ("distill_weight", pa.float64()),  # of the teacher's outputs in the fine-tune (0: off)
    ("distill_temperature", pa.float64()),
    ("distilled_from", pa.string()),  # baseline | ssl_model | a teacher file (null: not distilled)
    *_accuracy_columns(),
    *_cost_columns(),
    ("latency_batch_size", pa.int64()),
    ("latency_device", pa.string()),
    ("latency_threads", pa.int64()),
    *_before_columns(),
    ("actual_ratio", pa.float64()),
    ("budget_achieved", pa.float64()),
    ("budget_note", pa.string()),
    ("at_floor", pa.string()),
    ("groups_total", pa.int64()),
    ("groups_removed", pa.int64()),
    ("removed_blocks", pa.string()),
    ("ssl_top1", pa.float64()),
    ("ssl_test_top1", pa.float64()),
    ("pruned_top1", pa.float64()),
    # the screen (pruned + BN re-estimated, no fine-tune) of the point's SSL model: val top-1
    # at the point's value (null: the search did not screen), and at how many values it was
    # screened (0: not screened)
    ("screen_top1", pa.float64()),
    ("screen_candidates", pa.int64()),
    # the SSL model's sparsity (sslsearch.sparsity_report): exact zeros, what the pruner could
    # remove at no change of the function, layers the proximal step held at their floor
    # (comma-separated), each layer's narrowest width (JSON)
    ("exact_zero_share", pa.float64()),
    ("removable_flops_share", pa.float64()),
    ("removable_params_share", pa.float64()),
    ("ssl_at_floor", pa.string()),
    ("narrowest_width", pa.string()),
    # False: this point's run trained its SSL model (the first point of the job that trained
    # it); True: reused (a later point of that job, or an SSL model found in the store)
    ("ssl_reused", pa.bool_()),
    # the step of its job's lambda path the SSL model ends (economy.lambda_path; 0: the first,
    # trained as any SSL model; null: the search has no path)
    ("path_step", pa.int64()),
    ("train_seconds", pa.float64()),
    ("trial_seconds", pa.float64()),
    # CPU time of the point's job (all its threads) when the point ended: its SSL training,
    # screens and the points before it included (a lambda path's earlier steps too); counted
    # across a resume
    ("cpu_seconds", pa.float64()),
    ("images_per_second", pa.float64()),
    ("device", pa.string()),
    ("gpu_ids", pa.string()),
    ("node_ip", pa.string()),
    ("node_id", pa.string()),
    ("started_at", pa.float64()),
    ("finished_at", pa.float64()),
    ("threads", pa.int64()),
    ("last_epoch", pa.int64()),
    ("model_path", pa.string()),
    ("config", pa.string()),
]


# what pareto.* adds to a point's columns (derived against the baseline, or by --confirm-front)
_PARETO_ONLY: list[Column] = [
    ("front", pa.string()),
    ("top1_drop", pa.float64()),  # points: baseline top1 - top1
    ("flops_reduction", pa.float64()),  # x: dense FLOPs / FLOPs
    ("params_reduction", pa.float64()),
    ("speedup", pa.float64()),  # x: baseline latency / latency (same batch, device, threads)
    ("n_seeds", pa.int64()),  # with --confirm-front: the point's re-runs (not the selected run)
    ("identical_points", pa.int64()),  # points this row stands for (identical rows: one line)
    ("top1_mean", pa.float64()),
    ("top1_std", pa.float64()),
    ("test_top1_mean", pa.float64()),
    ("on_mean_front", pa.bool_()),
]
_OBJECTIVES = object()  # where a table's objective columns go in the pareto order
# pareto.*: which of a point's columns, in order (their types are the trial columns')
_PARETO_ORDER: list[object] = [
    "front",
    "role",  # search (SSL), reference (no-SSL, lambda = 0), baseline (dense)
    "trial_id",
    "ssl_model_id",
    "seed",
    "arch",
    "dataset",
    "ssl_type",
    "ssl_lambda",
    "prune_type",
    "prune_way",
    "flops_budget",
    "params_budget",
    "latency_budget",
    "ratio",
    "blocks",
    "actual_ratio",
    "budget_achieved",
    "at_floor",
    "distilled_from",  # the fine-tune's teacher (null: not distilled)
    _OBJECTIVES,
    "top1_drop",
    "flops_reduction",
    "params_reduction",
    "speedup",
    "n_seeds",
    "identical_points",
    "top1_mean",
    "top1_std",
    "test_top1_mean",
    "on_mean_front",
    "model_path",
]


def _user(defs: Sequence[ObjectiveDef]) -> list[ObjectiveDef]:
    return [d for d in defs if d.name not in BUILTIN]


def trial_columns(objectives: Sequence[ObjectiveDef] = ()) -> list[Column]:
    """trials.parquet's columns; ``objectives``: the experiment's (a user's adds its columns)."""
    user = _user(objectives)
    return [*_TRIAL, *_accuracy_columns(user), *_cost_columns(user), *_before_columns(user)]


def pareto_columns(objectives: Sequence[ObjectiveDef] = ()) -> list[Column]:
    """pareto.parquet's and pareto.csv's columns, in order."""
    user = _user(objectives)
    every = dict(trial_columns(objectives)) | dict(_PARETO_ONLY)
    out: list[Column] = []
    for name in _PARETO_ORDER:
        if name is _OBJECTIVES:
            out += [c for c in _accuracy_columns() if c[0] != "test_top5"]
            out += _cost_columns()
            out += [
                ("latency_batch_size", pa.int64()),
                ("latency_device", pa.string()),
                ("latency_threads", pa.int64()),
            ]
            out += _before_columns()
            out += [*_accuracy_columns(user), *_cost_columns(user), *_before_columns(user)]
        else:
            out.append((str(name), every[str(name)]))
    return out


def reserved_columns() -> set[str]:
    """Names a user's objective cannot take: every column the schema already has."""
    return {n for n, _ in trial_columns()} | {n for n, _ in _PARETO_ONLY}

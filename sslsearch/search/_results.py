"""trials.parquet: one row per point, built from what each trial itself wrote.

A Tune trial is one SSL model and its points (``params.json``'s ``points``). A finished point's
metrics come from ``points/<id>/result.json``, written by the worker as the point finished, not
from the driver's experiment snapshot or the Optuna DB, which can be stale after a driver crash.
Points without a result are listed with the reason: the error Tune recorded (``error.txt``) or
that they never finished. Early-stopped points are ``stopped``, with their exact costs.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sslsearch import storage
from sslsearch.config import AMOUNT_KEYS, PRUNING_KEYS
from sslsearch.report._arrow import typed_table
from sslsearch.search._trainable import CONFIRM_DIR, POINTS_DIR, REFERENCE_DIR
from sslsearch.trial import BASELINE_ID, MODEL_FILE, RESULT_FILE, point_id

TRIALS_FILE = "trials.parquet"
_TRIAL_DIR = re.compile(r"^sslsearch_trial_(?P<id>[0-9a-f]+)_")

COLUMNS: list[tuple[str, pa.DataType]] = [
    ("trial_id", pa.string()),
    ("trial_dir", pa.string()),
    ("status", pa.string()),  # ok | failed | error | stopped
    ("error", pa.string()),
    ("ssl_model_id", pa.string()),  # the SSL model the point was pruned from (null: baseline)
    ("role", pa.string()),  # search | reference (lambda = 0) | baseline (dense, unpruned)
    ("confirm_of", pa.string()),  # trial_id of the Pareto point this row re-evaluates
    ("arch", pa.string()),
    ("dataset", pa.string()),
    ("image_size", pa.int64()),
    ("ssl_type", pa.string()),
    ("ssl_lambda", pa.float64()),
    ("ssl_weighting", pa.string()),
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
    ("top1", pa.float64()),
    ("top5", pa.float64()),
    ("test_top1", pa.float64()),
    ("test_top5", pa.float64()),
    ("flops", pa.int64()),
    ("params", pa.int64()),
    ("size_mb", pa.float64()),
    ("latency_ms", pa.float64()),
    ("latency_batch_size", pa.int64()),
    ("latency_device", pa.string()),
    ("latency_threads", pa.int64()),
    ("flops_before", pa.int64()),
    ("params_before", pa.int64()),
    ("size_mb_before", pa.float64()),
    ("actual_ratio", pa.float64()),
    ("budget_achieved", pa.float64()),
    ("budget_note", pa.string()),
    ("at_floor", pa.string()),
    ("groups_total", pa.int64()),
    ("groups_removed", pa.int64()),
    ("removed_blocks", pa.string()),
    ("ssl_top1", pa.float64()),
    ("pruned_top1", pa.float64()),
    # the SSL model's sparsity (sslsearch.sparsity_report): exact zeros, what the pruner could
    # remove at no change of the function, layers the proximal step held at their floor
    # (comma-separated), each layer's narrowest width (JSON)
    ("exact_zero_share", pa.float64()),
    ("removable_flops_share", pa.float64()),
    ("removable_params_share", pa.float64()),
    ("ssl_at_floor", pa.string()),
    ("narrowest_width", pa.string()),
    ("ssl_cached", pa.bool_()),
    ("train_seconds", pa.float64()),
    ("trial_seconds", pa.float64()),
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
SCHEMA = pa.schema(COLUMNS)


def _read_json(fs: pafs.FileSystem, path: str) -> Any:
    with fs.open_input_stream(path) as f:
        return json.loads(f.read().decode())


def _last_line(fs: pafs.FileSystem, path: str) -> str | None:
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        text = f.read().decode(errors="replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # the exception line is the last non-empty line of the last traceback
    return lines[-1][:500] if lines else "error"


def _progress(
    fs: pafs.FileSystem, trial_path: str
) -> tuple[dict[str, Any], int | None, str | None]:
    """Params, last epoch and Tune trial id from Tune's per-trial logs (best effort)."""
    params: dict[str, Any] = {}
    p = f"{trial_path}/params.json"
    if fs.get_file_info(p).type == pafs.FileType.File:
        try:
            params = dict(_read_json(fs, p))
        except (ValueError, TypeError):
            params = {}
    last, trial_id = None, None
    r = f"{trial_path}/result.json"
    if fs.get_file_info(r).type == pafs.FileType.File:
        with fs.open_input_stream(r) as f:
            for line in f.read().decode(errors="replace").splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and "global_epoch" in row:
                    last = int(row["global_epoch"])
                    trial_id = row.get("tune_trial_id", trial_id)
    return params, last, trial_id


def _results_under(exp_dir: str, dirname: str) -> dict[str, dict[str, Any]]:
    """``<dirname>/<id>/result.json`` of every id that has a readable one, by id."""
    out: dict[str, dict[str, Any]] = {}
    base = storage.join(exp_dir, dirname)
    if not storage.exists(base):
        return out
    for name in sorted(storage.listdir(base)):
        path = storage.join(base, name, RESULT_FILE)
        try:
            out[name] = json.loads(storage.read_bytes(path).decode())
        except (OSError, ValueError):
            continue
    return out


def collect_trials(
    exp_dir: str, known: dict[str, dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """One dict per point of every trial directory, keyed by the SCHEMA's columns.

    ``known``: point id -> parameters from the Optuna study, for a trial directory Tune left
    without its params.json (a driver killed as the trial started): its rows get them.
    """
    fs, root = storage.resolve(exp_dir)
    results = _results_under(exp_dir, POINTS_DIR)
    rows = []
    for name in storage.listdir(exp_dir):
        m = _TRIAL_DIR.match(name)
        if not m:
            continue
        trial_path = f"{root}/{name}"
        params, last, logged_id = _progress(fs, trial_path)
        tune_id = logged_id or m.group("id")
        points = params.get("points") or [params]
        if not params and known:
            found: list[dict[str, Any]] = []
            while point_id(tune_id, len(found)) in known:
                found.append(known[point_id(tune_id, len(found))])
            points = found or points
        err = _last_line(fs, f"{trial_path}/error.txt")
        for i, p in enumerate(points):
            row: dict[str, Any] = dict.fromkeys(SCHEMA.names)
            row["trial_id"] = point_id(tune_id, i)
            row["trial_dir"] = name
            row["role"] = "search"
            for k in ("ssl_type", "ssl_lambda", "prune_type", "prune_way", *PRUNING_KEYS):
                row[k] = p.get(k)
            result = results.get(row["trial_id"])
            if result is not None:
                for k in SCHEMA.names:
                    if k in result:
                        row[k] = result[k]
                row["trial_id"] = point_id(tune_id, i)
                row["status"] = result.get("status", "ok")
                row["last_epoch"] = result.get("global_epoch", last)
                model = f"{POINTS_DIR}/{row['trial_id']}/{MODEL_FILE}"
                if storage.exists(storage.join(exp_dir, model)):
                    row["model_path"] = model
            else:
                row["status"] = "error" if err else "stopped"
                row["error"] = err or "stopped before its final result (interrupted)"
                row["last_epoch"] = last
            if row["blocks"] is not None and int(row["blocks"]) < 0:
                row["blocks"] = None
            for k in AMOUNT_KEYS:  # NaN in a result: not used by this point
                if isinstance(row.get(k), float) and row[k] != row[k]:
                    row[k] = None
            rows.append(row)
    rows.sort(key=lambda r: (r["trial_dir"], r["trial_id"]))
    rows += _side_rows(exp_dir, REFERENCE_DIR, "reference")
    rows += _side_rows(exp_dir, CONFIRM_DIR, None)  # role (search | reference) in the result
    baseline = storage.join(exp_dir, BASELINE_ID, RESULT_FILE)
    if storage.exists(baseline):
        result = json.loads(storage.read_bytes(baseline).decode())
        row = _result_row(exp_dir, result, BASELINE_ID, "baseline", f"{BASELINE_ID}/{MODEL_FILE}")
        row["ssl_model_id"] = None
        rows.append(row)
    return rows


def _result_row(
    exp_dir: str, result: dict[str, Any], trial_id: str, role: str, model: str
) -> dict[str, Any]:
    """The row of a point run beside the search (or the baseline) from its result.json;
    ``model``: where its model file would be, relative to the experiment."""
    row = {k: result.get(k) for k in SCHEMA.names}
    row.update(trial_id=trial_id, role=role)
    row["last_epoch"] = result.get("global_epoch")
    if storage.exists(storage.join(exp_dir, model)):
        row["model_path"] = model
    if row["blocks"] is not None and int(row["blocks"]) < 0:
        row["blocks"] = None
    return row


def _side_rows(exp_dir: str, dirname: str, role: str | None) -> list[dict[str, Any]]:
    """Rows of the points run beside the search: ``<dirname>/<id>/result.json`` each."""
    return [
        _result_row(
            exp_dir, r, name, role or r.get("role") or "search", f"{dirname}/{name}/{MODEL_FILE}"
        )
        for name, r in _results_under(exp_dir, dirname).items()
    ]


def trials_table(rows: list[dict[str, Any]], metadata: dict[str, str] | None = None) -> pa.Table:
    return typed_table(rows, COLUMNS, metadata)


def write_trials(
    exp_dir: str,
    metadata: dict[str, str] | None = None,
    known: dict[str, dict[str, Any]] | None = None,
) -> tuple[str, pa.Table]:
    """Collect and write ``trials.parquet`` atomically; returns its path and the table."""
    table = trials_table(collect_trials(exp_dir, known), metadata)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    path = storage.join(exp_dir, TRIALS_FILE)
    storage.write_bytes_atomic(path, buf.getvalue())
    return path, table

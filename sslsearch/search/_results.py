"""trials.parquet: one row per point, built from the experiment directory alone.

Every point asked is in its job (``jobs/<id>/job.json``, with its parameters); a finished
point's metrics come from ``points/<id>/result.json``, written by the worker as the point
finished (or, for a job whose Tune trial failed for good, an ``error`` result written by the
driver at the search's end). A point without a result is ``unfinished``, with its job's error
when its last run raised. Points with a result but in no job (a worker recorded them itself)
are rows too. Nothing is read from Ray Tune's files or the Optuna study.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sslsearch import storage
from sslsearch.config import (
    AMOUNT_KEYS,
    PRUNING_KEYS,
    ObjectiveDef,
    defs_to_json,
    space_from_mapping,
)
from sslsearch.pruning import BUDGET_MISSED
from sslsearch.report._arrow import typed_table
from sslsearch.report._schema import OBJECTIVE_DEFS_KEY, trial_columns
from sslsearch.search._experiment import (
    CONFIRM_DIR,
    JOBS_DIR,
    POINTS_DIR,
    REFERENCE_DIR,
    job_dir,
    read_error,
    read_jobs,
)
from sslsearch.trial import (
    BASELINE_ID,
    MODEL_FILE,
    RESULT_FILE,
    SCREEN_FILE,
    read_history,
    rung_of,
    step_of,
)

log = logging.getLogger(__name__)
TRIALS_FILE = "trials.parquet"
SCREENS_FILE = "screens.parquet"
UNFINISHED = "unfinished"  # the status of a point without a final result


def _names(objectives: Sequence[ObjectiveDef]) -> list[str]:
    return [n for n, _ in trial_columns(objectives)]


def experiment_objectives(metadata: Mapping[str, str] | None) -> list[ObjectiveDef]:
    """The objectives of the space saved in trials.parquet's metadata (``sslsearch.space``)."""
    text = (metadata or {}).get("sslsearch.space")
    if not text:
        return []
    return space_from_mapping(json.loads(text)).objective_defs()


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


def collect_trials(exp_dir: str, objectives: Sequence[ObjectiveDef] = ()) -> list[dict[str, Any]]:
    """One dict per point of the experiment, keyed by the results schema's columns (with those
    of the experiment's own ``objectives``): the search's points in the order they were asked,
    then the points beside it and the baseline."""
    names = _names(objectives)
    results = _results_under(exp_dir, POINTS_DIR)
    rows = []
    for job in read_jobs(exp_dir):
        unfinished: tuple[str, int | None] | None = None  # its job's error and last epoch
        for p in job.points:
            pid = str(p["trial_id"])
            result = results.pop(pid, None)
            row = _point_row(exp_dir, job.id, pid, p["params"], result, names)
            if result is None:
                if unfinished is None:
                    epochs = [h.get("global_epoch") for h in read_history(job_dir(exp_dir, job.id))]
                    unfinished = (
                        read_error(exp_dir, job.id) or "never finished (interrupted)",
                        max((int(g) for g in epochs if g is not None), default=None),
                    )
                row["status"] = UNFINISHED
                row["error"], row["last_epoch"] = unfinished
            rows.append(row)
    for pid, result in sorted(results.items()):  # recorded by a worker, not asked
        job_id = str(result.get("job_id") or pid.rsplit("-", 1)[0])
        rows.append(_point_row(exp_dir, job_id, pid, {}, result, names))
    rows += _side_rows(exp_dir, REFERENCE_DIR, "reference", names)
    rows += _side_rows(exp_dir, CONFIRM_DIR, None, names)  # role (search | reference) in the result
    baseline = storage.join(exp_dir, BASELINE_ID, RESULT_FILE)
    if storage.exists(baseline):
        result = json.loads(storage.read_bytes(baseline).decode())
        row = _result_row(
            exp_dir, result, BASELINE_ID, "baseline", f"{BASELINE_ID}/{MODEL_FILE}", names
        )
        row["ssl_model_id"] = None
        rows.append(row)
    return rows


def _point_row(
    exp_dir: str,
    job_id: str,
    pid: str,
    params: dict[str, Any],
    result: dict[str, Any] | None,
    names: list[str] | None = None,
) -> dict[str, Any]:
    """A search point's row: its parameters, then its result over them (when it has one)."""
    names = names or _names(())
    row: dict[str, Any] = dict.fromkeys(names)
    for k in ("ssl_type", "ssl_lambda", "prune_type", "prune_way", *PRUNING_KEYS):
        row[k] = params.get(k)
    if result is not None:
        for k in names:
            if k in result:
                row[k] = result[k]
        row["status"] = result.get("status", "ok")
        row["last_epoch"] = result.get("global_epoch")
        model = f"{POINTS_DIR}/{pid}/{MODEL_FILE}"
        if row["status"] in ("ok", BUDGET_MISSED) and storage.exists(storage.join(exp_dir, model)):
            row["model_path"] = model
    row.update(trial_id=pid, trial_dir=f"{JOBS_DIR}/{job_id}", role="search")
    if row["blocks"] is not None and int(row["blocks"]) < 0:
        row["blocks"] = None
    for k in AMOUNT_KEYS:  # NaN in a result: not used by this point
        if isinstance(row.get(k), float) and row[k] != row[k]:
            row[k] = None
    return row


def _result_row(
    exp_dir: str,
    result: dict[str, Any],
    trial_id: str,
    role: str,
    model: str,
    names: list[str] | None = None,
) -> dict[str, Any]:
    """The row of a point run beside the search (or the baseline) from its result.json;
    ``model``: where its model file would be, relative to the experiment."""
    row = {k: result.get(k) for k in names or _names(())}
    row.update(trial_id=trial_id, role=role)
    row["last_epoch"] = result.get("global_epoch")
    if storage.exists(storage.join(exp_dir, model)):
        row["model_path"] = model
    if row["blocks"] is not None and int(row["blocks"]) < 0:
        row["blocks"] = None
    return row


def _side_rows(
    exp_dir: str, dirname: str, role: str | None, names: list[str]
) -> list[dict[str, Any]]:
    """Rows of the points run beside the search: ``<dirname>/<id>/result.json`` each."""
    return [
        _result_row(
            exp_dir,
            r,
            name,
            role or r.get("role") or "search",
            f"{dirname}/{name}/{MODEL_FILE}",
            names,
        )
        for name, r in _results_under(exp_dir, dirname).items()
    ]


def trials_table(
    rows: list[dict[str, Any]],
    metadata: dict[str, str] | None = None,
    objectives: Sequence[ObjectiveDef] = (),
) -> pa.Table:
    return typed_table(rows, trial_columns(objectives), metadata)


def write_trials(exp_dir: str, metadata: dict[str, str] | None = None) -> tuple[str, pa.Table]:
    """Collect and write ``trials.parquet`` atomically; returns its path and the table. The
    metadata's space names the experiment's objectives; their definitions are saved beside it
    (``sslsearch.objective_defs``: the report reads a user's objective from there)."""
    objectives = experiment_objectives(metadata)
    if objectives:
        metadata = {**(metadata or {}), OBJECTIVE_DEFS_KEY: defs_to_json(objectives)}
    table = trials_table(collect_trials(exp_dir, objectives), metadata, objectives)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    path = storage.join(exp_dir, TRIALS_FILE)
    storage.write_bytes_atomic(path, buf.getvalue())
    return path, table


# ---- screens: each SSL model's pruning curve before fine-tuning -------------------------------

SCREEN_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("job_id", pa.string()),
    ("ssl_model_id", pa.string()),
    ("ssl_lambda", pa.float64()),
    ("ssl_type", pa.string()),
    ("key", pa.string()),  # what was screened over: flops_budget, params_budget, ratio, ...
    ("value", pa.float64()),
    ("top1", pa.float64()),  # validation top-1 right after pruning + BN re-estimation
    ("flops", pa.int64()),
    ("params", pa.int64()),
    ("size_mb", pa.float64()),
    ("flops_before", pa.int64()),
    ("params_before", pa.int64()),
    ("size_mb_before", pa.float64()),
    ("chosen", pa.bool_()),  # fine-tuned, as point point_id
    ("point_id", pa.string()),
    ("rung", pa.int64()),  # multi-fidelity rung of the screen (null: after full SSL training)
    ("status", pa.string()),  # ok | stopped (the SSL model was stopped at this rung)
    ("epochs_trained", pa.int64()),  # SSL epochs the screened model had
    ("steps", pa.int64()),  # recovery steps before each value was measured (economy.screen_steps)
    ("seconds", pa.float64()),  # the whole screen's wall time
]


def _screen_files(exp_dir: str, job_id: str) -> list[tuple[str, int | None]]:
    """A job's screen files with the rung their name gives: earlier rungs, then the last; then
    those of its lambda path's later steps (``step<s>/``), in order."""
    d = job_dir(exp_dir, job_id)
    names = storage.listdir(d)
    rungs = sorted((r, n) for n in names if (r := rung_of(n)) is not None)
    out: list[tuple[str, int | None]] = [(storage.join(d, n), r) for r, n in rungs]
    if SCREEN_FILE in names:
        out.append((storage.join(d, SCREEN_FILE), None))
    for _, n in sorted((s, n) for n in names if (s := step_of(n)) is not None):
        if storage.exists(path := storage.join(d, n, SCREEN_FILE)):
            out.append((path, None))
    return out


def screen_rows(screen: dict[str, Any], rung: int | None = None) -> list[dict[str, Any]]:
    """The rows of one screen file (one per screened value), keyed by SCREEN_COLUMNS;
    ``rung``: the rung its file name gives, when the file does not say."""
    head = {k: screen.get(k) for k in ("job_id", "ssl_model_id", "ssl_lambda", "ssl_type", "key")}
    head.update(
        rung=screen["rung"] if screen.get("rung") is not None else rung,
        status=screen.get("status") or "ok",
        epochs_trained=screen.get("epochs_trained"),
        steps=screen.get("steps") or 0,
        seconds=screen.get("seconds"),
    )
    cols = [c for c, _ in SCREEN_COLUMNS if c not in head]
    return [{**head, **{c: v.get(c) for c in cols}} for v in screen.get("rows") or []]


def collect_screens(exp_dir: str) -> list[dict[str, Any]]:
    """One dict per screened value of every SSL model of the experiment (SCREEN_COLUMNS), from
    ``jobs/<id>/screen.json`` and its earlier rungs' ``screen-r<rung>.json``, in the order the
    jobs were asked. Screened values are low fidelity: never a trials.parquet row, never on a
    front, never in the study."""
    rows: list[dict[str, Any]] = []
    for job in read_jobs(exp_dir):
        for path, rung in _screen_files(exp_dir, job.id):
            try:
                screen = json.loads(storage.read_bytes(path).decode())
            except (OSError, ValueError) as e:
                log.warning("skipping the unreadable screen %s: %s", path, e)
                continue
            screen.setdefault("job_id", job.id)
            rows += screen_rows(screen, rung)
    return rows


def write_screens(exp_dir: str) -> tuple[str, pa.Table] | None:
    """Collect and write ``screens.parquet`` atomically (None, nothing written: no screen)."""
    rows = collect_screens(exp_dir)
    if not rows:
        return None
    table = typed_table(rows, SCREEN_COLUMNS)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    path = storage.join(exp_dir, SCREENS_FILE)
    storage.write_bytes_atomic(path, buf.getvalue())
    return path, table

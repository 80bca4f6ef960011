"""Pareto outputs of an experiment directory, from its trials.parquet alone.

Files (atomically written): pareto.md (one table per front, SSL and no-SSL, under the dense
baseline), pareto.csv, pareto.parquet (typed; space, versions, hypervolumes in the metadata),
pareto.png, report.html (interactive, self-contained), hypervolume.json, and
pareto_models/<trial>.pt: the pruned model of every Pareto point.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from sslsearch import storage
from sslsearch.config import ObjectiveDef, defs_from_json, known_objectives, register
from sslsearch.errors import UserError
from sslsearch.report._arrow import read_parquet, read_rows, typed_table
from sslsearch.report._fronts import Front
from sslsearch.report._history import trial_history
from sslsearch.report._markdown import console, markdown
from sslsearch.report._rows import derived, objective_modes, status_counts
from sslsearch.report._schema import OBJECTIVE_DEFS_KEY, pareto_columns
from sslsearch.report._screen_agreement import headline
from sslsearch.report._summary import Summary, summarize

TRIALS_FILE = "trials.parquet"
SCREENS_FILE = "screens.parquet"  # the screened values (search/_results.py write_screens)
FORMATS = ("md", "csv", "parquet", "png", "html")
MODELS_DIR = "pareto_models"
DEFAULT_OBJECTIVES = ("top1", "flops", "size_mb")


class NoResultsError(UserError):
    """The experiment has no completed trial to build a front from."""


def read_trials(exp_dir: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    path = storage.join(exp_dir, TRIALS_FILE)
    if not storage.exists(path):
        raise NoResultsError(f"{exp_dir} has no {TRIALS_FILE}: is it an sslsearch experiment?")
    try:
        table = read_parquet(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise UserError(f"{path} is unreadable: {e}") from None
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    for d in experiment_objectives(meta):
        register(d)  # a user's objective: its unit, axis and reference for the report
    return table.to_pylist(), meta


def experiment_objectives(meta: dict[str, str]) -> list[ObjectiveDef]:
    """The objective definitions an experiment saved in trials.parquet's metadata."""
    text = meta.get(OBJECTIVE_DEFS_KEY)
    return defs_from_json(text) if text else []


def read_screens(exp_dir: str) -> list[dict[str, Any]]:
    """The rows of ``screens.parquet`` ([] when the search did not screen)."""
    path = storage.join(exp_dir, SCREENS_FILE)
    if not storage.exists(path):
        return []
    try:
        return read_rows(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise UserError(f"{path} is unreadable: {e}") from None


def resolve_objectives(
    objectives: Sequence[str | Sequence[str]] | None, meta: dict[str, str]
) -> list[tuple[str, str]]:
    """(metric, mode) pairs: given ones win; a bare name (or ``metric:mode``) takes the mode the
    space saved for it (``sslsearch.objectives`` metadata), else its usual direction."""
    saved = {str(m): str(d) for m, d in json.loads(meta.get("sslsearch.objectives", "[]"))}
    if objectives is None:
        return objective_modes(list(saved.items()) or list(DEFAULT_OBJECTIVES))
    out: list[str | Sequence[str]] = []
    for o in objectives:
        if isinstance(o, str):
            name, _, mode = o.partition(":")
            out.append((name, mode or saved.get(name, "")) if (mode or name in saved) else name)
        else:
            out.append(o)
    return objective_modes(out)


def _pareto_table(
    s: Summary, model_paths: dict[str, str | None], metadata: dict[str, str]
) -> pa.Table:
    """Every point of every front with its role, then the dense baseline (front "baseline")."""
    rows = []
    for f in s.fronts:
        for r in f.rows:
            rows.append(
                {
                    **r,
                    **derived(r, s.baseline),
                    "front": f.name,
                    "role": f.role,
                    "model_path": model_paths.get(str(r["trial_id"])),
                }
            )
    if s.baseline is not None:
        b = s.baseline.values
        rows.append(
            {
                **b,
                "front": "baseline",
                "role": "baseline",
                "model_path": None,
                **derived(b, s.baseline),
                "n_seeds": s.baseline.runs,
            }
        )
    objectives = [known_objectives()[m] for m, _ in s.objectives if m in known_objectives()]
    return typed_table(rows, pareto_columns(objectives), metadata)


def _keep_models(exp_dir: str, fronts: list[Front]) -> dict[str, str | None]:
    """Each Pareto point's pruned model, copied (hard-linked when possible) to pareto_models/."""
    out: dict[str, str | None] = {}
    for f in fronts:
        for r in f.rows:
            tid = str(r["trial_id"])
            if tid in out:
                continue
            src_rel = r.get("model_path")
            if not src_rel:
                out[tid] = None
                continue
            rel = f"{MODELS_DIR}/{tid}.pt"
            src, dst = storage.join(exp_dir, src_rel), storage.join(exp_dir, rel)
            if not storage.exists(src):
                out[tid] = None
                continue
            if not storage.exists(dst):
                if storage.is_uri(exp_dir):
                    storage.write_bytes_atomic(dst, storage.read_bytes(src))
                else:
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    tmp = dst + storage.TEMP_SUFFIX  # swept if killed here
                    try:
                        os.link(src, tmp)
                    except OSError:
                        shutil.copyfile(src, tmp)
                    os.replace(tmp, dst)
            out[tid] = rel
    return out


AGREEMENT_KEY = "screen_rank_agreement"  # in hypervolume.json: not a front


def _hypervolumes(s: Summary) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in s.pairs:
        f = p.ssl
        out[p.name] = {
            "objectives": f.objectives,
            "directions": f.directions,
            "hypervolume": f.hypervolume,
            "points": len(f.rows),
            "reference": f.reference,
            "reference_source": f.reference_source,
            "scale": f.scale,
            "no_ssl": None
            if p.no_ssl is None
            else {"hypervolume": p.no_ssl.hypervolume, "points": len(p.no_ssl.rows)},
        }
    tau, n = s.agreement
    out[AGREEMENT_KEY] = {"kendall_tau": tau, "points": n}
    return out


def export_experiment(
    exp_dir: str,
    formats: Sequence[str] = FORMATS,
    objectives: Sequence[str | Sequence[str]] | None = None,
) -> dict[str, Any]:
    """(Re)write the Pareto outputs of ``exp_dir`` from its trials.parquet; nothing is re-run.

    Args:
        exp_dir: the experiment directory (local path or URI).
        formats: any of FORMATS.
        objectives: metric names, ``metric:mode`` strings or (metric, mode) pairs; default the
            space's (``sslsearch.objectives`` in trials.parquet's metadata, modes included).

    Returns:
        ``{"summary", "fronts", "counts", "markdown", "console", "files", "hypervolume",
        "headline"}``; ``hypervolume`` (as hypervolume.json) has one entry per front and
        ``screen_rank_agreement``: ``{"kendall_tau", "points"}`` (tau None: not measured).
    """
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise UserError(f"unknown format {bad[0]!r}; known: {', '.join(FORMATS)}")
    rows, meta = read_trials(exp_dir)
    objs = resolve_objectives(objectives, meta)
    if not rows:
        raise NoResultsError(f"experiment {exp_dir} has no trials yet")
    counts = status_counts(rows)
    if counts.get("ok", 0) == 0:
        reasons = sorted({str(r.get("error"))[:120] for r in rows})
        raise NoResultsError(
            f"experiment {exp_dir} has no completed trial ({len(rows)} trials: "
            + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
            + f"); first reason: {reasons[0]}"
        )
    s = summarize(rows, objs, os.path.basename(exp_dir.rstrip("/")), read_screens(exp_dir))
    model_paths = _keep_models(exp_dir, s.fronts)
    hv = _hypervolumes(s)
    metadata = {k: v for k, v in meta.items() if k.startswith("sslsearch.")}
    metadata["sslsearch.hypervolume"] = json.dumps(hv)
    metadata["sslsearch.counts"] = json.dumps(counts)
    metadata["sslsearch.export_objectives"] = json.dumps(objs)
    written: dict[str, str] = {}
    md = markdown(s)
    if "md" in formats:
        written["md"] = storage.join(exp_dir, "pareto.md")
        storage.write_text_atomic(written["md"], md)
    table = _pareto_table(s, model_paths, metadata)
    if "parquet" in formats:
        buf = io.BytesIO()
        pq.write_table(table, buf)
        written["parquet"] = storage.join(exp_dir, "pareto.parquet")
        storage.write_bytes_atomic(written["parquet"], buf.getvalue())
    if "csv" in formats:
        buf = io.BytesIO()
        pacsv.write_csv(table, buf)
        written["csv"] = storage.join(exp_dir, "pareto.csv")
        storage.write_bytes_atomic(written["csv"], buf.getvalue())
    if "png" in formats:
        from sslsearch.report._plot import plot

        written["png"] = storage.join(exp_dir, "pareto.png")
        storage.write_bytes_atomic(written["png"], plot(s))
    if "html" in formats:
        from sslsearch.report._html import render

        written["html"] = storage.join(exp_dir, "report.html")
        page = render(s, lambda r: trial_history(exp_dir, r))
        storage.write_text_atomic(written["html"], page)
    storage.write_text_atomic(storage.join(exp_dir, "hypervolume.json"), json.dumps(hv, indent=1))
    return {
        "summary": s,
        "fronts": s.fronts,
        "counts": counts,
        "markdown": md,
        "console": console(s),
        "files": written,
        "hypervolume": hv,
        "headline": headline(s.rows, s.screens),
    }

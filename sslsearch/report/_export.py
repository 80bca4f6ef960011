"""Pareto outputs of an experiment directory, from its trials.parquet alone.

Files (atomically written): pareto.md (the seed's tables, one per front), pareto.csv,
pareto.parquet (typed; space, versions, hypervolumes in the metadata), pareto.png, and
pareto_models/<trial>.pt: the pruned model of every Pareto point.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from sslsearch import storage
from sslsearch.config import OBJECTIVE_MODES
from sslsearch.errors import UserError
from sslsearch.report._arrow import typed_table
from sslsearch.report._pareto import hypervolume, pareto_front, to_minimization
from sslsearch.report._table import SEED_COLUMNS, markdown_table, seed_row

TRIALS_FILE = "trials.parquet"
FORMATS = ("md", "csv", "parquet", "png")
MODELS_DIR = "pareto_models"
DEFAULT_OBJECTIVES = ("top1", "flops", "size_mb")
# Reference of the normalised hypervolume: 0% accuracy, the dense model's cost.
BEFORE = {"flops": "flops_before", "params": "params_before", "size_mb": "size_mb_before"}


class NoResultsError(UserError):
    """The experiment has no completed trial to build a front from."""


@dataclass
class Front:
    name: str
    objectives: list[str]
    directions: list[str]
    rows: list[dict[str, Any]]  # the Pareto-optimal trials, sorted by FLOPs
    hypervolume: float  # normalised: a share of the unit box
    reference: dict[str, float]  # in raw units
    scale: dict[str, float]


def read_trials(exp_dir: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    path = storage.join(exp_dir, TRIALS_FILE)
    if not storage.exists(path):
        raise NoResultsError(f"{exp_dir} has no {TRIALS_FILE}: is it an sslsearch experiment?")
    try:
        table = pq.read_table(io.BytesIO(storage.read_bytes(path)))
    except (pa.ArrowInvalid, OSError) as e:
        raise UserError(f"{path} is unreadable: {e}") from None
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    return table.to_pylist(), meta


def _finite(v: Any) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def compute_front(
    rows: list[dict[str, Any]], objectives: list[str], name: str | None = None
) -> Front:
    """The non-dominated completed trials for ``objectives``, and their hypervolume."""
    for o in objectives:
        if o not in OBJECTIVE_MODES:
            raise UserError(f"unknown objective {o!r}; known: {', '.join(OBJECTIVE_MODES)}")
    directions = [OBJECTIVE_MODES[o] for o in objectives]
    ok = [r for r in rows if r.get("status") == "ok" and all(_finite(r.get(o)) for o in objectives)]
    values = np.array([[float(r[o]) for o in objectives] for r in ok]).reshape(
        len(ok), len(objectives)
    )
    idx = pareto_front(values, directions) if len(ok) else np.array([], dtype=int)
    front_rows = sorted(
        (ok[i] for i in idx), key=lambda r: (float(r.get("flops") or 0), -float(r["top1"]))
    )
    # normalise: accuracy in [0, 1]; costs as a share of the dense model's (max seen if unknown)
    scale, reference = {}, {}
    for o, d in zip(objectives, directions):
        if d == "max":
            scale[o] = 100.0 if o.startswith("top") else max(float(r[o]) for r in ok) if ok else 1.0
            reference[o] = 0.0
        else:
            before = [float(r[BEFORE[o]]) for r in ok if o in BEFORE and _finite(r.get(BEFORE[o]))]
            seen = [float(r[o]) for r in ok]
            scale[o] = max(before + seen) if (before or seen) else 1.0
            reference[o] = scale[o]
    if len(ok):
        norm = values / np.array([scale[o] for o in objectives])
        ref = np.array([reference[o] / scale[o] for o in objectives])
        hv = hypervolume(
            to_minimization(norm, directions), to_minimization(ref[None, :], directions)[0]
        )
    else:
        hv = 0.0
    return Front(
        name or "_vs_".join(objectives),
        list(objectives),
        directions,
        front_rows,
        hv,
        reference,
        scale,
    )


def _fronts(rows: list[dict[str, Any]], objectives: list[str]) -> list[Front]:
    fronts = [
        compute_front(rows, ["top1", "flops"], "top1_vs_flops"),
        compute_front(rows, ["top1", "size_mb"], "top1_vs_size"),
    ]
    if list(objectives) not in (["top1", "flops"], ["top1", "size_mb"]):
        fronts.append(compute_front(rows, list(objectives), "all_objectives"))
    return fronts


def _reference_text(f: Front) -> str:
    parts = []
    for o in f.objectives:
        unit = {
            "top1": "%",
            "top5": "%",
            "flops": " FLOPs",
            "size_mb": " MB",
            "params": " params",
            "latency_ms": " ms",
        }[o]
        parts.append(f"{o}={f.reference[o]:.6g}{unit}")
    return ", ".join(parts)


def _markdown(fronts: list[Front], counts: dict[str, int], title: str) -> str:
    lines = [f"# Pareto fronts: {title}", ""]
    done = counts.get("ok", 0)
    excluded = {k: v for k, v in counts.items() if k != "ok"}
    lines.append(
        f"{sum(counts.values())} trials: {done} completed"
        + (
            " (" + ", ".join(f"{v} {k}" for k, v in sorted(excluded.items())) + ", excluded)"
            if excluded
            else ""
        )
        + ". FLOPs are multiply-adds counted by fvcore (one fused multiply-add = one flop), in G. "
        'Model size is the fp32 state in MB (10^6 bytes); the seed\'s "model size/MB" column held '
        "parameter counts in millions, shown here as params/M. top1/top5 are on the validation split."
    )
    for f in fronts:
        lines += ["", f"## {' vs '.join(f.objectives)} ({len(f.rows)} points)", ""]
        lines.append(
            f"Hypervolume {f.hypervolume:.4f} (normalised: objectives divided by "
            + ", ".join(f"{o} {f.scale[o]:.6g}" for o in f.objectives)
            + f"; reference point {_reference_text(f)})"
        )
        lines += [
            "",
            markdown_table([seed_row(r) for r in f.rows], SEED_COLUMNS)
            if f.rows
            else "(no points)",
        ]
    return "\n".join(lines) + "\n"


PARETO_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("front", pa.string()),
    ("trial_id", pa.string()),
    ("arch", pa.string()),
    ("dataset", pa.string()),
    ("ssl_type", pa.string()),
    ("ssl_lambda", pa.float64()),
    ("prune_type", pa.string()),
    ("prune_way", pa.string()),
    ("ratio", pa.float64()),
    ("blocks", pa.int64()),
    ("actual_ratio", pa.float64()),
    ("top1", pa.float64()),
    ("top5", pa.float64()),
    ("test_top1", pa.float64()),
    ("flops", pa.int64()),
    ("params", pa.int64()),
    ("size_mb", pa.float64()),
    ("latency_ms", pa.float64()),
    ("flops_before", pa.int64()),
    ("params_before", pa.int64()),
    ("size_mb_before", pa.float64()),
    ("model_path", pa.string()),
]


def _pareto_table(
    fronts: list[Front], model_paths: dict[str, str | None], metadata: dict[str, str]
) -> pa.Table:
    rows = []
    for f in fronts:
        for r in f.rows:
            rows.append({**r, "front": f.name, "model_path": model_paths.get(str(r["trial_id"]))})
    return typed_table(rows, PARETO_COLUMNS, metadata)


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
                    tmp = dst + ".tmp"
                    try:
                        os.link(src, tmp)
                    except OSError:
                        shutil.copyfile(src, tmp)
                    os.replace(tmp, dst)
            out[tid] = rel
    return out


def _plot(fronts: list[Front], rows: list[dict[str, Any]], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [f for f in fronts if f.name in ("top1_vs_flops", "top1_vs_size")]
    ok = [r for r in rows if r.get("status") == "ok"]
    fig, axes = plt.subplots(1, len(pairs), figsize=(6 * len(pairs), 4.5), squeeze=False)
    for ax, f in zip(axes[0], pairs):
        cost = f.objectives[1]
        dense = max((float(r[cost]) for r in ok if _finite(r.get(cost))), default=1.0)
        giga = cost == "flops" and dense >= 1e8
        scale = (1e9 if giga else 1e6) if cost == "flops" else 1.0
        xs = [float(r[cost]) / scale for r in ok if _finite(r.get(cost))]
        ys = [float(r["top1"]) for r in ok if _finite(r.get(cost))]
        ax.scatter(xs, ys, s=18, color="0.6", label=f"trials ({len(xs)})", zorder=2)
        fx = [float(r[cost]) / scale for r in f.rows]
        fy = [float(r["top1"]) for r in f.rows]
        if fx:
            ax.step(
                fx,
                fy,
                where="post",
                color="C3",
                lw=1.8,
                label=f"Pareto front ({len(fx)})",
                zorder=3,
            )
            ax.scatter(fx, fy, s=30, color="C3", zorder=4)
        before = [float(r[BEFORE[cost]]) / scale for r in ok if _finite(r.get(BEFORE[cost]))]
        if before:
            ax.axvline(max(before), color="0.3", ls="--", lw=1, label="dense model")
        unit = "G" if giga else "M"
        ax.set_xlabel(
            f"FLOPs ({unit} multiply-adds, fvcore)" if cost == "flops" else "model size (MB, fp32)"
        )
        ax.set_ylabel("top-1 accuracy (%, validation)")
        ax.set_title(
            f"top-1 vs {'FLOPs' if cost == 'flops' else 'size'}: hypervolume {f.hypervolume:.3f}"
        )
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def export_experiment(
    exp_dir: str,
    formats: tuple[str, ...] | list[str] = FORMATS,
    objectives: list[str] | None = None,
) -> dict[str, Any]:
    """(Re)write the Pareto outputs of ``exp_dir`` from its trials.parquet; nothing is re-run."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise UserError(f"unknown format {bad[0]!r}; known: {', '.join(FORMATS)}")
    rows, meta = read_trials(exp_dir)
    if objectives is None:
        saved = json.loads(meta.get("sslsearch.objectives", "[]"))
        objectives = [m for m, _ in saved] or list(DEFAULT_OBJECTIVES)
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r.get("status"))] = counts.get(str(r.get("status")), 0) + 1
    if not rows:
        raise NoResultsError(f"experiment {exp_dir} has no trials yet")
    if counts.get("ok", 0) == 0:
        reasons = sorted({str(r.get("error"))[:120] for r in rows})
        raise NoResultsError(
            f"experiment {exp_dir} has no completed trial ({len(rows)} trials: "
            + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
            + f"); first reason: {reasons[0]}"
        )
    fronts = _fronts(rows, objectives)
    title = os.path.basename(exp_dir.rstrip("/"))
    model_paths = _keep_models(exp_dir, fronts)
    hv = {
        f.name: {
            "objectives": f.objectives,
            "hypervolume": f.hypervolume,
            "reference": f.reference,
            "scale": f.scale,
            "points": len(f.rows),
        }
        for f in fronts
    }
    metadata = {k: v for k, v in meta.items() if k.startswith("sslsearch.")}
    metadata["sslsearch.hypervolume"] = json.dumps(hv)
    metadata["sslsearch.counts"] = json.dumps(counts)
    written: dict[str, str] = {}
    md = _markdown(fronts, counts, title)
    if "md" in formats:
        written["md"] = storage.join(exp_dir, "pareto.md")
        storage.write_text_atomic(written["md"], md)
    table = _pareto_table(fronts, model_paths, metadata)
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
        written["png"] = storage.join(exp_dir, "pareto.png")
        storage.write_bytes_atomic(written["png"], _plot(fronts, rows, title))
    storage.write_text_atomic(storage.join(exp_dir, "hypervolume.json"), json.dumps(hv, indent=1))
    return {"fronts": fronts, "counts": counts, "markdown": md, "files": written, "hypervolume": hv}

"""Synthetic experiments for the report tests: SSL, no-SSL, baseline and re-evaluation rows."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sslsearch.search._results import trials_table

# Columns of the search/report contract that trials.parquet may not have yet.
CONTRACT = (("role", pa.string()), ("ssl_model_id", pa.string()), ("confirm_of", pa.string()))
DENSE = {"flops": 2_400_000, "params": 300_000, "size_mb": 1.2}


def point(
    tid: str,
    ratio: float,
    top1: float,
    role: str = "search",
    lam: float = 0.01,
    **extra: Any,
) -> dict[str, Any]:
    """A completed trial whose costs shrink with ``ratio`` like a real pruned VGG."""
    keep = (1 - ratio) ** 2
    row = {
        "trial_id": tid,
        "trial_dir": f"sslsearch_trial_{tid}_x",
        "status": "ok",
        "role": role,
        "ssl_model_id": f"m{lam:.3g}",
        "arch": "vgg_small",
        "dataset": "digits",
        "ssl_type": "filter_wise",
        "ssl_lambda": 0.0 if role == "reference" else lam,
        "prune_type": "filter_wise",
        "prune_way": "group_lasso",
        "ratio": ratio,
        "actual_ratio": max(ratio - 0.05, 0.0),
        "seed": 0,
        "epochs": 12,
        "finetune_epochs": 4,
        "top1": top1,
        "top5": 100.0,
        "flops": int(DENSE["flops"] * keep),
        "params": int(DENSE["params"] * keep),
        "size_mb": DENSE["size_mb"] * keep,
        "latency_ms": 0.1 + 0.4 * keep,
        "latency_batch_size": 1,
        "latency_device": "cpu",
        "latency_threads": 1,
        "flops_before": DENSE["flops"],
        "params_before": DENSE["params"],
        "size_mb_before": DENSE["size_mb"],
        "finished_at": 1000.0 + int(tid[1:]) if tid[1:].isdigit() else 1000.0,
        "model_path": None,
    }
    row.update(extra)
    return row


def baseline(top1: float = 99.0, tid: str = "b000", **extra: Any) -> dict[str, Any]:
    return point(tid, 0.0, top1, role="baseline", lam=0.0, actual_ratio=0.0, **extra)


def random_rows(
    n: int = 30, seed: int = 0, role: str = "search", start: int = 0
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        ratio = float(rng.uniform(0.1, 0.9))
        top1 = float(np.round(99 - 10 * ratio**3 + rng.normal(0, 1), 2))
        r = point(
            f"{'t' if role == 'search' else 'r'}{start + i:03d}",
            ratio,
            top1,
            role,
            float(10 ** rng.uniform(-3, -1)),
        )
        r["flops"] += int(rng.integers(0, 1000))  # break ties between the cost objectives
        r["size_mb"] += float(rng.uniform(0, 0.05))
        r["latency_ms"] += float(rng.uniform(0, 0.05))
        rows.append(r)
    return rows


def experiment(
    tmp_path: Path,
    rows: Sequence[dict[str, Any]],
    objectives: Sequence[tuple[str, str]] = (("top1", "max"), ("flops", "min"), ("size_mb", "min")),
    name: str = "exp",
    contract: bool = True,
) -> Path:
    """An experiment directory holding only trials.parquet (as the search writes it)."""
    exp = tmp_path / name
    exp.mkdir(parents=True)
    meta = {
        "sslsearch.objectives": json.dumps([list(o) for o in objectives]),
        "sslsearch.space": json.dumps({"name": name}),
    }
    table = trials_table(list(rows), meta)
    if contract:
        for col, typ in CONTRACT:
            if col not in table.schema.names:
                table = table.append_column(
                    pa.field(col, typ), pa.array([r.get(col) for r in rows], type=typ)
                )
    pq.write_table(table, exp / "trials.parquet")
    return exp


def md_tables(text: str) -> list[dict[str, Any]]:
    """Every Markdown table with the headings above it: {"h2", "h3", "header", "rows"}."""
    out: list[dict[str, Any]] = []
    h2 = h3 = ""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            h2, h3 = line[3:], ""
        elif line.startswith("### "):
            h3 = line[4:]
        elif line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            out.append({"h2": h2, "h3": h3, "header": block[0], "rows": block[2:]})
            continue
        i += 1
    return out


def screen_file(
    job_id: str,
    lam: float,
    top1s: Sequence[float],
    chosen: dict[int, str] | None = None,
    rung: int | None = None,
    status: str = "ok",
) -> dict[str, Any]:
    """A ``jobs/<id>/screen.json`` as the worker writes it: one row per screened FLOPs budget
    (log-spaced), ``chosen``: {row index: the point fine-tuned there}."""
    chosen = chosen or {}
    values = np.geomspace(0.03, 0.9, len(top1s))
    rows = [
        {
            "value": float(v),
            "top1": float(t),
            "flops": float(DENSE["flops"] * v),
            "params": float(DENSE["params"] * v),
            "size_mb": DENSE["size_mb"] * float(v),
            "flops_before": float(DENSE["flops"]),
            "params_before": float(DENSE["params"]),
            "size_mb_before": DENSE["size_mb"],
            "chosen": i in chosen,
            "point_id": chosen.get(i),
        }
        for i, (v, t) in enumerate(zip(values, top1s))
    ]
    return {
        "job_id": job_id,
        "ssl_model_id": f"m{lam:.3g}",
        "ssl_lambda": lam,
        "ssl_type": "filter_wise",
        "key": "flops_budget",
        "epochs_trained": 12 if rung is None else 3 * (rung + 1),
        "rung": rung,
        "status": status,
        "seconds": 3.2,
        "rows": rows,
    }

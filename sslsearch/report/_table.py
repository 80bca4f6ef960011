"""Rows and Markdown tables in the seed's layout (shared/seed-results.md).

FLOPs are multiply-adds counted by fvcore (one fused multiply-add = one flop), in G (10^9).
"model size/MB" is the true size of the fp32 state in MB (10^6 bytes); the seed's column of that
name held parameter counts in millions, which sslsearch shows separately as "params/M".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

SEED_COLUMNS = (
    "arch",
    "prune type",
    "prune way",
    "ssl lambda",
    "pruning ratio",
    "actual pruning ratio",
    "flops/G",
    "model size/MB",
    "FLOPs after pruning",
    "Model size after pruning",
    "params/M after",
    "top1",
    "top5",
)


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _pct(v: Any) -> str:
    x = _num(v)
    return "-" if math.isnan(x) else f"{100 * x:.2f}%"


def seed_row(m: Mapping[str, Any]) -> dict[str, str]:
    """One trial's final metrics as the seed's table row (strings, formatted like the seed)."""
    depth = m.get("prune_type") == "depth_wise"
    blocks = m.get("blocks")
    ratio = f"N={int(_num(blocks))}" if depth and _num(blocks) >= 0 else _pct(m.get("ratio"))
    lam = _num(m.get("ssl_lambda"))
    return {
        "arch": str(m.get("arch", "")),
        "prune type": str(m.get("prune_type", "")),
        "prune way": str(m.get("prune_way", "")),
        "ssl lambda": "-" if math.isnan(lam) else f"{lam:.3g}",
        "pruning ratio": ratio,
        "actual pruning ratio": _pct(m.get("actual_ratio")),
        "flops/G": f"{_num(m.get('flops_before')) / 1e9:.4g}",
        "model size/MB": f"{_num(m.get('size_mb_before')):.2f}",
        "FLOPs after pruning": f"{_num(m.get('flops')) / 1e9:.4g}",
        "Model size after pruning": f"{_num(m.get('size_mb')):.2f}",
        "params/M after": f"{_num(m.get('params')) / 1e6:.4g}",
        "top1": f"{_num(m.get('top1')):.3f}",
        "top5": f"{_num(m.get('top5')):.3f}",
    }


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub Markdown table with centred columns (the seed's style)."""
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    head = "| " + " | ".join(c.center(w) for c, w in zip(columns, widths)) + " |"
    rule = "|" + "|".join(":" + "-" * w + ":" for w in widths) + "|"
    body = ["| " + " | ".join(v.center(w) for v, w in zip(row, widths)) + " |" for row in cells]
    return "\n".join([head, rule, *body])

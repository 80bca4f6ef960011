"""Tiny search spaces for tests: digits, vgg_small, one or two epochs per phase."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

TINY: dict[str, Any] = {
    "name": "tiny",
    "arch": "vgg_small",
    "data": {"name": "digits"},
    "recipe": {"epochs": 2, "finetune_epochs": 1, "batch_size": 64},
    "params": {
        "ssl_lambda": {"low": 1e-3, "high": 1e-1, "log": True},
        "flops_budget": {"low": 0.1, "high": 0.8},
    },
    "budget": {"num_samples": 4, "max_concurrent": 2},
    "resources": {"cpus": 1},
    "sampler": {"name": "tpe", "seed": 0},
}


def with_changes(**changes: Any) -> dict[str, Any]:
    """TINY with top-level keys replaced (``a__b=v`` sets a nested key)."""
    space = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY.items()}
    for key, value in changes.items():
        node = space
        parts = key.split("__")
        for p in parts[:-1]:
            node[p] = dict(node.get(p, {}))
            node = node[p]
        node[parts[-1]] = value
    return space


def write_space(tmp_path: Path, **changes: Any) -> Path:
    space = with_changes(storage_path=str(tmp_path / "runs"), **changes)
    path = tmp_path / f"{space['name']}.yaml"
    path.write_text(yaml.safe_dump(space))
    return path

"""Per-epoch training curves of a trial, from what the trial already left in the experiment.

Each epoch of a trial (phase ``ssl`` or ``finetune``: loss, val_top1, exact_zero_share, lr,
...) is a line of ``<trial_dir>/history.jsonl``, which the trial writes itself (``trial_dir``:
its job's directory, ``jobs/<id>``); experiments made before that have Tune's
``<trial_dir>/result.json`` lines instead. A row may also carry the list itself as JSON in a
``history`` column. Best effort: a trial without any of them has no curve.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from sslsearch import storage

log = logging.getLogger(__name__)

HISTORY_KEYS = (
    "phase",
    "epoch",
    "global_epoch",
    "loss",
    "penalty",
    "train_top1",
    "val_loss",
    "val_top1",
    "exact_zero_share",
    "removable_flops_share",
    "lr",
)


def _epochs(items: list[Any]) -> list[dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for m in items:
        if isinstance(m, dict) and m.get("phase") in ("ssl", "finetune") and "global_epoch" in m:
            # a resumed trial reports some epochs twice: keep the last
            out[int(m["global_epoch"])] = {k: m.get(k) for k in HISTORY_KEYS}
    return [out[k] for k in sorted(out)]


def trial_history(exp_dir: str, row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The epochs of ``row``'s trial in order ([] when nothing was recorded)."""
    if row.get("history"):
        try:
            return _epochs(json.loads(str(row["history"])))
        except ValueError:
            pass
    trial_dir = row.get("trial_dir")
    if not trial_dir:
        return []
    # result.json: the JSON lines Ray Tune wrote for trials of older versions
    for name in (storage.HISTORY_FILE, "result.json"):
        path = storage.join(exp_dir, str(trial_dir), name)
        try:
            if storage.exists(path):
                return _epochs(storage.read_json_lines(path))
        except OSError as e:
            log.warning("cannot read %s: %s", path, e)
    return []

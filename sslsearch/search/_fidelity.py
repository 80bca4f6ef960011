"""The multi-fidelity rule of a search: which SSL models go on at a rung.

Successive halving, asynchronous (as ASHA) and for several objectives: when a job reaches a
rung it has screened its SSL model part-way (``jobs/<id>/screen-r<rung>.json``, written by the
trial); it goes on when its screen's hypervolume contribution to the union of every screen at
that rung (ties: its own hypervolume) ranks in the best ``keep`` share of the SSL models
screened there so far. With fewer than ``1 / keep`` screens at a rung there is nothing to
compare with: it goes on. One number per objective would not do: a model that is best only at
the cheap end adds hypervolume there, and keeps its place.
"""

from __future__ import annotations

import json
import math
from typing import Any

from sslsearch import storage
from sslsearch.search._experiment import JOBS_DIR
from sslsearch.trial import Promote, contributions, own_hypervolume, rung_file


def make_promote(
    exp_dir: str, job_id: str, keep: float, objectives: list[tuple[str, str]]
) -> Promote:
    """The ``promote(rung, record)`` of job ``job_id``: (go on?, why)."""

    def promote(rung: int, record: dict[str, Any]) -> tuple[bool, str]:
        others = []
        for name in storage.listdir(storage.join(exp_dir, JOBS_DIR)):
            if name == job_id:
                continue
            path = storage.join(exp_dir, JOBS_DIR, name, rung_file(rung))
            try:
                others.append(json.loads(storage.read_bytes(path).decode()))
            except (OSError, ValueError):  # not at this rung (yet), or being written
                continue
        n = len(others) + 1
        need = math.ceil(1 / keep)
        if n < need:
            return True, f"{n} SSL model(s) screened at this rung, fewer than {need} to compare"
        screens = [o["rows"] for o in others] + [record["rows"]]
        gain = contributions(screens, objectives)
        own = [own_hypervolume(s, objectives) for s in screens]
        order = sorted(range(n), key=lambda i: (gain[i], own[i]), reverse=True)
        rank = order.index(n - 1) + 1
        kept = max(1, math.ceil(n * keep))
        return rank <= kept, (
            f"hypervolume contribution rank {rank} of {n} SSL models at this rung; "
            f"the best {kept} go on"
        )

    return promote

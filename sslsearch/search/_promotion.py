"""The multi-fidelity rule of a search: which SSL models go on at a rung.

Successive halving, asynchronous (as ASHA) and for several objectives: when a job reaches a
rung it has screened its SSL model part-way (``jobs/<id>/screen-r<rung>.json``, written by the
trial); it goes on when its screen's hypervolume contribution to the union of every screen at
that rung ranks in the best ``keep`` share (at least one) of the SSL models screened there so
far. Near-duplicates are handled (``trial.fair_contributions``): two good models with close
lambdas share the volume they add as a pair instead of each adding nothing. Ties go to the
screen's own hypervolume. Only the first SSL model at a rung goes on unjudged (there is nothing
to compare it with). One number per objective would not do: a model that is best only at the
cheap end adds hypervolume there, and keeps its place. Each decision's log line says what it
compared.
"""

from __future__ import annotations

import json
import math
from typing import Any

from sslsearch import storage
from sslsearch.search._experiment import JOBS_DIR
from sslsearch.trial import Promote, fair_contributions, own_hypervolume, rung_file


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
        if not others:
            return True, "the first SSL model screened at this rung: nothing to compare with"
        n = len(others) + 1
        screens = [o["rows"] for o in others] + [record["rows"]]
        gain, nearest = fair_contributions(screens, objectives)
        own = [own_hypervolume(s, objectives) for s in screens]
        order = sorted(range(n), key=lambda i: (gain[i], own[i]), reverse=True)
        rank = order.index(n - 1) + 1
        kept = max(1, math.ceil(n * keep))
        near = nearest[n - 1]
        twin = others[near].get("job_id", "?") if near is not None else "-"
        return rank <= kept, (
            f"hypervolume contribution {gain[n - 1]:.4g} (shared with its nearest, job {twin}) "
            f"ranks {rank} of {n} SSL models at this rung (compared with jobs "
            f"{', '.join(str(o.get('job_id', '?')) for o in others)}); the best {kept} go on"
        )

    return promote

"""The experiment directory: the one source of truth of a search.

```
<experiment>/
  space.yaml, study_url          the resolved space and the Optuna study's URL
  jobs/<job id>/job.json         a job: one Ray Tune trial's work, one SSL model and the points
                                 asked for it (written by the searcher before Tune starts it)
  jobs/<job id>/state-*.pt       where the job resumes (written by its worker, StateStore)
  jobs/<job id>/history.jsonl    its epochs (the report's training curves)
  jobs/<job id>/error.txt        why its last run raised, when it did (written by its worker)
  points/<point id>/result.json  a finished point (and model.pt), written by its worker
  ssl_models/<id>.pt             the SSL models, shared by every node
  reference/, confirm/, baseline/  points run beside the search
  trials.parquet, pareto.*       built from the above
```

Every file is written whole by us (``storage.write_bytes_atomic``: write, fsync, rename), under
a local directory or an object-store URI. Ray Tune's own files (its experiment snapshot, trial
directories) are never read: a resumed search starts a fresh Tune run whose searcher re-issues
the unfinished jobs found here. The Optuna study and trials.parquet are brought in line with
this directory, never the other way round.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from sslsearch import storage
from sslsearch.trial import RESULT_FILE, stored_point
from sslsearch.trial import point_id as _point_id

JOBS_DIR = "jobs"
POINTS_DIR = "points"
SSL_MODELS_DIR = "ssl_models"
REFERENCE_DIR = "reference"  # lambda = 0 points: reference/<id>/result.json and model.pt
CONFIRM_DIR = "confirm"  # re-evaluations of Pareto points: confirm/<id>/result.json, model.pt
JOB_FILE = "job.json"
ERROR_FILE = "error.txt"


@dataclass
class Job:
    """One Tune trial's work: one SSL model and the points pruned from it.

    ``points``: ``{"trial_id": <point id>, "params": {...}}`` each, in order; a point's id is
    ``<job id>-<index>``. The job id is the Tune trial id it was first asked for; a resumed
    search runs it under another Tune trial, with the same job id, point ids and state.
    """

    id: str
    points: list[dict[str, Any]]
    asked_at: float = field(default_factory=time.time)

    def point_ids(self) -> list[str]:
        return [str(p["trial_id"]) for p in self.points]

    def config(self) -> dict[str, Any]:
        """What Tune passes to the trainable (and shows): the first point's parameters, the
        job id and every point with its id."""
        first = dict(self.points[0]["params"]) if self.points else {}
        return {
            **first,
            "job_id": self.id,
            "points": [{**p["params"], "trial_id": p["trial_id"]} for p in self.points],
        }

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.id, "asked_at": self.asked_at, "points": self.points}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        return cls(str(d["job_id"]), list(d["points"]), float(d.get("asked_at", 0.0)))


def point_id(job_id: str, index: int) -> str:
    return _point_id(job_id, index)


def job_dir(exp_dir: str, job_id: str) -> str:
    return storage.join(exp_dir, JOBS_DIR, job_id)


def points_dir(exp_dir: str) -> str:
    return storage.join(exp_dir, POINTS_DIR)


def write_job(exp_dir: str, job: Job) -> None:
    storage.write_text_atomic(
        storage.join(job_dir(exp_dir, job.id), JOB_FILE), json.dumps(job.to_dict(), indent=1)
    )


def read_jobs(exp_dir: str) -> list[Job]:
    """Every job of the experiment, in the order they were asked."""
    jobs = []
    for name in storage.listdir(storage.join(exp_dir, JOBS_DIR)):
        path = storage.join(exp_dir, JOBS_DIR, name, JOB_FILE)
        try:
            jobs.append(Job.from_dict(json.loads(storage.read_bytes(path).decode())))
        except (OSError, ValueError, KeyError):
            continue  # a job directory without its job.json: nothing was asked for it
    return sorted(jobs, key=lambda j: (j.asked_at, j.id))


def point_result(exp_dir: str, pid: str) -> dict[str, Any] | None:
    """The final result of point ``pid`` if it finished (``points/<pid>/result.json``)."""
    return stored_point(points_dir(exp_dir), pid)


def write_point_result(exp_dir: str, pid: str, result: dict[str, Any]) -> None:
    storage.write_text_atomic(
        storage.join(points_dir(exp_dir), pid, RESULT_FILE), json.dumps(result, indent=1)
    )


def point_names(exp_dir: str) -> list[str]:
    """The ids under ``points/`` (a finished point, or one whose model is written but not yet
    its result)."""
    return storage.listdir(points_dir(exp_dir))


def write_error(exp_dir: str, job_id: str, text: str) -> None:
    storage.write_text_atomic(storage.join(job_dir(exp_dir, job_id), ERROR_FILE), text)


def read_error(exp_dir: str, job_id: str) -> str | None:
    """The last line of the job's error (its exception), or None."""
    try:
        text = storage.read_bytes(storage.join(job_dir(exp_dir, job_id), ERROR_FILE)).decode(
            errors="replace"
        )
    except OSError:
        return None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:500] if lines else None

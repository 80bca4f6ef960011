"""The search's Ray Tune ``Searcher``: jobs of several points, each point its own Optuna trial.

A job is one Tune trial's work: one SSL model and the points pruned from it. For a new job the
sampler (``SamplerView``) proposes the first point (lambda, the ssl type, a pruning choice);
the other points keep its SSL settings and take the spread values of ``_params.spread``, the
sampler choosing whatever else is searched (criterion, prune type). With ``economy.screen``
the other points copy the first and the job's screen (``sslsearch.trial._screen``) chooses
every point's amount after SSL training: a point's real parameters are in its result, and
that is what its Optuna trial records. The job is written to
``jobs/<id>/job.json`` before Tune sees it. When ``budget.num_samples`` points are asked the
searcher answers ``Searcher.FINISHED``.

Each finished point becomes one trial of the experiment's Optuna study, only through
``StudyBook.sync`` (at each point's final report, at each job's end, when the searcher opens
and when it closes), which reads its result from the experiment directory. A resumed search
is a fresh Tune run: ``open`` brings the study in line with the directory, and the jobs with
unfinished points are handed out again first, each resuming from its own state
(``jobs/<id>/``); nothing is read from Tune's files or saved in its snapshots.

Public APIs of Ray and Optuna only: Ray's ``Searcher`` (with ``FINISHED``),
``ConcurrencyLimiter``, ``Tuner``, ``tune.report`` and ``tune.get_context``; Optuna's
``create_study``, ``ask``, ``tell``, ``enqueue_trial``, ``add_trial`` and ``create_trial``.
Nothing reads Ray Tune's files (its snapshots, its trial directories) or the private state of
Ray's OptunaSearch, SearchGenerator or Tuner, or of Optuna's storage (the OptunaSearch subclass
this replaced did all of these).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ray.tune.search import Searcher

from sslsearch.config import SearchSpace, space_from_mapping
from sslsearch.search._experiment import (
    Job,
    point_id,
    point_names,
    point_result,
    read_error,
    read_jobs,
    write_job,
    write_point_result,
)
from sslsearch.search._params import define_by_run, path_lambdas, spread_params
from sslsearch.search._plan import plan_search
from sslsearch.search._sampler import Record, SamplerView
from sslsearch.search._study import StudyBook
from sslsearch.search._trainable import POINT_KEY

log = logging.getLogger(__name__)

LOST = "its Tune trial failed for good (the worker or its node died, or it raised: Ray's logs)"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1e-12)
    return bool(a == b)


class PointSearcher(Searcher):
    """Asks jobs of ``economy.points_per_ssl`` points until ``budget.num_samples`` points.

    Args:
        space: the experiment's search space.
        exp_dir: the experiment directory (local or a URI).
        study_url: the Optuna storage URL; the study is named after the space.

    Example:
        >>> searcher = PointSearcher(space, "runs/default", "sqlite:///runs/default/optuna.db")
        >>> searcher.open()  # the study in line with the directory; unfinished jobs queued
        >>> tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, 2), num_samples=-1)
    """

    def __init__(self, space: SearchSpace, exp_dir: str, study_url: str) -> None:
        super().__init__(metric=None, mode=None)  # the searcher owns the objectives
        self.space_dict = space.to_dict()
        self.exp_dir = exp_dir
        self.study_url = study_url
        self._setup()

    def _setup(self) -> None:
        self.space = space_from_mapping(self.space_dict)
        self.define_by_run = define_by_run(self.space)
        self.plan = plan_search(self.space)
        self.per_job = self.plan.points_per_job
        self.screened = self.plan.screen is not None
        self.budget = self.space.budget.num_samples
        self.book: StudyBook | None = None
        self.view: SamplerView | None = None
        self.jobs: dict[str, Job] = {}  # job id -> job, every job of the experiment
        self.queue: list[Job] = []  # jobs with unfinished points, handed out first
        self.running: dict[str, Job] = {}  # Tune trial id -> the job it runs
        self.asked = 0  # points of the experiment (the directory's count)
        self.done = 0  # points with a final result
        self.finished_asking = False
        self.sync_seconds = 0.0  # CPU in StudyBook.sync (driver cost, for the log)
        self.ask_seconds = 0.0  # CPU asking new points (the sampler's view, job.json)

    # Tune pickles its search algorithm (into tuner.pkl) but a resumed search never reads it:
    # keep only the settings, never the open study.
    def __getstate__(self) -> dict[str, Any]:
        return {"space_dict": self.space_dict, "exp_dir": self.exp_dir, "study_url": self.study_url}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._setup()

    # ---- the experiment directory -> the study ----------------------------------------------

    def open(self) -> None:
        """Open the study and bring it in line with the experiment directory (points that
        finished after the last driver heard of them are added), load the sampler's view and
        queue the jobs with unfinished points. Once per search, before Tune runs."""
        if self.book is not None:
            return
        t0 = time.monotonic()
        book = StudyBook(self.study_url, self.space.name, self.plan, self.exp_dir)
        self.jobs = {j.id: j for j in read_jobs(self.exp_dir)}
        pids = []
        for job in self.jobs.values():
            for p in job.points:
                book.expect(str(p["trial_id"]), job.id, p["params"])
                pids.append(str(p["trial_id"]))
        extra = sorted(set(point_names(self.exp_dir)) - set(pids))  # recorded by a worker
        counts = book.sync(pids + extra)
        self.asked = len(pids)
        self.done = len(counts.done)
        self.queue = [
            j for j in self.jobs.values() if any(p not in counts.done for p in j.point_ids())
        ]
        view = SamplerView(self.plan, self.define_by_run)
        records = book.complete_records()
        view.load([Record(i + 1, p, d, v, job) for i, (p, d, v, job) in enumerate(records)])
        book.view = view
        self.book, self.view = book, view
        if self.jobs:
            log.info(
                "experiment directory: %d points asked, %d finished (%d added to the study "
                "now), %d job(s) to finish first; %.1fs",
                self.asked,
                self.done,
                counts.added,
                len(self.queue),
                time.monotonic() - t0,
            )
        log.info("%s", view.describe())

    # ---- Tune's Searcher interface ------------------------------------------------------------

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        self.open()
        if self.queue:
            job = self.queue.pop(0)
            log.info("job %s resumes (Tune trial %s)", job.id, trial_id)
        else:
            left = self.budget - self.asked
            if left <= 0:
                self.finished_asking = True
                return Searcher.FINISHED  # type: ignore[return-value]  # Ray's own annotation
                # (Optional[Dict]) leaves out the FINISHED its docstring documents
            job = self._ask(trial_id, min(self.per_job, left))
            # a lambda path whose lowest steps fell below the space's lambda has fewer points
            self.asked += len(job.points)
        self.running[trial_id] = job
        return job.config()

    def _ask(self, job_id: str, k: int) -> Job:
        """A new job of at most ``k`` points, proposed by the sampler and written to the
        directory: one SSL model's points, or (``economy.lambda_path``) each step's in turn."""
        assert self.book is not None and self.view is not None
        t0 = time.process_time()
        per = self.plan.points_per_ssl
        pid = point_id(job_id, 0)
        first, params = self.view.propose(pid, {})
        shared = {n: v for n, v in first.items() if n in self.plan.ssl_params}
        if shared and self._same_ssl_as_a_job(shared):
            # GP does not see running jobs: asked twice before either finished, it proposes
            # the same lambda (often a bound) twice, the same SSL model and points again
            self.view.withdraw(pid)
            first, params = self.view.propose(pid, {}, random=True)
            shared = {n: v for n, v in first.items() if n in self.plan.ssl_params}
            log.info("job %s: the sampler repeated an SSL setting; a random one instead", job_id)
        lams: list[Any] = [params.get("ssl_lambda")]
        if self.plan.path:  # the sampler's lambda is the path's last step
            lams = path_lambdas(self.space, params["ssl_lambda"], min(self.plan.path, -(-k // per)))
            self.view.rename(pid, point_id(job_id, (len(lams) - 1) * per))
        searched_lambda = "ssl_lambda" in first
        points: list[dict[str, Any]] = []
        for s, lam in enumerate(lams):
            last = s == len(lams) - 1
            n = min(per, k - len(points)) if last else per
            for i in range(n):
                tid = point_id(job_id, len(points))
                if last and i == 0:  # the sampler's own point
                    points.append({"trial_id": tid, "params": params})
                elif self.screened:  # the screen chooses every point's amount after SSL training
                    points.append({"trial_id": tid, "params": {**params, "ssl_lambda": lam}})
                else:
                    step = {"ssl_lambda": lam} if searched_lambda else {}
                    fixed = {**shared, **step, **spread_params(self.space, first, i, n)}
                    _, asked = self.view.propose(tid, fixed)
                    points.append({"trial_id": tid, "params": {**asked, "ssl_lambda": lam}})
        for p in points:
            self.book.expect(str(p["trial_id"]), job_id, p["params"])
        job = Job(job_id, points)
        write_job(self.exp_dir, job)  # before Tune knows the trial: the directory has it first
        self.jobs[job_id] = job
        self.ask_seconds += time.process_time() - t0
        return job

    def _same_ssl_as_a_job(self, shared: dict[str, Any]) -> bool:
        """Whether a job of the experiment already has these searched SSL settings."""
        for job in self.jobs.values():
            for p in job.points:  # a lambda path's steps too
                if all(_same(p["params"].get(n), v) for n, v in shared.items()):
                    return True
        return False

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if result.get("final") and result.get(POINT_KEY):
            self._sync([str(result[POINT_KEY])])

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        job = self.running.pop(trial_id, None)
        if job is not None:
            self._sync(job.point_ids())

    def _sync(self, pids: list[str]) -> None:
        assert self.book is not None
        before = len(self.book.finished)
        counts = self.book.sync(pids)
        self.done += len(self.book.finished) - before
        self.sync_seconds += counts.seconds

    def save(self, checkpoint_path: str) -> None:
        """Nothing: the experiment directory and the study are the searcher's state."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: ``open`` reads the experiment directory."""

    # ---- the end of a search ----------------------------------------------------------------

    def ended_by_itself(self) -> bool:
        """Whether the search asked all its points and Tune ended every job it handed out
        (not interrupted, not cut by the time budget)."""
        return self.finished_asking and not self.running and not self.queue

    def close(self) -> int:
        """At the end of a search that ended by itself: every point still without a result
        belongs to a job whose Tune trial failed for good (no retries left). Each gets an
        ``error`` result in the directory, with its job's error, and the study is brought in
        line (FAIL); a later resume leaves them so. Returns how many."""
        if self.book is None or not self.ended_by_itself():
            return 0
        closed = []
        for job in self.jobs.values():
            todo = [
                (i, p) for i, p in enumerate(job.points) if p["trial_id"] not in self.book.finished
            ]
            if not todo:
                continue
            reason = read_error(self.exp_dir, job.id) or LOST
            for i, p in todo:
                pid = str(p["trial_id"])
                if self.book.sync([pid]).done:  # finished after all (its report came late)
                    continue
                if point_result(self.exp_dir, pid) is not None:  # on disk, never overwritten
                    log.warning("point %s has a result the study could not take: kept", pid)
                    continue
                result = {
                    **p["params"],
                    "trial_id": pid,
                    "job_id": job.id,
                    "point": i,
                    "final": True,
                    "status": "error",
                    "error": reason,
                }
                write_point_result(self.exp_dir, pid, result)
                closed.append(pid)
        self._sync(closed)
        if closed:
            log.info("%d point(s) of failed trials recorded as errors", len(closed))
        return len(closed)

"""The points a search's fronts are compared with and checked by, run as Ray tasks beside and
after the trials: the dense baseline, the lambda = 0 references (one per distinct pruning choice
of the search, from one lambda = 0 model) and the re-evaluations of the Pareto points with more
training seeds (``--confirm-front``)."""

from __future__ import annotations

import json
import logging
from typing import Any

from sslsearch import storage
from sslsearch.config import SearchSpace
from sslsearch.errors import UserError
from sslsearch.report._rows import CHOICE_KEYS, pruning_choice
from sslsearch.search._finish import is_search_point

log = logging.getLogger(__name__)


def start_baseline(space: SearchSpace, exp_dir: str) -> Any:
    """The dense baseline as a Ray task that runs beside the trials (once per experiment)."""
    if not space.reference.baseline:
        return None
    import ray

    from sslsearch.search._trainable import baseline_job
    from sslsearch.trial import BASELINE_ID, RESULT_FILE

    if storage.exists(storage.join(exp_dir, BASELINE_ID, RESULT_FILE)):
        return None  # made by an earlier run of this experiment
    task = ray.remote(baseline_job).options(
        num_cpus=space.resources.cpus, num_gpus=space.resources.gpu, max_retries=2
    )
    return task.remote(space.to_dict(), exp_dir, max(1, int(space.resources.cpus)))


def baseline_before_points(space: SearchSpace, exp_dir: str, ref: Any) -> Any:
    """When the points distil from the dense baseline, it is trained first (not beside the
    trials): a search without its teacher stops here with one line. Returns what is left to
    wait for."""
    from sslsearch.search._trainable import distill_teacher

    teacher = distill_teacher(space, exp_dir)
    if space.recipe.distill_weight > 0 and teacher is None:
        log.info(
            "distillation: no dense baseline (reference.baseline): each point's SSL model teaches"
        )
    if teacher is None:
        return ref
    log.info("distillation: the points distil from the dense baseline, trained first")
    error = wait_baseline(ref)
    if not storage.exists(teacher):
        raise UserError(
            f"the points distil from the dense baseline (recipe.distill_weight "
            f"{space.recipe.distill_weight}), but it has no model ({teacher}): "
            f"{error or 'see baseline/result.json'}"
        )
    return None


def distinct_choices(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One pruning choice per distinct (prune_type, prune_way, amount, blocks, min_width_share)
    of ``rows`` (search points, in the order they were asked), each with its ssl_type and the
    ``trial_id`` of its first point: the reference of that choice is ``ref-<trial_id>``, the
    same id on every run of the experiment, so a resume finds it on disk."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        key = pruning_choice(r)
        if key not in out:
            keys = ("ssl_type", *CHOICE_KEYS, "trial_id")
            out[key] = {k: r[k] for k in keys if r.get(k) is not None}
    return list(out.values())


def start_reference_model(space: SearchSpace, exp_dir: str) -> Any:
    """The references' lambda = 0 model as a Ray task beside the trials (it depends on no
    choice of the search), so that at the end only its points are left to fine-tune, on every
    slot at once, instead of one slot training it while the others wait."""
    if not space.reference.lambda0:
        return None
    import ray

    from sslsearch.search._trainable import reference_model_job

    task = ray.remote(reference_model_job).options(
        num_cpus=space.resources.cpus, num_gpus=space.resources.gpu, max_retries=2
    )
    return task.remote(space.to_dict(), exp_dir, max(1, int(space.resources.cpus)))


def run_references(space: SearchSpace, exp_dir: str, model_task: Any = None) -> None:
    """lambda = 0 reference points, one per distinct pruning choice of the finished search
    points (at lambda = 0 the SSL model is the same for all: a choice fine-tuned twice would
    only list the same point twice). ``model_task``: the task training their model (waited
    for; if it failed, the first reference task trains it)."""
    if not space.reference.lambda0:
        return
    import ray

    from sslsearch.search._results import collect_trials
    from sslsearch.search._trainable import reference_job

    trained = False
    if model_task is not None:
        log.info("references (lambda = 0): waiting for their model, trained beside the trials")
        try:
            log.info("reference model (lambda = 0): %s", ray.get(model_task))
            trained = True
        except Exception as e:  # the first reference task trains it instead
            log.warning(
                "the reference model task failed: %s", str(e).strip().splitlines()[-1][:300]
            )
    choices = distinct_choices(
        [
            r
            for r in collect_trials(exp_dir, space.objective_defs())
            if is_search_point(r) and r["status"] == "ok"
        ]
    )
    # One SSL model at lambda = 0 for every choice (reference_job): trained beside the trials,
    # else by the first task before the other choices are fine-tuned from it, in up to
    # budget.max_concurrent tasks at once.
    task = ray.remote(reference_job).options(
        num_cpus=space.resources.cpus, num_gpus=space.resources.gpu, max_retries=2
    )
    threads = max(1, int(space.resources.cpus))
    k = max(1, space.budget.max_concurrent)
    log.info(
        "references (lambda = 0): pruning and fine-tuning %d point(s), one per distinct pruning "
        "choice of the search, %d at a time",
        len(choices),
        min(k, max(1, len(choices))),
    )
    try:
        n = 0
        if not trained and choices:
            n = ray.get(task.remote(space.to_dict(), exp_dir, threads, choices[:1]))
            choices = choices[1:]
        rest = [choices[i::k] for i in range(k)]
        n += sum(ray.get([task.remote(space.to_dict(), exp_dir, threads, c) for c in rest if c]))
        log.info("reference points (lambda = 0): %d", n)
    except Exception as e:  # the search's results stand without them
        log.warning("the reference points failed: %s", str(e).strip().splitlines()[-1][:300])


def confirm_jobs(
    space: SearchSpace, rows: list[dict[str, Any]], seeds: int
) -> list[list[dict[str, Any]]]:
    """The re-evaluations ``--confirm-front seeds`` asks for, grouped by SSL model.

    Every point on a front the export shows (SSL and no-SSL, ``points_to_confirm``) is re-run
    with the training seeds ``space.seed + 1 .. space.seed + seeds``. Points that share their
    SSL settings and seed share one group: one SSL model, trained once, serves them all.
    """
    from sslsearch.report import points_to_confirm

    if seeds <= 0:
        return []
    objectives = space.objective_pairs()
    by_id = {r["trial_id"]: r for r in rows if not r.get("confirm_of")}
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for tid in points_to_confirm(rows, objectives):
        r = by_id[tid]
        cfg = json.loads(r["config"])
        ssl = json.dumps({k: cfg.get(k) for k in ("ssl_type", "ssl_lambda")}, sort_keys=True)
        for k in range(1, seeds + 1):
            seed = space.seed + k
            job = {"trial_id": tid, "role": r["role"], "config": r["config"], "seed": seed}
            groups.setdefault((f"{r['role']}:{ssl}", seed), []).append(job)
    return list(groups.values())


def confirm_front(space: SearchSpace, exp_dir: str, seeds: int) -> None:
    """Re-evaluate the Pareto points with ``seeds`` more training seeds (Ray tasks, one per SSL
    model and seed); rows with ``confirm_of``, never in the Optuna study nor on a front."""
    if seeds <= 0:
        return
    import ray

    from sslsearch.search._experiment import CONFIRM_DIR
    from sslsearch.search._results import collect_trials
    from sslsearch.search._trainable import confirm_id, confirm_job
    from sslsearch.trial import RESULT_FILE

    def done(job: dict[str, Any]) -> bool:
        pid = confirm_id(job["trial_id"], job["seed"])
        return storage.exists(storage.join(exp_dir, CONFIRM_DIR, pid, RESULT_FILE))

    groups = [
        todo
        # with the space's own objectives: a user's objective is a column of the fronts
        for g in confirm_jobs(space, collect_trials(exp_dir, space.objective_defs()), seeds)
        if (todo := [j for j in g if not done(j)])
    ]
    n = sum(len(g) for g in groups)
    log.info("confirming the Pareto points: %d re-evaluations in %d group(s)", n, len(groups))
    task = ray.remote(confirm_job).options(
        num_cpus=space.resources.cpus, num_gpus=space.resources.gpu, max_retries=2
    )
    threads = max(1, int(space.resources.cpus))
    refs = [task.remote(exp_dir, threads, g) for g in groups]
    for ref in refs:
        try:
            ray.get(ref)
        except Exception as e:  # the search's results stand without them
            log.warning("a re-evaluation failed: %s", str(e).strip().splitlines()[-1][:300])


def wait_baseline(ref: Any) -> str | None:
    """Wait for the dense baseline's task; its error, if it failed."""
    if ref is None:
        return None
    import ray

    try:
        log.info("dense baseline: %s", ray.get(ref))
    except Exception as e:  # the search's results stand without it
        error = str(e).strip().splitlines()[-1][:300]
        log.warning("the dense baseline failed: %s", error)
        return error
    return None

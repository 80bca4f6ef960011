"""The Ray Tune function trainable: one job (an SSL model and its points), reporting through
``tune.report``. Everything it resumes from is in the experiment directory (``jobs/<id>/``,
written by the trial itself); Tune's checkpoints are not used."""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Callable
from typing import Any

from sslsearch import storage as _storage
from sslsearch.config import SearchSpace, space_from_mapping
from sslsearch.search._experiment import (
    CONFIRM_DIR,
    JOBS_DIR,
    POINTS_DIR,
    REFERENCE_DIR,
    SSL_MODELS_DIR,
    job_dir,
    write_error,
)
from sslsearch.search._params import trial_config
from sslsearch.search._plan import plan_search
from sslsearch.search._promotion import make_promote
from sslsearch.trial import Rungs, ScreenSpec, run_path, run_points, rung_epochs
from sslsearch.trial._early import FrontStop

log = logging.getLogger(__name__)
POINT_KEY = "point_id"  # a reported point's id: Tune fills "trial_id" with its own trial's

# A reused worker runs job after job of one experiment: its early-stopping rule keeps the
# finished points it has read (FrontStop reads each result once).
_FRONT_STOPS: dict[tuple[str, str], FrontStop] = {}


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _front_stop(space: Any, points_dir: str) -> FrontStop | None:
    es = space.early_stopping
    if not es.enabled:
        return None
    objectives = space.objective_pairs()
    key = (points_dir, json.dumps([objectives, es.margin, es.grace_epochs]))
    if key not in _FRONT_STOPS:
        _FRONT_STOPS[key] = FrontStop(
            points_dir, objectives, margin=es.margin, grace_epochs=es.grace_epochs
        )
    return _FRONT_STOPS[key]


def make_trainable(
    space_dict: dict[str, Any],
    exp_dir: str,
    threads: int,
    runner: Callable[..., Any] | None = None,
) -> Callable[[dict[str, Any]], None]:
    """A picklable closure Ray ships to the workers (the space travels as plain data).

    One Tune trial runs one job: one SSL model (stored under ``exp_dir/ssl_models``) and the
    points the searcher put in ``config["points"]``, each written to ``exp_dir/points/<id>``
    when done; its states go to ``exp_dir/jobs/<job id>/``, so a retried or resumed job goes
    on from its last whole state. ``runner``: the trial (``sslsearch.trial.run_points``, or a
    test double with its signature for benchmarks of the search itself).
    """
    cache_dir = _storage.join(exp_dir, SSL_MODELS_DIR)
    points_dir = _storage.join(exp_dir, POINTS_DIR)

    def sslsearch_trial(config: dict[str, Any]) -> None:
        import ray
        from ray import tune

        space = space_from_mapping(space_dict)
        points = config.get("points") or [config]
        job_id = str(config["job_id"])
        teacher = distill_teacher(space, exp_dir)
        cfgs = [
            trial_config(space, p, threads=threads, cache_dir=cache_dir).with_(teacher=teacher)
            for p in points
        ]
        ctx = tune.get_context()
        tags = {
            "job_id": job_id,
            "tune_trial_id": ctx.get_trial_id(),
            "trial_name": ctx.get_trial_name(),
            "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids()),
            "node_ip": ray.util.get_node_ip_address(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
        }

        def report(metrics: dict[str, Any]) -> None:
            flat = {k: v for k, v in metrics.items() if _scalar(v)}
            if "trial_id" in flat:  # Tune overwrites trial_id with its own trial's id
                flat[POINT_KEY] = flat["trial_id"]
            tune.report(flat)

        run = runner or run_points
        plan = plan_search(space)
        extra: dict[str, Any] = {}
        if plan.screen is not None:
            # chosen against the other SSL models' screens (jobs/<id>/screen.json)
            extra["screen"] = ScreenSpec(
                *plan.screen,
                plan.objectives,
                others=_storage.join(exp_dir, JOBS_DIR),
                steps=space.economy.screen_steps,
                paths=bool(space.economy.lambda_path),
            )
            epochs = rung_epochs(space.economy.rungs, space.recipe.epochs)
            if epochs:
                promote = make_promote(exp_dir, job_id, space.economy.keep, list(plan.objectives))
                extra["rungs"] = Rungs(epochs, promote)
        if space.economy.lambda_path:  # each step's points in turn, each step an SSL model
            extra.update(path_epochs=space.economy.path_epochs, runner=run)
            run = run_path
        try:
            run(
                cfgs,
                report,
                state_dir=job_dir(exp_dir, job_id),
                tags=tags,
                point_ids=[str(p["trial_id"]) for p in points],
                points_dir=points_dir,
                stop=_front_stop(space, points_dir),
                **extra,
            )
        except Exception:
            write_error(exp_dir, job_id, traceback.format_exc())  # the driver names it
            raise

    return sslsearch_trial


def distill_teacher(space: SearchSpace, exp_dir: str) -> str | None:
    """The model file the points' fine-tunes distil from (``recipe.distill_weight`` > 0): the
    experiment's dense baseline when it has one (``reference.baseline``); None: each point's
    own SSL model before pruning teaches (or nothing is distilled)."""
    if space.recipe.distill_weight > 0 and space.reference.baseline:
        from sslsearch.trial import BASELINE_ID, MODEL_FILE

        return _storage.join(exp_dir, BASELINE_ID, MODEL_FILE)
    return None


def baseline_job(space_dict: dict[str, Any], exp_dir: str, threads: int) -> str:
    """The experiment's dense baseline (a Ray task beside the trials); returns its status."""
    from sslsearch.trial import measure_weights_baseline, run_baseline

    space = space_from_mapping(space_dict)
    params = {"ssl_lambda": 0.0, "ratio": 0.0}
    cfg = trial_config(space, params, threads=threads, cache_dir=None)
    if space.reference.baseline == "weights":  # the user's model as it is: nothing trained
        return measure_weights_baseline(cfg, exp_dir).status
    return run_baseline(cfg, exp_dir).status


def reference_ssl_type(space: SearchSpace) -> str:
    """The ssl type every lambda = 0 reference is trained under: at lambda = 0 it trains
    nothing, but it is part of the SSL model's id, so one fixed name gives one plain model (the
    space's ssl type, or prune type, or the first of their choices)."""
    for key in ("ssl_type", "prune_type"):
        spec = space.params.get(key)
        if isinstance(spec, str):
            return spec
        if isinstance(spec, dict) and spec.get("choices"):
            return str(spec["choices"][0])
    return "filter_wise"


def reference_model_job(space_dict: dict[str, Any], exp_dir: str, threads: int) -> str:
    """The lambda = 0 model of the references, trained beside the trials (a Ray task started
    with the search) into ``ssl_models/``: at the end only its pruning and fine-tuning are left.
    Returns its SSL model id."""
    from sslsearch.trial import ensure_ssl_model

    space = space_from_mapping(space_dict)
    params = {"ssl_lambda": 0.0, "ssl_type": reference_ssl_type(space)}
    cfg = trial_config(
        space, params, threads=threads, cache_dir=_storage.join(exp_dir, SSL_MODELS_DIR)
    )
    return ensure_ssl_model(cfg.with_(allow_unmatched_prune=True))


def reference_job(
    space_dict: dict[str, Any], exp_dir: str, threads: int, choices: list[dict[str, Any]]
) -> int:
    """Reference points: the lambda = 0 SSL model pruned at each of the search's choices.

    ``choices``: the finished search points' parameters with their ``trial_id``. Returns how
    many reference points there are; those already on disk (a resumed experiment) are kept.
    """
    space = space_from_mapping(space_dict)
    # at lambda = 0 the ssl type trains nothing: one SSL model serves every prune type
    ssl_type = reference_ssl_type(space)
    cfgs = [
        trial_config(
            space,
            {**c, "ssl_lambda": 0.0, "ssl_type": ssl_type},
            threads=threads,
            cache_dir=_storage.join(exp_dir, SSL_MODELS_DIR),
        ).with_(
            teacher=distill_teacher(space, exp_dir),  # fine-tuned as the search's points
            allow_unmatched_prune=True,  # at lambda = 0 no structure was targeted
        )
        for c in choices
    ]
    if not cfgs:
        return 0
    ids = [f"ref-{c['trial_id']}" for c in choices]
    run_points(
        cfgs,
        tags={"role": "reference"},
        point_ids=ids,
        points_dir=_storage.join(exp_dir, REFERENCE_DIR),
    )
    return len(ids)


def confirm_id(trial_id: str, seed: int) -> str:
    """The id of the re-evaluation of point ``trial_id`` with training seed ``seed``."""
    return f"{trial_id}-seed{seed}"


def confirm_job(exp_dir: str, threads: int, jobs: list[dict[str, Any]]) -> int:
    """Re-evaluate Pareto points with another training seed (``--confirm-front``).

    ``jobs``: one per point, each ``{"trial_id", "role", "config", "seed"}`` (``config``: the
    point's TrialConfig as in trials.parquet), all with the same SSL settings and seed, so they
    share one SSL model (trained once with that seed, then found in ``ssl_models/``). Each is a
    fresh replicate of the whole pipeline: SSL training, pruning, BN recalibration and
    fine-tuning all start from the new seed. A re-evaluation already on disk is kept.
    Returns how many finished ``ok``.
    """
    from sslsearch.config import TrialConfig

    cache_dir = _storage.join(exp_dir, SSL_MODELS_DIR)
    ok = 0
    for job in jobs:
        cfg = TrialConfig.from_dict(json.loads(job["config"])).with_(
            seed=int(job["seed"]), threads=threads, cache_dir=cache_dir, out_dir=None
        )
        [res] = run_points(
            [cfg],
            tags={"role": job["role"], "confirm_of": job["trial_id"]},
            point_ids=[confirm_id(job["trial_id"], int(job["seed"]))],
            points_dir=_storage.join(exp_dir, CONFIRM_DIR),
        )
        ok += res.status == "ok"
    return ok

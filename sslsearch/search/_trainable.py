"""The Ray Tune function trainable: one sslsearch trial, reporting through ``tune.report``."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sslsearch import storage as _storage
from sslsearch.config import space_from_mapping
from sslsearch.search._params import trial_config
from sslsearch.trial import RESULT_FILE, STATE_FILE, point_id, run_points
from sslsearch.trial._early import FrontStop

SSL_MODELS_DIR = "ssl_models"  # the SSL models, shared by every node through the storage path
POINTS_DIR = "points"  # each finished point's result.json and model.pt

log = logging.getLogger(__name__)
_CKPT = re.compile(r"^checkpoint_(\d+)$")


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _checkpoints(fs: Any, trial_path: str) -> list[tuple[int, str]]:
    """The trial's checkpoint_<n> directories, newest first."""
    import pyarrow.fs as pafs

    info = fs.get_file_info(pafs.FileSelector(trial_path, allow_not_found=True))
    found = []
    for i in info:
        m = _CKPT.match(i.base_name)
        if m and i.type == pafs.FileType.Directory:
            found.append((int(m.group(1)), i.path))
    return sorted(found, reverse=True)


def _has(fs: Any, path: str) -> bool:
    import pyarrow.fs as pafs

    return bool(fs.get_file_info(path).type == pafs.FileType.File)


def _newest_with(fs: Any, found: list[tuple[int, str]], name: str) -> tuple[int, str] | None:
    """The newest of ``found`` (newest first) that holds the file ``name``."""
    return next(((idx, path) for idx, path in found if _has(fs, f"{path}/{name}")), None)


def resume_path(fs: Any, trial_path: str, given: str | None) -> str | None:
    """The checkpoint a (re)started trial resumes from: the disk is the truth, not Tune.

    ``given``: the checkpoint Tune restored the trial from (None: it starts afresh). Tune
    restores a trial from the checkpoint its last experiment snapshot knew of, which may be
    older than what is on disk (the driver died before the next snapshot) or deleted since (a
    placeholder, ``fill_missing_checkpoints``). The newest checkpoint holding the final result
    wins if newer (a finished trial is re-reported, not re-run); else the newest holding a
    trial state if newer than ``given`` or if ``given`` is a placeholder; None when there is
    nothing to resume.
    """
    known = _CKPT.match(Path(given).name) if given is not None else None
    index = int(known.group(1)) if known is not None else -1
    found = _checkpoints(fs, trial_path)  # one listing for both questions
    final = _newest_with(fs, found, RESULT_FILE)
    if final is not None and index < final[0]:
        return final[1]
    real = given is not None and (
        _has(fs, f"{given}/{STATE_FILE}") or _has(fs, f"{given}/{RESULT_FILE}")
    )
    newest = _newest_with(fs, found, STATE_FILE)
    if newest is not None and (index < newest[0] or not real):
        return newest[1]
    return given if real else None


def fill_missing_checkpoints(exp_dir: str) -> list[str]:
    """Before a resume: an empty placeholder for every checkpoint a trial no longer has.

    Tune deletes a trial's older checkpoints (``num_to_keep``) as newer ones arrive, but
    snapshots the experiment only every few seconds. A driver killed in between leaves a
    snapshot naming a deleted checkpoint, and Tune's restore then fails the trial ("Could not
    recover from checkpoint as it does not exist on storage anymore") on every retry: the
    points it had not finished were lost. With a placeholder in its place the trial starts,
    and the trainable resumes from the newest real checkpoint on disk instead
    (``resume_path``). Returns the placeholders made (``remove_placeholders``
    takes them away after the run).
    """
    from sslsearch import storage as st

    fs, root = st.resolve(exp_dir)
    import pyarrow.fs as pafs

    made = []
    for d in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True)):
        if d.type != pafs.FileType.Directory or not d.base_name.startswith("sslsearch_trial"):
            continue
        have = {idx for idx, _ in _checkpoints(fs, d.path)}
        for idx in range(max(have, default=0)):
            if idx not in have:
                path = f"{d.path}/checkpoint_{idx:06d}"
                fs.create_dir(path)
                made.append(path)
    return made


def remove_placeholders(exp_dir: str, made: list[str]) -> None:
    """Remove the placeholders ``fill_missing_checkpoints`` made that are still empty."""
    from sslsearch import storage as st

    fs, _ = st.resolve(exp_dir)
    import pyarrow.fs as pafs

    for path in made:
        try:
            if not fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
                fs.delete_dir(path)
        except OSError:  # already gone (Tune deleted it) or not empty: leave it
            pass


def make_trainable(
    space_dict: dict[str, Any], exp_dir: str, threads: int
) -> Callable[[dict[str, Any]], None]:
    """A picklable closure Ray ships to the workers (the space travels as plain data).

    One Tune trial: one SSL model (stored under ``exp_dir/ssl_models``) and the points the
    searcher put in ``params["points"]``, each written to ``exp_dir/points/<id>`` when done.
    """
    cache_dir = _storage.join(exp_dir, SSL_MODELS_DIR)
    points_dir = _storage.join(exp_dir, POINTS_DIR)

    def sslsearch_trial(params: dict[str, Any]) -> None:
        from ray import tune

        space = space_from_mapping(space_dict)
        points = params.get("points") or [params]
        cfgs = [trial_config(space, p, threads=threads, cache_dir=cache_dir) for p in points]
        ctx = tune.get_context()
        import ray

        tune_id = ctx.get_trial_id()
        ids = [point_id(tune_id, i) for i in range(len(cfgs))]
        es = space.early_stopping
        stop = (
            FrontStop(
                points_dir,
                [(o.metric, o.direction) for o in space.objectives],
                margin=es.margin,
                grace_epochs=es.grace_epochs,
            )
            if es.enabled
            else None
        )
        tags = {
            "tune_trial_id": tune_id,
            "trial_name": ctx.get_trial_name(),
            "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids()),
            "node_ip": ray.util.get_node_ip_address(),
            "node_id": ray.get_runtime_context().get_node_id(),
        }

        def report(metrics: dict[str, Any], checkpoint: Path | None) -> None:
            flat = {k: v for k, v in metrics.items() if _scalar(v)}
            if checkpoint is None:
                tune.report(flat)
            else:
                tune.report(flat, checkpoint=tune.Checkpoint.from_directory(str(checkpoint)))

        given = tune.get_checkpoint()
        storage = ctx.get_storage()
        fs = storage.storage_filesystem
        path = resume_path(fs, storage.trial_fs_path, given.path if given is not None else None)
        if path is not None and (given is None or path != given.path):
            log.info("trial %s resumes from %s (Tune gave %s)", tune_id, path, given)
        ckpt = tune.Checkpoint(path, filesystem=fs) if path is not None else None
        kw: dict[str, Any] = {"tags": tags, "point_ids": ids, "points_dir": points_dir}
        if ckpt is None:
            run_points(cfgs, report, stop=stop, **kw)
        else:
            with ckpt.as_directory() as d:
                run_points(cfgs, report, resume_from=d, stop=stop, **kw)

    return sslsearch_trial


def baseline_job(space_dict: dict[str, Any], exp_dir: str, threads: int) -> str:
    """The experiment's dense baseline (a Ray task beside the trials); returns its status."""
    from sslsearch.trial import measure_weights_baseline, run_baseline

    space = space_from_mapping(space_dict)
    params = {"ssl_lambda": 0.0, "ratio": 0.0}
    cfg = trial_config(space, params, threads=threads, cache_dir=None)
    if space.reference.baseline == "weights":  # the user's model as it is: nothing trained
        return measure_weights_baseline(cfg, exp_dir).status
    return run_baseline(cfg, exp_dir).status


REFERENCE_DIR = "reference"  # lambda = 0 points: reference/<id>/result.json and model.pt


def reference_job(
    space_dict: dict[str, Any], exp_dir: str, threads: int, choices: list[dict[str, Any]]
) -> int:
    """Reference points: the lambda = 0 SSL model pruned at each of the search's choices.

    ``choices``: the finished search points' parameters with their ``trial_id``. Returns how
    many reference points there are; those already on disk (a resumed experiment) are kept.
    """
    space = space_from_mapping(space_dict)
    # at lambda = 0 the ssl type trains nothing: one SSL model serves every prune type
    ssl_type = choices[0].get("ssl_type") if choices else None
    cfgs = [
        trial_config(
            space,
            {**c, "ssl_lambda": 0.0, "ssl_type": ssl_type or c.get("prune_type", "filter_wise")},
            threads=threads,
            cache_dir=_storage.join(exp_dir, SSL_MODELS_DIR),
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


CONFIRM_DIR = "confirm"  # re-evaluations of Pareto points: confirm/<id>/result.json, model.pt


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

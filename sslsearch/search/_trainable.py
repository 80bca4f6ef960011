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
from sslsearch.trial import RESULT_FILE, point_id, run_points
from sslsearch.trial._early import FrontStop

SSL_MODELS_DIR = "ssl_models"  # the SSL models, shared by every node through the storage path
POINTS_DIR = "points"  # each finished point's result.json and model.pt

log = logging.getLogger(__name__)
_CKPT = re.compile(r"^checkpoint_(\d+)$")


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def latest_final_checkpoint(fs: Any, trial_path: str) -> tuple[int, str] | None:
    """The newest checkpoint of a trial that holds its final result, if any.

    Tune restores a trial from the checkpoint its last experiment snapshot knew of; if the
    driver died after the trial finished but before the snapshot, that is an older epoch. The
    final checkpoint on disk is the truth: a finished trial is then re-reported, not re-run.
    """
    import pyarrow.fs as pafs

    info = fs.get_file_info(pafs.FileSelector(trial_path, allow_not_found=True))
    found = []
    for i in info:
        m = _CKPT.match(i.base_name)
        if m and i.type == pafs.FileType.Directory:
            found.append((int(m.group(1)), i.path))
    for idx, path in sorted(found, reverse=True):
        if fs.get_file_info(f"{path}/{RESULT_FILE}").type == pafs.FileType.File:
            return idx, path
    return None


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

        ckpt = tune.get_checkpoint()
        storage = ctx.get_storage()
        final = latest_final_checkpoint(storage.storage_filesystem, storage.trial_fs_path)
        if final is not None:
            known = _CKPT.match(Path(ckpt.path).name) if ckpt is not None else None
            if known is None or int(known.group(1)) < final[0]:
                log.info("trial %s already finished: re-reporting %s", tune_id, final[1])
                ckpt = tune.Checkpoint(final[1], filesystem=storage.storage_filesystem)
        kw: dict[str, Any] = {"tags": tags, "point_ids": ids, "points_dir": points_dir}
        if ckpt is None:
            run_points(cfgs, report, stop=stop, **kw)
        else:
            with ckpt.as_directory() as d:
                run_points(cfgs, report, resume_from=d, stop=stop, **kw)

    return sslsearch_trial


def baseline_job(space_dict: dict[str, Any], exp_dir: str, threads: int) -> str:
    """The experiment's dense baseline (a Ray task beside the trials); returns its status."""
    from sslsearch.trial import run_baseline

    space = space_from_mapping(space_dict)
    params = {"ssl_lambda": 0.0, "ratio": 0.0}
    cfg = trial_config(space, params, threads=threads, cache_dir=None)
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

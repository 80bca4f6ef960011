"""The Ray Tune function trainable: one sslsearch trial, reporting through ``tune.report``."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sslsearch.config import space_from_mapping
from sslsearch.search._params import trial_config
from sslsearch.trial import RESULT_FILE, run_trial

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
    space_dict: dict[str, Any], cache_dir: str | None, threads: int
) -> Callable[[dict[str, Any]], None]:
    """A picklable closure Ray ships to the workers (the space travels as plain data)."""

    def sslsearch_trial(params: dict[str, Any]) -> None:
        from ray import tune

        space = space_from_mapping(space_dict)
        cfg = trial_config(space, params, threads=threads, cache_dir=cache_dir)
        ctx = tune.get_context()
        import ray

        tags = {
            "trial_id": ctx.get_trial_id(),
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
                log.info("trial %s already finished: re-reporting %s", tags["trial_id"], final[1])
                ckpt = tune.Checkpoint(final[1], filesystem=storage.storage_filesystem)
        if ckpt is None:
            run_trial(cfg, report, tags=tags)
        else:
            with ckpt.as_directory() as d:
                run_trial(cfg, report, resume_from=d, tags=tags)

    return sslsearch_trial

"""One trial: data + model -> SSL training -> prune -> fine-tune -> evaluate -> measure -> save.

``run_trial`` never imports ray. It reports through a callback ``report(metrics, checkpoint)``
where ``checkpoint`` is a directory holding everything needed to resume (``state.pt``) and, at
the end, the pruned model (``model.pt``) and the final metrics (``result.json``). The search
package adapts this callback to ``ray.tune.report``; alone, reports go to the log.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sslsearch.config import TrialConfig
from sslsearch.data import Datasets, load_datasets
from sslsearch.metrics import measure_cost, size_mb
from sslsearch.models import (
    create_model,
    model_from_payload,
    model_payload,
    safe_torch_load,
    save_model,
)
from sslsearch.pruning import prune
from sslsearch.sparsity import SSLPenalty, group_sparsity
from sslsearch.storage import write_text_atomic
from sslsearch.trial._cache import SSLCache
from sslsearch.trial._train import (
    NonFiniteLoss,
    evaluate,
    lr_at,
    make_optimizer,
    pick_device,
    seed_everything,
    set_threads,
    train_one_epoch,
)
from sslsearch.trial._validate import validate_trial

log = logging.getLogger(__name__)

Report = Callable[[dict[str, Any], "Path | None"], None]
STATE_FILE = "state.pt"
MODEL_FILE = "model.pt"
RESULT_FILE = "result.json"
STATE_VERSION = 1


@dataclass
class TrialResult:
    status: str  # "ok" or "failed"
    metrics: dict[str, Any]
    error: str | None = None
    model_path: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def _log_report(metrics: dict[str, Any], checkpoint: Path | None) -> None:
    """Progress of a trial run alone: one line per epoch."""
    if metrics.get("final"):
        return
    ssl = metrics["phase"] == "ssl"
    log.info(
        "%-8s epoch %d/%d: loss %.4f%s  val top1 %.2f top5 %.2f%s",
        metrics["phase"],
        metrics["epoch"],
        metrics["epochs"],
        metrics["loss"],
        f" + penalty {metrics['penalty']:.4g}" if ssl else "",
        metrics["val_top1"],
        metrics["val_top5"],
        f"  near-zero groups {100 * metrics['group_sparsity']:.1f}%" if ssl else "",
    )


def _scalar_lambda(cfg: TrialConfig) -> float:
    lam = cfg.ssl_lambda
    return float(lam) if not isinstance(lam, dict) else float(max(lam.values()))


def describe(cfg: TrialConfig) -> dict[str, Any]:
    """The flat config columns every report and every trials.parquet row carries."""
    return {
        "arch": cfg.arch,
        "dataset": cfg.data.name,
        "image_size": cfg.data.image_size,
        "ssl_type": cfg.ssl_type,
        "ssl_lambda": _scalar_lambda(cfg),
        "prune_type": cfg.prune_type,
        "prune_way": cfg.prune_way,
        "ratio": cfg.ratio if cfg.ratio is not None else float("nan"),
        "blocks": cfg.blocks if cfg.blocks is not None else -1,
        "seed": cfg.seed,
        "epochs": cfg.recipe.epochs,
        "finetune_epochs": cfg.recipe.finetune_epochs,
    }


class _Run:
    """The state of one trial while it runs; each phase is a method."""

    def __init__(self, cfg: TrialConfig, report: Report, tags: dict[str, Any]) -> None:
        self.cfg = cfg
        self.report_fn = report
        self.tags = tags
        self.history: list[dict[str, Any]] = []
        self.global_epoch = 0
        self.extra: dict[str, Any] = {}
        self.threads = set_threads(cfg.threads)
        self.device = pick_device(cfg.device)
        self.data: Datasets = load_datasets(cfg.data)
        self.input_shape = (self.data.channels, self.data.image_size, self.data.image_size)
        self.cuda = self.device.type == "cuda"
        self.amp = cfg.amp and self.cuda
        self.channels_last = cfg.channels_last and self.cuda
        self.scaler = (
            torch.amp.GradScaler("cuda")
            if self.amp and not torch.cuda.is_bf16_supported()
            else None
        )
        self.train_seconds = 0.0
        self.train_images = 0
        self.model_writer: Callable[[Path], None] | None = None

    # ---- checkpoints -------------------------------------------------------------------------

    def _payload(self, model: nn.Module) -> dict[str, Any]:
        return model_payload(
            model,
            arch=self.cfg.arch,
            num_classes=self.data.num_classes,
            in_channels=self.data.channels,
            input_shape=self.input_shape,
        )

    def state(
        self, phase: str, epoch: int, model: nn.Module | None, opt: torch.optim.Optimizer | None
    ) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "config": json.dumps(self.cfg.to_dict(), sort_keys=True),
            "phase": phase,
            "epoch": epoch,
            "global_epoch": self.global_epoch,
            "model": self._payload(model) if model is not None else None,
            "optimizer": opt.state_dict() if opt is not None else None,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.cuda else [],
            "history": json.dumps(self.history),
            "extra": json.dumps(self.extra),
            "train_seconds": self.train_seconds,
            "train_images": self.train_images,
        }

    def emit(
        self, metrics: dict[str, Any], state: dict[str, Any] | None, final: bool = False
    ) -> None:
        """Report ``metrics`` (plus the tags); with ``state``, also a checkpoint directory.

        A final report's checkpoint also holds result.json (the metrics as reported) and, when
        ``self.model_writer`` is set, the pruned model.
        """
        metrics = {**metrics, **self.tags}
        if state is None:
            self.report_fn(metrics, None)
            return
        tmp = Path(tempfile.mkdtemp(prefix="sslsearch-ckpt-"))
        try:
            torch.save(state, tmp / STATE_FILE)
            if final:
                (tmp / RESULT_FILE).write_text(json.dumps(metrics, indent=1))
                if self.model_writer is not None:
                    self.model_writer(tmp / MODEL_FILE)
            self.report_fn(metrics, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # ---- phases ------------------------------------------------------------------------------

    def epoch_metrics(
        self, phase: str, epoch: int, epochs: int, stats: Any, ev: Any, model: nn.Module, lr: float
    ) -> dict[str, Any]:
        m = {
            "phase": phase,
            "epoch": epoch,
            "epochs": epochs,
            "global_epoch": self.global_epoch,
            "loss": stats.loss,
            "penalty": stats.penalty,
            "train_top1": stats.train_top1,
            "val_loss": ev.loss,
            "val_top1": ev.top1,
            "val_top5": ev.top5,
            "group_sparsity": group_sparsity(model, self.cfg.ssl_type)
            if phase == "ssl"
            else float("nan"),
            "lr": lr,
            "final": False,
        }
        self.history.append(m)
        return m

    def train_phase(
        self,
        phase: str,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        start_epoch: int,
        epochs: int,
        base_lr: float,
        penalty: SSLPenalty | None,
    ) -> None:
        cfg, rec = self.cfg, self.cfg.recipe
        steps = math.ceil(len(self.data.train) / rec.batch_size)
        warmup = rec.warmup_epochs if phase == "ssl" else 0.0
        has_penalty = penalty is not None and any(v > 0 for v in penalty.lam.values())
        for epoch in range(start_epoch, epochs):
            seed = hash_seed(cfg.seed, phase, epoch)
            batches = self.data.train.batches(
                rec.batch_size,
                shuffle=True,
                augment=cfg.data.augment,
                seed=seed,
                device=self.device,
            )
            stats = train_one_epoch(
                model,
                batches,
                opt,
                lr_fn=lambda p: lr_at(p, base_lr, epochs, rec, warmup),
                steps_per_epoch=steps,
                epoch=epoch,
                penalty=penalty if has_penalty else None,
                label_smoothing=rec.label_smoothing,
                device=self.device,
                amp=self.amp,
                channels_last=self.channels_last,
                scaler=self.scaler,
            )
            self.train_seconds += stats.seconds
            self.train_images += stats.images
            ev = evaluate(
                model,
                self.data.val,
                batch_size=rec.eval_batch_size,
                device=self.device,
                amp=self.amp,
                channels_last=self.channels_last,
            )
            self.global_epoch += 1
            lr = lr_at(epoch + 1, base_lr, epochs, rec, warmup)
            metrics = self.epoch_metrics(phase, epoch + 1, epochs, stats, ev, model, lr)
            self.emit(metrics, self.state(phase, epoch + 1, model, opt))

    def to_device(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model


def hash_seed(seed: int, phase: str, epoch: int) -> int:
    """A per-(seed, phase, epoch) seed: an epoch's batches depend on nothing else."""
    return (seed * 1_000_003 + (0 if phase == "ssl" else 500_009) + epoch * 7919) % (2**63 - 1)


def _warm_start(cfg: TrialConfig, model: nn.Module) -> None:
    assert cfg.warm_start is not None
    payload = safe_torch_load(cfg.warm_start, "warm-start checkpoint")
    if isinstance(payload, dict) and "state_dict" in payload:
        if "format" in payload:
            dense = model_from_payload(payload, cfg.warm_start)
            payload = dense.state_dict()
        else:
            payload = payload["state_dict"]
    try:
        model.load_state_dict(payload)
    except (RuntimeError, TypeError) as e:
        from sslsearch.errors import ModelFileError
        from sslsearch.models._io import state_dict_misfit

        why = state_dict_misfit(payload, model) if isinstance(payload, dict) else str(e)
        raise ModelFileError(
            f"warm start {cfg.warm_start} does not fit a dense {cfg.arch}: {why}; to train a "
            f"pruned model further use `sslsearch finetune --model {cfg.warm_start}`"
        ) from None


def _warm_start_identity(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    st = os.stat(path)
    return {"warm_start_size": st.st_size, "warm_start_mtime": int(st.st_mtime)}


def run_trial(
    cfg: TrialConfig | dict[str, Any],
    report: Report | None = None,
    resume_from: str | os.PathLike[str] | None = None,
    tags: dict[str, Any] | None = None,
) -> TrialResult:
    """Run one trial end to end; resume from a checkpoint directory written by an earlier run.

    ``tags`` (e.g. the search's trial id) are added to every report and to the final result.
    """
    if not isinstance(cfg, TrialConfig):
        cfg = TrialConfig.from_dict(cfg)
    validate_trial(cfg)
    started_at, started = time.time(), time.perf_counter()  # includes loading data
    run = _Run(cfg, report or _log_report, tags or {})
    run.extra["started_at"] = started_at
    resume: dict[str, Any] | None = None
    if resume_from is not None:
        resume = safe_torch_load(Path(resume_from) / STATE_FILE, "trial checkpoint")
        if not isinstance(resume, dict) or resume.get("version") != STATE_VERSION:
            from sslsearch.errors import ModelFileError

            raise ModelFileError(f"{resume_from} is not a sslsearch trial checkpoint")
        run.history = json.loads(resume["history"])
        run.extra = json.loads(resume["extra"])
        run.global_epoch = int(resume["global_epoch"])
        run.train_seconds = float(resume.get("train_seconds", 0.0))
        run.train_images = int(resume.get("train_images", 0))
        if resume["phase"] == "done":
            final = json.loads((Path(resume_from) / RESULT_FILE).read_text())
            log.info("trial already finished; re-reporting its result")
            saved_model = Path(resume_from) / MODEL_FILE
            if saved_model.exists():

                def copy_model(dst: Path) -> None:
                    shutil.copyfile(saved_model, dst)

                run.model_writer = copy_model
            run.emit(final, resume, final=True)
            return TrialResult(final["status"], final, final.get("error"), None, run.history)
        torch.set_rng_state(resume["rng"])
        if run.cuda and resume.get("cuda_rng"):
            torch.cuda.set_rng_state_all(resume["cuda_rng"])

    try:
        return _run_phases(cfg, run, resume, started)
    except NonFiniteLoss as e:
        reason = str(e)
        log.warning("trial failed: %s", reason)
        final = {
            **describe(cfg),
            "final": True,
            "status": "failed",
            "error": reason,
            "global_epoch": run.global_epoch + 1,
        }
        run.emit(final, run.state("done", 0, None, None), final=True)
        return TrialResult("failed", {**final, **run.tags}, reason, None, run.history)


def _run_phases(
    cfg: TrialConfig, run: _Run, resume: dict[str, Any] | None, started: float
) -> TrialResult:
    rec = cfg.recipe
    data = run.data
    phase = resume["phase"] if resume else "ssl"

    # ---- SSL training (or the cached result of it) --------------------------------------
    model: nn.Module
    if phase == "ssl":
        seed_everything(cfg.seed)
        cache = SSLCache(cfg.cache_dir) if cfg.cache_dir else None
        key = cfg.ssl_key(_warm_start_identity(cfg.warm_start))
        hit = cache.get(key) if cache and resume is None else None
        if hit is not None:
            model, meta = hit
            model = run.to_device(model)
            log.info("SSL cache hit %s: skipping %d SSL epochs", key, rec.epochs)
            for m in json.loads(meta.get("history", "[]")):
                run.history.append(m)
                run.global_epoch = int(m["global_epoch"])
                run.emit(m, None)  # replay so schedulers and dashboards see the same curve
            run.extra["ssl_cached"] = True
        else:
            model = create_model(cfg.arch, data.num_classes, data.channels)
            if cfg.warm_start:
                _warm_start(cfg, model)
            model = run.to_device(model)
            opt = make_optimizer(model, rec.lr, rec)
            start = 0
            if resume is not None:
                model.load_state_dict(model_from_payload(resume["model"]).state_dict())
                if resume["optimizer"] is not None:
                    opt.load_state_dict(resume["optimizer"])
                start = int(resume["epoch"])
            penalty = SSLPenalty.build(model, cfg.ssl_type, cfg.ssl_lambda)
            run.train_phase("ssl", model, opt, start, rec.epochs, rec.lr, penalty)
            if cache is not None:
                cache.put(
                    key,
                    model,
                    arch=cfg.arch,
                    num_classes=data.num_classes,
                    in_channels=data.channels,
                    input_shape=run.input_shape,
                    meta={
                        "history": json.dumps([h for h in run.history if h["phase"] == "ssl"]),
                        "key": key,
                    },
                )
            run.extra["ssl_cached"] = False
        ssl_eval = evaluate(model, data.val, batch_size=rec.eval_batch_size, device=run.device)
        run.extra["ssl_top1"] = ssl_eval.top1
        run.extra["group_sparsity"] = group_sparsity(model, cfg.ssl_type)
        run.extra["size_mb_before"] = size_mb(model)

        # ---- prune -------------------------------------------------------------------------
        pruned = prune(
            model,
            run.input_shape,
            prune_type=cfg.prune_type,
            prune_way=cfg.prune_way,
            ratio=cfg.ratio if cfg.prune_type != "depth_wise" or cfg.blocks is None else None,
            blocks=cfg.blocks if cfg.prune_type == "depth_wise" else None,
            inplace=True,
        )
        model = run.to_device(pruned.model)
        run.extra["prune"] = pruned.summary()
        run.extra["pruned_top1"] = evaluate(
            model, data.val, batch_size=rec.eval_batch_size, device=run.device
        ).top1
        opt = make_optimizer(model, rec.finetune_lr, rec)
        start = 0
    else:
        assert resume is not None
        model = run.to_device(model_from_payload(resume["model"]))
        opt = make_optimizer(model, rec.finetune_lr, rec)
        if resume["optimizer"] is not None:
            opt.load_state_dict(resume["optimizer"])
        start = int(resume["epoch"])

    # ---- fine-tune without the penalty ---------------------------------------------------
    run.train_phase("finetune", model, opt, start, rec.finetune_epochs, rec.finetune_lr, None)

    # ---- evaluate, measure, save -----------------------------------------------------------
    val = evaluate(model, data.val, batch_size=rec.eval_batch_size, device=run.device)
    test = evaluate(model, data.test, batch_size=rec.eval_batch_size, device=run.device)
    model.eval()
    cost = measure_cost(
        model,
        run.input_shape,
        latency=True,
        batch_size=cfg.latency_batch_size,
        device=run.device,
        repeats=cfg.latency_repeats,
    )
    p = run.extra["prune"]
    final: dict[str, Any] = {
        **describe(cfg),
        "final": True,
        "status": "ok",
        "error": None,
        "top1": val.top1,
        "top5": val.top5,
        "val_top1": val.top1,  # what early stopping watches, also in the final report
        "test_top1": test.top1,
        "test_top5": test.top5,
        **{k: v for k, v in cost.to_dict().items()},
        "flops_before": p["flops_before"],
        "params_before": p["params_before"],
        "size_mb_before": run.extra["size_mb_before"],
        "actual_ratio": p["actual_ratio"],
        "groups_total": p["groups_total"],
        "groups_removed": p["groups_removed"],
        "removed_blocks": ",".join(p["removed_blocks"]),
        "ssl_top1": run.extra["ssl_top1"],
        "pruned_top1": run.extra["pruned_top1"],
        "group_sparsity": run.extra["group_sparsity"],
        "ssl_cached": bool(run.extra.get("ssl_cached", False)),
        "train_seconds": run.train_seconds,
        "images_per_second": run.train_images / run.train_seconds if run.train_seconds else 0.0,
        "trial_seconds": time.perf_counter() - started,
        "started_at": run.extra["started_at"],
        "finished_at": time.time(),
        "threads": run.threads,
        "device": str(run.device),
        "global_epoch": run.global_epoch + 1,
        "config": json.dumps(cfg.to_dict(), sort_keys=True),
    }
    final.update(run.tags)
    meta = {"metrics": json.dumps(final)}

    def write_model(path: Path) -> None:
        save_model(
            model,
            path,
            arch=cfg.arch,
            num_classes=data.num_classes,
            in_channels=data.channels,
            input_shape=run.input_shape,
            meta=meta,
        )

    model_path = None
    if cfg.out_dir:
        out = Path(cfg.out_dir)
        write_model(out / MODEL_FILE)
        write_text_atomic(str(out / RESULT_FILE), json.dumps(final, indent=1))
        model_path = str(out / MODEL_FILE)
    run.model_writer = write_model
    run.emit(final, run.state("done", 0, model, None), final=True)
    return TrialResult("ok", final, None, model_path, run.history)

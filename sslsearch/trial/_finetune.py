"""Fine-tune a saved model, pruned or not: train, prune and fine-tune as separate steps.

The same epoch as a trial's fine-tune phase (``train_and_evaluate``), without the SSL penalty.
The model file says how it was built (architecture as data), so a pruned model is rebuilt at
its pruned widths and trained as it is.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sslsearch.config import (
    ConfigError,
    DataConfig,
    Recipe,
    TrialConfig,
    from_mapping,
    to_mapping,
)
from sslsearch.data import Datasets, load_datasets
from sslsearch.errors import ModelFileError
from sslsearch.metrics import measure_cost
from sslsearch.models import load_model, model_info, save_model
from sslsearch.trial._distill import Distiller, read_teacher
from sslsearch.trial._train import (
    EpochSettings,
    EvalStats,
    evaluate,
    make_optimizer,
    pick_device,
    seed_everything,
    set_threads,
    train_and_evaluate,
)

log = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    """``metrics``: top1/top5 (val) before and after, test top-1/top-5, FLOPs, params, size."""

    metrics: dict[str, Any]
    model: nn.Module
    model_path: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def _trial_config(info: dict[str, Any]) -> TrialConfig | None:
    metrics = info.get("meta", {}).get("metrics")
    if not metrics:
        return None
    return TrialConfig.from_dict(json.loads(json.loads(metrics)["config"]))


def trained_with(info: dict[str, Any]) -> tuple[DataConfig, Recipe]:
    """Data settings (so the same val split) and recipe stored in a model file, else defaults.

    ``info`` is :func:`sslsearch.models.model_info` of a file written by a trial, ``prune`` or
    ``finetune``; a later fine-tune's settings win over the trial's.
    """
    meta = info.get("meta", {})
    if "finetune" in meta:
        ft = json.loads(meta["finetune"])
        return from_mapping(DataConfig, ft["data"]), from_mapping(Recipe, ft["recipe"])
    cfg = _trial_config(info)
    if cfg is None:
        return DataConfig(), Recipe()
    return cfg.data, cfg.recipe


def check_fit(info: dict[str, Any], data: Datasets, data_name: str, source: str) -> None:
    """One line saying what to use instead when the model cannot train on ``data``."""
    arch, classes, channels = info["arch"], int(info["num_classes"]), int(info["in_channels"])
    if classes != data.num_classes or channels != data.channels:
        raise ModelFileError(
            f"{source} ({arch}) takes {channels}-channel images of {classes} classes but "
            f"{data_name} has {data.channels}-channel images of {data.num_classes} classes: "
            f"fine-tune it on the data it was trained on, or train a new model with "
            f"`sslsearch trial --arch {arch} --dataset {data_name}`"
        )


def finetune(
    model_path: str | os.PathLike[str],
    *,
    data: DataConfig | None = None,
    recipe: Recipe | None = None,
    seed: int = 0,
    device: str = "auto",
    threads: int | None = None,
    out: str | os.PathLike[str] | None = None,
    teacher: str | None = None,
) -> FinetuneResult:
    """Train a saved model (pruned or dense) without the SSL penalty and measure it.

    Args:
        model_path: a model file written by sslsearch (a trial, ``prune`` or ``finetune``).
        data: dataset settings; default: those the model was trained with (same val split).
        recipe: ``finetune_epochs``, ``finetune_lr``, batch size, schedule, weight decay...;
            default: the model's own recipe.
        out: write the fine-tuned model here and its metrics beside it (``.json``).
        teacher: a model file to distil from (same classes), with ``recipe.distill_weight`` >
            0 (and ``distill_temperature``); needed then, as no SSL model is at hand here.

    Returns:
        FinetuneResult with val top-1 before and after, test accuracy and the model's cost.

    Example:
        >>> r = finetune("pruned.pt", recipe=Recipe(finetune_epochs=3), out="ft.pt")
        >>> r.metrics["top1_before"], r.metrics["top1"]
    """
    job = _prepare(model_path, data, recipe, seed, device, threads, teacher)
    rec = job.recipe
    before = evaluate(
        job.model, job.datasets.val, batch_size=rec.eval_batch_size, device=job.device
    )
    opt = make_optimizer(job.model, rec.finetune_lr, rec)
    started = time.perf_counter()
    history = _train(job, opt, seed)
    metrics = _measure(job, before, seed, started)
    path = _save(job, metrics, out) if out is not None else None
    return FinetuneResult(metrics, job.model, path, history)


@dataclass
class _Job:
    """A fine-tune's inputs, resolved (the model file's own settings where none are given)."""

    source: str
    info: dict[str, Any]
    data: DataConfig
    recipe: Recipe
    datasets: Datasets
    device: torch.device
    shape: tuple[int, ...]
    model: nn.Module
    distill: Distiller | None
    threads: int  # CPU threads used


def _prepare(
    model_path: str | os.PathLike[str],
    data: DataConfig | None,
    recipe: Recipe | None,
    seed: int,
    device: str,
    threads: int | None,
    teacher: str | None,
) -> _Job:
    """Read the model file and its settings, seed, load the data and the model (and teacher)."""
    source = str(model_path)
    info = model_info(source)
    stored_data, stored_recipe = trained_with(info)
    data = data or stored_data
    rec = recipe or stored_recipe
    threads_used = set_threads(threads)
    seed_everything(seed)
    dev = pick_device(device)
    ds = load_datasets(data)
    check_fit(info, ds, data.name, source)
    shape = tuple(info["input_shape"] or (ds.channels, ds.image_size, ds.image_size))
    model = load_model(source, dev)
    distill = _distiller(rec, teacher, ds, shape, dev)
    return _Job(source, info, data, rec, ds, dev, shape, model, distill, threads_used)


def _train(job: _Job, opt: torch.optim.Optimizer, seed: int) -> list[dict[str, Any]]:
    """``finetune_epochs`` epochs without the SSL penalty; each epoch's loss and val accuracy.

    The epochs are a trial's (``train_and_evaluate``), but their batches are seeded as this
    command always has, not by ``hash_seed``: a file fine-tuned again gives the same model."""
    rec, epochs = job.recipe, job.recipe.finetune_epochs
    settings = EpochSettings(
        recipe=rec,
        epochs=epochs,
        base_lr=rec.finetune_lr,
        warmup_epochs=0.0,
        augment=job.data.augment,
        device=job.device,
        distill=job.distill,
    )
    history: list[dict[str, Any]] = []
    for epoch in range(epochs):
        stats, ev = train_and_evaluate(
            job.model,
            job.datasets,
            opt,
            settings,
            epoch=epoch,
            seed=seed * 1_000_003 + epoch * 7919,
        )
        history.append({"epoch": epoch + 1, "loss": stats.loss, "top1": ev.top1, "top5": ev.top5})
        log.info(
            "finetune epoch %d/%d: loss %.4f  val top1 %.2f top5 %.2f",
            epoch + 1,
            epochs,
            stats.loss,
            ev.top1,
            ev.top5,
        )
    return history


def _measure(job: _Job, before: EvalStats, seed: int, started: float) -> dict[str, Any]:
    """The fine-tuned model's metrics (val and test accuracy, cost) and how it was trained."""
    model, ds, rec, dev = job.model, job.datasets, job.recipe, job.device
    val = evaluate(model, ds.val, batch_size=rec.eval_batch_size, device=dev)
    test = evaluate(model, ds.test, batch_size=rec.eval_batch_size, device=dev)
    cost = measure_cost(model.eval(), job.shape, latency=False, device=dev)
    return {
        "model": job.source,
        "arch": job.info["arch"],
        "dataset": job.data.name,
        "top1_before": before.top1,
        "top5_before": before.top5,
        "top1": val.top1,
        "top5": val.top5,
        "test_top1": test.top1,
        "test_top5": test.top5,
        "flops": cost.flops,
        "params": cost.params,
        "size_mb": cost.size_mb,
        "epochs": rec.finetune_epochs,
        "lr": rec.finetune_lr,
        "distill_weight": rec.distill_weight,
        "distill_temperature": rec.distill_temperature,
        "distilled_from": job.distill.source if job.distill is not None else None,
        "seed": seed,
        "train_seconds": time.perf_counter() - started,
        "threads": job.threads,
        "device": str(dev),
        "data": _plain(job.data),
        "recipe": _plain(rec),
    }


def _save(job: _Job, metrics: dict[str, Any], out: str | os.PathLike[str]) -> str:
    """Write the model (its metrics in its meta, so a later fine-tune finds its settings) and
    the metrics beside it (``.json``)."""
    from sslsearch.storage import write_text_atomic

    path = str(out)
    info = job.info
    save_model(
        job.model,
        path,
        arch=info["arch"],
        num_classes=int(info["num_classes"]),
        in_channels=int(info["in_channels"]),
        input_shape=job.shape,
        meta={**info.get("meta", {}), "finetune": json.dumps(metrics)},
    )
    write_text_atomic(str(Path(path).with_suffix(".json")), json.dumps(metrics, indent=1))
    return path


def _distiller(
    rec: Recipe, teacher: str | None, ds: Datasets, shape: tuple[int, ...], dev: torch.device
) -> Distiller | None:
    if teacher is not None and rec.distill_weight == 0:
        raise ConfigError(
            "recipe.distill_weight", "a teacher is given but distill_weight is 0: set it (e.g. 0.5)"
        )
    if rec.distill_weight == 0:
        return None
    if teacher is None:
        raise ConfigError(
            "teacher",
            f"distill_weight {rec.distill_weight} needs a teacher model file (--teacher FILE), "
            "or distill_weight 0",
        )
    found = read_teacher(teacher, ds.num_classes, ds.channels, shape)
    return Distiller(found.model.to(dev), rec.distill_weight, rec.distill_temperature, found.source)


def _plain(obj: Any) -> dict[str, Any]:
    return dict(to_mapping(obj))

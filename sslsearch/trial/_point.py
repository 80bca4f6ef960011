"""Stage 2: an SSL model + a pruning choice -> a pruned, fine-tuned, measured point.

A point never changes its SSL model: it prunes a copy. Its checkpoints hold the pruned model
while it fine-tunes, so a resumed point continues where it stopped.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from torch import nn

from sslsearch.config import (
    BUDGET_KEYS,
    EXAMPLE_BATCH,
    ObjectiveDef,
    TrialConfig,
    measured,
    user_objective,
)
from sslsearch.metrics import Cost, measure_cost, measure_objectives, size_mb
from sslsearch.models import model_from_payload
from sslsearch.pruning import BUDGET_MISSED, LatencySpec, prune
from sslsearch.trial._distill import SSL_MODEL_TEACHER, Distiller, read_teacher
from sslsearch.trial._early import CURVE_KEY, first_check_epoch
from sslsearch.trial._run import PointState, Run, StopCheck
from sslsearch.trial._ssl import SSLModel
from sslsearch.trial._train import evaluate, make_optimizer, recalibrate_bn, seed_everything

log = logging.getLogger(__name__)


def scalar_lambda(cfg: TrialConfig) -> float:
    lam = cfg.ssl_lambda
    return float(lam) if not isinstance(lam, dict) else float(max(lam.values()))


def describe(cfg: TrialConfig) -> dict[str, Any]:
    """The flat config columns every report and every trials.parquet row carries."""
    return {
        "arch": cfg.arch,
        "dataset": cfg.data.name,
        "image_size": cfg.data.image_size,
        "ssl_type": cfg.ssl_type,
        "ssl_lambda": scalar_lambda(cfg),
        "ssl_weighting": cfg.ssl_weighting,
        "ssl_floor": cfg.ssl_floor,
        "ssl_step": cfg.ssl_step,
        "prune_type": cfg.prune_type,
        "prune_way": cfg.prune_way,
        "ratio": cfg.ratio if cfg.ratio is not None else float("nan"),
        "blocks": cfg.blocks if cfg.blocks is not None else -1,
        **{k: _nan(cfg.amount().get(k)) for k in BUDGET_KEYS},
        "min_width_share": cfg.min_width_share,
        "seed": cfg.seed,
        "epochs": cfg.recipe.epochs,
        "finetune_epochs": cfg.recipe.finetune_epochs,
        "weights": cfg.warm_start,  # what SSL training started from (None: from scratch)
        "distill_weight": cfg.recipe.distill_weight,  # 0: fine-tuned without distillation
        "distill_temperature": cfg.recipe.distill_temperature,
        "distilled_from": distilled_from(cfg),
    }


def distilled_from(cfg: TrialConfig, run: Run | None = None) -> str | None:
    """What the point's fine-tune distils from: None (no distillation), ``ssl_model`` (its SSL
    model before pruning), ``baseline`` (a dense baseline's model file) or the teacher file."""
    if cfg.recipe.distill_weight == 0:
        return None
    if cfg.teacher is None:
        return SSL_MODEL_TEACHER
    known = run.teachers.get(cfg.teacher) if run is not None else None
    return known.source if known is not None else cfg.teacher


def read_teachers(run: Run, cfgs: Sequence[TrialConfig]) -> None:
    """Read and check the teacher file of every distilled point before anything trains: a
    missing teacher or one of other classes is one clear error, not a failure after SSL."""
    for cfg in cfgs:
        path = cfg.teacher
        if cfg.recipe.distill_weight > 0 and path is not None and path not in run.teachers:
            found = read_teacher(path, run.data.num_classes, run.data.channels, run.input_shape)
            found.model = run.to_device(found.model)
            run.teachers[path] = found


def distiller(run: Run, cfg: TrialConfig, ssl: SSLModel) -> Distiller | None:
    """The point's Distiller (None: ``distill_weight`` 0, the plain fine-tune): its teacher
    file's model, or the SSL model before pruning, on the run's device."""
    rec = cfg.recipe
    if rec.distill_weight == 0:
        return None
    if cfg.teacher is None:
        teacher = ssl.model  # dense, never trained again: the points prune copies of it
    else:
        read_teachers(run, [cfg])  # read once per trial (run_points reads them first)
        teacher = run.teachers[cfg.teacher].model
    return Distiller(
        teacher.eval(), rec.distill_weight, rec.distill_temperature, str(distilled_from(cfg, run))
    )


def _nan(v: float | None) -> float:
    return float("nan") if v is None else float(v)


def point_seed(seed: int, point: int) -> int:
    """Each point starts from its own seed: its result does not depend on the points before."""
    return (seed * 1_000_003 + 104_729 * (point + 1)) % (2**31 - 1)


def pruned_copy(run: Run, cfg: TrialConfig, ssl: SSLModel, seed: int) -> tuple[nn.Module, Any]:
    """A copy of the SSL model pruned with ``cfg``'s choice, its BN statistics re-estimated on
    training batches drawn with ``seed``; and the pruner's result (``summary()``: costs)."""
    seed_everything(seed)
    rec = cfg.recipe
    amount = cfg.amount()
    if cfg.prune_type == "depth_wise" and "blocks" in amount:
        amount = {"blocks": int(amount["blocks"])}  # blocks win over a ratio of them
    elif cfg.prune_type != "depth_wise":
        amount.pop("blocks", None)
    pruned = prune(
        copy.deepcopy(ssl.model),
        run.input_shape,
        prune_type=cfg.prune_type,
        prune_way=cfg.prune_way,
        latency=LatencySpec(
            batch_size=cfg.latency_batch_size,
            device=str(run.device),
            threads=run.threads,
            repeats=cfg.latency_repeats,
        ),
        min_width_share=cfg.min_width_share,
        inplace=True,
        **amount,  # type: ignore[arg-type]
    )
    model = run.to_device(pruned.model)
    # the dense model's BN running statistics are stale once channels are gone (a pruned VGG
    # then gives one class for every input): re-estimate them, forward only, no weight changes
    recalibrate_bn(
        model,
        run.data.train.batches(
            rec.batch_size, shuffle=True, augment=False, seed=seed, device=run.device
        ),
        channels_last=run.channels_last,
    )
    return model, pruned


def measured_defs(cfg: TrialConfig, *, exact: bool | None = None) -> list[ObjectiveDef]:
    """The objectives a point measures by calling their function (``ObjectiveDef.measure``):
    the built-ins that have one and ``cfg.objectives``, the user's own; ``exact``: only those
    known once pruned (True) or only those known at the end (False)."""
    defs = measured([user_objective(path, "min") for path in cfg.objectives])
    return [d for d in defs if exact is None or d.exact_after_pruning == exact]


def example_inputs(run: Run) -> Any:
    """The batch a measured objective is given: the first validation images, unaugmented."""
    batches = run.data.val.batches(
        EXAMPLE_BATCH, shuffle=False, augment=False, seed=0, device=run.device
    )
    return next(iter(batches))[0]


def measure_defs(
    run: Run, defs: Sequence[ObjectiveDef], model: nn.Module, *, before: bool = False
) -> dict[str, float]:
    """``defs`` measured on ``model``; ``before``: as the unpruned model's (``<name>_before``)."""
    if not defs:
        return {}
    values = measure_objectives(defs, model, example_inputs(run))
    if not before:
        return values
    return {d.before: values[d.name] for d in defs if d.before and d.name in values}


def prune_point(run: Run, cfg: TrialConfig, ssl: SSLModel) -> nn.Module:
    """Prune a copy of the SSL model with ``cfg``'s choice; costs go to ``run.point_state``."""
    model, pruned = pruned_copy(run, cfg, ssl, point_seed(cfg.seed, run.point))
    run.point_state = PointState(
        started_at=run.point_state.started_at,
        prune=pruned.summary(),
        pruned_top1=evaluate(
            model, run.data.val, batch_size=cfg.recipe.eval_batch_size, device=run.device
        ).top1,
        size_mb_after=size_mb(model),
        measured=measure_defs(run, measured_defs(cfg, exact=True), model),
        measured_before=measure_defs(run, measured_defs(cfg), ssl.model, before=True),
        point_started_at=time.time(),
    )
    return model


def optimistic(run: Run, ssl: SSLModel, best_top1: float) -> dict[str, float]:
    """What is known of the point while it fine-tunes: its exact costs and its best top-1 so far
    (after pruning, or its best fine-tuning epoch). Latency and top-5 are known only at the end:
    left out, so early stopping never counts them against the point."""
    state = run.point_state
    p = state.prune
    top1 = max(float(state.pruned_top1 or 0.0), best_top1)
    return {
        "top1": top1,
        "flops": float(p["flops_after"]),
        "params": float(p["params_after"]),
        "size_mb": float(state.size_mb_after or 0.0),
        **state.measured,
    }


def finetune_point(
    run: Run,
    cfg: TrialConfig,
    ssl: SSLModel,
    model: nn.Module | None,
    resume: dict[str, Any] | None,
    stop: StopCheck | None,
) -> nn.Module:
    """Fine-tune without the penalty (``model``, or the one in ``resume``); ``stop`` (FrontStop)
    may end the point (PointStopped) after an epoch."""
    rec = cfg.recipe
    start = 0
    if resume is None:
        assert model is not None
        opt = make_optimizer(model, rec.finetune_lr, rec)
    else:
        model = run.to_device(model_from_payload(resume["model"]))
        opt = make_optimizer(model, rec.finetune_lr, rec)
        if resume["optimizer"] is not None:
            opt.load_state_dict(resume["optimizer"])
        start = int(resume["epoch"])
        run.restore_rng(resume)
    best = [max((h["val_top1"] for h in run.history if _this_point(h, run)), default=0.0)]

    def check(epoch: int, metrics: dict[str, Any]) -> str | None:
        best[0] = max(best[0], float(metrics["val_top1"]))
        if stop is None:
            return None
        # compared with finished points at the same epoch, from one epoch after the first LR drop
        return stop(
            {
                **optimistic(run, ssl, best[0]),
                "epoch": float(epoch),
                "epochs": float(rec.finetune_epochs),
                "first_check": float(first_check_epoch(rec)),
            }
        )

    run.train_phase(
        "finetune",
        model,
        opt,
        start,
        rec.finetune_epochs,
        rec.finetune_lr,
        None,
        stop_check=check if stop is not None else None,
        distill=distiller(run, cfg, ssl),
    )
    return model


def _this_point(h: dict[str, Any], run: Run) -> bool:
    return h.get("phase") == "finetune" and int(h.get("point", 0)) == run.point


def finetune_curve(run: Run) -> list[float]:
    """The point's validation top-1 after each fine-tune epoch so far, in epoch order (what early
    stopping compares later points with, epoch by epoch)."""
    by_epoch = {int(h["epoch"]): float(h["val_top1"]) for h in run.history if _this_point(h, run)}
    return [round(by_epoch[e], 4) for e in sorted(by_epoch)]


def measure_final(run: Run, cfg: TrialConfig, model: nn.Module) -> tuple[Any, Any, Cost]:
    """A finished model's validation and test accuracy and its cost (latency on the trial's
    device, at the config's batch size)."""
    batch = cfg.recipe.eval_batch_size
    val = evaluate(model, run.data.val, batch_size=batch, device=run.device)
    test = evaluate(model, run.data.test, batch_size=batch, device=run.device)
    model.eval()
    cost = measure_cost(
        model,
        run.input_shape,
        latency=True,
        batch_size=cfg.latency_batch_size,
        device=run.device,
        repeats=cfg.latency_repeats,
    )
    return val, test, cost


def measure_point(run: Run, cfg: TrialConfig, ssl: SSLModel, model: nn.Module) -> dict[str, Any]:
    """Final metrics of a fine-tuned point (validation top-1 is what the search optimises)."""
    val, test, cost = measure_final(run, cfg, model)
    p = run.point_state.prune
    missed = bool(p.get("budget_missed"))
    return {
        **base_final(run, cfg, ssl),
        # measured like any point, but it did not meet what was asked: off the fronts
        "status": BUDGET_MISSED if missed else "ok",
        "error": f"budget missed: {p.get('budget_note')}" if missed else None,
        "top1": val.top1,
        "top5": val.top5,
        "val_top1": val.top1,
        "test_top1": test.top1,
        "test_top5": test.top5,
        **cost.to_dict(),
        **measure_defs(run, measured_defs(cfg, exact=False), model),
    }


def ssl_figures(ssl: SSLModel | None) -> dict[str, Any]:
    """The SSL model's sparsity figures as result columns (flat: lists and maps as text)."""
    sp = ssl.sparsity if ssl is not None else {}
    floor = sp.get("at_floor")
    widths = sp.get("narrowest_width")
    return {
        "exact_zero_share": sp.get("exact_zero_share"),
        "removable_flops_share": sp.get("removable_flops_share"),
        "removable_params_share": sp.get("removable_params_share"),
        "ssl_at_floor": ",".join(floor) if floor is not None else None,
        "narrowest_width": json.dumps(widths) if widths is not None else None,
    }


def base_final(run: Run, cfg: TrialConfig, ssl: SSLModel | None) -> dict[str, Any]:
    """The columns a point's final result has whatever its status."""
    p = run.point_state.prune
    started = run.point_state.point_started_at or time.time()
    out: dict[str, Any] = {
        **describe(cfg),
        "distilled_from": distilled_from(cfg, run),
        "final": True,
        "point": run.point,
        "ssl_model_id": ssl.id if ssl is not None else None,
        "ssl_top1": ssl.ssl_top1 if ssl is not None else None,
        "ssl_test_top1": ssl.ssl_test_top1 if ssl is not None else None,
        **ssl_figures(ssl),
        "size_mb_before": ssl.size_mb if ssl is not None else None,
        # False only for the point whose run trained the SSL model: its job's first point (an
        # SSL model loaded from the job's own checkpoint after a crash was still trained by the
        # job: SSLModel.trained is kept in the checkpoint); later points and store hits reuse it
        "ssl_reused": (not (ssl.trained and run.point == 0)) if ssl is not None else None,
        "pruned_top1": run.point_state.pruned_top1,
        "flops_before": p.get("flops_before"),
        "params_before": p.get("params_before"),
        "actual_ratio": p.get("actual_ratio"),
        "budget_achieved": p.get("budget_achieved"),
        "budget_note": p.get("budget_note"),
        "at_floor": ",".join(p.get("at_floor", [])),
        "groups_total": p.get("groups_total"),
        "groups_removed": p.get("groups_removed"),
        "removed_blocks": ",".join(p.get("removed_blocks", [])),
        "train_seconds": run.train_seconds,
        "point_seconds": time.time() - started,
        "cpu_seconds": run.cpu_seconds(),
        "images_per_second": run.train_images / run.train_seconds if run.train_seconds else 0.0,
        "finished_at": time.time(),
        "threads": run.threads,
        "device": str(run.device),
        "precision": run.precision,
        "global_epoch": run.global_epoch + 1,
        CURVE_KEY: finetune_curve(run),  # per fine-tune epoch (early stopping reads it)
        "config": json.dumps(cfg.to_dict(), sort_keys=True),
    }
    if p:  # a stopped point's costs are exact: keep them
        out["flops"] = p.get("flops_after")
        out["params"] = p.get("params_after")
        out["size_mb"] = run.point_state.size_mb_after
        out.update(run.point_state.measured)
        out.update(run.point_state.measured_before)
    return out

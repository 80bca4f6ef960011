"""The dense baseline of an experiment: the unpruned model, trained with the same recipe.

"Same" means the same data, model, optimiser and schedule for as many epochs as a point gets
in all (SSL epochs + fine-tuning epochs), without the penalty and without pruning: the fair
reference for "top-1 93.5 -> 93.2 at 2.1x fewer FLOPs". A search that starts from the user's
weights can instead take those weights, measured as they are, as its baseline
(``measure_weights_baseline``): the model the user has is what pruning must compete with.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import replace

import torch

from sslsearch import storage
from sslsearch.config import TrialConfig
from sslsearch.trial._pipeline import TrialResult, run_points
from sslsearch.trial._run import RESULT_FILE, Report

BASELINE_ID = "baseline"  # its trial_id, and its directory under the experiment


def baseline_config(cfg: TrialConfig) -> TrialConfig:
    """``cfg``'s recipe for SSL + fine-tuning epochs, no penalty, nothing pruned, no store, no
    distillation (the baseline is what the points distil from)."""
    rec = cfg.recipe
    return replace(
        cfg,
        recipe=replace(
            rec, epochs=rec.epochs + rec.finetune_epochs, finetune_epochs=0, distill_weight=0.0
        ),
        teacher=None,
        ssl_type="filter_wise",
        ssl_lambda=0.0,
        prune_type="filter_wise",
        prune_way="group_lasso",
        ratio=0.0,
        blocks=None,
        flops_budget=None,
        params_budget=None,
        latency_budget=None,
        cache_dir=None,
        out_dir=None,
    )


def run_baseline(cfg: TrialConfig, exp_dir: str, report: Report | None = None) -> TrialResult:
    """Train and measure the dense baseline once: ``<exp_dir>/baseline/result.json`` and
    ``model.pt``. An existing result is returned as it is (a resumed experiment reuses it)."""
    result_path = storage.join(exp_dir, BASELINE_ID, RESULT_FILE)
    if not storage.exists(result_path):
        run_points(
            [baseline_config(cfg)],
            report,
            tags={"role": "baseline"},
            point_ids=[BASELINE_ID],
            points_dir=exp_dir,
        )
        final = json.loads(storage.read_bytes(result_path).decode())
        final.update(ssl_model_id=None, ratio=None, role="baseline")
        storage.write_text_atomic(result_path, json.dumps(final, indent=1))
    final = json.loads(storage.read_bytes(result_path).decode())
    return TrialResult(str(final["status"]), final, final.get("error"))


def measure_weights_baseline(
    cfg: TrialConfig, exp_dir: str, report: Report | None = None
) -> TrialResult:
    """The dense baseline as the user's starting weights, measured as they are: no training,
    no pruning, BatchNorm statistics untouched (``reference.baseline: weights``). Written like
    ``run_baseline``'s (``<exp_dir>/baseline/result.json`` and ``model.pt``), with 0 epochs;
    an existing result is returned as it is."""
    from sslsearch.models import create_model
    from sslsearch.trial._point import describe, measure_defs, measure_final, measured_defs
    from sslsearch.trial._run import MODEL_FILE, Run
    from sslsearch.trial._start_weights import load_weights

    result_path = storage.join(exp_dir, BASELINE_ID, RESULT_FILE)
    if storage.exists(result_path):
        final = json.loads(storage.read_bytes(result_path).decode())
        return TrialResult(str(final["status"]), final, final.get("error"))
    weights = cfg.warm_start
    if not weights:
        raise ValueError("a weights baseline needs cfg.warm_start")
    cfg = baseline_config(cfg)
    cfg = replace(cfg, recipe=replace(cfg.recipe, epochs=0, finetune_epochs=0), ratio=None)
    started = time.time()
    run = Run(cfg, report or (lambda m: None), {"role": "baseline"})
    model = create_model(cfg.arch, run.data.num_classes, run.data.channels)
    load_weights(model, weights, cfg.arch)
    model = run.to_device(model).eval()
    val, test, cost = measure_final(run, cfg, model)
    measured = measured_defs(cfg)
    final = {
        **describe(cfg),
        "ratio": None,
        "blocks": None,
        **cost.to_dict(),
        "status": "ok",
        "error": None,
        "final": True,
        "role": "baseline",
        "trial_id": BASELINE_ID,
        "baseline": "weights",  # measured as given, not trained by the search
        "ssl_model_id": None,
        "top1": val.top1,
        "top5": val.top5,
        "val_top1": val.top1,
        "test_top1": test.top1,
        "test_top5": test.top5,
        "flops_before": cost.flops,
        "params_before": cost.params,
        "size_mb_before": cost.size_mb,
        **measure_defs(run, measured, model),
        **measure_defs(run, measured, model, before=True),
        "actual_ratio": 0.0,
        "train_seconds": 0.0,
        "trial_seconds": time.time() - started,
        "started_at": started,
        "finished_at": time.time(),
        "threads": run.threads,
        "device": str(run.device),
        "config": json.dumps(cfg.to_dict(), sort_keys=True),
    }
    payload = run.payload(model, {"metrics": json.dumps(final)})
    buf = io.BytesIO()
    torch.save(payload, buf)
    storage.write_bytes_atomic(storage.join(exp_dir, BASELINE_ID, MODEL_FILE), buf.getvalue())
    storage.write_text_atomic(result_path, json.dumps(final, indent=1))
    return TrialResult("ok", final, None)

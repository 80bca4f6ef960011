"""The dense baseline of an experiment: the unpruned model, trained with the same recipe.

"Same" means the same data, model, optimiser and schedule for as many epochs as a point gets
in all (SSL epochs + fine-tuning epochs), without the penalty and without pruning: the fair
reference for "top-1 93.5 -> 93.2 at 2.1x fewer FLOPs".
"""

from __future__ import annotations

import json
from dataclasses import replace

from sslsearch import storage
from sslsearch.config import TrialConfig
from sslsearch.trial._pipeline import TrialResult, run_points
from sslsearch.trial._run import RESULT_FILE, Report

BASELINE_ID = "baseline"  # its trial_id, and its directory under the experiment


def baseline_config(cfg: TrialConfig) -> TrialConfig:
    """``cfg``'s recipe for SSL + fine-tuning epochs, no penalty, nothing pruned, no store."""
    rec = cfg.recipe
    return replace(
        cfg,
        recipe=replace(rec, epochs=rec.epochs + rec.finetune_epochs, finetune_epochs=0),
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

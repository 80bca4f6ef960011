"""Stage 1: SSL training -> an SSL model, the named artifact that every point starts from.

An SSL model is a dense network trained with the SSL penalty. Its id hashes everything that
determines it (model, data, recipe up to the fine-tuning, ssl type, lambda, seed, precision,
the starting weights' content), so one SSL training serves any number of points: other ratios, block counts and
criteria. With a store (``cfg.cache_dir``, under the experiment in a search) any node can reuse
it, and a crash after it was stored never trains it again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sslsearch.config import TrialConfig
from sslsearch.metrics import size_mb
from sslsearch.models import create_model, model_from_payload
from sslsearch.pruning import build_penalty
from sslsearch.sparsity import SSLPenalty
from sslsearch.trial._cache import SSLCache
from sslsearch.trial._run import Run
from sslsearch.trial._start_weights import load_weights, weights_digest
from sslsearch.trial._train import evaluate, make_optimizer, seed_everything

log = logging.getLogger(__name__)


# An SSL model's sparsity figures that every point's result carries (``sparsity_report``):
# exact zeros, what the pruner could remove at no change of the function, the layers at their
# floor and each layer's narrowest width.
SPARSITY_FIGURES = (
    "exact_zero_share",
    "removable_flops_share",
    "removable_params_share",
    "at_floor",
    "narrowest_width",
)


@dataclass
class SSLModel:
    """A dense SSL-trained model and what it is known by."""

    id: str
    model: nn.Module
    ssl_top1: float
    size_mb: float
    trained: bool  # False: loaded from the store
    # its top-1 on the test split: what SSL training itself cost, beside a dense model's
    # (reported, never used to choose)
    ssl_test_top1: float = float("nan")
    sparsity: dict[str, Any] = field(default_factory=dict)  # SPARSITY_FIGURES
    history: list[dict[str, Any]] = field(default_factory=list)

    def meta(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ssl_top1": self.ssl_top1,
            "ssl_test_top1": self.ssl_test_top1,
            "size_mb": self.size_mb,
            "trained": self.trained,
            "sparsity": self.sparsity,
        }


def ssl_model_id(cfg: TrialConfig, precision: str) -> str:
    """The id of the SSL model ``cfg`` starts from (``precision``: fp32, bf16 or fp16).

    Starting weights count by their content (sha256), not their path: the experiment's copy of
    the user's file and the file itself give the same id; changed weights give another."""
    if not cfg.warm_start:
        return cfg.ssl_key({"precision": precision})
    digest = weights_digest(cfg.warm_start)
    return cfg.with_(warm_start=None).ssl_key({"precision": precision, "weights_sha256": digest})


def _finish(
    run: Run, key: str, model: nn.Module, trained: bool, test_top1: float | None = None
) -> SSLModel:
    """The SSL model measured; ``test_top1``: its test top-1 as the store kept it (None:
    evaluated here, on the whole test split)."""
    cfg = run.cfg
    ev = evaluate(model, run.data.val, batch_size=cfg.recipe.eval_batch_size, device=run.device)
    if test_top1 is None:
        test_top1 = evaluate(
            model, run.data.test, batch_size=cfg.recipe.eval_batch_size, device=run.device
        ).top1
    run.sparsity(model)  # binds the meter to this model
    assert run.meter is not None
    rep = run.meter()
    ssl = SSLModel(
        id=key,
        model=model,
        ssl_top1=ev.top1,
        ssl_test_top1=test_top1,
        size_mb=size_mb(model),
        trained=trained,
        sparsity={k: rep[k] for k in SPARSITY_FIGURES},
        history=[h for h in run.history if h["phase"] == "ssl"],
    )
    if rep["at_floor"]:
        log.info(
            "SSL model %s: %d layer(s) held at their floor (min_width_share %g): %s",
            key,
            len(rep["at_floor"]),
            cfg.min_width_share,
            ", ".join(rep["at_floor"]),
        )
    run.ssl_meta = ssl.meta()
    return ssl


def _penalty(run: Run, model: nn.Module) -> SSLPenalty:
    """The trial's penalty; its group weights are measured once (``ssl_weighting``) and kept in
    the checkpoints, so a resumed run goes on with the same ones."""
    cfg = run.cfg
    example = torch.zeros((1, *run.input_shape), device=run.device)
    lams = cfg.ssl_lambda.values() if isinstance(cfg.ssl_lambda, dict) else [cfg.ssl_lambda]
    if not any(v > 0 for v in lams):  # plain training: nothing to weigh
        return SSLPenalty.build(model, cfg.ssl_type, cfg.ssl_lambda, example)
    if run.ssl_weights is not None:
        pen = SSLPenalty.build(
            model, cfg.ssl_type, cfg.ssl_lambda, example, min_width_share=cfg.min_width_share
        )
        pen.set_weights(cfg.ssl_weighting, run.ssl_weights)
        pen.set_rules(cfg.ssl_floor, cfg.ssl_step)
        return pen
    batches = run.data.train.batches(
        cfg.recipe.batch_size,
        shuffle=True,
        augment=False,
        seed=calibration_seed(cfg.seed),
        device=run.device,
    )
    pen = build_penalty(
        model,
        cfg.ssl_type,
        cfg.ssl_lambda,
        weighting=cfg.ssl_weighting,
        example_inputs=example,
        batches=batches,
        min_width_share=cfg.min_width_share,
    )
    pen.set_rules(cfg.ssl_floor, cfg.ssl_step)
    run.ssl_weights = pen.weights()
    return pen


def calibration_seed(seed: int) -> int:
    """The seed of the batches the gradient weighting is measured on."""
    return (seed * 1_000_003 + 900_001) % (2**63 - 1)


def train_ssl_model(
    run: Run,
    resume: dict[str, Any] | None = None,
    after_epoch: Callable[[int, nn.Module, torch.optim.Optimizer], None] | None = None,
) -> SSLModel:
    """Load the SSL model from the store, or train it (resuming from an SSL-phase checkpoint).

    Every SSL epoch is reported and checkpointed; a stored model's epochs are replayed to the
    report callback without a checkpoint, so dashboards see the same curve. ``after_epoch``
    (the multi-fidelity rungs) runs after each trained epoch, and first at the epoch a
    resumed training starts from (a run killed during it decides again); it may raise
    SSLStopped. A stored model has been trained in full: it is not asked.
    """
    cfg, data, rec = run.cfg, run.data, run.cfg.recipe
    store = SSLCache(cfg.cache_dir) if cfg.cache_dir else None
    key = ssl_model_id(cfg, run.precision)
    if resume is None:
        seed_everything(cfg.seed)
    hit = store.get(key) if store and resume is None else None
    if hit is not None:
        model, meta = hit
        log.info("SSL model %s from the store: skipping %d SSL epochs", key, rec.epochs)
        for m in json.loads(meta.get("history", "[]")):
            run.history.append(m)
            run.global_epoch = int(m["global_epoch"])
            run.emit(m, None)
        kept = meta.get("ssl_test_top1")  # models stored before it was kept: evaluated
        test_top1 = float(kept) if kept is not None else None
        return _finish(run, key, run.to_device(model), trained=False, test_top1=test_top1)

    model = create_model(cfg.arch, data.num_classes, data.channels)
    if cfg.warm_start:
        load_weights(model, cfg.warm_start, cfg.arch)
    model = run.to_device(model)
    opt = make_optimizer(model, rec.lr, rec)
    start = 0
    if resume is not None:
        model.load_state_dict(model_from_payload(resume["model"]).state_dict())
        if resume["optimizer"] is not None:
            opt.load_state_dict(resume["optimizer"])
        start = int(resume["epoch"])
    penalty = _penalty(run, model)
    if resume is not None:
        if after_epoch is not None and start > 0:
            after_epoch(start, model, opt)
        run.restore_rng(resume)
    run.train_phase("ssl", model, opt, start, rec.epochs, rec.lr, penalty, after_epoch=after_epoch)
    ssl = _finish(run, key, model, trained=True)
    if store is not None:
        store.put(
            key,
            model,
            arch=cfg.arch,
            num_classes=data.num_classes,
            in_channels=data.channels,
            input_shape=run.input_shape,
            meta={"history": json.dumps(ssl.history), "key": key, **_str(ssl.meta())},
        )
    else:  # no store: the checkpoints of the points carry the SSL model
        run.ssl_payload = run.payload(model)
    return ssl


def load_ssl_model(run: Run) -> SSLModel:
    """The SSL model of a resumed trial that is past SSL training: store, else checkpoint."""
    cfg = run.cfg
    key = ssl_model_id(cfg, run.precision)
    if run.ssl_payload is not None:
        model = model_from_payload(run.ssl_payload)
    else:
        hit = SSLCache(cfg.cache_dir).get(key) if cfg.cache_dir else None
        if hit is None:
            from sslsearch.errors import ModelFileError

            raise ModelFileError(f"SSL model {key} is neither stored nor in the checkpoint")
        model = hit[0]
    meta = run.ssl_meta
    return SSLModel(
        id=key,
        model=run.to_device(model),
        ssl_top1=float(meta.get("ssl_top1", float("nan"))),
        ssl_test_top1=float(meta.get("ssl_test_top1", float("nan"))),
        size_mb=float(meta.get("size_mb", float("nan"))),
        trained=bool(meta.get("trained", False)),
        sparsity=dict(meta.get("sparsity") or {}),
    )


def _str(d: dict[str, Any]) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in d.items()}

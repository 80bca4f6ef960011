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
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from sslsearch.config import TrialConfig
from sslsearch.metrics import size_mb
from sslsearch.models import create_model, model_from_payload
from sslsearch.sparsity import SSLPenalty, group_sparsity
from sslsearch.trial._cache import SSLCache
from sslsearch.trial._run import Run
from sslsearch.trial._train import evaluate, make_optimizer, seed_everything
from sslsearch.trial._weights import load_weights, weights_digest

log = logging.getLogger(__name__)


@dataclass
class SSLModel:
    """A dense SSL-trained model and what it is known by."""

    id: str
    model: nn.Module
    ssl_top1: float
    group_sparsity: float
    size_mb: float
    trained: bool  # False: loaded from the store
    history: list[dict[str, Any]] = field(default_factory=list)

    def meta(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ssl_top1": self.ssl_top1,
            "group_sparsity": self.group_sparsity,
            "size_mb": self.size_mb,
            "trained": self.trained,
        }


def ssl_model_id(cfg: TrialConfig, precision: str) -> str:
    """The id of the SSL model ``cfg`` starts from (``precision``: fp32, bf16 or fp16).

    Starting weights count by their content (sha256), not their path: the experiment's copy of
    the user's file and the file itself give the same id; changed weights give another."""
    if not cfg.warm_start:
        return cfg.ssl_key({"precision": precision})
    digest = weights_digest(cfg.warm_start)
    return cfg.with_(warm_start=None).ssl_key({"precision": precision, "weights_sha256": digest})


def _finish(run: Run, key: str, model: nn.Module, trained: bool) -> SSLModel:
    cfg = run.cfg
    ev = evaluate(model, run.data.val, batch_size=cfg.recipe.eval_batch_size, device=run.device)
    ssl = SSLModel(
        id=key,
        model=model,
        ssl_top1=ev.top1,
        group_sparsity=group_sparsity(model, cfg.ssl_type),
        size_mb=size_mb(model),
        trained=trained,
        history=[h for h in run.history if h["phase"] == "ssl"],
    )
    run.ssl_meta = ssl.meta()
    return ssl


def train_ssl_model(run: Run, resume: dict[str, Any] | None = None) -> SSLModel:
    """Load the SSL model from the store, or train it (resuming from an SSL-phase checkpoint).

    Every SSL epoch is reported and checkpointed; a stored model's epochs are replayed to the
    report callback without a checkpoint, so dashboards see the same curve.
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
        return _finish(run, key, run.to_device(model), trained=False)

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
    penalty = SSLPenalty.build(model, cfg.ssl_type, cfg.ssl_lambda)
    if resume is not None:
        run.restore_rng(resume)
    run.train_phase("ssl", model, opt, start, rec.epochs, rec.lr, penalty)
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
        group_sparsity=float(meta.get("group_sparsity", float("nan"))),
        size_mb=float(meta.get("size_mb", float("nan"))),
        trained=bool(meta.get("trained", False)),
    )


def _str(d: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in d.items()}

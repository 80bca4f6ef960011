"""The state of one running trial (an SSL model and its points): checkpoints, reports, epochs."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from sslsearch.config import TrialConfig
from sslsearch.data import Datasets, load_datasets
from sslsearch.models import model_payload
from sslsearch.pruning import SparsityMeter
from sslsearch.sparsity import SSLPenalty
from sslsearch.trial._distill import Distiller, Teacher
from sslsearch.trial._state import StateStore
from sslsearch.trial._train import (
    EpochSettings,
    pick_device,
    set_threads,
    train_and_evaluate,
)

log = logging.getLogger(__name__)

# Called with the metrics of every epoch and every finished point.
Report = Callable[[dict[str, Any]], None]
# Called after each fine-tuning epoch with the point's metrics so far; a reason stops the point.
StopCheck = Callable[[dict[str, Any]], "str | None"]
MODEL_FILE = "model.pt"
RESULT_FILE = "result.json"
STATE_VERSION = 2
# a lambda path's step s > 0 keeps its state and screen in <job's state_dir>/step<s> (_path)
STEP_DIR = "step{}"
STEP_DIR_RE = re.compile(r"^step([1-9][0-9]*)$")


def step_of(name: str) -> int | None:
    """The lambda path step whose directory is ``name`` (None: not a step's)."""
    m = STEP_DIR_RE.match(name)
    return int(m.group(1)) if m else None


# each SSL epoch's sparsity figures (sslsearch.sparsity_report; ssl_at_floor: layers at it)
EPOCH_FIGURES = (
    "exact_zero_share",
    "removable_flops_share",
    "removable_params_share",
    "ssl_at_floor",
)


class PointStopped(Exception):
    """Early stopping ended a point during fine-tuning (never during SSL training)."""


class SSLStopped(Exception):
    """The multi-fidelity rule stopped an SSL model at a rung: its points are never tuned."""


def hash_seed(seed: int, phase: str, epoch: int) -> int:
    """A per-(seed, phase, epoch) seed: an epoch's batches depend on nothing else."""
    return (seed * 1_000_003 + (0 if phase == "ssl" else 500_009) + epoch * 7919) % (2**63 - 1)


def precision(amp: bool, scaler: Any) -> str:
    """The numeric precision of training: part of the SSL model's identity."""
    if not amp:
        return "fp32"
    return "fp16" if scaler is not None else "bf16"


@dataclass
class PointState:
    """What the point being worked on knows between its pruning and its final result; kept in
    the run's checkpoints, so a resumed point goes on with it."""

    started_at: float | None = None  # when the run started (its first point)
    prune: dict[str, Any] = field(default_factory=dict)  # the pruner's summary (PruneResult)
    pruned_top1: float | None = None  # validation top-1 right after pruning (BN re-estimated)
    size_mb_after: float | None = None
    # objectives exact once pruned, and every measured one on the model it was pruned from
    # (``<name>_before``): ``sslsearch.config.ObjectiveDef.measure``
    measured: dict[str, float] = field(default_factory=dict)
    measured_before: dict[str, float] = field(default_factory=dict)
    point_started_at: float | None = None

    def next_point(self) -> PointState:
        """The state the run's next point starts from."""
        return PointState(started_at=self.started_at)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> PointState:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})


class Run:
    """The state of one trial while it runs; the stages call its methods."""

    def __init__(
        self,
        cfg: TrialConfig,
        report: Report,
        tags: dict[str, Any],
        store: StateStore | None = None,
    ) -> None:
        self.cfg = cfg
        self.report_fn = report
        self.tags = tags
        self.store = store  # where the states to resume from go (None: nowhere)
        # CPU time of the job (every thread of this process, and of the processes before a
        # resume, up to their last checkpoint): ``cpu_seconds()``
        self._cpu_from = time.process_time()
        self.cpu_before = 0.0
        self.history: list[dict[str, Any]] = []
        self.global_epoch = 0
        self.point_state = PointState()
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
        self.precision = precision(self.amp, self.scaler)
        self.train_seconds = 0.0
        self.train_images = 0
        self.point = 0  # index of the point being worked on
        self.points_done: list[dict[str, Any]] = []  # finals of the finished points
        self.ssl_payload: dict[str, Any] | None = None  # the SSL model, when there is no store
        self.ssl_meta: dict[str, Any] = {}
        # the SSL penalty's group weights (ssl_weighting), kept so a resumed run uses the same
        self.ssl_weights: dict[str, list[float]] | None = None
        self.meter: SparsityMeter | None = None  # the SSL model's sparsity figures
        self.teachers: dict[str, Teacher] = {}  # teacher files read for the points, by path
        # the screen's choice (``_screen``): each point's amount and screened top-1; None: not
        # screened (yet)
        self.screen: dict[str, Any] | None = None
        # multi-fidelity: each rung's decision ("ok" or "stopped") and the last reason
        self.rungs: dict[str, str] = {}
        self.rung_reason = ""

    def cpu_seconds(self) -> float:
        """The CPU seconds this job has used so far (its process's, since the run started,
        plus what the resumed state had counted; work after that state's checkpoint in a
        process that died is not counted)."""
        return self.cpu_before + time.process_time() - self._cpu_from

    # ---- checkpoints -------------------------------------------------------------------------

    def payload(self, model: nn.Module, meta: dict[str, str] | None = None) -> dict[str, Any]:
        return model_payload(
            model,
            arch=self.cfg.arch,
            num_classes=self.data.num_classes,
            in_channels=self.data.channels,
            input_shape=self.input_shape,
            meta=meta,
        )

    def state(
        self, phase: str, epoch: int, model: nn.Module | None, opt: torch.optim.Optimizer | None
    ) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "config": json.dumps(self.cfg.to_dict(), sort_keys=True),
            "phase": phase,  # ssl | prune (start of a point) | finetune | done
            "point": self.point,
            "epoch": epoch,
            "global_epoch": self.global_epoch,
            "model": self.payload(model) if model is not None else None,
            "optimizer": opt.state_dict() if opt is not None else None,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.cuda else [],
            "history": json.dumps(self.history),
            "extra": self.point_state.to_json(),
            "points_done": json.dumps(self.points_done),
            "ssl_model": self.ssl_payload if phase != "ssl" else None,
            "ssl_meta": json.dumps(self.ssl_meta),
            "ssl_weights": json.dumps(self.ssl_weights),
            "screen": json.dumps(self.screen),
            "rungs": json.dumps({"done": self.rungs, "reason": self.rung_reason}),
            "train_seconds": self.train_seconds,
            "train_images": self.train_images,
            "cpu_seconds": self.cpu_seconds(),
        }

    def restore(self, resume: dict[str, Any]) -> None:
        """Everything but the model and optimizer (the stages restore those)."""
        self.history = json.loads(resume["history"])
        self.point_state = PointState.from_json(resume["extra"])
        self.global_epoch = int(resume["global_epoch"])
        self.train_seconds = float(resume.get("train_seconds", 0.0))
        self.train_images = int(resume.get("train_images", 0))
        self.cpu_before = float(resume.get("cpu_seconds", 0.0))
        self.point = int(resume.get("point", 0))
        self.points_done = json.loads(resume.get("points_done", "[]"))
        self.ssl_payload = resume.get("ssl_model")
        self.ssl_meta = json.loads(resume.get("ssl_meta", "{}"))
        self.ssl_weights = json.loads(resume.get("ssl_weights", "null"))
        self.screen = json.loads(resume.get("screen", "null"))
        rungs = json.loads(resume.get("rungs", "{}"))
        self.rungs, self.rung_reason = dict(rungs.get("done", {})), str(rungs.get("reason", ""))

    def restore_rng(self, resume: dict[str, Any]) -> None:
        """The random stream as it was at the checkpoint. Called right before training goes on
        (after the model is built, which draws from it), and never followed by seeding:
        dropout draws from this stream."""
        torch.set_rng_state(resume["rng"])
        if self.cuda and resume.get("cuda_rng"):
            torch.cuda.set_rng_state_all(resume["cuda_rng"])

    def emit(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        """Report ``metrics`` (plus the tags); with ``state``, first save it (and the epochs
        so far) to the store, so that what was reported is what a restart resumes from."""
        if state is not None and self.store is not None:
            # a finished trial needs only its last state (no model in it): drop the others
            self.store.save(state, keep=1 if state["phase"] == "done" else None)
            self.store.write_history(self.history)
        self.report_fn({**self.tags, **metrics})

    def checkpoint(self, state: dict[str, Any]) -> None:
        """Save ``state`` without reporting anything (nothing to resume from without a store)."""
        if self.store is not None:
            self.store.save(state)

    # ---- epochs ------------------------------------------------------------------------------

    def epoch_metrics(
        self, phase: str, epoch: int, epochs: int, stats: Any, ev: Any, model: nn.Module, lr: float
    ) -> dict[str, Any]:
        m = {
            "phase": phase,
            "point": self.point,
            "epoch": epoch,
            "epochs": epochs,
            "global_epoch": self.global_epoch,
            "loss": stats.loss,
            "penalty": stats.penalty,
            "distill_kl": stats.distill,  # T^2 * KL(teacher || student); NaN: not distilled
            "train_top1": stats.train_top1,
            "val_loss": ev.loss,
            "val_top1": ev.top1,
            "val_top5": ev.top5,
            **self.sparsity(model if phase == "ssl" else None),
            "lr": lr,
            "final": False,
        }
        self.history.append({**self.tags, **m})  # with the node and process that trained it
        return m

    def sparsity(self, model: nn.Module | None) -> dict[str, Any]:
        """The SSL model's sparsity figures for an epoch report (NaN outside SSL training)."""
        if model is None:
            return {k: float("nan") for k in EPOCH_FIGURES}
        if self.meter is None or self.meter.model is not model:
            self.meter = SparsityMeter(
                model, self.cfg.ssl_type, self.input_shape, self.cfg.min_width_share
            )
        rep = self.meter()
        return {**{k: rep[k] for k in EPOCH_FIGURES[:-1]}, "ssl_at_floor": len(rep["at_floor"])}

    def train_phase(
        self,
        phase: str,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        start_epoch: int,
        epochs: int,
        base_lr: float,
        penalty: SSLPenalty | None,
        stop_check: Callable[[int, dict[str, Any]], str | None] | None = None,
        distill: Distiller | None = None,
        after_epoch: Callable[[int, nn.Module, torch.optim.Optimizer], None] | None = None,
    ) -> None:
        """Train ``epochs`` epochs, reporting and checkpointing each one.

        ``stop_check(epoch, metrics)`` (fine-tuning only) raises PointStopped with its reason;
        ``distill`` (fine-tuning only) mixes a teacher's outputs into the loss;
        ``after_epoch(epoch, model, opt)`` (SSL training: the multi-fidelity rungs) runs after
        each epoch's checkpoint and may raise SSLStopped.
        """
        cfg, rec = self.cfg, self.cfg.recipe
        assert stop_check is None or phase != "ssl", "early stopping never acts in SSL training"
        assert distill is None or phase != "ssl", "SSL training is never distilled"
        has_penalty = penalty is not None and any(v > 0 for v in penalty.lam.values())
        settings = EpochSettings(
            recipe=rec,
            epochs=epochs,
            base_lr=base_lr,
            warmup_epochs=rec.warmup_epochs if phase == "ssl" else 0.0,
            augment=cfg.data.augment,
            device=self.device,
            penalty=penalty if has_penalty else None,
            distill=distill,
            amp=self.amp,
            channels_last=self.channels_last,
            scaler=self.scaler,
        )
        for epoch in range(start_epoch, epochs):
            stats, ev = train_and_evaluate(
                model, self.data, opt, settings, epoch=epoch, seed=hash_seed(cfg.seed, phase, epoch)
            )
            self.train_seconds += stats.seconds
            self.train_images += stats.images
            self.global_epoch += 1
            lr = settings.lr(epoch + 1)
            metrics = self.epoch_metrics(phase, epoch + 1, epochs, stats, ev, model, lr)
            self.emit(metrics, self.state(phase, epoch + 1, model, opt))
            if after_epoch is not None:
                after_epoch(epoch + 1, model, opt)
            if stop_check is not None and epoch + 1 < epochs:
                reason = stop_check(epoch + 1, metrics)
                if reason:
                    raise PointStopped(reason)

    def to_device(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

"""Training and evaluation loops (train_one_epoch / evaluate, each taking only what it needs)."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from sslsearch.config import Recipe
from sslsearch.data import Datasets, Split
from sslsearch.sparsity import SSLPenalty
from sslsearch.trial._distill import Distiller


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or inf (typically: ssl_lambda or the learning rate is too large)."""


def pick_device(requested: str = "auto") -> torch.device:
    """``auto``: the GPU this process may use (Ray sets CUDA_VISIBLE_DEVICES per trial), else CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(requested)
    if dev.type == "cuda" and not torch.cuda.is_available():
        return torch.device("cpu")
    return dev


def set_threads(threads: int | None) -> int:
    """Use exactly ``threads`` CPU threads (what Ray allotted to the trial): no oversubscription."""
    if threads is not None and threads >= 1:
        torch.set_num_threads(int(threads))
        os.environ["OMP_NUM_THREADS"] = str(int(threads))
    return torch.get_num_threads()


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def make_optimizer(model: nn.Module, lr: float, recipe: Recipe) -> torch.optim.SGD:
    decay, no_decay = [], []
    for m in model.modules():
        for name, p in m.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            is_norm = isinstance(m, nn.modules.batchnorm._BatchNorm)
            if recipe.no_decay_bn_bias and (is_norm or name == "bias"):
                no_decay.append(p)
            else:
                decay.append(p)
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.SGD(
        groups, lr=lr, momentum=recipe.momentum, nesterov=recipe.nesterov and recipe.momentum > 0
    )


def lr_at(
    progress: float, base_lr: float, epochs: int, recipe: Recipe, warmup_epochs: float
) -> float:
    """Learning rate at ``progress`` (fractional epochs done), a pure function: no state to save."""
    if warmup_epochs > 0 and progress < warmup_epochs:
        return base_lr * (0.01 + 0.99 * progress / warmup_epochs)
    if recipe.schedule == "constant" or epochs <= 0:
        return base_lr
    if recipe.schedule == "cosine":
        span = max(epochs - warmup_epochs, 1e-9)
        t = min(max((progress - warmup_epochs) / span, 0.0), 1.0)
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * t))
    passed = sum(1 for m in recipe.milestones if progress >= m * epochs)
    return base_lr * recipe.gamma**passed


@dataclass
class EpochStats:
    loss: float
    penalty: float
    train_top1: float
    images: int
    seconds: float
    distill: float = float("nan")  # mean T^2 * KL(teacher || student) (NaN: no distillation)


@dataclass
class EvalStats:
    loss: float
    top1: float
    top5: float
    images: int


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager[object]:
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def train_one_epoch(
    model: nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    *,
    lr_fn: Callable[[float], float],
    steps_per_epoch: int,
    epoch: int,
    penalty: SSLPenalty | None,
    label_smoothing: float,
    device: torch.device,
    amp: bool = False,
    channels_last: bool = False,
    scaler: torch.amp.GradScaler | None = None,
    distill: Distiller | None = None,
) -> EpochStats:
    """One epoch over ``batches``; the loss is the cross-entropy, or with ``distill`` its mix
    with the teacher's softened outputs (``Distiller.loss``), the SSL penalty a proximal step."""
    import time

    model.train()
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    t0 = time.perf_counter()
    sums = _Sums.zeros(device)
    for step, (x, y) in enumerate(batches):
        lr = lr_fn(epoch + step / max(steps_per_epoch, 1))
        for g in optimizer.param_groups:
            g["lr"] = lr
        if channels_last and device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        out, loss = _forward(model, x, y, loss_fn, device, amp, distill, sums)
        _step(loss, optimizer, scaler, epoch, step, penalty)
        pen = _prox(penalty, lr, optimizer, loss, epoch, step)
        sums.add(out, y, loss, pen)
    return sums.stats(t0, distilled=distill is not None)


@dataclass
class _Sums:
    """An epoch's running sums, kept on the device (read once, at the end of the epoch)."""

    loss: torch.Tensor
    penalty: torch.Tensor
    distill: torch.Tensor
    correct: torch.Tensor
    seen: int = 0

    @classmethod
    def zeros(cls, device: torch.device) -> _Sums:
        return cls(
            loss=torch.zeros((), device=device, dtype=torch.float64),
            penalty=torch.zeros((), device=device, dtype=torch.float64),
            distill=torch.zeros((), device=device, dtype=torch.float64),
            correct=torch.zeros((), device=device, dtype=torch.long),
        )

    def add(
        self, out: torch.Tensor, y: torch.Tensor, loss: torch.Tensor, pen: torch.Tensor | None
    ) -> None:
        n = y.shape[0]
        self.seen += n
        self.loss += loss.detach().double() * n
        if pen is not None:
            self.penalty += pen.detach().double() * n
        self.correct += (out.detach().argmax(1) == y).sum()

    def stats(self, t0: float, distilled: bool) -> EpochStats:
        """The epoch's means; ``t0``: when the epoch started (``time.perf_counter``)."""
        import time

        seen = self.seen
        if seen == 0:
            raise ValueError("the training split is empty")
        return EpochStats(
            loss=float(self.loss) / seen,
            penalty=float(self.penalty) / seen,
            train_top1=100.0 * float(self.correct) / seen,
            images=seen,
            seconds=time.perf_counter() - t0,
            distill=float(self.distill) / seen if distilled else float("nan"),
        )


def _forward(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: nn.Module,
    device: torch.device,
    amp: bool,
    distill: Distiller | None,
    sums: _Sums,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The step's logits and loss (the teacher's term, when distilled, added to ``sums``)."""
    with _autocast(device, amp):
        out = model(x)
        loss = loss_fn(out.float(), y)  # the cross-entropy, or with a teacher the mix
        if distill is not None:
            loss, kd = distill.loss(x, out, loss)
            sums.distill += kd.double() * y.shape[0]
    return out, loss


def _step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    epoch: int,
    step: int,
    penalty: SSLPenalty | None = None,
) -> None:
    """Backward and the optimizer's step; a loss that is not finite stops before the step.
    The penalty's ``before_step_`` comes between them (step rule ``loss``: its gradient)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # the penalty's gradient is added unscaled
    else:
        loss.backward()
    if not bool(torch.isfinite(loss.detach())):
        raise NonFiniteLoss(
            f"loss became {float(loss.detach())} at epoch {epoch + 1}, step {step + 1}"
        )
    if penalty is not None:
        penalty.before_step_()
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def _prox(
    penalty: SSLPenalty | None,
    lr: float,
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    epoch: int,
    step: int,
) -> torch.Tensor | None:
    """The SSL penalty's step after the optimizer's; its value (None: no penalty)."""
    if penalty is None:
        return None
    # the group Lasso's exact zeros, no autograd: the step its step rule says
    # (SSLPenalty.after_step_; the default, a proximal step of lr / (1 - momentum))
    pen = penalty.after_step_(lr, optimizer)
    if pen is not None and not bool(torch.isfinite(loss.detach().cpu() + pen)):
        raise NonFiniteLoss(
            f"loss became {float(loss.detach().cpu() + pen)} at epoch {epoch + 1}, "
            f"step {step + 1} (cross-entropy {float(loss.detach()):.4g}, "
            f"SSL penalty {float(pen):.4g})"
        )
    return pen


@dataclass(frozen=True)
class EpochSettings:
    """What every epoch of one training phase shares (SSL training, a point's fine-tune, or
    ``finetune``): the schedule, the data augmentation, the penalty or teacher, the hardware."""

    recipe: Recipe
    epochs: int
    base_lr: float
    warmup_epochs: float
    augment: bool
    device: torch.device
    penalty: SSLPenalty | None = None  # None: no SSL penalty (or all its lambdas are 0)
    distill: Distiller | None = None
    amp: bool = False
    channels_last: bool = False
    scaler: torch.amp.GradScaler | None = None

    def lr(self, progress: float) -> float:
        """The learning rate at ``progress`` (fractional epochs done) of this phase."""
        return lr_at(progress, self.base_lr, self.epochs, self.recipe, self.warmup_epochs)


def train_and_evaluate(
    model: nn.Module,
    data: Datasets,
    optimizer: torch.optim.Optimizer,
    settings: EpochSettings,
    *,
    epoch: int,
    seed: int,
) -> tuple[EpochStats, EvalStats]:
    """One epoch of a training phase: the training split shuffled by ``seed``, then the steps
    the penalty still owes, then the validation split (the one epoch loop of a trial's phases
    and of ``finetune``)."""
    s, rec = settings, settings.recipe
    batches = data.train.batches(
        rec.batch_size, shuffle=True, augment=s.augment, seed=seed, device=s.device
    )
    stats = train_one_epoch(
        model,
        batches,
        optimizer,
        lr_fn=s.lr,
        steps_per_epoch=math.ceil(len(data.train) / rec.batch_size),
        epoch=epoch,
        penalty=s.penalty,
        label_smoothing=rec.label_smoothing,
        device=s.device,
        amp=s.amp,
        channels_last=s.channels_last,
        scaler=s.scaler,
        distill=s.distill,
    )
    if s.penalty is not None:
        # every chunk gets the steps it is owed: the epoch's model (what is reported,
        # checkpointed and, after the last, pruned) has its exact zeros
        s.penalty.flush_()
    ev = evaluate(
        model,
        data.val,
        batch_size=rec.eval_batch_size,
        device=s.device,
        amp=s.amp,
        channels_last=s.channels_last,
    )
    return stats, ev


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    *,
    max_batches: int = 20,
    channels_last: bool = False,
) -> int:
    """Re-estimate every BatchNorm's running mean/var from ``batches`` (forward only, no grad).

    After pruning, each layer's input lost channels, so the running statistics the dense model
    collected no longer describe its pre-BN activations; in eval mode the stale ones can swamp
    the signal (the logits of a pruned VGG then hardly depend on the input: one class for all).
    The statistics become the plain average over the batches seen; parameters do not change.
    Returns the number of batches used (0: the model has no BatchNorm, nothing done).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts the same
    model.train()
    used = 0
    try:
        for x, _ in batches:
            if used >= max_batches:
                break
            if channels_last and x.device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            model(x)
            used += 1
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.train(was_training)
    return used


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split: Split,
    *,
    batch_size: int,
    device: torch.device,
    amp: bool = False,
    channels_last: bool = False,
) -> EvalStats:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy on ``split``, in eval mode."""
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    loss_sum = 0.0
    c1 = c5 = seen = 0
    for x, y in split.batches(batch_size, shuffle=False, augment=False, seed=0, device=device):
        if channels_last and device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, amp):
            out = model(x).float()
        loss_sum += float(loss_fn(out, y))
        k = min(5, out.shape[1])
        top = out.topk(k, dim=1).indices
        c1 += int((top[:, 0] == y).sum())
        c5 += int((top == y.view(-1, 1)).any(dim=1).sum())
        seen += y.shape[0]
    if seen == 0:
        raise ValueError("the evaluation split is empty")
    return EvalStats(
        loss=loss_sum / seen, top1=100.0 * c1 / seen, top5=100.0 * c5 / seen, images=seen
    )

"""Logit distillation in the fine-tune: the pruned model (student) learns from a dense teacher.

The loss of a step is ``(1 - w) * CE(student, y) + w * T^2 * KL(p_teacher || p_student)``,
both distributions the softmax of the logits at temperature ``T`` (Hinton et al., 2015; the
``T^2`` keeps the soft term's gradient on the hard term's scale whatever ``T`` is). The teacher
runs in eval mode under ``no_grad`` on the very batches the student trains on, on its device:
no extra pass over the data. A recipe with ``distill_weight: 0`` never builds a Distiller, so
the plain fine-tune is untouched (and at weight 0 the formula itself is the cross-entropy).

What teaches is said in every result (``distilled_from``): ``baseline`` (the experiment's dense
baseline, the model file's own record says so), ``ssl_model`` (the trial's SSL model before
pruning, when no teacher file is given) or the teacher file's path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sslsearch.errors import ModelFileError
from sslsearch.models import model_from_payload, safe_torch_load
from sslsearch.models._io import FORMAT

SSL_MODEL_TEACHER = "ssl_model"  # distilled_from when the trial's own SSL model teaches
BASELINE_TEACHER = "baseline"  # distilled_from when the teacher file is a dense baseline


def distill_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, mean over the batch."""
    t = float(temperature)
    return F.kl_div(
        F.log_softmax(student / t, dim=1),
        F.log_softmax(teacher / t, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)


@dataclass
class Distiller:
    """A teacher and how much its softened outputs count in the fine-tune's loss."""

    teacher: nn.Module
    weight: float
    temperature: float
    source: str  # what teaches: baseline | ssl_model | the teacher file

    def loss(
        self, x: torch.Tensor, student: torch.Tensor, ce: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's loss from the student's logits and cross-entropy; and the (detached)
        distillation term. Called inside the step's autocast, with the student's input."""
        if self.teacher.training:  # dropout or BN updates would make the targets drift
            self.teacher.eval()
        with torch.no_grad():
            target = self.teacher(x).float()
        kl = distill_kl(student.float(), target, self.temperature)
        return (1.0 - self.weight) * ce + self.weight * kl, kl.detach()


@dataclass
class Teacher:
    """A teacher read from a model file, checked against the data the student trains on."""

    model: nn.Module
    source: str  # baseline | the path


def read_teacher(
    path: str, num_classes: int, channels: int, input_shape: tuple[int, ...] | None = None
) -> Teacher:
    """The teacher in the model file ``path`` (local or a storage URI), on the CPU, eval mode.

    One ModelFileError (a UserError: one line, exit code 2) when the file is missing, is no
    sslsearch model file, or gives other classes or takes other images than the student.
    """
    try:
        payload = safe_torch_load(path, "teacher")
    except ModelFileError as e:
        text = str(e)
        raise ModelFileError(text if text.startswith("teacher") else f"teacher: {text}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(
            f"teacher {path} is not a sslsearch model file (format {FORMAT}): give a model "
            "written by `sslsearch trial`, `finetune` or a search (e.g. its baseline/model.pt)"
        )
    arch = payload.get("arch")
    classes, in_ch = int(payload.get("num_classes", -1)), int(payload.get("in_channels", -1))
    if classes != num_classes or in_ch != channels:
        raise ModelFileError(
            f"teacher {path} ({arch}) gives {classes} classes for {in_ch}-channel images, but "
            f"the student learns {num_classes} classes of {channels}-channel images: give a "
            "teacher trained on the same data"
        )
    shape = payload.get("input_shape")
    if input_shape is not None and shape and tuple(shape) != tuple(input_shape):
        raise ModelFileError(
            f"teacher {path} ({arch}) takes inputs of shape {tuple(shape)}, the student "
            f"{tuple(input_shape)}: give a teacher trained at the same image size"
        )
    model = model_from_payload(payload, f"teacher {path}")
    return Teacher(model.eval(), _source(path, payload.get("meta") or {}))


def _source(path: str, meta: dict[str, Any]) -> str:
    """``baseline`` when the file is an experiment's dense baseline (its metrics say so)."""
    try:
        metrics = json.loads(meta.get("metrics") or "{}")
    except (TypeError, ValueError):
        metrics = {}
    if isinstance(metrics, dict) and metrics.get("role") == BASELINE_TEACHER:
        return BASELINE_TEACHER
    return path

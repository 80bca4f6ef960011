"""What one trial runs: data, model, recipe, penalty, pruner, seed. Plain frozen dataclasses."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from sslsearch.config._typed import ConfigError, from_mapping, to_mapping
from sslsearch.imports import is_import_path
from sslsearch.registry import unknown_name_message
from sslsearch.vocabulary import (
    BUDGET_KINDS,
    DEFAULT_SSL_FLOOR,
    DEFAULT_SSL_STEP,
    DEFAULT_SSL_WEIGHTING,
    LAMBDA_KEYS,
    MIN_WIDTH_SHARE,
    SSL_FLOOR_RULES,
    SSL_STEP_RULES,
    SSL_WEIGHTINGS,
    budget_problem,
)

# How much a point prunes: a budget (share of the dense model's cost kept) or the reference
# project's ratio; depth_wise may give ``blocks`` instead. A point's whole pruning choice adds
# the prune type and way (PRUNING_KEYS are the numeric and per-point parts).
BUDGET_KEYS = tuple(f"{k}_budget" for k in BUDGET_KINDS)
AMOUNT_KEYS = (*BUDGET_KEYS, "ratio")
PRUNING_KEYS = (*AMOUNT_KEYS, "blocks", "min_width_share")
# A trial's parameters that determine its SSL model (with the arch, data, SSL recipe, seed and
# starting weights: TrialConfig.ssl_key); every point of one SSL model shares them
SSL_PARAMS = ("ssl_type", "ssl_lambda", "ssl_weighting", "min_width_share", "ssl_floor", "ssl_step")
_RULES_BEFORE = {"ssl_floor": "scale", "ssl_step": "momentum"}
DEFAULT_FLOPS_BUDGET = 0.5  # what a trial prunes to when it is given no budget, ratio or blocks


@dataclass(frozen=True)
class DataConfig:
    """Which data a trial reads, and how."""

    name: str = "digits"
    root: str = "data"  # each node reads its own copy under this path
    image_size: int | None = None  # None: native size; 224 resizes like the seed
    augment: bool = True
    val_fraction: float = 0.2  # share of the training data held out for validation
    split_seed: int = 0  # seeds the validation hold-out and the per_class subset
    download: bool = False  # only on explicit request: machines may be offline
    # a stratified subset of the training images: this many per class, drawn with split_seed
    # before validation is held out of them (None: all); the test split is never subset
    per_class: int | None = None
    # imagefolder: decode every image once into a uint8 tensor (resized to image_size),
    # cached on disk, instead of decoding each epoch (cifar10/100 folders always are)
    in_memory: bool = False

    def check(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError("val_fraction", f"must be in (0, 1), got {self.val_fraction}")
        if self.image_size is not None and self.image_size < 1:
            raise ConfigError("image_size", f"must be >= 1, got {self.image_size}")
        if self.per_class is not None and self.per_class < 2:
            raise ConfigError("per_class", f"must be >= 2 (or null: all), got {self.per_class}")


@dataclass(frozen=True)
class Recipe:
    """Training recipe (the seed's: SGD, momentum, multi-step LR; plus cosine and warm-up)."""

    epochs: int = 12  # SSL training epochs
    finetune_epochs: int = 4  # after pruning, without the penalty
    batch_size: int = 32
    lr: float = 0.05
    finetune_lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    no_decay_bn_bias: bool = True  # no weight decay on BatchNorm and bias parameters
    schedule: Literal["cosine", "multistep", "constant"] = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)  # multistep: fractions of the epochs
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    eval_batch_size: int = 256
    # logit distillation in the fine-tune (0: off): loss = (1 - w) * cross-entropy
    # + w * T^2 * KL(teacher_T || student_T), the teacher's and the student's softmax at
    # temperature T; the teacher is TrialConfig.teacher (in a search: the dense baseline)
    distill_weight: float = 0.0
    distill_temperature: float = 4.0

    def check(self) -> None:
        for name in ("epochs", "finetune_epochs"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be >= 0, got {getattr(self, name)}")
        for name in ("batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "finetune_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(name, f"must be > 0, got {getattr(self, name)}")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ConfigError("weight_decay", "weight_decay must be >= 0 and momentum in [0, 1)")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError("label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")
        if any(not 0 < m < 1 for m in self.milestones):
            raise ConfigError("milestones", "must be fractions of the epochs, each in (0, 1)")
        if self.warmup_epochs < 0:
            raise ConfigError("warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ConfigError(
                "distill_weight",
                f"must be in [0, 1] (0: no distillation), got {self.distill_weight}",
            )
        if not 0.0 < self.distill_temperature < float("inf"):
            raise ConfigError(
                "distill_temperature", f"must be > 0 and finite, got {self.distill_temperature}"
            )


@dataclass(frozen=True)
class TrialConfig:
    """Everything that determines one trial's result (plus where to write and how fast)."""

    arch: str = "vgg_small"
    data: DataConfig = field(default_factory=DataConfig)
    recipe: Recipe = field(default_factory=Recipe)
    ssl_type: str = "filter_wise"
    # with the default weighting, 0.3 makes ~90% of vgg_small's FLOPs removable on digits
    ssl_lambda: float | dict[str, float] = 0.3
    # how groups of different size and cost are weighed (sslsearch.registry.SSL_WEIGHTINGS)
    ssl_weighting: str = DEFAULT_SSL_WEIGHTING
    # how the proximal step keeps a layer's floor, and which step it takes under momentum
    # (sslsearch.vocabulary.SSL_FLOOR_RULES, SSL_STEP_RULES; chosen by bench_ssl_step.py)
    ssl_floor: str = DEFAULT_SSL_FLOOR
    ssl_step: str = DEFAULT_SSL_STEP
    prune_type: str = "filter_wise"
    prune_way: str = "group_lasso"
    # how much is pruned: one budget (share of the dense model's FLOPs, parameters or measured
    # latency to keep), or the reference project's ratio (share of units to remove), or
    # depth_wise's blocks; none given: flops_budget DEFAULT_FLOPS_BUDGET (``amount()``)
    flops_budget: float | None = None
    params_budget: float | None = None
    latency_budget: float | None = None
    ratio: float | None = None
    blocks: int | None = None  # depth_wise: residual blocks to remove
    # each layer keeps at least this share of its width: the pruner never cuts below it, and the
    # SSL proximal step never leaves fewer nonzero channels (part of the SSL model's identity)
    min_width_share: float = MIN_WIDTH_SHARE
    # prune with a prune type whose structures the SSL penalty did not target (shape_wise SSL
    # with any prune type, depth_wise SSL with a channel one, a channel SSL type with depth_wise)
    allow_unmatched_prune: bool = False
    seed: int = 0
    # runtime (does not change the numbers): where and how
    device: str = "auto"  # auto: the GPU Ray assigned (or cuda:0), else CPU
    threads: int | None = None  # CPU threads; None: what Ray allotted, else all cores
    amp: bool = True  # mixed precision on CUDA
    channels_last: bool = True  # on CUDA
    warm_start: str | None = None  # dense checkpoint to start SSL training from
    # the model the fine-tune distils from (recipe.distill_weight > 0): a model file (path or
    # URI) of the same classes; None: the trial's own SSL model before pruning
    teacher: str | None = None
    cache_dir: str | None = None  # where SSL-trained models are cached (None: no cache)
    out_dir: str | None = None  # where the pruned model is written
    latency_repeats: int = 20
    latency_batch_size: int = 1
    # the user's own objectives (module:function, see sslsearch.config.ObjectiveDef.measure):
    # measured on the finished point and on the model it was pruned from
    objectives: tuple[str, ...] = ()

    def amount(self) -> dict[str, float]:
        """How far this trial prunes: the budget, ratio or blocks given, else the default
        ``flops_budget`` (DEFAULT_FLOPS_BUDGET)."""
        given = {
            k: float(getattr(self, k))
            for k in (*AMOUNT_KEYS, "blocks")
            if getattr(self, k) is not None
        }
        return given or {"flops_budget": DEFAULT_FLOPS_BUDGET}

    def budget(self) -> tuple[str, float] | None:
        """(kind, share) of the budget this trial prunes to (None: a ratio or blocks)."""
        for key, v in self.amount().items():
            if key in BUDGET_KEYS:
                return key.removesuffix("_budget"), v
        return None

    def check(self) -> None:
        for path in self.objectives:
            if not is_import_path(path):
                raise ConfigError("objectives", f"{path!r} is not an import path (module:function)")
        if self.ratio is not None and not 0.0 <= self.ratio < 1.0:
            raise ConfigError("ratio", f"must be in [0, 1), got {self.ratio}")
        if self.blocks is not None and self.blocks < 0:
            raise ConfigError("blocks", f"must be >= 0, got {self.blocks}")
        budgets = [k for k in BUDGET_KEYS if getattr(self, k) is not None]
        for k in budgets:
            problem = budget_problem(k.removesuffix("_budget"), getattr(self, k))
            if problem:
                raise ConfigError(k, problem)
        given = budgets + [k for k in ("ratio", "blocks") if getattr(self, k) is not None]
        if len(given) > 1 and given != ["ratio", "blocks"]:
            raise ConfigError(given[1], f"{' and '.join(given)} are alternatives: give one")
        if given == ["blocks"] and self.prune_type != "depth_wise":
            raise ConfigError("ratio", f"{self.prune_type} needs a budget or a ratio, not blocks")
        if self.ssl_weighting not in SSL_WEIGHTINGS:
            raise ConfigError(
                "ssl_weighting",
                unknown_name_message("ssl weighting", self.ssl_weighting, sorted(SSL_WEIGHTINGS)),
            )
        for key, known in (("ssl_floor", SSL_FLOOR_RULES), ("ssl_step", SSL_STEP_RULES)):
            if getattr(self, key) not in known:
                raise ConfigError(
                    key,
                    unknown_name_message(key.replace("_", " "), getattr(self, key), sorted(known)),
                )
        if not 0.0 <= self.min_width_share <= 1.0:
            raise ConfigError("min_width_share", f"must be in [0, 1], got {self.min_width_share}")
        lams = self.ssl_lambda.values() if isinstance(self.ssl_lambda, dict) else [self.ssl_lambda]
        if isinstance(self.ssl_lambda, dict):
            bad = [k for k in self.ssl_lambda if k not in LAMBDA_KEYS]
            if bad:
                raise ConfigError(
                    f"ssl_lambda.{bad[0]}", f"unknown lambda key; use {', '.join(LAMBDA_KEYS)}"
                )
        for v in lams:
            if not (v >= 0.0 and v < float("inf")):
                raise ConfigError("ssl_lambda", f"must be finite and >= 0, got {v}")
        if self.latency_repeats < 1 or self.latency_batch_size < 1:
            raise ConfigError("latency_repeats", "latency repeats and batch size must be >= 1")
        if self.teacher is not None and not self.teacher.strip():
            raise ConfigError("teacher", "empty path (leave the key out: the SSL model teaches)")
        if self.teacher is not None and self.recipe.distill_weight == 0:
            raise ConfigError(
                "teacher",
                "a teacher is only used with recipe.distill_weight > 0 (e.g. 0.5); set it, or "
                "drop the teacher",
            )

    @classmethod
    def from_dict(cls, data: Any) -> TrialConfig:
        return from_mapping(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return dict(to_mapping(self))

    def with_(self, **changes: Any) -> TrialConfig:
        return replace(self, **changes)

    def ssl_key(self, extra: dict[str, Any] | None = None) -> str:
        """Hash of everything that determines the SSL-trained (not yet pruned) model."""
        d = self.data
        lams = self.ssl_lambda.values() if isinstance(self.ssl_lambda, dict) else [self.ssl_lambda]
        ident = {
            "arch": self.arch,
            "data": {
                **{
                    k: getattr(d, k)
                    for k in ("name", "image_size", "augment", "val_fraction", "split_seed")
                },
                # the subset and the in-memory decoding (its augmentation) change the model;
                # only when set, so that the ids of models trained before them stay the same
                **({"per_class": d.per_class} if d.per_class is not None else {}),
                **({"in_memory": True} if d.in_memory else {}),
            },
            # what happens after SSL training (fine-tune, distillation) does not change it
            "recipe": {
                k: v
                for k, v in to_mapping(self.recipe).items()
                if not k.startswith(("finetune", "distill"))
            },
            # SSL_PARAMS; at lambda = 0 the penalty does nothing: its weighting and floor do not
            # count (one plain model for all)
            **{
                k: getattr(self, k)
                for k in SSL_PARAMS
                if (any(v > 0 for v in lams) or k in ("ssl_type", "ssl_lambda"))
                # a rule only when it is not what every model before the rules was trained
                # with, so that stored models keep their ids
                and not (k in _RULES_BEFORE and getattr(self, k) == _RULES_BEFORE[k])
            },
            "seed": self.seed,
            "warm_start": self.warm_start,
            "extra": extra or {},
            # 2: precision joined the key; 3: weighting, floor rule and flush of the penalty
            "version": 3,
        }
        blob = json.dumps(ident, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:20]

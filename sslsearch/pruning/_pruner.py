"""Pruners over the dependency groups the SSL penalty sums over (one group model).

A unit (a channel with everything coupled to it: residual partners, BatchNorm, depthwise convs,
consumers' input slices; a grouped conv ties one channel of each conv group together) is
scored by the prune way over the prune type's part of its group, normalised per group.
Selection follows SSL and the seed: one global threshold at the requested ratio over all
prunable units; then per layer at least 8 channels are kept and the kept width is rounded up
to a multiple of 8 by keeping the best-scoring of the would-be-removed channels (deterministic).
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from sslsearch.errors import NotPrunableError, UserError
from sslsearch.metrics import count_flops, count_params
from sslsearch.models import ResidualShortcut, residual_blocks
from sslsearch.registry import MIN_CHANNELS, Registry
from sslsearch.sparsity import (
    CRITERIA,
    NORMALIZERS,
    Group,
    build_groups,
    default_example,
    model_groups,
    normalize,
)

log = logging.getLogger(__name__)

ROUND_TO = 8
DEFAULT_NORMALIZER = "element"  # chosen by measurement (bench_ssl_types): README "Pruning"


@dataclass
class PruneResult:
    model: nn.Module
    prune_type: str
    prune_way: str
    ratio: float  # requested share of groups to remove
    actual_ratio: float  # removed groups / all groups, after the minimum and the rounding
    groups_total: int
    groups_removed: int
    flops_before: int
    flops_after: int
    params_before: int
    params_after: int
    # original indices of removed output channels, by layer name (every coupled layer listed)
    removed_channels: dict[str, list[int]] = field(default_factory=dict)
    removed_blocks: list[str] = field(default_factory=list)
    # removed units by channel group (root layer name): unit ids of sslsearch.sparsity.Group
    removed_units: dict[str, list[int]] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        return {
            "prune_type": self.prune_type,
            "prune_way": self.prune_way,
            "ratio": self.ratio,
            "actual_ratio": self.actual_ratio,
            "groups_total": self.groups_total,
            "groups_removed": self.groups_removed,
            "flops_before": self.flops_before,
            "flops_after": self.flops_after,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "removed_blocks": list(self.removed_blocks),
        }


def round_keep(n_keep: int, width: int) -> int:
    """Kept width: at least 8 (or all, for narrower layers), rounded up to a multiple of 8."""
    if width <= MIN_CHANNELS:
        return width
    n = max(n_keep, MIN_CHANNELS)
    n = int(math.ceil(n / ROUND_TO) * ROUND_TO)
    return min(n, width)


# ---------------------------------------------------------------------------------------------
# channel groups: the same objects the SSL penalty sums over (sslsearch.sparsity.build_groups)


def _global_low(scores: list[torch.Tensor], ratio: float) -> list[torch.Tensor]:
    """Masks marking the ``ratio`` share of lowest scores over all groups (ties: by position)."""
    flat = torch.cat(scores)
    k = round(ratio * flat.numel())
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    if k > 0:
        order = torch.argsort(flat, stable=True)
        mask[order[:k]] = True
    return list(torch.split(mask, [s.numel() for s in scores]))


def _keep_units(score: torch.Tensor, remove: torch.Tensor, tie: int) -> torch.Tensor:
    """Apply the 8-channel minimum and multiple-of-8 rounding; return sorted units to keep."""
    units = score.numel()
    width = units * tie
    n_keep = round_keep(width - tie * int(remove.sum()), width)
    keep_units = min(units, max(1, math.ceil(n_keep / tie)))
    # Keep every unit not marked, then the best-scoring marked ones up to keep_units.
    priority = torch.where(remove, score, torch.full_like(score, math.inf))
    order = torch.argsort(priority, descending=True, stable=True)
    return order[:keep_units].sort().values


def unit_scores(
    group: Group, prune_type: str, prune_way: str, normalizer: str = DEFAULT_NORMALIZER
) -> torch.Tensor:
    """Each unit's score under ``prune_type``: filter part, channel part, or the lower of both.

    Scores are normalised per group (``normalizer``), so one global threshold compares like
    with like. For filter_and_channel_wise a unit is as removable as its weaker side: a channel
    whose output is zero, or that nobody reads, is dead either way.
    """
    crit = CRITERIA.get(prune_way)
    parts = {
        "filter_wise": ["filter"],
        "channel_wise": ["channel"],
        "filter_and_channel_wise": ["filter", "channel"],
    }[prune_type]
    out: torch.Tensor | None = None
    for part in parts:
        m = group.moments(part)
        sc = normalize(crit(m), m[:, 3], normalizer, crit.size_power)
        out = sc if out is None else torch.minimum(out, sc)
    assert out is not None
    return out


def _prune_channels(
    model: nn.Module,
    example: torch.Tensor,
    prune_type: str,
    way: str,
    ratio: float,
    normalizer: str,
    removed_units: dict[str, list[int]],
) -> tuple[int, int, dict[str, list[int]]]:
    gs, dg, roots = build_groups(model, example)
    need = {"filter_wise": ["filter"], "channel_wise": ["channel"]}.get(
        prune_type, ["filter", "channel"]
    )
    candidates = [g for g in gs.channel if g.prunable and all(g.has(p) for p in need)]
    if not candidates:
        raise NotPrunableError(f"{type(model).__name__} has no channel group prunable {prune_type}")
    scores = [unit_scores(g, prune_type, way, normalizer) for g in candidates]
    low = _global_low(scores, ratio)

    total = sum(g.units for g in candidates)
    removed_total = 0
    removed: dict[str, list[int]] = {}
    plan: list[tuple[Group, list[int]]] = []
    for g, mask, score in zip(candidates, low, scores):
        keep = _keep_units(score, mask, g.tie)
        drop_units = sorted(set(range(g.units)) - set(keep.tolist()))
        if not drop_units:
            continue
        assert g.channels is not None
        drop = sorted(g.channels[drop_units].flatten().tolist())
        removed_total += len(drop_units)
        removed_units[g.name] = drop_units
        plan.append((g, drop))
        for name, idx in g.out_layers.items():
            removed[name] = idx[drop].tolist()
    for g, drop in plan:
        root, handler = roots[g.name]
        pruning_group = dg.get_pruning_group(root, handler, drop)
        if not dg.check_pruning_group(pruning_group):
            raise NotPrunableError(
                f"layer {g.name}: removing {len(drop)} channels would empty a layer"
            )
        pruning_group.prune()
    return total, removed_total, removed


def _prune_blocks(
    model: nn.Module, example: torch.Tensor, way: str, blocks: int
) -> tuple[int, int, list[str]]:
    found = residual_blocks(model)
    if not found:
        raise NotPrunableError(f"depth_wise needs residual blocks; {type(model).__name__} has none")
    if not 0 <= blocks < len(found):
        raise UserError(
            f"blocks must be in [0, {len(found) - 1}] for {type(model).__name__} "
            f"({len(found)} residual blocks), got {blocks}"
        )
    gs = model_groups(model, example)
    crit = CRITERIA.get(way)
    scores = torch.cat([crit(g.moments()) for g in gs.block])
    order = torch.argsort(scores, stable=True)[:blocks].tolist()
    removed = sorted(gs.block[i].name for i in order)
    for name in removed:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        block = parent.get_submodule(child)
        # registered under the same name, so Sequential keeps its order
        setattr(parent, child, ResidualShortcut(getattr(block, "downsample", None)))
    return len(found), blocks, removed


# ---------------------------------------------------------------------------------------------
# public entry


PRUNE_TYPES: Registry[str] = Registry("prune type")
for _t, _d in (
    ("filter_wise", "channels scored by their producers (filters, biases, BN scale/shift)"),
    ("channel_wise", "channels scored by their readers (consumers' input slices, BN scale/shift)"),
    (
        "filter_and_channel_wise",
        "one threshold over both pools: a channel goes if its filter or channel score is low",
    ),
    ("depth_wise", "the N lowest-scoring residual blocks become their shortcut"),
):
    PRUNE_TYPES.add(_t, _d)


def list_prune_types() -> list[str]:
    return PRUNE_TYPES.names()


def _example(
    model: nn.Module, example_inputs: torch.Tensor | tuple[int, ...] | None
) -> torch.Tensor:
    if isinstance(example_inputs, torch.Tensor):
        return example_inputs
    if example_inputs is None:
        return default_example(model)
    param = next(model.parameters())
    return torch.zeros((1, *example_inputs), device=param.device)


def prune(
    model: nn.Module,
    example_inputs: torch.Tensor | tuple[int, ...],
    *,
    prune_type: str,
    prune_way: str = "group_lasso",
    ratio: float | None = None,
    blocks: int | None = None,
    inplace: bool = False,
    normalizer: str = DEFAULT_NORMALIZER,
) -> PruneResult:
    """Physically remove structure from ``model``; returns the smaller model and what changed.

    ``example_inputs``: a batch, or an input shape (C, H, W). ``ratio`` in [0, 1) is the share of
    groups to remove; for depth_wise give ``blocks`` (or a ratio of the residual blocks).
    The input model is left untouched unless ``inplace``; on an error it is never changed.
    ``normalizer``: how unit scores are made comparable across groups (``NORMALIZERS``).

    The groups are the dependency groups the SSL penalty sums over
    (``sslsearch.sparsity.build_groups``): removing a unit removes every coupled slice.

    Example:
        >>> r = prune(model, (3, 32, 32), prune_type="filter_wise", ratio=0.5)
        >>> r.model, r.actual_ratio, r.flops_after
    """
    if normalizer not in NORMALIZERS:
        raise UserError(f"unknown normalizer {normalizer!r}; known: {', '.join(NORMALIZERS)}")
    PRUNE_TYPES.get(prune_type)
    CRITERIA.get(prune_way)
    if prune_type == "depth_wise":
        if blocks is None and ratio is None:
            raise UserError("depth_wise needs blocks=N (or a ratio of the residual blocks)")
        if blocks is not None and (isinstance(blocks, bool) or int(blocks) != blocks):
            raise UserError(f"blocks must be an integer, got {blocks!r}")
        n_blocks = len(residual_blocks(model))
        if n_blocks == 0:
            raise NotPrunableError(
                f"depth_wise needs residual blocks; {type(model).__name__} has none"
            )
    elif ratio is None:
        raise UserError(f"{prune_type} needs a ratio in [0, 1)")
    if ratio is not None and not (0.0 <= float(ratio) < 1.0):
        raise UserError(f"ratio must be in [0, 1), got {ratio}")

    example = _example(model, example_inputs)
    input_shape = tuple(example.shape[1:])
    flops_before, params_before = count_flops(model, input_shape), count_params(model)
    work = model if inplace else copy.deepcopy(model)
    was_training = work.training
    work.eval()
    removed_channels: dict[str, list[int]] = {}
    removed_blocks: list[str] = []
    removed_units: dict[str, list[int]] = {}
    if prune_type == "depth_wise":
        n = int(blocks) if blocks is not None else round(float(ratio or 0.0) * n_blocks)
        total, gone, removed_blocks = _prune_blocks(work, example, prune_way, n)
    else:
        total, gone, removed_channels = _prune_channels(
            work, example, prune_type, prune_way, float(ratio or 0.0), normalizer, removed_units
        )
    work.train(was_training)
    result = PruneResult(
        model=work,
        prune_type=prune_type,
        prune_way=prune_way,
        ratio=float(ratio) if ratio is not None else gone / max(total, 1),
        actual_ratio=gone / max(total, 1),
        groups_total=total,
        groups_removed=gone,
        flops_before=flops_before,
        flops_after=count_flops(work, input_shape),
        params_before=params_before,
        params_after=count_params(work),
        removed_channels=removed_channels,
        removed_blocks=removed_blocks,
        removed_units=removed_units,
    )
    log.info(
        "pruned %s/%s at ratio %.3f: actual %.3f, FLOPs %d -> %d, params %d -> %d",
        prune_type,
        prune_way,
        result.ratio,
        result.actual_ratio,
        flops_before,
        result.flops_after,
        params_before,
        result.params_after,
    )
    return result


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str) -> None:
    """Export an (often pruned) model to ONNX with a dynamic batch dimension.

    Needs the ``onnx`` extra (``pip install 'sslsearch[onnx]'``: onnx and onnxscript). Weights
    are written beside ``path`` as ``<path>.data`` (ONNX external data); keep both files.
    """
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"ONNX export needs {' and '.join(missing)}: pip install 'sslsearch[onnx]'")
    model = model.eval()
    x = torch.zeros((1, *input_shape), device=next(model.parameters()).device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            path,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            verbose=False,
        )

"""Pruners. Channels coupled through residual additions or flattening are found by
torch-pruning's dependency graph and scored and removed together as one group.

Selection follows SSL and the seed: one global threshold at the requested ratio over all
prunable groups; then per layer at least 8 channels are kept and the kept width is rounded up
to a multiple of 8 by keeping the best-scoring of the would-be-removed channels (deterministic).
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sslsearch.errors import NotPrunableError, UserError
from sslsearch.metrics import count_flops, count_params
from sslsearch.models import ResidualShortcut, residual_blocks
from sslsearch.models._blocks import residual_branch_parameters
from sslsearch.registry import Registry
from sslsearch.sparsity import CRITERIA, criterion_scores, moments, scores_from_moments

log = logging.getLogger(__name__)

MIN_CHANNELS = 8
ROUND_TO = 8


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
# channel groups from the dependency graph


@dataclass
class _ChannelGroup:
    root: nn.Module
    root_name: str
    width: int
    filter_moments: torch.Tensor | None  # (width, 4): the output filters producing each channel
    channel_moments: torch.Tensor | None  # (width, 4): the consumers' input slices of each channel
    out_layers: dict[str, torch.Tensor]  # layer name -> index tensor (same order as root idx)


def _to_root(
    per_index: torch.Tensor, idxs: list[int], root_idxs: list[int], width: int
) -> torch.Tensor:
    """Sum per-index moments (indexed by the layer's own channel ids) into the root's channels.

    A root channel may map to several indices of a layer (a conv channel feeds 49 inputs of a
    Linear after flattening a 7x7 map): their moments add up.
    """
    per_index = per_index.cpu()  # selection runs on the CPU, wherever the model lives
    out = torch.zeros(width, 4, dtype=torch.float64)
    out.index_add_(0, torch.as_tensor(root_idxs), per_index[torch.as_tensor(idxs)])
    return out


def _add(acc: torch.Tensor | None, m: torch.Tensor) -> torch.Tensor:
    return m if acc is None else acc + m


def _final_layer(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """The last conv/linear executed: its outputs are the classes and never change."""
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda mod, i, o: order.append(mod))
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    if not order:
        raise NotPrunableError(f"{type(model).__name__} has no conv or linear layer")
    return order[-1]


def _channel_groups(model: nn.Module, example: torch.Tensor) -> tuple[Any, list[_ChannelGroup]]:
    import torch_pruning as tp

    names = {m: n for n, m in model.named_modules()}
    final = _final_layer(model, example)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dg = tp.DependencyGraph().build_dependency(model, example, verbose=False)
        except Exception as e:  # tracing can fail in many ways on exotic models
            raise NotPrunableError(f"cannot trace {type(model).__name__} for pruning: {e}") from e
    groups: list[_ChannelGroup] = []
    for group in dg.get_all_groups(ignored_layers=[final], root_module_types=[nn.Conv2d]):
        root = group[0].dep.target.module
        width = root.out_channels
        filt: torch.Tensor | None = None
        chan: torch.Tensor | None = None
        outs: dict[str, torch.Tensor] = {}
        for item in group:
            dep, idxs, root_idxs = item.dep, item.idxs, item.root_idxs
            mod = dep.target.module
            if not isinstance(mod, nn.Module) or mod not in names:
                continue
            handler = dep.handler
            if dg.is_out_channel_pruning_fn(handler):
                outs[names[mod]] = torch.as_tensor(idxs)[torch.argsort(torch.as_tensor(root_idxs))]
                if isinstance(mod, nn.Conv2d):
                    if mod.groups != 1:
                        raise NotPrunableError(
                            f"layer {names[mod]}: grouped convolutions are not supported"
                        )
                    m = moments(mod.weight.flatten(1), 1)
                    if mod.bias is not None:
                        m = m + moments(mod.bias.view(-1, 1), 1)
                    filt = _add(filt, _to_root(m, idxs, root_idxs, width))
                elif isinstance(mod, nn.BatchNorm2d) and mod.affine:
                    # the filter group includes the BN scale and shift (sparsity.filter_group_norms)
                    m = moments(torch.stack([mod.weight, mod.bias], dim=1), 1)
                    filt = _add(filt, _to_root(m, idxs, root_idxs, width))
            elif dg.is_in_channel_pruning_fn(handler) and isinstance(mod, (nn.Conv2d, nn.Linear)):
                w = mod.weight
                m = moments(w, (0, 2, 3)) if w.dim() == 4 else moments(w, 0)
                chan = _add(chan, _to_root(m, idxs, root_idxs, width))
        groups.append(_ChannelGroup(root, names[root], width, filt, chan, outs))
    return dg, groups


# ---------------------------------------------------------------------------------------------
# selection


def _global_low(scores: list[torch.Tensor], ratio: float) -> list[torch.Tensor]:
    """Masks marking the ``ratio`` share of lowest scores over all groups (ties: by position)."""
    flat = torch.cat(scores)
    k = round(ratio * flat.numel())
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    if k > 0:
        order = torch.argsort(flat, stable=True)
        mask[order[:k]] = True
    return list(torch.split(mask, [s.numel() for s in scores]))


def _keep_indices(score: torch.Tensor, remove: torch.Tensor) -> torch.Tensor:
    """Apply the 8-minimum and multiple-of-8 rounding; return sorted indices to keep."""
    width = score.numel()
    n_keep = round_keep(width - int(remove.sum()), width)
    # Keep every channel not marked, then the best-scoring marked ones up to n_keep.
    priority = torch.where(remove, score, torch.full_like(score, math.inf))
    order = torch.argsort(priority, descending=True, stable=True)
    return order[:n_keep].sort().values


def _scores(m: torch.Tensor | None, way: str) -> torch.Tensor | None:
    return None if m is None else scores_from_moments(way, m)


def _prune_channels(
    model: nn.Module, example: torch.Tensor, prune_type: str, way: str, ratio: float
) -> tuple[int, int, dict[str, list[int]]]:
    dg, groups = _channel_groups(model, example)
    use_filters = prune_type in ("filter_wise", "filter_and_channel_wise")
    use_channels = prune_type in ("channel_wise", "filter_and_channel_wise")
    candidates: list[_ChannelGroup] = []
    fscores: list[torch.Tensor] = []
    cscores: list[torch.Tensor] = []
    for g in groups:
        fs = _scores(g.filter_moments, way) if use_filters else None
        cs = _scores(g.channel_moments, way) if use_channels else None
        if (use_filters and fs is None) or (use_channels and cs is None):
            continue  # nothing to score this group by: not prunable under this type
        candidates.append(g)
        if fs is not None:
            fscores.append(fs)
        if cs is not None:
            cscores.append(cs)
    if not candidates:
        raise NotPrunableError(f"{type(model).__name__} has no channel group prunable {prune_type}")
    if use_filters and use_channels:
        # the seed's rule: keep a channel if either its filter or its channel score is high
        low = [f & c for f, c in zip(_global_low(fscores, ratio), _global_low(cscores, ratio))]
        rank = [
            torch.maximum(f / f.abs().max().clamp_min(1e-30), c / c.abs().max().clamp_min(1e-30))
            for f, c in zip(fscores, cscores)
        ]
    elif use_filters:
        low, rank = _global_low(fscores, ratio), fscores
    else:
        low, rank = _global_low(cscores, ratio), cscores

    total = sum(g.width for g in candidates)
    removed_total = 0
    removed: dict[str, list[int]] = {}
    plan: list[tuple[_ChannelGroup, list[int]]] = []
    for g, mask, score in zip(candidates, low, rank):
        keep = _keep_indices(score, mask)
        drop = sorted(set(range(g.width)) - set(keep.tolist()))
        if not drop:
            continue
        removed_total += len(drop)
        plan.append((g, drop))
        for name, idx in g.out_layers.items():
            removed[name] = idx[drop].tolist()
    for g, drop in plan:
        pruning_group = dg.get_pruning_group(
            g.root, dg.get_pruner_of_module(g.root).prune_out_channels, drop
        )
        if not dg.check_pruning_group(pruning_group):
            raise NotPrunableError(
                f"layer {g.root_name}: removing {len(drop)} channels would empty a layer"
            )
        pruning_group.prune()
    return total, removed_total, removed


def _prune_blocks(model: nn.Module, way: str, blocks: int) -> tuple[int, int, list[str]]:
    found = residual_blocks(model)
    if not found:
        raise NotPrunableError(f"depth_wise needs residual blocks; {type(model).__name__} has none")
    if not 0 <= blocks < len(found):
        raise UserError(
            f"blocks must be in [0, {len(found) - 1}] for {type(model).__name__} "
            f"({len(found)} residual blocks), got {blocks}"
        )
    rows = [
        torch.cat([p.detach().flatten() for p in residual_branch_parameters(b)]) for _, b in found
    ]
    scores = torch.stack([criterion_scores(way, r.view(1, -1))[0] for r in rows])
    order = torch.argsort(scores, stable=True)[:blocks].tolist()
    removed = sorted(found[i][0] for i in order)
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
    ("filter_wise", "output filters, one global threshold over all layers"),
    ("channel_wise", "input channels of the consuming layers (removes the producing filter)"),
    (
        "filter_and_channel_wise",
        "a channel goes only if both its filter and channel scores are low",
    ),
    ("depth_wise", "the N lowest-scoring residual blocks become their shortcut"),
):
    PRUNE_TYPES.add(_t, _d)


def list_prune_types() -> list[str]:
    return PRUNE_TYPES.names()


def _example(model: nn.Module, example_inputs: torch.Tensor | tuple[int, ...]) -> torch.Tensor:
    if isinstance(example_inputs, torch.Tensor):
        return example_inputs
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
) -> PruneResult:
    """Physically remove structure from ``model``; returns the smaller model and what changed.

    ``example_inputs``: a batch, or an input shape (C, H, W). ``ratio`` in [0, 1) is the share of
    groups to remove; for depth_wise give ``blocks`` (or a ratio of the residual blocks).
    The input model is left untouched unless ``inplace``; on an error it is never changed.
    """
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
    if prune_type == "depth_wise":
        n = int(blocks) if blocks is not None else round(float(ratio or 0.0) * n_blocks)
        total, gone, removed_blocks = _prune_blocks(work, prune_way, n)
    else:
        total, gone, removed_channels = _prune_channels(
            work, example, prune_type, prune_way, float(ratio or 0.0)
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

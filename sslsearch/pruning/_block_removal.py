"""Block removal (depth_wise): residual blocks become their shortcut, by count, by a ratio of
the blocks, or lowest importance per cost first until the true cost meets a budget."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from sslsearch.errors import NotPrunableError, UserError
from sslsearch.metrics import count_flops, count_params
from sslsearch.models import ResidualShortcut, residual_blocks, residual_branch_parameters
from sslsearch.pruning._budget import _Target
from sslsearch.pruning._result import _Removal, _Request
from sslsearch.pruning._savings import CostModel
from sslsearch.pruning._units import _shape
from sslsearch.sparsity import CRITERIA, model_groups, normalize


def _remove_blocks(
    work: nn.Module, example: torch.Tensor, req: _Request, target: _Target | None
) -> _Removal:
    """depth_wise: residual blocks become their shortcut, to the budget or by count."""
    total = len(residual_blocks(work))
    if target is not None:
        removed, achieved, finest = _prune_blocks_to_budget(
            work, example, req.prune_way, target, req.normalizer, req.cost_power
        )
        return _Removal(
            work, total, len(removed), removed_blocks=removed, achieved=achieved, finest=finest
        )
    blocks, ratio = req.blocks, req.ratio
    n = int(blocks) if blocks is not None else round(float(ratio or 0.0) * total)
    total, gone, removed = _prune_blocks(work, example, req.prune_way, n)
    return _Removal(work, total, gone, removed_blocks=removed)


def _block_costs(model: nn.Module, example: torch.Tensor, kind: str, dense: float) -> list[float]:
    """Each residual block's cost: its branch's parameters' share of ``kind`` (flops, params)."""
    per = CostModel.build(model, [], example, kind, dense).param_costs()
    names = {id(p): n for n, p in model.named_parameters()}
    return [
        sum(per.get(names[id(p)], 0.0) for p in residual_branch_parameters(b))
        for _, b in residual_blocks(model)
    ]


def _replace_blocks(model: nn.Module, names: list[str]) -> None:
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        block = parent.get_submodule(child)
        # registered under the same name, so Sequential keeps its order
        setattr(parent, child, ResidualShortcut(getattr(block, "downsample", None)))


def _block_scores(model: nn.Module, example: torch.Tensor, way: str, normalizer: str) -> np.ndarray:
    gs = model_groups(model, example)
    crit = CRITERIA.get(way)
    m = torch.cat([g.moments() for g in gs.block])
    return normalize(crit(m), m[:, 3], normalizer, crit.size_power).double().numpy()


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
    _replace_blocks(model, removed)
    return len(found), blocks, removed


def _prune_blocks_to_budget(
    model: nn.Module,
    example: torch.Tensor,
    way: str,
    target: _Target,
    normalizer: str,
    cost_power: float,
) -> tuple[list[str], float, tuple[str, float] | None]:
    """Blocks go lowest importance per cost first (a block's cost: its branch's FLOPs, or
    parameters for a parameter budget) until the true cost meets the budget; then blocks that
    still fit are given back, the most valuable first. A block is the rounding step here."""
    names = [n for n, _ in residual_blocks(model)]
    proxy = "params" if target.kind == "params" else "flops"
    shape = _shape(example)
    dense = float(count_params(model) if proxy == "params" else count_flops(model, shape))
    costs = np.asarray(_block_costs(model, example, proxy, dense))
    scores = _block_scores(model, example, way, normalizer)
    key = np.maximum(scores, 0.0) / np.maximum(costs, 1e-30) ** cost_power
    order = [int(i) for i in np.argsort(key, kind="stable")]
    ceiling = target.absolute * (1 + target.tolerance if target.kind == "latency" else 1.0)

    def cost_of(removed: set[int]) -> float:
        work = copy.deepcopy(model)
        _replace_blocks(work, [names[i] for i in removed])
        return target.measure(work)

    n, true = 0, target.dense
    while true > ceiling:
        n += 1
        if n >= len(names):
            raise NotPrunableError(
                f"{target.kind}_budget {target.share:g}: removing every residual block but one "
                f"keeps {true / target.dense:.3f} of the dense {target.kind}"
            )
        true = cost_of(set(order[:n]))
    removed = set(order[:n])
    for i in sorted(order[:n], key=lambda i: -key[i]):
        cost = cost_of(removed - {i})
        if cost <= ceiling:
            removed.discard(i)
            true = cost
    _replace_blocks(model, [names[i] for i in sorted(removed)])
    left = [i for i in range(len(names)) if i not in removed]
    finest = None
    if left:
        i = min(left, key=lambda i: costs[i])
        finest = (names[i], float(costs[i] / dense * target.dense))
    return sorted(names[i] for i in removed), true, finest

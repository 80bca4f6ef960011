"""Sparsity figures that cannot mislead: what is exactly zero, and what removing it would save.

* ``exact_zero_share``: the share of the SSL type's units that are exactly zero (a channel
  counts once, under filter_and_channel_wise when either of its parts is zero; shape_wise:
  shapes; depth_wise: residual blocks). Exactly zero, not "small relative to the largest": a
  model scaled down by 1e-6 has no zero unit, and behind a BatchNorm computes the same.
* ``removable_flops_share`` / ``removable_params_share``: the share of the dense model's FLOPs
  (fvcore multiply-adds) and parameters that the pruner could remove without changing what the
  model computes: the channels whose output is exactly zero (every producing filter and bias and
  the BatchNorm scale/shift) or that nothing reads (every reader's slice), less what each
  layer's floor (``min_width_share``) and the rounding of kept widths to ``round_to`` keep;
  depth_wise: the residual blocks whose branch is exactly zero. A zero shape saves nothing: no
  prune type removes a shape (shape_wise counts only the channels it happens to empty).
* ``narrowest_width``: per layer (channel group, by its root conv), the width left after
  removing those channels; ``width``: its dense width.
* ``at_floor``: layers whose live units are down to their floor, where the SSL proximal step
  holds them (``SSLPenalty.prox_``): the penalty would have taken more.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from sslsearch.errors import UserError
from sslsearch.metrics import count_flops, count_params
from sslsearch.models import residual_blocks, residual_branch_parameters
from sslsearch.pruning._savings import CostModel
from sslsearch.pruning._units import _example, round_keep
from sslsearch.sparsity import Group, model_groups
from sslsearch.sparsity._groups import IN, NORM, OUT
from sslsearch.vocabulary import MIN_WIDTH_SHARE, ROUND_TO, SSL_TYPE_KEYS, min_width

CHANNEL_PARTS = {
    # which of a channel's parts the SSL type drives to zero: the unit is zero if any one is
    "filter_wise": [frozenset({OUT, NORM})],
    "channel_wise": [frozenset({IN, NORM})],
    "filter_and_channel_wise": [frozenset({OUT, NORM}), frozenset({IN, NORM})],
    "group_wise": [frozenset({OUT, NORM, IN})],
}


class SparsityMeter:
    """The figures of one model, with its groups and cost models built once (cheap per call:
    a trial measures its SSL model after every epoch)."""

    def __init__(
        self,
        model: nn.Module,
        ssl_type: str,
        example_inputs: torch.Tensor | tuple[int, ...] | None = None,
        min_width_share: float = MIN_WIDTH_SHARE,
        round_to: int = ROUND_TO,
    ) -> None:
        if ssl_type not in SSL_TYPE_KEYS:
            raise UserError(f"unknown ssl type {ssl_type!r}; known: {', '.join(SSL_TYPE_KEYS)}")
        min_width(round_to + 1, min_width_share, round_to)  # validates share and round_to
        self.model = model
        self.ssl_type = ssl_type
        self.share = float(min_width_share)
        self.round_to = int(round_to)
        example = _example(model, example_inputs)
        shape = tuple(example.shape[1:])
        gs = model_groups(model, example)
        self.gs = gs
        self.candidates = [g for g in gs.channel if g.prunable]
        self.flops = float(count_flops(model, shape))
        self.params = float(count_params(model))
        self.cost = {
            kind: CostModel.build(model, self.candidates, example, kind, total)
            for kind, total in (("flops", self.flops), ("params", self.params))
        }
        self.block_cost: dict[str, list[float]] = {}
        if ssl_type == "depth_wise":
            names = {id(p): n for n, p in model.named_parameters()}
            for kind, total in (("flops", self.flops), ("params", self.params)):
                per = CostModel.build(model, [], example, kind, total).param_costs()
                self.block_cost[kind] = [
                    sum(per.get(names[id(p)], 0.0) for p in residual_branch_parameters(b))
                    for _, b in residual_blocks(model)
                ]

    @torch.no_grad()
    def __call__(self) -> dict[str, Any]:
        nonzero: dict[int, torch.Tensor] = {}

        def count(g: Group, roles: frozenset[str]) -> torch.Tensor | None:
            """Per unit: nonzero elements in ``g``'s slices of these roles (None: no slice).
            Counted, not summed as squares: a tiny weight is not a zero one."""
            out: torch.Tensor | None = None
            for s in g.slices:
                if s.role not in roles:
                    continue
                key = id(s.axis)
                if key not in nonzero:
                    nonzero[key] = s.axis.reduce((s.axis.param != 0).double()).cpu()
                c = torch.zeros(g.units, dtype=torch.float64).index_add_(
                    0, s.unit, nonzero[key][s.pos]
                )
                out = c if out is None else out + c
            return out

        def zero(g: Group, roles: frozenset[str]) -> torch.Tensor:
            v = count(g, roles)
            return torch.zeros(g.units, dtype=torch.bool) if v is None else v == 0

        # channels that can go at no change of the function: zero output, or nobody reads them
        dead = {
            id(g): zero(g, frozenset({OUT, NORM})) | zero(g, frozenset({IN}))
            for g in self.gs.channel
        }
        removed = np.zeros(len(self.candidates))
        narrowest: dict[str, int] = {}
        width: dict[str, int] = {}
        for g in self.gs.channel:
            width[g.name] = g.units * g.tie
            narrowest[g.name] = g.units * g.tie
        for i, g in enumerate(self.candidates):
            w = g.units * g.tie
            live = g.units - int(dead[id(g)].sum())
            keep = round_keep(live * g.tie, w, self.share, self.round_to)
            keep_units = min(g.units, math.ceil(keep / g.tie))
            removed[i] = g.units - keep_units
            narrowest[g.name] = keep_units * g.tie

        out: dict[str, Any] = {"ssl_type": self.ssl_type, "min_width_share": self.share}
        if self.ssl_type == "depth_wise":
            zero_blocks = [bool(zero(g, frozenset({"block"})).all()) for g in self.gs.block]
            out["zero_units"], out["units"] = sum(zero_blocks), len(zero_blocks)
            for kind, total in (("flops", self.flops), ("params", self.params)):
                saved = sum(c for c, z in zip(self.block_cost[kind], zero_blocks) if z)
                out[f"removable_{kind}_share"] = saved / total if total else 0.0
            out["at_floor"] = []
        else:
            for kind, total in (("flops", self.flops), ("params", self.params)):
                after = self.cost[kind].total(removed)
                out[f"removable_{kind}_share"] = max(0.0, 1.0 - after / total) if total else 0.0
            if self.ssl_type == "shape_wise":
                zeros, units, at_floor = self._shapes(zero)
            else:
                zeros, units, at_floor = self._channels(zero, dead)
            out["zero_units"], out["units"], out["at_floor"] = zeros, units, at_floor
        out["exact_zero_share"] = out["zero_units"] / out["units"] if out["units"] else 0.0
        out["narrowest_width"] = narrowest
        out["width"] = width
        order = [
            "ssl_type",
            "exact_zero_share",
            "removable_flops_share",
            "removable_params_share",
            "zero_units",
            "units",
            "at_floor",
            "min_width_share",
            "narrowest_width",
            "width",
        ]
        return {k: out[k] for k in order}

    def _channels(self, zero: Any, dead: dict[int, torch.Tensor]) -> tuple[int, int, list[str]]:
        parts = CHANNEL_PARTS[self.ssl_type]
        zeros = units = 0
        at_floor = []
        for g in self.gs.channel:
            has = [p for p in parts if any(s.role in p - {NORM} for s in g.slices)]
            if not has:
                continue
            z = torch.zeros(g.units, dtype=torch.bool)
            for p in has:
                z |= zero(g, p)
            zeros += int(z.sum())
            units += g.units
            floor = g.min_units(self.share, self.round_to)
            if 0 < floor < g.units and g.units - int((dead[id(g)] | z).sum()) <= floor:
                at_floor.append(g.name)
        return zeros, units, at_floor

    def _shapes(self, zero: Any) -> tuple[int, int, list[str]]:
        zeros = units = 0
        at_floor = []
        for g in self.gs.shape:
            z = zero(g, frozenset({"shape"}))
            zeros += int(z.sum())
            units += g.units
            floor = g.min_units(self.share, self.round_to)
            if 0 < floor < g.units and g.units - int(z.sum()) <= floor:
                at_floor.append(g.name)
        return zeros, units, at_floor


def sparsity_report(
    model: nn.Module,
    ssl_type: str,
    example_inputs: torch.Tensor | tuple[int, ...] | None = None,
    *,
    min_width_share: float = MIN_WIDTH_SHARE,
    round_to: int = ROUND_TO,
) -> dict[str, Any]:
    """What an SSL model's sparsity is worth: exact zeros and what removing them saves.

    Args:
        model: the (SSL-trained) network.
        ssl_type: the penalty's grouping (which units ``exact_zero_share`` counts).
        example_inputs: a batch or an input shape (C, H, W): FLOPs are counted at that size.
        min_width_share / round_to: the layer floor and rounding the pruner would keep.

    Returns:
        A mapping: ``exact_zero_share``, ``removable_flops_share``, ``removable_params_share``
        (0..1), ``zero_units`` / ``units``, ``at_floor`` (layers down to their floor),
        ``narrowest_width`` and ``width`` per layer (channels), ``ssl_type``,
        ``min_width_share``. The module docstring defines each.

    Example:
        >>> r = sslsearch.sparsity_report(model, "filter_wise", (1, 32, 32))
        >>> r["exact_zero_share"], r["removable_flops_share"], r["at_floor"]
    """
    return SparsityMeter(model, ssl_type, example_inputs, min_width_share, round_to)()

"""OTO's HESSO rule (Chen et al., "OTOv3", 2023), written over our filter groups, for
bench_ssl_step.py: the peer that trains once to a target instead of a fixed lambda.

``only_train_once`` 3.0.1 (PyPI) installs here but fails on import under torch 2.14
(``torch.onnx._globals`` is gone) and the registry serves no torch it supports, so its rule is
implemented here, over the same groups the filter-wise penalty uses (a channel's producing
filters and biases and its BatchNorm scale and shift), and the same pruner removes what it
zeroes. What is kept of HESSO, and what is simplified:

* after ``warmup`` epochs of plain training, the redundant groups are chosen in ``periods``
  equal steps, each period adding its share of the target;
* a period ranks the live groups by a saliency (HESSO mixes several; here the group's norm
  divided by its layer's mean norm, the magnitude score it weighs most) and marks the lowest,
  layer floors respected, until the marked groups make ``target`` of the dense FLOPs removable
  (our cost model: the target is a FLOPs share, as the benchmark compares at matched FLOPs);
* a marked group is shrunk progressively to exactly zero over its period (its weights scaled
  by ``1 - 1/(steps left)`` after every optimizer step) and stays zero, its momentum cleared;
* every other group trains freely: no penalty, no bias on what stays.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from sslsearch.pruning import SparsityMeter
from sslsearch.pruning._units import round_keep


class Hesso:
    """Progressive shrinking of the groups ranked redundant, to a FLOPs target."""

    def __init__(
        self,
        model: nn.Module,
        example: torch.Tensor,
        target: float,
        *,
        steps_per_epoch: int,
        warmup: int,
        periods: int,
        period_epochs: int,
        min_width_share: float,
    ) -> None:
        self.meter = SparsityMeter(model, "filter_wise", example, min_width_share)
        self.groups = list(self.meter.candidates)  # aligned with the meter's cost model
        assert all(g.has("filter") for g in self.groups), "every prunable channel has filters"
        self.target = float(target)
        self.start = warmup * steps_per_epoch
        self.period = period_epochs * steps_per_epoch
        self.periods = periods
        self.marked = [torch.zeros(g.units, dtype=torch.bool) for g in self.groups]
        self.new: list[torch.Tensor] = [m.clone() for m in self.marked]
        self.step_no = 0

    def _norms(self) -> list[torch.Tensor]:
        return [g.squares("filter").clamp_min(0).sqrt().detach().cpu() for g in self.groups]

    def _share_removable(self, marked: list[torch.Tensor]) -> float:
        removed = []
        for g, m in zip(self.groups, marked):
            live = g.units - int(m.sum())
            keep = round_keep(live * g.tie, g.units * g.tie, self.meter.share, self.meter.round_to)
            removed.append(g.units - min(g.units, math.ceil(keep / g.tie)))
        return 1.0 - self.meter.cost["flops"].total(np.array(removed)) / self.meter.flops

    def _mark(self, goal: float) -> None:
        """Mark the lowest-saliency live groups until ``goal`` of the FLOPs is removable."""
        norms = self._norms()
        cands = []
        for i, (g, n, m) in enumerate(zip(self.groups, norms, self.marked)):
            mean = float(n[~m].mean()) if bool((~m).any()) else 1.0
            floor = g.min_units(self.meter.share, self.meter.round_to)
            room = g.units - floor - int(m.sum())
            order = [int(j) for j in torch.argsort(n) if not bool(m[j])][: max(room, 0)]
            cands += [(float(n[j]) / max(mean, 1e-12), i, j) for j in order]
        cands.sort()
        marked = [m.clone() for m in self.marked]
        for k in range(0, len(cands), 4):
            if self._share_removable(marked) >= goal:
                break
            for _, i, j in cands[k : k + 4]:
                marked[i][j] = True
        self.new = [a & ~b for a, b in zip(marked, self.marked)]
        self.marked = marked

    @torch.no_grad()
    def after_step_(self, optimizer: torch.optim.Optimizer) -> None:
        s = self.step_no - self.start
        self.step_no += 1
        if s < 0:
            return
        p, t = divmod(s, self.period)
        if p < self.periods and t == 0:
            self._mark(self.target * (p + 1) / self.periods)
        left = self.period - t  # steps left in this period, this one included
        for g, m, new in zip(self.groups, self.marked, self.new):
            if not bool(m.any()):
                continue
            f = torch.ones(g.units)
            f[m & ~new] = 0.0  # marked in an earlier period: zero already, kept there
            if p < self.periods:
                f[new] = 1.0 - 1.0 / left if left > 1 else 0.0
            else:
                f[new] = 0.0
            for sl in g.part("filter"):
                ax = sl.axis
                fa = torch.ones(ax.length)
                fa[sl.pos] = f[sl.unit]
                ax.param.mul_(ax.shaped(fa.to(ax.param.dtype)))
                buf = optimizer.state.get(ax.param, {}).get("momentum_buffer")
                if buf is not None:
                    buf.masked_fill_(ax.param == 0, 0.0)

    def summary(self) -> dict[str, Any]:
        return {"marked_units": int(sum(int(m.sum()) for m in self.marked))}

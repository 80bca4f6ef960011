"""What removing units saves: a model's FLOPs or parameters as a function of the units each
channel group removes, built once from the group model and one forward pass.

Every parameter tensor costs ``coef * f_rows * f_in``: its dense cost times the kept share of
each of its pruned axes (the output rows it produces, the input channels or columns it reads).
A conv weight's FLOPs are its element count times its output's spatial size (fvcore's count:
one multiply-add per weight per output position); a Linear's its element count times the
positions it is applied to; an affine BatchNorm's twice its input's element count (fvcore's
eval-mode count); a parameter's size is its element count. The kept share of an axis is linear
in the units removed from every group that covers it, so the cost is bilinear in the removals
and the exact saving of any one move is cheap to evaluate for every group at once
(``CostModel.after_each``). What no parameter carries (adaptive pooling, for one) is a constant
here; the pruner checks the real count after pruning and tightens its target when that differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from sslsearch.sparsity import Group


def layer_shapes(
    model: nn.Module, example: torch.Tensor
) -> dict[nn.Module, tuple[tuple[int, ...], tuple[int, ...]]]:
    """(input, output) shape without the batch of every conv, Linear and BatchNorm, from one
    eval-mode forward pass of ``example[:1]`` (batch 1, as ``count_flops`` counts)."""
    shapes: dict[nn.Module, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        shapes[mod] = (tuple(inp[0].shape[1:]), tuple(out.shape[1:]))

    kinds = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)
    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return shapes


def spatial_sizes(model: nn.Module, example: torch.Tensor) -> dict[nn.Module, float]:
    """Per conv: output positions; per Linear: positions it is applied to; per BatchNorm:
    input positions."""
    out: dict[nn.Module, float] = {}
    for mod, (inp, outp) in layer_shapes(model, example).items():
        if isinstance(mod, nn.Conv2d):
            out[mod] = float(math.prod(outp[1:]))
        elif isinstance(mod, nn.Linear):
            out[mod] = float(math.prod(inp) / max(mod.in_features, 1))
        else:
            out[mod] = float(math.prod(inp[1:]))
    return out


def _flops_coef(mod: nn.Module, pname: str, p: torch.Tensor, size: float | None) -> float:
    if size is None or pname != "weight":
        return 0.0
    if isinstance(mod, (nn.Conv2d, nn.Linear)):
        return float(p.numel()) * size
    if isinstance(mod, nn.modules.batchnorm._BatchNorm):
        return 2.0 * float(p.numel()) * size
    return 0.0


@dataclass
class CostModel:
    """Cost of a model as a function of ``removed``: units removed per candidate group.

    ``coef[t]`` is term t's dense cost; ``ax0[t]``, ``ax1[t]`` index the axes whose kept share
    scales it (``-1``: none); ``share[a, g]`` is the share of axis a that one unit of group g
    covers. ``base`` is what no group changes.
    """

    kind: str
    groups: list[Group]
    base: float
    coef: np.ndarray
    ax0: np.ndarray
    ax1: np.ndarray
    share: np.ndarray  # (axes + 1, groups); the last row, the "no axis" row, is zero
    term_names: list[str]
    axis_index: dict[int, int] = field(default_factory=dict)  # id(Axis) -> row of ``share``

    @classmethod
    def build(
        cls,
        model: nn.Module,
        groups: list[Group],
        example: torch.Tensor,
        kind: str,
        total: float,
    ) -> CostModel:
        """``total``: the model's true dense cost (``count_flops`` / ``count_params``); what
        the terms do not explain becomes the constant ``base``."""
        if kind not in ("flops", "params"):
            raise ValueError(f"unknown cost kind {kind!r}")
        owners = {
            id(p): (m, pn) for m in model.modules() for pn, p in m.named_parameters(recurse=False)
        }
        sizes = spatial_sizes(model, example) if kind == "flops" else {}
        axis_index: dict[int, int] = {}
        axes_of_param: dict[int, list[int]] = {}
        cover: dict[tuple[int, int], float] = {}
        for gi, g in enumerate(groups):
            for s in g.slices:
                ax = s.axis
                a = axis_index.setdefault(id(ax), len(axis_index))
                lst = axes_of_param.setdefault(id(ax.param), [])
                if a not in lst:
                    lst.append(a)
                key = (a, gi)
                cover[key] = cover.get(key, 0.0) + len(s.pos) / g.units / max(ax.length, 1)
        n_axes = len(axis_index)
        share = np.zeros((n_axes + 1, len(groups)))
        for (a, gi), v in cover.items():
            share[a, gi] = v
        coef, ax0, ax1, names = [], [], [], []
        for name, p in model.named_parameters():
            mod, pn = owners[id(p)]
            c = float(p.numel()) if kind == "params" else _flops_coef(mod, pn, p, sizes.get(mod))
            if c == 0.0:
                continue
            axes = axes_of_param.get(id(p), [])
            if len(axes) > 2:
                raise ValueError(f"{name}: more than two pruned axes")
            axes = [*axes, -1, -1]
            coef.append(c)
            ax0.append(axes[0])
            ax1.append(axes[1])
            names.append(name)
        coef_a = np.asarray(coef, dtype=np.float64)
        return cls(
            kind,
            groups,
            float(total) - float(coef_a.sum()),
            coef_a,
            np.asarray(ax0, dtype=np.int64),
            np.asarray(ax1, dtype=np.int64),
            share,
            names,
            axis_index,
        )

    def _kept(self, removed: np.ndarray) -> np.ndarray:
        f = 1.0 - self.share @ removed
        f[-1] = 1.0
        return f

    def total(self, removed: np.ndarray) -> float:
        f = self._kept(np.asarray(removed, dtype=np.float64))
        return self.base + float(self.coef @ (f[self.ax0] * f[self.ax1]))

    def after_each(self, removed: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Cost after group g alone removes ``k[g]`` more units (negative: restores), per g."""
        f = self._kept(np.asarray(removed, dtype=np.float64))
        k = np.asarray(k, dtype=np.float64)
        f0 = f[self.ax0][:, None] - self.share[self.ax0] * k[None, :]
        f1 = f[self.ax1][:, None] - self.share[self.ax1] * k[None, :]
        return self.base + self.coef @ (f0 * f1)

    def param_costs(self) -> dict[str, float]:
        """Dense cost per parameter tensor (for block costs: the sum over a block's branch)."""
        return dict(zip(self.term_names, self.coef.tolist()))

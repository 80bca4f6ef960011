"""The one group model: every prunable structure and all the parameter slices coupled to it.

Channel groups come from torch-pruning's dependency graph (DepGraph, Fang et al. 2023): for the
output channels of each conv, everything that must change with them: the producing convs'
filters and biases (several when residual additions couple them), the BatchNorm scale/shift,
depthwise convs that carry the channel through, and every consumer's input slice (conv input
channels, grouped-conv slices, Linear columns after flattening). The SSL penalty, the criteria,
the group-sparsity statistics and the pruner all read these same objects, so what the penalty
drives to zero is exactly what the pruner scores and removes.

Each slice is reduced along one *axis* (a parameter seen one way); the penalty touches each
axis once per step, whatever the number of groups that share it (fusing per layer).
"""

from __future__ import annotations

import logging
import math
import warnings
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sslsearch.errors import NotPrunableError
from sslsearch.models._blocks import residual_blocks, residual_branch_parameters
from sslsearch.vocabulary import MIN_WIDTH_SHARE, ROUND_TO, min_width

log = logging.getLogger(__name__)

# Slice roles. A channel is dead when its output is zero (``out`` + ``norm`` slices zero) or
# when nobody reads it (``in`` slices zero); ``norm`` (BatchNorm scale/shift) is the anchor that
# no rescaling of a conv behind a normalisation can lower.
OUT, NORM, IN = "out", "norm", "in"
# Which roles each part of a channel group holds.
PARTS: dict[str, frozenset[str]] = {
    "filter": frozenset({OUT, NORM}),
    "channel": frozenset({IN, NORM}),
    "group": frozenset({OUT, NORM, IN}),
}

# Axis kinds: how a parameter is reduced to one value per position.
ROWS = "rows"  # dim 0 (output filters, biases, BN vectors)
CONV_IN = "conv_in"  # input channels of a (grouped) conv: W.view(g, out/g, in/g, ...)
COLS = "cols"  # columns of a Linear
SHAPES = "shapes"  # W[:, c, h, w] of a conv (flattened dims 1..)
WHOLE = "whole"  # the whole tensor as one position


@dataclass(eq=False)
class Axis:
    """One parameter seen along one axis; ``length`` positions."""

    param: torch.Tensor  # an nn.Parameter
    name: str  # qualified parameter name
    kind: str
    groups: int = 1  # conv groups (CONV_IN)

    @property
    def length(self) -> int:
        w = self.param
        if self.kind == ROWS:
            return int(w.shape[0])
        if self.kind == CONV_IN:
            return int(w.shape[1]) * self.groups
        if self.kind == COLS:
            return int(w.shape[1])
        if self.kind == SHAPES:
            return int(w[0].numel())
        return 1

    def reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of ``t`` (shaped like the parameter) per position (keeps autograd)."""
        if self.kind == ROWS:
            return t.reshape(t.shape[0], -1).sum(1)
        if self.kind == CONV_IN:
            o, ipg = t.shape[0], t.shape[1]
            g = self.groups
            return t.reshape(g, o // g, ipg, -1).sum((1, 3)).reshape(-1)
        if self.kind == COLS:
            return t.sum(0)
        if self.kind == SHAPES:
            return t.reshape(t.shape[0], -1).sum(0)
        return t.sum().reshape(1)

    def squares(self, w: torch.Tensor | None = None) -> torch.Tensor:
        """Sum of squares per position (differentiable when ``w`` requires grad)."""
        w = self.param if w is None else w
        return self.reduce(w * w)

    def moments(self) -> torch.Tensor:
        """(length, 4) float64: sum, sum |w|, sum w^2, element count per position."""
        w = self.param.detach()
        if not w.is_floating_point():
            w = w.float()
        m = torch.stack([self.reduce(w), self.reduce(w.abs()), self.fast_squares()], 1).double()
        n = torch.full((m.shape[0], 1), w.numel() / max(self.length, 1), dtype=torch.float64)
        return torch.cat([m.cpu(), n], 1)

    def fast_squares(self) -> torch.Tensor:
        """The same without autograd, through BLAS matrix-vector products where that is faster."""
        w = self.param.detach()
        if self.kind in (COLS, SHAPES) or (self.kind == CONV_IN and self.groups == 1):
            w2 = w.reshape(w.shape[0], -1)
            ones = torch.ones(w2.shape[0], dtype=w2.dtype, device=w2.device)
            col = ones @ (w2 * w2)
            if self.kind == CONV_IN:
                return col.view(w.shape[1], -1).sum(1)
            return col
        if self.kind == ROWS:
            return torch.linalg.vector_norm(w.reshape(w.shape[0], -1), dim=1).square()
        return self.squares(w)

    def shaped(self, v: torch.Tensor) -> torch.Tensor:
        """A per-position vector ``v`` shaped to broadcast over the parameter."""
        w = self.param
        if self.kind == ROWS:
            return v.view(-1, *([1] * (w.dim() - 1)))
        if self.kind == CONV_IN:
            g = self.groups
            o, ipg = w.shape[0], w.shape[1]
            # (g, ipg) -> repeat over the out/g filters of each conv group
            return v.view(g, 1, ipg).expand(g, o // g, ipg).reshape(o, ipg, *([1] * (w.dim() - 2)))
        if self.kind == COLS:
            return v.view(1, -1)
        if self.kind == SHAPES:
            return v.view(1, *w.shape[1:])
        return v.view([1] * w.dim())


@dataclass(eq=False)
class Slice:
    """Positions ``pos`` of ``axis`` belong to units ``unit`` of their group."""

    axis: Axis
    role: str
    pos: torch.Tensor  # long
    unit: torch.Tensor  # long, same length
    layer: str  # module name


@dataclass(eq=False)
class Group:
    """One prunable structure: ``units`` removable units, each a set of coupled slices.

    ``kind``: "channel" (a DepGraph group: a unit is a root output channel, or ``tie`` channels
    that a grouped conv forces to go together), "shape" (one conv's W[:, c, h, w]) or "block"
    (a residual block's branch).
    """

    kind: str
    name: str  # root layer (channel), conv (shape) or block name
    units: int
    slices: list[Slice]
    tie: int = 1
    prunable: bool = True
    why_not: str = ""
    # root output channel ids of each unit (channel groups): unit u -> channels[u]
    channels: torch.Tensor | None = None
    out_layers: dict[str, torch.Tensor] = field(default_factory=dict)

    def part(self, name: str) -> list[Slice]:
        if self.kind != "channel":
            return self.slices
        roles = PARTS[name]
        return [s for s in self.slices if s.role in roles]

    def min_units(self, share: float = MIN_WIDTH_SHARE, round_to: int = ROUND_TO) -> int:
        """The fewest units the layer floor keeps (``sslsearch.registry.min_width``, in units of
        ``tie`` channels): what the pruner and the SSL proximal step never go below."""
        width = self.units * self.tie
        return min(self.units, math.ceil(min_width(width, share, round_to) / self.tie))

    def has(self, part: str) -> bool:
        """A channel group has a filter part when it has producers, a channel part with readers."""
        if self.kind != "channel":
            return True
        need = OUT if part == "filter" else IN
        return any(s.role == need for s in self.slices)

    def squares(self, part: str = "group", differentiable: bool = False) -> torch.Tensor:
        """Per-unit sum of squares over the part's slices."""
        out: torch.Tensor | None = None
        for s in self.part(part):
            sq = s.axis.squares() if differentiable else s.axis.fast_squares()
            contrib = torch.zeros(self.units, dtype=sq.dtype, device=sq.device).index_add(
                0, s.unit.to(sq.device), sq[s.pos.to(sq.device)]
            )
            out = contrib if out is None else out + contrib
        if out is None:
            return torch.zeros(self.units)
        return out

    def moments(self, part: str = "group") -> torch.Tensor:
        """(units, 4) float64 moments over the part's slices: sum, sum|w|, sum w^2, count.

        Moments add up over slices, so a unit spread over several layers is scored without
        gathering its weights into one matrix.
        """
        out = torch.zeros(self.units, 4, dtype=torch.float64)
        for s in self.part(part):
            out.index_add_(0, s.unit.cpu(), s.axis.moments()[s.pos.cpu()])
        return out


@dataclass(eq=False)
class GroupSet:
    """Every group of a model, built once: channel groups, shape groups, block groups."""

    channel: list[Group]
    shape: list[Group]
    block: list[Group]

    def axes(self) -> list[Axis]:
        seen: dict[int, Axis] = {}
        for g in [*self.channel, *self.shape, *self.block]:
            for s in g.slices:
                seen.setdefault(id(s.axis), s.axis)
        return list(seen.values())


# ---------------------------------------------------------------------------------------------
# building


def default_example(model: nn.Module) -> torch.Tensor:
    """A tiny input the model accepts: its first conv's channels, the smallest size that runs."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise NotPrunableError(f"{type(model).__name__} has no conv layer")
    param = next(model.parameters())
    was = model.training
    model.eval()
    try:
        for size in (32, 64, 112, 224, 299):
            x = torch.zeros(1, first.in_channels, size, size, device=param.device)
            try:
                with torch.no_grad():
                    model(x)
                return x
            except (RuntimeError, ValueError, AssertionError):
                continue
    finally:
        model.train(was)
    raise NotPrunableError(f"no input size up to 299 runs through {type(model).__name__}")


def final_layer(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """The last conv/linear executed: its outputs are the classes and never change."""
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda mod, i, o: order.append(mod))
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    if not order:
        raise NotPrunableError(f"{type(model).__name__} has no conv or linear layer")
    return order[-1]


def dependency_graph(model: nn.Module, example: torch.Tensor) -> Any:
    import torch_pruning as tp

    was = model.training
    model.eval()
    with warnings.catch_warnings(), torch.enable_grad():  # DepGraph traces through autograd
        warnings.simplefilter("ignore")
        try:
            return tp.DependencyGraph().build_dependency(model, example, verbose=False)
        except Exception as e:  # tracing can fail in many ways on exotic models
            raise NotPrunableError(f"cannot trace {type(model).__name__}: {e}") from e
        finally:
            model.train(was)


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


class _Axes:
    """One Axis object per (parameter, kind), shared by every group that reads it."""

    def __init__(self, pnames: dict[int, str]) -> None:
        self.pnames = pnames
        self.cache: dict[tuple[int, str], Axis] = {}

    def get(self, p: torch.Tensor, kind: str, groups: int = 1) -> Axis:
        key = (id(p), kind)
        if key not in self.cache:
            self.cache[key] = Axis(p, self.pnames.get(id(p), "?"), kind, groups)
        return self.cache[key]


# One coupled slice of a DepGraph group before it becomes a Slice: its axis, its role, its
# positions, the root channels they follow, and the layer it sits in.
_Raw = tuple[Axis, str, list[int], list[int], str]


def _channel_groups(
    model: nn.Module, example: torch.Tensor, axes: _Axes
) -> tuple[Any, list[Group], dict[str, Any]]:
    """One channel group per DepGraph group rooted at a conv (the final layer's outputs, the
    classes, never go); each channel group's (root module, handler) for the pruner."""
    names = {m: n for n, m in model.named_modules()}
    final = final_layer(model, example)
    dg = dependency_graph(model, example)
    groups: list[Group] = []
    roots: dict[str, Any] = {}
    produced: set[int] = set()  # conv weights already in a group as filters
    for tg in dg.get_all_groups(ignored_layers=[final], root_module_types=[nn.Conv2d]):
        root = tg[0].dep.target.module
        if id(root.weight) in produced:
            continue  # e.g. a depthwise conv already carried by the group of its input
        root_name = names.get(root, "?")
        width = int(root.out_channels)
        raw, outs, tie = _coupled_slices(tg, dg, names, axes)
        tie, why_not = _tie(raw, width, tie)
        produced.update(id(ax.param) for ax, role, *_ in raw if role == OUT)
        groups.append(_channel_group(root_name, width, tie, why_not, raw, outs))
        roots[root_name] = (root, tg[0].dep.handler)
    return dg, groups, roots


def _coupled_slices(
    tg: Any, dg: Any, names: dict[nn.Module, str], axes: _Axes
) -> tuple[list[_Raw], dict[str, torch.Tensor], int]:
    """Every parameter slice of one DepGraph group, once per (parameter, axis kind); the output
    channel order of each out layer; the conv groups that tie its channels (1: none)."""
    raw: list[_Raw] = []
    outs: dict[str, torch.Tensor] = {}
    tie = 1
    seen: set[tuple[int, str]] = set()
    for item in tg:
        dep, idxs, root_idxs = item.dep, list(item.idxs), list(item.root_idxs)
        mod = dep.target.module
        if not isinstance(mod, nn.Module) or mod not in names:
            continue
        lname = names[mod]
        is_out = dg.is_out_channel_pruning_fn(dep.handler)
        is_in = dg.is_in_channel_pruning_fn(dep.handler)
        entries, ties = _entries(mod, is_out, is_in)
        tie = max(tie, ties)
        if is_out and isinstance(mod, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
            outs[lname] = torch.as_tensor(idxs)[torch.argsort(torch.as_tensor(root_idxs))]
        for p, kind, role, g in entries:
            key = (id(p), kind)
            if key in seen:
                continue
            seen.add(key)
            raw.append((axes.get(p, kind, g), role, idxs, root_idxs, lname))
    return raw, outs, tie


def _entries(
    mod: nn.Module, is_out: bool, is_in: bool
) -> tuple[list[tuple[torch.Tensor, str, str, int]], int]:
    """The (param, axis kind, role, conv groups) a module holds in a channel group, and the conv
    groups that tie the group's channels together (1: none)."""
    entries: list[tuple[torch.Tensor, str, str, int]] = []  # param, kind, role, groups
    tie = 1
    if isinstance(mod, nn.Conv2d) and (is_out or _is_depthwise(mod)):
        # a depthwise conv's input channel is its output channel: a filter, not a reader
        entries.append((mod.weight, ROWS, OUT, 1))
        if mod.bias is not None:
            entries.append((mod.bias, ROWS, OUT, 1))
        if mod.groups > 1 and not _is_depthwise(mod):
            tie = mod.groups
    elif isinstance(mod, nn.Conv2d) and is_in:
        entries.append((mod.weight, CONV_IN, IN, mod.groups))
        if mod.groups > 1:
            tie = mod.groups
    elif isinstance(mod, nn.Linear) and is_in:
        entries.append((mod.weight, COLS, IN, 1))
    elif isinstance(mod, nn.Linear) and is_out:
        entries.append((mod.weight, ROWS, OUT, 1))
        if mod.bias is not None:
            entries.append((mod.bias, ROWS, OUT, 1))
    elif is_out:
        # normalisation layers (BatchNorm, GroupNorm, ...): their per-channel vectors
        for vec in mod.parameters(recurse=False):
            if vec.dim() == 1:
                entries.append((vec, ROWS, NORM, 1))
    return entries, tie


def _tie(raw: list[_Raw], width: int, tie: int) -> tuple[int, str]:
    """The tie a grouped conv imposes, and why the group cannot be pruned ("": it can)."""
    why_not = ""
    if tie > 1:
        # A grouped conv keeps its group count only if channel j goes from every conv group
        # at once: units are {j, j + width/tie, ...} (torch-pruning's channel groups).
        if width % tie:
            tie, why_not = 1, f"width {width} not divisible by conv groups"
        for ax, _, idxs, root_idxs, _ in raw:
            if ax.kind in (CONV_IN, ROWS) and idxs != root_idxs and ax.groups > 1:
                why_not = "a grouped conv is reached through a re-indexing"
    return tie, why_not


def _channel_group(
    root_name: str,
    width: int,
    tie: int,
    why_not: str,
    raw: list[_Raw],
    outs: dict[str, torch.Tensor],
) -> Group:
    """The channel group of ``width`` root channels, ``width // tie`` units of ``tie`` each."""
    per_unit = width // tie
    slices = []
    for ax, role, idxs, root_idxs, lname in raw:
        r = torch.as_tensor(root_idxs, dtype=torch.long)
        slices.append(Slice(ax, role, torch.as_tensor(idxs, dtype=torch.long), r % per_unit, lname))
    channels = torch.arange(width).view(tie, per_unit).t().contiguous()  # (units, tie)
    return Group(
        "channel",
        root_name,
        per_unit,
        slices,
        tie=tie,
        prunable=not why_not,
        why_not=why_not,
        channels=channels,
        out_layers=outs,
    )


def _shape_groups(model: nn.Module, axes: _Axes) -> list[Group]:
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            ax = axes.get(m.weight, SHAPES)
            n = ax.length
            ar = torch.arange(n)
            out.append(Group("shape", name, n, [Slice(ax, "shape", ar, ar, name)]))
    return out


def _block_groups(model: nn.Module, axes: _Axes) -> list[Group]:
    out = []
    zero = torch.zeros(1, dtype=torch.long)
    for name, b in residual_blocks(model):
        slices = [
            Slice(axes.get(p, WHOLE), "block", zero, zero, name)
            for p in residual_branch_parameters(b)
        ]
        out.append(Group("block", name, 1, slices))
    return out


def build_groups(
    model: nn.Module, example: torch.Tensor | None = None
) -> tuple[GroupSet, Any, dict[str, Any]]:
    """The model's groups, its dependency graph and each channel group's (root, handler)."""
    ex = default_example(model) if example is None else example
    pnames = {id(p): n for n, p in model.named_parameters()}
    axes = _Axes(pnames)
    dg, channel, roots = _channel_groups(model, ex, axes)
    return GroupSet(channel, _shape_groups(model, axes), _block_groups(model, axes)), dg, roots


_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[Any, ...], GroupSet]] = (
    weakref.WeakKeyDictionary()
)


def _signature(model: nn.Module) -> tuple[Any, ...]:
    return tuple((id(p), tuple(p.shape)) for p in model.parameters())


def model_groups(model: nn.Module, example: torch.Tensor | None = None) -> GroupSet:
    """The model's groups, built once per model (and again only if its parameters change)."""
    sig = _signature(model)
    hit = _CACHE.get(model)
    if hit is not None and hit[0] == sig:
        return hit[1]
    gs, _, _ = build_groups(model, example)
    _CACHE[model] = (sig, gs)
    return gs


def iter_slices(groups: Iterable[Group], part: str) -> Iterator[tuple[Group, Slice]]:
    for g in groups:
        for s in g.part(part):
            yield g, s

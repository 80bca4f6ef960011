"""Group-Lasso penalties over the model's dependency groups: lambda * sum of group L2 norms.

Not the squared norm: that is plain weight decay, whose gradient vanishes near zero, so it never
drives whole groups to exactly zero. The L2 norm's (sub)gradient keeps a constant pull
``lambda * w / ||w||`` until the group collapses, which is what makes structures prunable.

Every group is one of ``sslsearch.sparsity.GroupSet``'s (see ``_groups``); each SSL type says
which groups and which of their slices it sums over (``SSL_TYPE_GROUPS``).

Behind a BatchNorm a conv's weights are scale-invariant: shrinking a whole layer changes nothing
but a penalty on its weights. So every channel-group penalty includes the coupled BatchNorm's
scale/shift (which fix the channel's output and are not rescaled with the conv), and shape
groups, which have no such anchor, are measured relative to their layer (scale-invariant).

Each group's norm counts ``weight`` times (``ssl_weighting``, computed by
``sslsearch.pruning.build_penalty``: with all weights 1 this is Wen et al.'s plain sum). The
proximal step keeps every layer at or above its floor by a stated rule (``SSLPenalty.prox_``) and
``flush_()`` ends an epoch with every group's owed step applied, so zeros are exact when the
pruner and the sparsity figures look.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from sslsearch.errors import NotPrunableError, UserError
from sslsearch.sparsity._floor import floor_step, spared_from_gradient
from sslsearch.sparsity._groups import Axis, Group, GroupSet, model_groups
from sslsearch.sparsity._terms import (
    TERMS,
    Term,
    parse_lambda,
    rms,
    safe_norm,
)
from sslsearch.vocabulary import (
    DEFAULT_SSL_FLOOR,
    DEFAULT_SSL_STEP,
    MIN_WIDTH_SHARE,
    ROUND_TO,
    SSL_FLOOR_RULES,
    SSL_STEP_RULES,
    min_width,
)

# One group with every active term that sums over it (two for filter_and_channel_wise), each with
# the group's weight: the proximal step treats a group's terms together, so that the floor holds
# for the channels both terms leave alive.
_Item = tuple[Group, list[tuple[Term, float]]]


@dataclass(eq=False)
class SSLPenalty:
    """A penalty bound to a model's groups, built once and applied every step.

    Three ways to apply it: ``penalty()`` (a differentiable value for the loss), ``add_grad_()``
    (its gradient written into ``.grad``) and ``prox_(lr)`` (the proximal step after
    ``optimizer.step()``: exact zeros, no autograd). The first two give the same gradient; the
    proximal step minimises the same objective but takes a different path, and under momentum
    its step size is a choice (``step_rule``). The trial's training loop calls
    ``before_step_()`` and ``after_step_(lr, optimizer)`` around the optimizer's step, which do
    what ``step_rule`` says (``sslsearch.vocabulary.SSL_STEP_RULES``), and ``flush_()`` at the end
    of each epoch. How a layer keeps its floor is ``floor_rule`` (``SSL_FLOOR_RULES``).

    Each group's term is ``lambda * weight * ||w_g||``; the weights are the ``ssl_weighting``
    (``sslsearch.pruning.build_penalty`` computes them; built here they are all 1: Wen et al.).

    Example:
        >>> pen = SSLPenalty.build(model, "filter_wise", 0.03)
        >>> loss.backward(); optimizer.step(); pen.prox_(lr)
    """

    ssl_type: str
    lam: dict[str, float]
    groups: GroupSet
    terms: list[Term]
    elements_per_step: int = 4_000_000
    min_width_share: float = MIN_WIDTH_SHARE
    weighting: str = "none"
    floor_rule: str = DEFAULT_SSL_FLOOR
    step_rule: str = DEFAULT_SSL_STEP
    _chunks: list[list[_Item]] = field(default_factory=list, repr=False)
    _lr_due: list[float] = field(default_factory=list, repr=False)
    _last: list[float] = field(default_factory=list, repr=False)
    _calls: int = 0

    @classmethod
    def build(
        cls,
        model: nn.Module,
        ssl_type: str,
        lam: float | Mapping[str, float],
        example_inputs: torch.Tensor | None = None,
        elements_per_step: int = 4_000_000,
        min_width_share: float = MIN_WIDTH_SHARE,
    ) -> SSLPenalty:
        """Bind ``ssl_type``'s groups of ``model`` (built once, from its dependency graph).

        Args:
            model: the network (any registered or torchvision CNN).
            ssl_type: one of ``SSL_TYPES``.
            lam: one strength, or per lambda key ({"n": .., "c": ..} for filter_and_channel_wise).
            example_inputs: a batch to trace the model with (default: the smallest that runs).
            elements_per_step: ``prox_`` visits about this many parameters per call, so that a
                big model's groups are visited in turn (each with the learning rates it missed).
            min_width_share: the layer floor (``sslsearch.registry.min_width``, the pruner's):
                the proximal step never leaves a layer fewer nonzero units than that.
        """
        lams = parse_lambda(ssl_type, lam)
        min_width(ROUND_TO + 1, min_width_share)  # validates the share
        if ssl_type == "depth_wise" and not any(True for _ in _blocks(model)):
            raise NotPrunableError(
                f"depth_wise needs residual blocks; {type(model).__name__} has none"
            )
        gs = model_groups(model, example_inputs)
        terms = []
        for key in lams:
            source, part = TERMS[key]
            groups = [g for g in getattr(gs, source) if g.has(part)]
            terms.append(Term(key, part, groups))
        return cls(ssl_type, lams, gs, terms, elements_per_step, float(min_width_share))

    def set_rules(self, floor_rule: str | None = None, step_rule: str | None = None) -> None:
        """Choose the floor rule and the step rule (``SSL_FLOOR_RULES``, ``SSL_STEP_RULES``)."""
        if floor_rule is not None:
            if floor_rule not in SSL_FLOOR_RULES:
                raise UserError(
                    f"unknown floor rule {floor_rule!r}; known: {sorted(SSL_FLOOR_RULES)}"
                )
            self.floor_rule = floor_rule
        if step_rule is not None:
            if step_rule not in SSL_STEP_RULES:
                raise UserError(f"unknown step rule {step_rule!r}; known: {sorted(SSL_STEP_RULES)}")
            self.step_rule = step_rule

    # ---- weights --------------------------------------------------------------------------

    def set_weights(self, weighting: str, weights: Mapping[str, Sequence[float]]) -> None:
        """Each term's per-group weights (by lambda key, in the order of ``term.groups``)."""
        for t in self.terms:
            w = [float(x) for x in weights[t.key]]
            if len(w) != len(t.groups):
                raise ValueError(f"lambda {t.key}: {len(w)} weights for {len(t.groups)} groups")
            if any(not (x >= 0.0 and math.isfinite(x)) for x in w):
                raise ValueError(f"lambda {t.key}: weights must be finite and >= 0")
            t.weights = w
        self.weighting = weighting
        self._chunks = []  # re-planned with the new weights

    def weights(self) -> dict[str, list[float]]:
        """Each term's per-group weights, by lambda key (what ``set_weights`` takes back)."""
        return {t.key: list(t.weights) for t in self.terms}

    # ---- values -------------------------------------------------------------------------

    def _active(self) -> list[Term]:
        return [t for t in self.terms if self.lam[t.key] > 0]

    def norms(self, fast: bool = True) -> list[tuple[str, torch.Tensor]]:
        """(lambda key, per-unit norms) per group (shape groups: relative to their layer's RMS)."""
        out = []
        with torch.no_grad():
            sq = {id(a): a.fast_squares() for a in self._axes(self.terms)}
            for t in self.terms:
                for g in t.groups:
                    n = t.values(sq, g).clamp_min(0).sqrt()
                    out.append((t.key, n / rms(n) if t.relative else n))
        return out

    def __call__(self) -> torch.Tensor:
        """The penalty value, differentiable (autograd through every group norm)."""
        total: torch.Tensor | None = None
        for t in self._active():
            sq = {id(a): a.squares() for a in self._axes([t])}
            for g, w in zip(t.groups, t.weights):
                n = safe_norm(t.values(sq, g))
                v = self.lam[t.key] * w * (n.sum() / rms(n) if t.relative else n.sum())
                total = v if total is None else total + v
        if total is None:
            return torch.zeros((), device=self._device())
        return total

    # ---- direct gradient ------------------------------------------------------------------

    @torch.no_grad()
    def add_grad_(self, spare_floor: bool = False) -> torch.Tensor:
        """Add the penalty's gradient to every ``.grad`` directly; return its value.

        Equal to ``self().backward()``, without building or walking an autograd graph. With
        ``spare_floor`` (step rule ``loss``), the units the floor rule spares get no gradient:
        under ``exempt`` every layer's ``floor`` strongest units, under ``hold`` those of a layer
        whose live units are down to its floor.
        """
        items = self._items()
        axes = self._axes_of([(t, g) for g, tws in items for t, _ in tws])
        sq = {id(a): a.fast_squares() for a in axes}
        scale = {id(a): torch.zeros_like(sq[id(a)]) for a in axes}
        total = torch.zeros((), dtype=torch.float64, device=self._device())
        for g, tws in items:
            norms = [t.values(sq, g).clamp_min(0).sqrt() for t, _ in tws]
            spared = None
            if spare_floor:
                lams = [self.lam[t.key] * w for t, w in tws]
                spared = spared_from_gradient(g, norms, lams, self.floor_rule, self.min_width_share)
            for (t, w), n in zip(tws, norms):
                lam = self.lam[t.key] * w
                inv = torch.where(n > 0, 1.0 / n.clamp_min(1e-30), torch.zeros_like(n))
                if t.relative:
                    r, a = rms(n), n.sum()
                    total += lam * (a / r).double()
                    per_unit = lam * (inv / r - a / (r**3 * g.units)) * (n > 0)
                else:
                    total += lam * n.sum().double()
                    per_unit = lam * inv
                if spared is not None:
                    per_unit = per_unit.masked_fill(spared, 0.0)
                for s in g.part(t.part):
                    scale[id(s.axis)].index_add_(
                        0, s.pos.to(n.device), per_unit[s.unit.to(n.device)]
                    )
        for ax in axes:
            p = ax.param
            v = ax.shaped(scale[id(ax)].to(p.dtype))
            if p.grad is None:
                p.grad = p.detach() * v
            else:
                p.grad.addcmul_(p.detach(), v)
        return total.float()

    # ---- the training loop's two calls --------------------------------------------------------

    def before_step_(self) -> None:
        """After ``backward()``, before ``optimizer.step()``: step rule ``loss`` adds the
        penalty's gradient (the units the floor rule spares excepted)."""
        if self.step_rule == "loss":
            self.add_grad_(spare_floor=True)

    @torch.no_grad()
    def after_step_(
        self, lr: float, optimizer: torch.optim.Optimizer | None = None
    ) -> torch.Tensor:
        """After ``optimizer.step()`` at learning rate ``lr``: the step ``step_rule`` says;
        returns the penalty value. ``momentum`` and ``reset`` take the proximal step of
        ``lr / (1 - momentum)``, ``lr`` of ``lr``; ``loss`` only sets to zero the units whose norm
        is within that step of zero. ``reset`` and ``loss`` then clear the momentum of every
        weight that is exactly zero, so that the next step does not push it out again."""
        m = 0.0
        if optimizer is not None:
            m = float(optimizer.param_groups[0].get("momentum", 0.0) or 0.0)
        step = lr if self.step_rule == "lr" else lr / (1.0 - m)
        value = self.prox_(step)
        if self.step_rule in ("reset", "loss") and optimizer is not None and m > 0:
            self._clear_momentum(optimizer)
        return value

    def _clear_momentum(self, optimizer: torch.optim.Optimizer) -> None:
        for ax in self._axes(self._active()):
            buf = optimizer.state.get(ax.param, {}).get("momentum_buffer")
            if buf is not None:
                buf.masked_fill_(ax.param == 0, 0.0)

    # ---- proximal step --------------------------------------------------------------------

    def _items(self) -> list[_Item]:
        """Every group with its active terms (one group may carry a filter and a channel term)."""
        by_group: dict[int, _Item] = {}
        for t in self._active():
            for g, w in zip(t.groups, t.weights):
                by_group.setdefault(id(g), (g, []))[1].append((t, w))
        return list(by_group.values())

    def _plan(self) -> None:
        """Split the active groups into chunks of about ``elements_per_step`` parameters."""
        items = self._items()
        sizes = [
            sum(
                s.axis.param.numel() * len(s.pos) // max(s.axis.length, 1)
                for t, _ in tws
                for s in g.part(t.part)
            )
            for g, tws in items
        ]
        total = sum(sizes)
        k = max(1, min(len(items), math.ceil(total / max(self.elements_per_step, 1))))
        chunks: list[list[_Item]] = [[] for _ in range(k)]
        load = [0] * k
        for i in sorted(range(len(items)), key=lambda i: -sizes[i]):
            j = min(range(k), key=load.__getitem__)
            chunks[j].append(items[i])
            load[j] += sizes[i]
        self._chunks = [c for c in chunks if c]
        self._lr_due = [0.0] * len(self._chunks)
        self._last = [0.0] * len(self._chunks)

    @property
    def calls_per_cycle(self) -> int:
        """How many ``prox_`` calls visit every group once (1 on small models)."""
        if not self._chunks:
            self._plan()
        return max(1, len(self._chunks))

    @torch.no_grad()
    def prox_(self, lr: float) -> torch.Tensor:
        """The group-Lasso proximal step for learning rate ``lr``; returns the penalty value.

        Each unit ``w`` becomes ``w * max(0, 1 - lr * lam * weight / ||w||)``: the exact
        minimiser of ``lam * weight * ||w|| + ||w - w0||^2 / (2 lr)``, so a group that the task
        loss does not hold up becomes exactly zero (step rule ``loss``, whose gradient did the
        shrinking: only that zeroing). Call it after ``optimizer.step()``. On big
        models each call visits one chunk of the groups (``elements_per_step``) with the sum of
        the learning rates since its last visit, so the cost per step stays bounded;
        ``flush_()`` gives every chunk what it is owed. Overlapping groups (filter and channel
        parts of one weight) are shrunk by the product of their factors. Shape groups
        (scale-invariant) are shrunk and their layer rescaled to its norm before the step.

        The floor: a layer (channel or shape group) never keeps fewer nonzero units than its
        floor (``Group.min_units(min_width_share)``, the pruner's); how it is kept is
        ``floor_rule`` (``_floor``). A layer held there is at its floor, which
        ``sslsearch.sparsity_report`` lists (``at_floor``).
        """
        if not self._chunks:
            self._plan()
        if not self._chunks:
            return torch.zeros(())
        for i in range(len(self._lr_due)):
            self._lr_due[i] += float(lr)
        i = self._calls % len(self._chunks)
        self._calls += 1
        step, self._lr_due[i] = self._lr_due[i], 0.0
        self._last[i] = self._step(self._chunks[i], step)
        return torch.tensor(sum(self._last))

    @torch.no_grad()
    def flush_(self) -> torch.Tensor:
        """Give every chunk the steps it is owed, then start the next cycle at the first chunk.

        After it, every group below its threshold is exactly zero (what the pruner and the
        sparsity figures see); the trial calls it at the end of every SSL epoch, so an epoch's
        model (and a checkpoint) never depends on where the chunk cycle stood.
        """
        if not self._chunks:
            self._plan()
        for i, due in enumerate(self._lr_due):
            if due > 0:
                self._last[i] = self._step(self._chunks[i], due)
                self._lr_due[i] = 0.0
        self._calls = 0
        return torch.tensor(sum(self._last))

    def _step(self, items: list[_Item], step: float) -> float:
        shrink = self.step_rule != "loss"  # loss: the gradient shrank it, the step only zeroes
        axes = self._axes_of([(t, g) for g, tws in items for t, _ in tws])
        sq = {id(a): a.fast_squares() for a in axes}
        factor = {id(a): torch.ones_like(sq[id(a)]) for a in axes}
        vals = []
        for g, tws in items:
            norms, thrs = [], []
            for t, w in tws:
                lam = self.lam[t.key] * w
                n = t.values(sq, g).clamp_min(0).sqrt()
                thr = torch.as_tensor(step * lam, dtype=n.dtype, device=n.device)
                if t.relative:
                    r = rms(n)
                    vals.append(lam * n.sum() / r)
                    thr = thr / r
                else:
                    vals.append(lam * n.sum())
                norms.append(n)
                thrs.append(thr)
            scale, spared = floor_step(g, norms, thrs, self.floor_rule, self.min_width_share)
            for (t, _), n, thr in zip(tws, norms, thrs):
                if shrink:
                    f = (1.0 - scale * thr / n.clamp_min(1e-30)).clamp_min(0.0)
                else:  # step rule "loss": the gradient shrank it; only the exact zero is ours
                    f = (n > scale * thr).to(n.dtype)
                if spared is not None:
                    f = torch.where(spared, torch.ones_like(f), f)
                if t.relative and shrink:
                    # A scale-invariant penalty has no radial gradient: keep the layer on its
                    # sphere (in the same pass), or the shrinking layer would raise its own
                    # threshold until it collapses.
                    kept = (f * n).square().sum().sqrt()
                    if float(kept) > 0:
                        f = f * (n.square().sum().sqrt() / kept)
                for s in g.part(t.part):
                    fa = factor[id(s.axis)]
                    pos = s.pos.to(fa.device)
                    fa[pos] = fa[pos] * f[s.unit.to(fa.device)]
        for a in axes:
            a.param.mul_(a.shaped(factor[id(a)].to(a.param.dtype)))
        return float(torch.stack([v.float() for v in vals]).sum()) if vals else 0.0

    # ---- helpers ------------------------------------------------------------------------

    @staticmethod
    def _axes(terms: list[Term]) -> list[Axis]:
        return SSLPenalty._axes_of([(t, g) for t in terms for g in t.groups])

    @staticmethod
    def _axes_of(items: list[tuple[Term, Group]]) -> list[Axis]:
        seen: dict[int, Axis] = {}
        for t, g in items:
            for s in g.part(t.part):
                seen.setdefault(id(s.axis), s.axis)
        return list(seen.values())

    def _device(self) -> torch.device | None:
        for a in self.groups.axes():
            return a.param.device
        return None


def _blocks(model: nn.Module) -> list[object]:
    from sslsearch.models import residual_blocks

    return list(residual_blocks(model))


def ssl_penalty(
    model: nn.Module,
    ssl_type: str,
    lam: float | Mapping[str, float],
    example_inputs: torch.Tensor | None = None,
) -> torch.Tensor:
    """The penalty value (differentiable) of ``model`` for ``ssl_type`` at strength ``lam``.

    Example:
        >>> loss = ce + ssl_penalty(model, "channel_wise", 0.01)
    """
    return SSLPenalty.build(model, ssl_type, lam, example_inputs)()


def unit_norms(
    model: nn.Module, ssl_type: str, example_inputs: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """Per group (blocks: all together), the norms of its units under ``ssl_type``."""
    pen = SSLPenalty.build(model, ssl_type, 1.0, example_inputs)
    out: list[torch.Tensor] = []
    blocks: list[torch.Tensor] = []
    for key, n in pen.norms():
        (blocks if key == "d" else out).append(n.float().cpu())
    if blocks:
        out.append(torch.cat(blocks))
    return out


def group_norms(model: nn.Module, ssl_type: str) -> torch.Tensor:
    """Every unit's norm under ``ssl_type``, concatenated over groups."""
    parts = unit_norms(model, ssl_type)
    return torch.cat(parts) if parts else torch.zeros(0)

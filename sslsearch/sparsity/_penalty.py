"""Group-Lasso penalties: lambda * sum over groups of the group's L2 norm.

Not the squared norm: that is plain weight decay, whose gradient vanishes near zero, so it never
drives whole groups to exactly zero. The L2 norm's (sub)gradient keeps a constant pull
``lambda * w / ||w||`` until the group collapses, which is what makes structures prunable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from sslsearch.errors import NotPrunableError, UserError
from sslsearch.models import residual_blocks
from sslsearch.models._blocks import residual_branch_parameters

SSL_TYPES = ("filter_wise", "channel_wise", "filter_and_channel_wise", "shape_wise", "depth_wise")
# Which lambda keys each type uses: n filters, c channels, s shapes, d depth (residual blocks).
_KEYS = {
    "filter_wise": ("n",),
    "channel_wise": ("c",),
    "filter_and_channel_wise": ("n", "c"),
    "shape_wise": ("s",),
    "depth_wise": ("d",),
}


def parse_lambda(ssl_type: str, lam: float | Mapping[str, float]) -> dict[str, float]:
    """A float applies to every group of ``ssl_type``; a dict gives each its own (n, c, s, d)."""
    if ssl_type not in _KEYS:
        raise UserError(f"unknown ssl type {ssl_type!r}; known: {', '.join(SSL_TYPES)}")
    keys = _KEYS[ssl_type]
    if isinstance(lam, Mapping):
        unknown = set(lam) - {"n", "c", "s", "d"}
        if unknown:
            raise UserError(f"unknown lambda key(s) {sorted(unknown)}; use n, c, s, d")
        missing = [k for k in keys if k not in lam]
        if missing:
            raise UserError(f"ssl type {ssl_type} needs lambda for {missing}")
        out = {k: float(lam[k]) for k in keys}
    else:
        out = dict.fromkeys(keys, float(lam))
    for k, v in out.items():
        if not v >= 0.0 or v != v or v == float("inf"):
            raise UserError(f"ssl lambda ({k}) must be finite and >= 0, got {v}")
    return out


def _convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def conv_bn_pairs(model: nn.Module) -> dict[nn.Conv2d, nn.BatchNorm2d]:
    """Each conv whose output feeds a BatchNorm directly (the BN registered right after it).

    Holds for every registered architecture (torchvision's VGG/ResNet blocks and ours).
    """
    pairs: dict[nn.Conv2d, nn.BatchNorm2d] = {}
    last: nn.Conv2d | None = None
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            last = m
        elif isinstance(m, nn.BatchNorm2d):
            if last is not None and m.num_features == last.out_channels and m.affine:
                pairs[last] = m
            last = None
        elif len(list(m.children())) == 0 and not isinstance(m, (nn.ReLU, nn.Identity)):
            last = None
    return pairs


def filter_group_norms(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> torch.Tensor:
    """L2 norm per output channel of everything that produces it: W[n], bias[n], BN γ[n], β[n].

    With a BatchNorm after the conv, W[n] alone is scale-invariant (BN undoes any rescaling),
    so its norm says nothing about the channel; a group that includes γ[n] and β[n] reaches
    zero only when the channel's output is zero, which is what makes it removable.
    """
    parts = [torch.linalg.vector_norm(conv.weight.flatten(1), dim=1)]
    if conv.bias is not None:
        parts.append(conv.bias)
    if bn is not None:
        parts += [bn.weight, bn.bias]
    if len(parts) == 1:
        return parts[0]
    return torch.linalg.vector_norm(torch.stack(parts, dim=1), dim=1)


@dataclass
class SSLPenalty:
    """A penalty bound to a model's layers, built once and evaluated every step.

    Per conv layer one vectorised norm: filters W[n,:,:,:] (with the bias and the following
    BatchNorm's γ[n], β[n]: see ``filter_group_norms``), channels W[:,c,:,:] (not of the stem
    conv, whose inputs are the image channels), shapes W[:,c,h,w]; per residual block one norm
    over all of its residual branch's parameters.
    """

    ssl_type: str
    lam: dict[str, float]
    convs: list[nn.Conv2d]
    bns: list[nn.BatchNorm2d | None]  # the BN after each conv, if any
    channel_convs: list[nn.Conv2d]
    blocks: list[list[nn.Parameter]]

    @classmethod
    def build(cls, model: nn.Module, ssl_type: str, lam: float | Mapping[str, float]) -> SSLPenalty:
        lams = parse_lambda(ssl_type, lam)
        convs = _convs(model)
        blocks: list[list[nn.Parameter]] = []
        if ssl_type == "depth_wise":
            found = residual_blocks(model)
            if not found:
                raise NotPrunableError(
                    f"depth_wise needs residual blocks; {type(model).__name__} has none"
                )
            blocks = [residual_branch_parameters(b) for _, b in found]
        pairs = conv_bn_pairs(model)
        return cls(ssl_type, lams, convs, [pairs.get(c) for c in convs], convs[1:], blocks)

    def norms(
        self, keys: tuple[str, ...] | None = None, fast: bool = False
    ) -> list[tuple[str, torch.Tensor]]:
        """(lambda key, vector of group norms) per layer, for the given keys (default: all).

        ``fast``: channel and shape norms through a matrix-vector product (2-4x faster on CPU
        than a strided reduction) but with an infinite gradient at a zero group: for values only.
        """
        keys = tuple(self.lam) if keys is None else keys
        out: list[tuple[str, torch.Tensor]] = []
        if "n" in keys:
            out += [("n", filter_group_norms(c, b)) for c, b in zip(self.convs, self.bns)]
        if "c" in keys:
            out += [
                (
                    "c",
                    _channel_norms_fast(c.weight)
                    if fast
                    else torch.linalg.vector_norm(c.weight, dim=(0, 2, 3)),
                )
                for c in self.channel_convs
            ]
        if "s" in keys:
            out += [
                (
                    "s",
                    (
                        _shape_norms_fast(c.weight)
                        if fast
                        else torch.linalg.vector_norm(c.weight, dim=0)
                    ).flatten(),
                )
                for c in self.convs
            ]
        if "d" in keys and self.blocks:
            # sqrt of the sum of squared per-tensor norms: no copy of the block's weights
            block_norms = [
                torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tuple(ps))))
                for ps in self.blocks
            ]
            out.append(("d", torch.stack(block_norms)))
        return out

    def __call__(self) -> torch.Tensor:
        active = tuple(k for k, v in self.lam.items() if v > 0.0)
        terms = [self.lam[k] * n.sum() for k, n in self.norms(active)]
        if not terms:
            ref = next(iter(self.convs), None)
            return torch.zeros((), device=ref.weight.device if ref is not None else None)
        return torch.stack(terms).sum()

    @torch.no_grad()
    def add_grad_(self) -> torch.Tensor:
        """Add the penalty's gradient to every ``.grad`` directly; return its value (no graph).

        Equal to ``self().backward()`` (the gradient of ``lam * ||w_g||`` is ``lam * w / ||w_g||``,
        0 for a zero group), at a fraction of the cost: no autograd graph is built or walked, and
        each group's norm is computed once for both the value and the gradient. Call it after the
        task loss's ``backward()`` (and after ``GradScaler.unscale_`` under mixed precision).
        """
        total = torch.zeros((), dtype=torch.float64, device=self._device())
        lam = self.lam
        if lam.get("n"):
            for conv, bn in zip(self.convs, self.bns):
                bn_parts = [bn.weight, bn.bias] if bn is not None else []
                present = [p for p in [conv.weight, conv.bias, *bn_parts] if p is not None]
                norms = filter_group_norms(conv, bn)
                total += lam["n"] * norms.sum().double()
                scale = lam["n"] / norms.clamp_min(1e-30) * (norms > 0)
                for p in present:
                    _add(p, scale.view(-1, *([1] * (p.dim() - 1))))
        if lam.get("c"):
            for conv in self.channel_convs:
                norms = _channel_norms_fast(conv.weight)
                total += lam["c"] * norms.sum().double()
                scale = lam["c"] / norms.clamp_min(1e-30) * (norms > 0)
                _add(conv.weight, scale.view(1, -1, 1, 1))
        if lam.get("s"):
            for conv in self.convs:
                norms = _shape_norms_fast(conv.weight)
                total += lam["s"] * norms.sum().double()
                scale = lam["s"] / norms.clamp_min(1e-30) * (norms > 0)
                _add(conv.weight, scale.unsqueeze(0))
        if lam.get("d"):
            for ps in self.blocks:
                norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tuple(ps))))
                total += lam["d"] * norm.double()
                scale = lam["d"] / norm.clamp_min(1e-30) * (norm > 0)
                for p in ps:
                    _add(p, scale)
        return total.float()

    def _device(self) -> torch.device | None:
        ref = next(iter(self.convs), None)
        return ref.weight.device if ref is not None else None


def _add(p: torch.Tensor, scale: torch.Tensor) -> None:
    """p.grad += p * scale (scale broadcast over each group), without a temporary."""
    if p.grad is None:
        p.grad = p * scale
    else:
        p.grad.addcmul_(p, scale)


def _column_square_sums(w: torch.Tensor) -> torch.Tensor:
    """sum over dim 0 of w**2, as ones @ (w*w): a BLAS gemv instead of a strided reduction."""
    w2 = w.reshape(w.shape[0], -1)
    ones = torch.ones(w2.shape[0], dtype=w2.dtype, device=w2.device)
    return ones @ (w2 * w2)


def _channel_norms_fast(w: torch.Tensor) -> torch.Tensor:
    return _column_square_sums(w).view(w.shape[1], -1).sum(1).sqrt()


def _shape_norms_fast(w: torch.Tensor) -> torch.Tensor:
    return _column_square_sums(w).view(w.shape[1:]).sqrt()


def ssl_penalty(model: nn.Module, ssl_type: str, lam: float | Mapping[str, float]) -> torch.Tensor:
    """The penalty value (differentiable) of ``model`` for ``ssl_type`` at strength ``lam``."""
    return SSLPenalty.build(model, ssl_type, lam)()


def group_norms(model: nn.Module, ssl_type: str) -> torch.Tensor:
    """Every group's L2 norm, concatenated over layers (blocks for depth_wise)."""
    with torch.no_grad():
        parts = [
            n.float().cpu() for _, n in SSLPenalty.build(model, ssl_type, 1.0).norms(fast=True)
        ]
    return torch.cat(parts) if parts else torch.zeros(0)


def group_sparsity(model: nn.Module, ssl_type: str, rel_tol: float = 1e-3) -> float:
    """Share of groups whose norm is below ``rel_tol`` times the largest group norm."""
    norms = group_norms(model, ssl_type)
    if norms.numel() == 0 or float(norms.max()) == 0.0:
        return 0.0
    return float((norms < rel_tol * norms.max()).float().mean())

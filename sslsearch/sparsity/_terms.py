"""Each lambda key's groups and parts (``TERMS``), the SSL types in words, and one term's
per-unit values: what ``SSLPenalty`` sums over."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from sslsearch.errors import UserError
from sslsearch.sparsity._groups import Group
from sslsearch.vocabulary import LAMBDA_KEYS, SSL_TYPE_KEYS

SSL_TYPES = tuple(SSL_TYPE_KEYS)

# lambda key -> (which groups, which part of a channel group)
TERMS: dict[str, tuple[str, str]] = {
    "n": ("channel", "filter"),  # producers: filters, biases, BN scale/shift
    "c": ("channel", "channel"),  # readers: consumers' input slices, anchored by BN scale/shift
    "g": ("channel", "group"),  # everything coupled to the channel (DepGraph's group norm)
    "s": ("shape", "group"),  # W[:, c, h, w] of each conv, relative to the layer
    "d": ("block", "group"),  # a residual block's branch
}

# Each SSL type's groups, in words (docs and ``sslsearch list``).
SSL_TYPE_GROUPS = {
    "filter_wise": "per channel: every producing filter and bias + BatchNorm scale/shift",
    "channel_wise": "per channel: every consumer's input slice + BatchNorm scale/shift",
    "filter_and_channel_wise": "filter groups (lambda n) and channel groups (lambda c)",
    "shape_wise": "per conv: W[:, c, h, w], divided by the layer's RMS shape norm",
    "depth_wise": "per residual block: all parameters of its branch",
    "group_wise": "per channel: every coupled slice (filter + channel + BN)",
}


def parse_lambda(ssl_type: str, lam: float | Mapping[str, float]) -> dict[str, float]:
    """A float applies to every group of ``ssl_type``; a dict gives each its own (n, c, s, d, g)."""
    if ssl_type not in SSL_TYPE_KEYS:
        raise UserError(f"unknown ssl type {ssl_type!r}; known: {', '.join(SSL_TYPES)}")
    keys = SSL_TYPE_KEYS[ssl_type]
    if isinstance(lam, Mapping):
        unknown = set(lam) - set(LAMBDA_KEYS)
        if unknown:
            raise UserError(
                f"unknown lambda key(s) {sorted(unknown)}; use {', '.join(LAMBDA_KEYS)}"
            )
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


def safe_norm(sq: torch.Tensor) -> torch.Tensor:
    """sqrt with a zero (sub)gradient at 0 instead of an infinite one."""
    pos = sq > 0
    return torch.where(pos, torch.where(pos, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))


@dataclass(eq=False)
class Term:
    """One lambda key's groups, with the part of each group it sums over and each group's weight
    (``ssl_weighting``: the group's norm counts ``weight`` times; 1 is Wen et al.'s plain sum)."""

    key: str
    part: str
    groups: list[Group]
    weights: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.weights:
            self.weights = [1.0] * len(self.groups)

    @property
    def relative(self) -> bool:
        return self.key == "s"

    def values(self, sq: Mapping[int, torch.Tensor], g: Group) -> torch.Tensor:
        """Per-unit sums of squares of group ``g`` from per-axis squares ``sq``."""
        out: torch.Tensor | None = None
        for s in g.part(self.part):
            v = sq[id(s.axis)]
            c = torch.zeros(g.units, dtype=v.dtype, device=v.device).index_add(
                0, s.unit.to(v.device), v[s.pos.to(v.device)]
            )
            out = c if out is None else out + c
        assert out is not None
        return out


def rms(norms: torch.Tensor) -> torch.Tensor:
    return (norms.square().mean()).sqrt().clamp_min(1e-30)

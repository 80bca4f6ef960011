"""A tiny name -> builder registry shared by models, datasets, penalties, criteria and pruners."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from sslsearch.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects. A duplicate name is a programming error; an unknown one a user error."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UserError(unknown_name_message(self.kind, name, self.names())) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


def unknown_name_message(kind: str, name: object, known: list[str]) -> str:
    """'unknown model 'vgg17' (did you mean 'vgg16_bn'?); known: ...'"""
    hint = ""
    if isinstance(name, str):
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            hint = f" (did you mean {close[0]!r}?)"
    return f"unknown {kind} {name!r}{hint}; known: {', '.join(known)}"


# Kept widths are multiples of ROUND_TO channels (what vector units and GPU kernels like).
ROUND_TO = 8
# The floor of a layer: the pruner never cuts a layer below it, and the SSL proximal step never
# leaves a layer fewer nonzero units (a layer of zeros kills the network, and no pruning could
# use what it learnt); a layer held there is reported as at its floor. A share of each layer's
# width, so a 512-wide layer keeps more than a 16-wide one.
MIN_WIDTH_SHARE = 0.1


def min_width(width: int, share: float = MIN_WIDTH_SHARE, round_to: int = ROUND_TO) -> int:
    """The fewest channels a layer of ``width`` keeps: ``share`` of its width rounded up to a
    multiple of ``round_to``, at least ``round_to``; a layer no wider than ``round_to`` keeps all.

    >>> [min_width(w) for w in (3, 8, 16, 64, 128, 512)]
    [3, 8, 8, 8, 16, 56]
    """
    if not 0.0 <= share <= 1.0:
        raise UserError(f"min_width_share must be in [0, 1], got {share}")
    if round_to < 1:
        raise UserError(f"round_to must be >= 1, got {round_to}")
    if width <= round_to:
        return width
    n = max(1, math.ceil(share * width - 1e-9))
    return min(width, math.ceil(n / round_to) * round_to)


# What a pruning budget can be a share of; its key is "<kind>_budget", its value the share of
# the dense model's cost to keep, in (0, 1]. Defined here, for config and the pruner alike.
BUDGET_KINDS: tuple[str, ...] = ("flops", "params", "latency")


def budget_problem(kind: str, share: object) -> str | None:
    """What is wrong with ``share`` as a ``<kind>_budget``, if anything."""
    ok = isinstance(share, (int, float)) and not isinstance(share, bool) and 0.0 < share <= 1.0
    return None if ok else f"a share of the dense {kind} in (0, 1], got {share}"


# SSL types and the lambda key(s) each reads: n filters, c channels, s shapes, d depth (residual
# blocks), g whole groups. Defined here, at the bottom layer, so config validation and the
# penalty agree; the reference project's names and keys (n, c, s, d) stay valid.
SSL_TYPE_KEYS: dict[str, tuple[str, ...]] = {
    "filter_wise": ("n",),
    "channel_wise": ("c",),
    "filter_and_channel_wise": ("n", "c"),
    "shape_wise": ("s",),
    "depth_wise": ("d",),
    "group_wise": ("g",),
}
LAMBDA_KEYS: tuple[str, ...] = ("n", "c", "s", "d", "g")


# How the SSL penalty weighs groups of different size and cost against each other (the
# ``ssl_weighting``): each group's norm counts ``weight`` times. Defined here, at the bottom
# layer, so config validation knows the names; ``sslsearch.pruning.build_penalty`` computes them.
SSL_WEIGHTINGS: dict[str, str] = {
    "none": "Wen et al.'s plain sum: every group's norm counts once",
    "size": "sqrt of the group's element count (Yuan and Lin's group Lasso), mean 1 per term",
    "flops": "the FLOPs removing the group saves (MorphNet's FLOPs regulariser), mean 1 per term",
    "gradient": "each layer's median norm of the task loss's gradient over its units, measured on "
    "a few training batches before SSL training: lambda is then a share of that pull",
}
# chosen by benchmarks/bench_lambda_transfer.py: the weighting whose lambda transfers
DEFAULT_SSL_WEIGHTING = "gradient"

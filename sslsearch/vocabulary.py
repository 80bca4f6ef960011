"""The project's base vocabulary: kept widths and layer floors, budget kinds, SSL type keys and
the SSL weightings, shared by config, models, sparsity, pruning and the search."""

from __future__ import annotations

import math

from sslsearch.errors import UserError

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


# How the SSL proximal step keeps a layer at its floor (``SSLPenalty.floor_rule``), measured on
# the CIFAR-10 tier by benchmarks/bench_ssl_step.py.
SSL_FLOOR_RULES: dict[str, str] = {
    "scale": "when a step would leave fewer than the floor, the layer's thresholds are scaled "
    "down so its floor strongest units survive, every unit still shrunk",
    "hold": "when a step would leave fewer than the floor, the floor strongest units are not "
    "shrunk; the others shrink as usual",
    "exempt": "the floor strongest units of every layer are never shrunk; the others shrink as "
    "usual",
}
# hold: the same models as scale until a layer reaches its floor (bench_ssl_step.json: equal within
# noise on the tier), and there no survivor is left pinned near the threshold; exempt costs 2-3
# points of top-1 at equal removable FLOPs
DEFAULT_SSL_FLOOR = "hold"
# Which step the group Lasso takes under the optimizer's momentum (``SSLPenalty.step_rule``).
SSL_STEP_RULES: dict[str, str] = {
    "momentum": "a proximal step of lr / (1 - momentum) after the optimizer's: heavy-ball "
    "momentum's steady-state step for a constant gradient",
    "lr": "a proximal step of lr after the optimizer's",
    "reset": "as momentum, and the momentum of every zeroed weight is reset to 0",
    "loss": "the penalty's gradient joins the loss's before the optimizer's step (momentum "
    "sees it); a unit within one step of zero is then set to exactly 0, with its momentum",
}
DEFAULT_SSL_STEP = "momentum"

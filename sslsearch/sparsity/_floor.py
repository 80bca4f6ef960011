"""How the SSL proximal step keeps a layer at its floor: the floor rules of
``sslsearch.vocabulary.SSL_FLOOR_RULES``, for one group and one step."""

from __future__ import annotations

import math

import torch

from sslsearch.sparsity._groups import Group


def floor_step(
    g: Group, norms: list[torch.Tensor], thrs: list[torch.Tensor], rule: str, share: float
) -> tuple[torch.Tensor | float, torch.Tensor | None]:
    """How ``rule`` keeps the layer's floor this step: a factor on its thresholds (``scale``)
    and the units it spares from shrinking (``hold``, ``exempt``; None: none).

    A unit survives every term while its margin ``min_t ||w_t|| / thr_t`` exceeds 1.
    ``scale``: when fewer than ``floor`` units would survive, the thresholds are scaled to the
    (floor + 1)-th largest margin, so the ``floor`` strongest survive, still shrunk. ``hold``:
    when fewer would survive, the ``floor`` strongest are not shrunk (the others are, as usual).
    ``exempt``: the ``floor`` strongest are never shrunk. A layer no wider than its floor
    (``round_to`` channels or fewer: the pruner keeps it whole) is held as a whole: under
    ``scale`` it is not shrunk when a step would zero one of its units.
    """
    if g.kind == "block":
        return 1.0, None
    floor = g.min_units(share)
    if floor <= 0:
        return 1.0, None
    margin = _margin(norms, thrs)
    enough = int((margin > 1.0).sum()) >= floor
    if rule == "exempt" or (rule == "hold" and not enough):
        return 1.0, strongest(margin, floor)
    if enough:
        return 1.0, None
    padded = torch.cat([margin, margin.new_zeros(1)])  # no (floor + 1)-th unit: scale 0
    return padded.topk(floor + 1).values[-1].clamp(max=1.0), None


def spared_from_gradient(
    g: Group, norms: list[torch.Tensor], lams: list[float], rule: str, share: float
) -> torch.Tensor | None:
    """The units the floor rule spares from the penalty's gradient (step rule ``loss``): the
    ``floor`` strongest by margin ``min_t ||w_t|| / lam_t``, under ``exempt`` always, under
    ``hold`` when the layer's live units are down to its floor (None: none spared)."""
    if g.kind == "block" or rule == "scale":
        return None
    floor = g.min_units(share)
    if floor <= 0:
        return None
    if rule == "hold" and int((torch.stack(norms) > 0).all(0).sum()) > floor:
        return None
    return strongest(_margin(norms, [torch.as_tensor(lam) for lam in lams]), floor)


def _margin(norms: list[torch.Tensor], divisors: list[torch.Tensor]) -> torch.Tensor:
    """Per unit, ``min_t ||w_t|| / divisor_t`` over the group's terms (a term with divisor 0
    does not bind: inf)."""
    margin: torch.Tensor | None = None
    for n, d in zip(norms, divisors):
        m = torch.where(d > 0, n / d.clamp_min(1e-30), torch.full_like(n, math.inf))
        margin = m if margin is None else torch.minimum(margin, m)
    assert margin is not None
    return margin


def strongest(score: torch.Tensor, k: int) -> torch.Tensor:
    """A mask of the ``k`` highest scores."""
    mask = torch.zeros_like(score, dtype=torch.bool)
    mask[score.topk(min(k, score.numel())).indices] = True
    return mask

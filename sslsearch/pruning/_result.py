"""What a pruning was asked (``_Request``), what it removed (``_Removal``) and what it returns
(``PruneResult``), logged in one line."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from torch import nn

from sslsearch.metrics import count_flops, count_params
from sslsearch.pruning._budget import _missed, _note, _Target
from sslsearch.vocabulary import MIN_WIDTH_SHARE

log = logging.getLogger(__name__)


@dataclass
class PruneResult:
    model: nn.Module
    prune_type: str
    prune_way: str
    ratio: float  # requested share of groups to remove (budget pruning: the share it came to)
    actual_ratio: float  # removed groups / all groups, after the floors and the rounding
    groups_total: int
    groups_removed: int
    flops_before: int
    flops_after: int
    params_before: int
    params_after: int
    # original indices of removed output channels, by layer name (every coupled layer listed)
    removed_channels: dict[str, list[int]] = field(default_factory=dict)
    removed_blocks: list[str] = field(default_factory=list)
    # removed units by channel group (root layer name): unit ids of sslsearch.sparsity.Group
    removed_units: dict[str, list[int]] = field(default_factory=dict)
    # budget pruning: the kind, the share of the dense cost asked for and reached, and how
    # close the rounding let it come ("within 1%" or the step that could not be added)
    budget_kind: str | None = None
    budget: float | None = None
    budget_achieved: float | None = None
    budget_note: str = ""
    # a latency budget whose closest try is still over the target beyond the tolerance (a
    # count budget is always met): the point's status is then ``budget_missed``, not ``ok``
    budget_missed: bool = False
    budget_step: float | None = None  # share of the dense cost of the finest step left out
    latency_ms_before: float | None = None
    latency_ms_after: float | None = None
    min_width_share: float = MIN_WIDTH_SHARE
    at_floor: list[str] = field(default_factory=list)  # layers cut to their floor

    def summary(self) -> dict[str, object]:
        return {
            "prune_type": self.prune_type,
            "prune_way": self.prune_way,
            "ratio": self.ratio,
            "actual_ratio": self.actual_ratio,
            "groups_total": self.groups_total,
            "groups_removed": self.groups_removed,
            "flops_before": self.flops_before,
            "flops_after": self.flops_after,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "removed_blocks": list(self.removed_blocks),
            "budget_kind": self.budget_kind,
            "budget": self.budget,
            "budget_achieved": self.budget_achieved,
            "budget_note": self.budget_note,
            "budget_missed": self.budget_missed,
            "budget_step": self.budget_step,
            "latency_ms_before": self.latency_ms_before,
            "latency_ms_after": self.latency_ms_after,
            "min_width_share": self.min_width_share,
            "at_floor": list(self.at_floor),
        }


@dataclass(frozen=True)
class _Request:
    """What ``prune`` was asked to remove and how (its arguments, checked; no budget)."""

    prune_type: str
    prune_way: str
    normalizer: str
    ratio: float | None
    blocks: int | None
    min_width_share: float
    round_to: int
    cost_power: float


@dataclass
class _Removal:
    """What one pruning removed (the steps of ``prune``)."""

    model: nn.Module
    total: int  # groups (or blocks) that could go
    gone: int
    removed_channels: dict[str, list[int]] = field(default_factory=dict)
    removed_blocks: list[str] = field(default_factory=list)
    removed_units: dict[str, list[int]] = field(default_factory=dict)
    at_floor: list[str] = field(default_factory=list)
    achieved: float | None = None  # the cost reached, in the budget's unit
    finest: tuple[str, float] | None = None  # the finest step left out: (layer, its cost)


def _result(
    done: _Removal,
    target: _Target | None,
    req: _Request,
    input_shape: tuple[int, ...],
    flops_before: int,
    params_before: int,
) -> PruneResult:
    """The PruneResult of a finished pruning, logged in one line (and its floored layers)."""
    work, achieved, finest, total, gone = (
        done.model,
        done.achieved,
        done.finest,
        done.total,
        done.gone,
    )
    note = _note(target, achieved / target.dense, finest) if target and achieved else ""
    result = PruneResult(
        model=work,
        prune_type=req.prune_type,
        prune_way=req.prune_way,
        ratio=float(req.ratio) if req.ratio is not None else gone / max(total, 1),
        actual_ratio=gone / max(total, 1),
        groups_total=total,
        groups_removed=gone,
        flops_before=flops_before,
        flops_after=int(achieved)
        if target and target.kind == "flops" and achieved is not None
        else count_flops(work, input_shape),
        params_before=params_before,
        params_after=count_params(work),
        removed_channels=done.removed_channels,
        removed_blocks=done.removed_blocks,
        removed_units=done.removed_units,
        budget_kind=target.kind if target else None,
        budget=target.share if target else None,
        budget_achieved=achieved / target.dense if target and achieved is not None else None,
        budget_note=note,
        budget_missed=_missed(target, achieved),
        budget_step=finest[1] / target.dense if target and finest else None,
        latency_ms_before=target.dense if target and target.kind == "latency" else None,
        latency_ms_after=achieved if target and target.kind == "latency" else None,
        min_width_share=req.min_width_share,
        at_floor=done.at_floor,
    )
    log.info(
        "pruned %s/%s (%s): actual ratio %.3f, FLOPs %d -> %d, params %d -> %d%s",
        req.prune_type,
        req.prune_way,
        f"{result.budget_kind} budget {result.budget:g}" if target else f"ratio {result.ratio:g}",
        result.actual_ratio,
        flops_before,
        result.flops_after,
        params_before,
        result.params_after,
        f"; {note}" if note else "",
    )
    if done.at_floor:
        log.info(
            "layers cut to their floor (min_width_share %g): %s",
            req.min_width_share,
            done.at_floor,
        )
    return result

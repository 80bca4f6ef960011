"""sparsity_report: exact zeros and what the pruner could remove at no change of the function."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import sslsearch
from sslsearch.metrics import count_flops, count_params
from sslsearch.models import create_model
from sslsearch.pruning._block_removal import _replace_blocks
from sslsearch.pruning._units import _apply_plan, _plan_from_counts
from sslsearch.sparsity import model_groups
from sslsearch.sparsity._groups import IN, NORM, OUT

SHAPE = (3, 16, 16)


def _zero_units(g: object, units: list[int], roles: set[str]) -> None:
    """Zero every slice of these roles of the given units of channel group ``g``."""
    with torch.no_grad():
        for s in g.slices:  # type: ignore[attr-defined]
            if s.role not in roles:
                continue
            for p in s.pos[torch.isin(s.unit, torch.tensor(units))].tolist():
                ax = s.axis
                if ax.kind == "rows":
                    ax.param[p].zero_()
                elif ax.kind == "cols":
                    ax.param[:, p].zero_()
                else:  # conv_in, groups == 1 in these models
                    ax.param[:, p].zero_()


def _dead_units(model: nn.Module, units_of: dict[str, list[int]]) -> dict[str, list[int]]:
    gs = model_groups(model)
    plan = {}
    for g in gs.channel:
        if g.name in units_of:
            _zero_units(g, units_of[g.name], {OUT, NORM})
            plan[g.name] = units_of[g.name]
    return plan


def _group(model: nn.Module, name: str) -> Any:
    return next(g for g in model_groups(model).channel if g.name == name)


def test_the_report_is_importable_from_the_package() -> None:
    assert sslsearch.sparsity_report is sslsearch.pruning.sparsity_report
    r = sslsearch.sparsity_report(create_model("vgg_small", 10), "filter_wise", SHAPE)
    assert {"exact_zero_share", "removable_flops_share", "removable_params_share"} <= r.keys()
    assert {"narrowest_width", "at_floor"} <= r.keys()


@pytest.mark.parametrize("ssl_type", ["filter_wise", "channel_wise", "filter_and_channel_wise"])
def test_a_model_scaled_by_1e_6_has_no_zero_and_nothing_removable(ssl_type: str) -> None:
    torch.manual_seed(0)
    model = create_model("resnet20", 10)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e-6)
    r = sslsearch.sparsity_report(model, ssl_type, SHAPE)
    assert r["exact_zero_share"] == 0.0 and r["zero_units"] == 0
    assert r["removable_flops_share"] == 0.0 and r["removable_params_share"] == 0.0
    assert r["at_floor"] == []
    assert r["narrowest_width"] == r["width"]


def test_zeroed_channels_are_removable_exactly_and_the_function_is_kept() -> None:
    torch.manual_seed(0)
    model = create_model("vgg_small", 10).eval()
    gs = model_groups(model)
    # a quarter of each of four layers (multiples of 8: the rounding keeps nothing extra)
    plan = _dead_units(model, {g.name: list(range(0, g.units, 4)) for g in gs.channel[:4]})
    r = sslsearch.sparsity_report(model, "filter_wise", SHAPE)
    # physically remove exactly those channels: same outputs, and the figures are its savings
    pruned = copy.deepcopy(model)
    _apply_plan(pruned, torch.zeros(1, *SHAPE), plan)
    x = torch.randn(4, *SHAPE)
    torch.testing.assert_close(pruned.eval()(x), model(x), rtol=1e-4, atol=1e-5)
    dense_flops, dense_params = count_flops(model, SHAPE), count_params(model)
    # (the cost model leaves out what no parameter carries: the final pooling, ~1e-4 here)
    assert r["removable_flops_share"] == pytest.approx(
        1 - count_flops(pruned, SHAPE) / dense_flops, abs=1e-3
    )
    assert r["removable_params_share"] == pytest.approx(1 - count_params(pruned) / dense_params)
    assert r["zero_units"] == sum(len(v) for v in plan.values())
    for g in gs.channel[:4]:
        assert r["narrowest_width"][g.name] == g.units - len(plan[g.name])


def test_every_layer_cut_to_its_floor_is_reported_at_the_floor() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20", 10)
    gs = model_groups(model)
    floors = {g.name: g.min_units() for g in gs.channel}
    plan = _dead_units(model, {g.name: list(range(floors[g.name], g.units)) for g in gs.channel})
    r = sslsearch.sparsity_report(model, "filter_wise", SHAPE)
    wider = [g.name for g in gs.channel if floors[g.name] < g.units]
    assert wider and sorted(r["at_floor"]) == sorted(wider)
    assert r["narrowest_width"] == {g.name: floors[g.name] for g in gs.channel}
    # and what is removable is exactly what pruning to the floors removes
    pruned = copy.deepcopy(model)
    removed = np.asarray([len(plan.get(g.name, [])) for g in gs.channel])
    scores = [torch.arange(g.units, 0, -1).double() for g in gs.channel]
    _apply_plan(pruned, torch.zeros(1, *SHAPE), _plan_from_counts(gs.channel, scores, removed))
    share = 1 - count_flops(pruned, SHAPE) / count_flops(model, SHAPE)
    assert r["removable_flops_share"] == pytest.approx(share, abs=1e-3)


def test_a_floor_and_rounding_keep_what_they_keep() -> None:
    """Zeros beyond the floor or the rounding to 8 channels are zero but not removable."""
    torch.manual_seed(0)
    model = create_model("vgg_small", 10)
    g = _group(model, "features.0")  # 32 channels: floor 8
    _dead_units(model, {g.name: list(range(29))})  # 3 live: the floor keeps 8
    r = sslsearch.sparsity_report(model, "filter_wise", SHAPE)
    assert r["zero_units"] == 29 and r["narrowest_width"][g.name] == 8
    assert g.name in r["at_floor"]
    model = create_model("vgg_small", 10)
    g = _group(model, "features.0")
    _dead_units(model, {g.name: list(range(13))})  # 19 live: kept widths round up to 24
    r = sslsearch.sparsity_report(model, "filter_wise", SHAPE)
    assert r["narrowest_width"][g.name] == 24 and r["at_floor"] == []


def test_filter_and_channel_wise_counts_a_channel_once() -> None:
    torch.manual_seed(0)
    model = create_model("vgg_small", 10)
    g = _group(model, "features.3")  # 32 channels
    _zero_units(g, [0, 1, 2, 3], {OUT, NORM, IN})  # filter and channel part both zero
    _zero_units(g, [4, 5, 6, 7], {IN})  # nobody reads them; their BatchNorm is not zero
    r = sslsearch.sparsity_report(model, "filter_and_channel_wise", SHAPE)
    assert r["zero_units"] == 4 and r["units"] == sum(g.units for g in model_groups(model).channel)
    # all eight can go without changing the function
    assert r["narrowest_width"][g.name] == 24


def test_shape_zeros_save_nothing() -> None:
    torch.manual_seed(0)
    model = create_model("vgg_small", 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        convs[2].weight[:, :, 0, :].zero_()  # the top row of every kernel of one conv
    r = sslsearch.sparsity_report(model, "shape_wise", SHAPE)
    assert r["zero_units"] == convs[2].weight.shape[1] * 3
    assert r["exact_zero_share"] > 0 and r["removable_flops_share"] == 0.0


def test_depth_wise_counts_whole_blocks() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20", 10).eval()
    from sslsearch.models import residual_blocks, residual_branch_parameters

    name, block = residual_blocks(model)[4]
    with torch.no_grad():
        for p in residual_branch_parameters(block):
            p.zero_()
    r = sslsearch.sparsity_report(model, "depth_wise", SHAPE)
    assert r["zero_units"] == 1 and r["units"] == len(residual_blocks(model))
    short = copy.deepcopy(model)
    _replace_blocks(short, [name])
    x = torch.randn(2, *SHAPE)
    torch.testing.assert_close(short.eval()(x), model(x))
    saved = 1 - count_flops(short, SHAPE) / count_flops(model, SHAPE)
    assert r["removable_flops_share"] == pytest.approx(saved)

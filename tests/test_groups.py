"""The one group model: what the pruner removes is exactly the groups the penalty sums over.

For each model, the pruned network must compute what the dense network computes with the
removed units' slices (every coupled parameter of the group) set to zero.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sslsearch.models import create_model
from sslsearch.pruning import PruneResult, prune
from sslsearch.sparsity import SSLPenalty, build_groups, model_groups

CHANNEL_TYPES = ("filter_wise", "channel_wise", "filter_and_channel_wise")


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters (fresh ones are identities)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
    return model.eval()


def zeroed(dense: nn.Module, r: PruneResult, x: torch.Tensor) -> nn.Module:
    """The dense model with every slice of the removed units (or blocks) set to zero."""
    z = copy.deepcopy(dense).eval()
    gs, _, _ = build_groups(z, x[:1])
    with torch.no_grad():
        for g in gs.channel:
            units = r.removed_units.get(g.name)
            if not units:
                continue
            drop = torch.as_tensor(units)
            for s in g.slices:
                v = torch.ones(s.axis.length)
                v[s.pos[torch.isin(s.unit, drop)]] = 0.0
                s.axis.param.mul_(s.axis.shaped(v))
        for g in gs.block:
            if g.name in r.removed_blocks:
                for s in g.slices:
                    s.axis.param.zero_()
    return z


def check_equal_to_zeroed(dense: nn.Module, r: PruneResult, x: torch.Tensor) -> None:
    with torch.no_grad():
        want = zeroed(dense, r, x)(x)
        got = r.model.eval()(x)
        dense_out = dense(x)
    assert got.shape == dense_out.shape  # class count unchanged
    assert r.groups_removed > 0
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


class GroupedNet(nn.Module):
    """stem -> grouped conv (4 groups) -> depthwise conv -> 1x1 -> conv classifier."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32))
        self.grouped = nn.Sequential(
            nn.Conv2d(32, 32, 3, padding=1, groups=4, bias=False), nn.BatchNorm2d(32)
        )
        self.dw = nn.Sequential(
            nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False), nn.BatchNorm2d(32)
        )
        self.pw = nn.Sequential(nn.Conv2d(32, 24, 1, bias=False), nn.BatchNorm2d(24))
        self.head = nn.Conv2d(24, classes, 1)  # a conv classifier keeps its class count

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(self.grouped(x))
        x = torch.relu(self.dw(x))
        x = torch.relu(self.pw(x))
        return self.head(x).mean(dim=(2, 3))


@pytest.mark.parametrize("prune_type", CHANNEL_TYPES)
def test_grouped_and_depthwise_convs_prune_exactly(prune_type: str) -> None:
    torch.manual_seed(0)
    dense = randomize(GroupedNet())
    x = torch.randn(2, 3, 8, 8)
    r = prune(dense, x[:1], prune_type=prune_type, ratio=0.5)
    check_equal_to_zeroed(dense, r, x)
    m = r.model
    assert m.grouped[0].groups == 4 and m.grouped[0].in_channels % 4 == 0
    assert m.grouped[0].out_channels % 4 == 0
    dw = m.dw[0]
    assert dw.groups == dw.in_channels == dw.out_channels  # still depthwise
    assert m.head.out_channels == 5


def test_a_grouped_conv_ties_one_channel_of_each_conv_group() -> None:
    gs = model_groups(GroupedNet())
    stem = next(g for g in gs.channel if g.name == "stem.0")
    assert stem.tie == 4 and stem.units == 8
    assert stem.channels is not None and stem.channels[0].tolist() == [0, 8, 16, 24]


def test_groups_built_for_the_penalty_are_the_pruners() -> None:
    model = randomize(create_model("resnet20", 10))
    x = torch.zeros(1, 3, 32, 32)
    pen = SSLPenalty.build(model, "group_wise", 0.1, x)
    gs, _, _ = build_groups(model, x)
    assert [g.name for g in pen.groups.channel] == [g.name for g in gs.channel]
    for a, b in zip(pen.groups.channel, gs.channel):
        assert [s.axis.name for s in a.slices] == [s.axis.name for s in b.slices]


# torchvision models of every coupling kind: plain, residual, inverted residual + SE,
# grouped, dense concatenation, inception concatenation
ZOO = [
    ("vgg16_bn", 32),
    ("resnet50", 32),
    ("mobilenet_v2", 32),
    ("efficientnet_b0", 32),
    ("regnet_x_400mf", 32),
    ("resnext50_32x4d", 32),
    ("densenet121", 32),
    ("googlenet", 32),
]


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "size"), ZOO)
def test_pruned_zoo_model_equals_the_dense_one_with_the_groups_zeroed(arch: str, size: int) -> None:
    torch.manual_seed(0)
    dense = randomize(create_model(arch, 10))
    x = torch.randn(2, 3, size, size)
    for prune_type in CHANNEL_TYPES:
        r = prune(dense, x[:1], prune_type=prune_type, ratio=0.3)
        check_equal_to_zeroed(dense, r, x)
    if arch == "resnet50":
        r = prune(dense, x[:1], prune_type="depth_wise", blocks=3)
        check_equal_to_zeroed(dense, r, x)
    # the penalty builds on it, too
    SSLPenalty.build(dense, "group_wise", 0.1, x[:1])

from __future__ import annotations

import pytest
import torch
from torch import nn

from sslsearch.errors import NotPrunableError, UserError
from sslsearch.models import create_model
from sslsearch.sparsity import CRITERIA, SSL_TYPES, criterion_scores, group_sparsity, ssl_penalty


class TwoConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 3, 3, bias=False)
        self.c2 = nn.Conv2d(3, 4, 2, bias=False)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.c2(self.c1(x)).mean(dim=(2, 3)))


def _loops(net: TwoConv, kind: str) -> torch.Tensor:
    """The group Lasso written with explicit loops over groups: the definition."""
    total = torch.zeros(())
    for conv in (net.c1, net.c2):
        w = conv.weight
        if kind == "filter":
            for n in range(w.shape[0]):
                total = total + w[n].pow(2).sum().sqrt()
        if kind == "channel" and conv is net.c2:  # the stem's image channels are not grouped
            for c in range(w.shape[1]):
                total = total + w[:, c].pow(2).sum().sqrt()
        if kind == "shape":
            for c in range(w.shape[1]):
                for i in range(w.shape[2]):
                    for j in range(w.shape[3]):
                        total = total + w[:, c, i, j].pow(2).sum().sqrt()
    return total


@pytest.mark.parametrize(
    ("ssl_type", "kinds"),
    [
        ("filter_wise", ["filter"]),
        ("channel_wise", ["channel"]),
        ("shape_wise", ["shape"]),
    ],
)
def test_penalty_is_lambda_times_sum_of_group_norms(ssl_type: str, kinds: list[str]) -> None:
    net = TwoConv()
    lam = 0.37
    expected = lam * sum(_loops(net, k) for k in kinds)
    torch.testing.assert_close(ssl_penalty(net, ssl_type, lam), expected)


def test_filter_and_channel_have_their_own_lambdas() -> None:
    net = TwoConv()
    got = ssl_penalty(net, "filter_and_channel_wise", {"n": 0.5, "c": 2.0})
    torch.testing.assert_close(got, 0.5 * _loops(net, "filter") + 2.0 * _loops(net, "channel"))


def test_not_the_squared_norm() -> None:
    net = TwoConv()
    with torch.no_grad():
        net.c1.weight.mul_(10)
    squared = sum(c.weight.flatten(1).pow(2).sum() for c in (net.c1, net.c2))
    assert not torch.isclose(ssl_penalty(net, "filter_wise", 1.0), squared)


def test_filter_group_includes_the_batchnorm_after_the_conv() -> None:
    conv, bn = nn.Conv2d(1, 2, 1, bias=False), nn.BatchNorm2d(2)
    net = nn.Sequential(conv, bn)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([3.0, 0.0]).view(2, 1, 1, 1))
        bn.weight.copy_(torch.tensor([4.0, 0.0]))
        bn.bias.copy_(torch.tensor([0.0, 0.0]))
    # channel 0: sqrt(3^2 + 4^2) = 5; channel 1: all zero
    torch.testing.assert_close(ssl_penalty(net, "filter_wise", 1.0), torch.tensor(5.0))


@pytest.mark.parametrize("ssl_type", SSL_TYPES)
def test_gradients_flow_and_stay_finite_at_zero(ssl_type: str) -> None:
    model = create_model("resnet20", 10)
    with torch.no_grad():
        model.layer1[0].conv1.weight.zero_()  # a whole zero group must not give NaN gradients
    pen = ssl_penalty(model, ssl_type, 1e-3)
    pen.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_depth_penalty_has_gradient_on_every_block() -> None:
    model = create_model("resnet20", 10)
    ssl_penalty(model, "depth_wise", 1.0).backward()
    for block in (model.layer1[0], model.layer3[2]):
        assert block.conv2.weight.grad is not None and block.conv2.weight.grad.abs().sum() > 0


def test_depth_wise_needs_residual_blocks() -> None:
    with pytest.raises(NotPrunableError, match="residual"):
        ssl_penalty(create_model("vgg_small", 10), "depth_wise", 1e-3)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), {"n": 1.0}, {"x": 1.0}])
def test_bad_lambda(bad: object) -> None:
    with pytest.raises(UserError):
        ssl_penalty(TwoConv(), "channel_wise", bad)  # type: ignore[arg-type]


def test_unknown_ssl_type() -> None:
    with pytest.raises(UserError, match="unknown ssl type"):
        ssl_penalty(TwoConv(), "kernel_wise", 1.0)


def test_criteria_as_defined() -> None:
    g = torch.tensor([[3.0, -4.0], [1.0, 1.0]])
    expected = {
        "group_lasso": [5.0, 2**0.5],
        "mean_abs": [3.5, 1.0],
        "mean": [-0.5, 1.0],
        "sum_abs": [7.0, 2.0],
        "sum": [-1.0, 2.0],
    }
    assert set(CRITERIA.names()) == set(expected)
    for way, values in expected.items():
        torch.testing.assert_close(
            criterion_scores(way, g), torch.tensor(values, dtype=torch.float64)
        )


def test_group_sparsity_counts_near_zero_groups() -> None:
    net = TwoConv()
    with torch.no_grad():
        net.c1.weight[0].zero_()
        net.c2.weight[1:].mul_(1e-6)
    assert group_sparsity(net, "filter_wise") == pytest.approx(4 / 7)


@pytest.mark.slow
def test_penalty_makes_groups_sparse_without_costing_accuracy() -> None:
    from sslsearch.trial import run_trial

    def train(lam: float) -> dict[str, float]:
        cfg = {
            "arch": "vgg_small",
            "ssl_lambda": lam,
            "ratio": 0.0,
            "recipe": {"epochs": 15, "finetune_epochs": 0, "batch_size": 32},
        }
        return run_trial(cfg).metrics

    dense, sparse = train(0.0), train(0.03)
    assert dense["group_sparsity"] < 0.05
    assert sparse["group_sparsity"] > 0.5  # most filter groups collapsed to ~0
    assert sparse["ssl_top1"] >= dense["ssl_top1"] - 3.0


@pytest.mark.parametrize("ssl_type", SSL_TYPES)
def test_direct_gradient_equals_autograd(ssl_type: str) -> None:
    from sslsearch.sparsity import SSLPenalty

    model = create_model("resnet20", 10)
    with torch.no_grad():
        model.layer2[0].conv1.weight[:3].zero_()  # zero groups: subgradient 0 both ways
        model.layer2[0].bn1.weight[:3].zero_()
        model.layer2[0].bn1.bias[:3].zero_()
    lam = {"n": 0.3, "c": 0.2} if ssl_type == "filter_and_channel_wise" else 0.3
    pen = SSLPenalty.build(model, ssl_type, lam)
    value = pen()
    value.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    direct = pen.add_grad_()
    got = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], msg=name)
    torch.testing.assert_close(direct, value.detach())


@pytest.mark.parametrize("way", ["group_lasso", "mean_abs", "mean", "sum_abs", "sum"])
def test_scores_from_moments_equal_scores_of_the_concatenated_group(way: str) -> None:
    from sslsearch.sparsity import moments, scores_from_moments

    a, b = torch.randn(6, 10), torch.randn(6, 3)  # two parts of the same 6 groups
    direct = criterion_scores(way, torch.cat([a, b], dim=1))
    torch.testing.assert_close(scores_from_moments(way, moments(a, 1) + moments(b, 1)), direct)

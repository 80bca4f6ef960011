from __future__ import annotations

import pytest
import torch
from torch import nn

from sslsearch.metrics import count_flops, count_params, measure_cost, measure_latency, size_mb
from sslsearch.models import create_model


class TinyNet(nn.Module):
    """conv3x3(2->4, pad 1) -> relu -> conv1x1(4->6) -> global pool -> linear(6->3)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.c2 = nn.Conv2d(4, 6, 1, bias=False)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c2(torch.relu(self.c1(x)))
        return self.fc(x.mean(dim=(2, 3)))


def test_flops_match_hand_count_of_a_tiny_conv_net() -> None:
    h = w = 5
    conv1 = 4 * 2 * 3 * 3 * h * w  # out channels * in channels * kernel * output positions
    conv2 = 6 * 4 * 1 * 1 * h * w
    fc = 6 * 3
    assert count_flops(TinyNet(), (2, h, w)) == conv1 + conv2 + fc


def test_params_and_size() -> None:
    net = TinyNet()
    params = 4 * 2 * 9 + 6 * 4 + 6 * 3 + 3
    assert count_params(net) == params
    assert size_mb(net) == pytest.approx(params * 4 / 1e6)


def test_size_counts_buffers_as_saved() -> None:
    bn = nn.BatchNorm2d(8)  # weight, bias, running mean/var (fp32) + num_batches_tracked (int64)
    assert size_mb(bn) == pytest.approx((4 * 8 * 4 + 8) / 1e6)


@pytest.mark.slow
def test_seed_baselines_vgg16_bn_and_resnet50() -> None:
    vgg = create_model("vgg16_bn", num_classes=100)
    assert 15.49e9 <= count_flops(vgg, (3, 224, 224)) <= 15.51e9
    assert count_params(vgg) / 1e6 == pytest.approx(134.68, abs=0.005)
    r50 = create_model("resnet50", num_classes=100)
    assert count_flops(r50, (3, 224, 224)) / 1e9 == pytest.approx(4.11, abs=0.005)
    assert count_params(r50) / 1e6 == pytest.approx(23.71, abs=0.005)


def test_latency_reports_its_conditions() -> None:
    lat = measure_latency(TinyNet(), (2, 5, 5), batch_size=3, repeats=4, threads=1)
    assert lat.median_ms > 0 and lat.p10_ms <= lat.median_ms <= lat.p90_ms
    assert (lat.batch_size, lat.device, lat.threads, lat.repeats) == (3, "cpu", 1, 4)


def test_measure_cost_bundles_everything() -> None:
    model = create_model("vgg_small", 10, in_channels=1)
    cost = measure_cost(model, (1, 8, 8), repeats=2)
    assert cost.flops == count_flops(model, (1, 8, 8))
    assert cost.params == count_params(model)
    assert cost.latency_ms is not None and cost.latency_batch_size == 1
    assert model.training  # measuring does not leave the model in eval mode

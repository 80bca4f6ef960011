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


def test_peak_activation_is_the_widest_layers_input_plus_output() -> None:
    from torch import nn

    from sslsearch.metrics import peak_activation_mb

    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10)
    )
    # conv 64 + 256, ReLU 256 + 256, Flatten 256 + 256, Linear 256 + 10 floats: 512 at most,
    # for one image whatever the batch given
    assert peak_activation_mb(model, torch.zeros(5, 1, 8, 8)) == 4 * 512 / 1e6


def test_every_objective_is_defined_once_and_a_users_adds_its_columns() -> None:
    from sslsearch.config import BUILTIN, defs_from_json, defs_to_json, objective
    from sslsearch.report import pareto_columns, reserved_columns, trial_columns

    assert objective("top1").direction == "max" and objective("flops").direction == "min"
    assert objective("flops", "max").direction == "max"  # a space's mode wins
    mine = objective("my_metrics:energy_mj", "min")
    assert (mine.name, mine.before, mine.measure) == (
        "energy_mj",
        "energy_mj_before",
        "my_metrics:energy_mj",
    )
    assert defs_from_json(defs_to_json([mine, BUILTIN["flops"]])) == [mine, BUILTIN["flops"]]
    with pytest.raises(KeyError, match="needs a direction"):
        objective("my_metrics:energy_mj")
    # every built-in has its column (and its dense column) in both tables, typed as defined
    import pyarrow as pa

    trial, pareto = dict(trial_columns()), dict(pareto_columns())
    for d in BUILTIN.values():
        typ = pa.int64() if d.column_type == "int64" else pa.float64()
        assert trial[d.name] == typ == pareto[d.name]
        assert d.before is None or trial[d.before] == typ
    assert "energy_mj" not in trial and "energy_mj" not in reserved_columns()
    assert {"energy_mj", "energy_mj_before"} <= set(dict(trial_columns([mine])))
    assert {"energy_mj", "energy_mj_before"} <= set(dict(pareto_columns([mine])))

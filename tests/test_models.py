from __future__ import annotations

import pytest
import torch

from sslsearch.errors import UserError
from sslsearch.models import create_model, get_model_spec, list_models, residual_blocks

SIZES = {"vgg16_bn": 32, "resnet50": 32, "resnet20": 8, "resnet56": 8, "vgg_small": 8}


def test_registry_lists_the_documented_models() -> None:
    assert set(list_models()) >= {"vgg16_bn", "resnet50", "resnet20", "resnet56", "vgg_small"}


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("num_classes", [3, 100])
def test_every_model_builds_and_runs_forward(name: str, num_classes: int) -> None:
    model = create_model(name, num_classes=num_classes).eval()
    size = SIZES.get(name, get_model_spec(name).min_image_size)
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, num_classes)


@pytest.mark.parametrize("name", ["vgg_small", "resnet20"])
def test_small_models_accept_one_channel_and_several_sizes(name: str) -> None:
    model = create_model(name, num_classes=10, in_channels=1).eval()
    for size in (8, 16, 32):
        with torch.no_grad():
            assert model(torch.randn(1, 1, size, size)).shape == (1, 10)


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(UserError) as e:
        create_model("vgg17_bn", num_classes=10)
    msg = str(e.value)
    assert "vgg17_bn" in msg and "did you mean 'vgg16_bn'" in msg
    for name in list_models():
        assert name in msg


def test_torchvision_architectures_are_unchanged() -> None:
    from torchvision import models as tvm

    ours = create_model("resnet50", num_classes=100)
    ref = tvm.resnet50(weights=None, num_classes=100)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in ref.state_dict().items()
    ]


@pytest.mark.parametrize(("name", "blocks"), [("resnet20", 9), ("resnet56", 27), ("resnet50", 16)])
def test_residual_blocks_are_found(name: str, blocks: int) -> None:
    assert len(residual_blocks(create_model(name, 10))) == blocks
    assert get_model_spec(name).residual


def test_vgg_has_no_residual_blocks() -> None:
    assert residual_blocks(create_model("vgg_small", 10)) == []
    assert not get_model_spec("vgg16_bn").residual


def test_every_torchvision_classification_name_resolves() -> None:
    from torchvision import models as tvm

    for name in tvm.list_models(module=tvm):
        spec = get_model_spec(name)  # resolving builds nothing
        assert spec.min_image_size >= 32


@pytest.mark.parametrize(
    ("name", "size"),
    [("mobilenet_v3_small", 32), ("squeezenet1_1", 32), ("shufflenet_v2_x0_5", 32)],
)
def test_torchvision_models_build_by_name_with_any_class_count(name: str, size: int) -> None:
    model = create_model(name, num_classes=7, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, size, size)).shape == (1, 7)


def test_unknown_name_mentions_torchvision() -> None:
    with pytest.raises(UserError, match="torchvision"):
        create_model("resnet51", num_classes=10)

"""The built-in architectures, and every torchvision classification model by its own name.

torchvision is imported where a model needs it, not here: importing it costs about 3 s (it
loads ``torch._dynamo``), paid by every trial process even for ``vgg_small`` or a user's model.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from sslsearch.models._registry import ModelSpec, register_model


def _tvm() -> Any:
    from torchvision import models

    return models


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    """Give the first conv (in module order: the stem of every torchvision model) new inputs."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, _replace_stem(m, in_channels))
            return


# smallest input each torchvision family's pooling or fixed position embeddings accept
_TV_MIN_SIZE = {"inception": 75, "vit": 224, "swin": 224, "maxvit": 224, "alexnet": 63}
_TV_RESIDUAL = ("resnet", "resnext", "wide_resnet")


def torchvision_spec(name: str) -> ModelSpec | None:
    """A spec for torchvision's classification model ``name`` (never downloads weights)."""
    tvm = _tvm()
    if name not in tvm.list_models(module=tvm):
        return None

    def build(num_classes: int, in_channels: int = 3) -> nn.Module:
        kwargs: dict[str, object] = {}
        if name in ("googlenet", "inception_v3"):
            # auxiliary heads run only in training and are not in the traced graph: a pruner
            # could not keep their inputs consistent
            kwargs.update(aux_logits=False, init_weights=True)
        model = tvm.get_model(name, weights=None, num_classes=num_classes, **kwargs)
        if in_channels != 3:
            _replace_first_conv(model, in_channels)
        return model

    size = next((v for k, v in _TV_MIN_SIZE.items() if name.startswith(k)), 32)
    return ModelSpec(
        build, name.startswith(_TV_RESIDUAL), size, f"torchvision {name} (not registered)"
    )


def _replace_stem(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    if in_channels == conv.in_channels:
        return conv
    return nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        bias=conv.bias is not None,
    )


@register_model(
    "vgg16_bn", residual=False, min_image_size=32, description="torchvision VGG-16 with BatchNorm"
)
def vgg16_bn(num_classes: int, in_channels: int = 3) -> nn.Module:
    model = _tvm().vgg16_bn(weights=None, num_classes=num_classes)
    model.features[0] = _replace_stem(model.features[0], in_channels)
    return model


@register_model("resnet50", residual=True, min_image_size=32, description="torchvision ResNet-50")
def resnet50(num_classes: int, in_channels: int = 3) -> nn.Module:
    model = _tvm().resnet50(weights=None, num_classes=num_classes)
    model.conv1 = _replace_stem(model.conv1, in_channels)
    return model


class CifarResNet(nn.Module):
    """He et al. (2016) CIFAR ResNet-(6n+2): 3 stages of n BasicBlocks, widths 16/32/64.

    Downsampling shortcuts are 1x1 conv + BN projections (option B), which keeps every channel
    prunable by a dependency graph (option A's zero padding is not an nn layer).
    """

    def __init__(self, depth: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.inplanes = 16
        self.layer1 = self._stage(16, n, stride=1)
        self.layer2 = self._stage(32, n, stride=2)
        self.layer3 = self._stage(64, n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        from torchvision.models.resnet import BasicBlock

        layers = []
        for i in range(blocks):
            s = stride if i == 0 else 1
            downsample = None
            if s != 1 or self.inplanes != planes:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, planes, 1, stride=s, bias=False),
                    nn.BatchNorm2d(planes),
                )
            layers.append(BasicBlock(self.inplanes, planes, stride=s, downsample=downsample))
            self.inplanes = planes
        return nn.Sequential(*layers)

    def forward(self, x):  # type: ignore[no-untyped-def]
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


@register_model(
    "resnet20", residual=True, min_image_size=4, description="CIFAR ResNet-20 (He et al.)"
)
def resnet20(num_classes: int, in_channels: int = 3) -> nn.Module:
    return CifarResNet(20, num_classes, in_channels)


@register_model(
    "resnet56", residual=True, min_image_size=4, description="CIFAR ResNet-56 (He et al.)"
)
def resnet56(num_classes: int, in_channels: int = 3) -> nn.Module:
    return CifarResNet(56, num_classes, in_channels)


class VGGSmall(nn.Module):
    """conv-BN-ReLU stacks 32-32-M-64-64-M-128-128-M, global average pool, linear.

    Sized for 8x8 (digits) to 32x32 (CIFAR) inputs on a CPU.
    """

    CFG: tuple[int | str, ...] = (32, 32, "M", 64, 64, "M", 128, 128, "M")

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in self.CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                assert isinstance(v, int)
                layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v)]
                layers.append(nn.ReLU(inplace=True))
                c = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


@register_model(
    "vgg_small", residual=False, min_image_size=8, description="small VGG for 8x8..32x32 inputs"
)
def vgg_small(num_classes: int, in_channels: int = 3) -> nn.Module:
    return VGGSmall(num_classes, in_channels)

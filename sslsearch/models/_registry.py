from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from sslsearch.errors import UserError
from sslsearch.imports import is_import_path
from sslsearch.registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    """What the rest of sslsearch may know about an architecture without building it."""

    builder: Callable[..., nn.Module]
    residual: bool  # has residual blocks, so depth_wise pruning applies
    min_image_size: int  # smallest input its pooling allows
    description: str


MODELS: Registry[ModelSpec] = Registry("model")


def register_model(
    name: str, *, residual: bool, min_image_size: int, description: str
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS.add(name, ModelSpec(fn, residual, min_image_size, description))
        return fn

    return deco


def list_models() -> list[str]:
    _load_builtin()
    return MODELS.names()


def get_model_spec(name: str) -> ModelSpec:
    """A registered model, a user's factory by import path (``my_models:small_cnn``), else any
    torchvision classification model by its torchvision name."""
    if is_import_path(name):
        from sslsearch.models._imported import imported_model_spec

        return imported_model_spec(name)
    _load_builtin()
    if name in MODELS:
        return MODELS.get(name)
    from sslsearch.models._zoo import torchvision_spec

    spec = torchvision_spec(name) if isinstance(name, str) else None
    if spec is None:
        try:
            MODELS.get(name)
        except UserError as e:
            raise UserError(f"{e} (or any torchvision classification model name)") from None
    assert spec is not None
    return spec


def create_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Build a freshly initialised model (never downloads weights).

    Args:
        name: a registered name (``list_models()``), any torchvision classification model
            (``torchvision.models.list_models(module=torchvision.models)``), e.g. "mobilenet_v2",
            or your own factory by import path, ``module:function`` (called with
            ``num_classes`` and ``in_channels``; the module is found beside the search space
            file, in the current directory or on the Python path).
        num_classes: outputs of the classifier.
        in_channels: image channels (the stem conv is replaced when not 3).

    Example:
        >>> model = create_model("resnet20", num_classes=10, in_channels=1)
        >>> mine = create_model("my_models:small_cnn", num_classes=10, in_channels=1)
    """
    spec = get_model_spec(name)
    if num_classes < 1:
        raise UserError(f"num_classes must be >= 1, got {num_classes}")
    if in_channels < 1:
        raise UserError(f"in_channels must be >= 1, got {in_channels}")
    return spec.builder(num_classes=num_classes, in_channels=in_channels)


def _load_builtin() -> None:
    # Importing the module registers the built-in models exactly once.
    from sslsearch.models import _zoo  # noqa: F401

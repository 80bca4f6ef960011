from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from sslsearch.errors import UserError
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
    _load_builtin()
    return MODELS.get(name)


def create_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Build a freshly initialised model (never downloads weights)."""
    spec = get_model_spec(name)
    if num_classes < 1:
        raise UserError(f"num_classes must be >= 1, got {num_classes}")
    if in_channels < 1:
        raise UserError(f"in_channels must be >= 1, got {in_channels}")
    return spec.builder(num_classes=num_classes, in_channels=in_channels)


def _load_builtin() -> None:
    # Importing the module registers the built-in models exactly once.
    from sslsearch.models import _zoo  # noqa: F401

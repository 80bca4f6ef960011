"""A model the user brings: ``arch: my_models:small_cnn``, a factory outside sslsearch.

The factory takes ``num_classes`` and ``in_channels`` (keywords) and returns an ``nn.Module``.
Its spec is what sslsearch cannot know without building it: no minimum input size (a forward
pass at the data's size checks it before a search starts: ``check_user_model``), and depth_wise
allowed when the built model has residual blocks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from sslsearch.errors import UserError
from sslsearch.imports import call_user, first_line, load_object
from sslsearch.models._blocks import residual_blocks
from sslsearch.models._registry import ModelSpec


@functools.lru_cache(maxsize=32)
def imported_model_spec(path: str) -> ModelSpec:
    """The spec of the factory ``path`` (imported once per process)."""
    factory = load_object(path, "arch")
    return ModelSpec(
        _checked(path, factory),
        residual=True,  # unknown until built: check_user_model decides before a search
        min_image_size=1,
        description=f"{path} (your factory: {getattr(factory, '__module__', '?')})",
    )


def _checked(path: str, factory: Callable[..., object]) -> Callable[..., nn.Module]:
    def build(num_classes: int, in_channels: int = 3) -> nn.Module:
        call = f"{path}(num_classes={num_classes}, in_channels={in_channels})"
        model = call_user(
            "arch", path, call, factory, num_classes=num_classes, in_channels=in_channels
        )
        if not isinstance(model, nn.Module):
            raise UserError(
                f"arch {path!r} returned {type(model).__name__}, not a torch.nn.Module "
                "(a factory takes num_classes and in_channels and returns the model)"
            )
        return model

    return build


def check_user_model(
    path: str, num_classes: int, in_channels: int, image_size: int, depth_wise: bool
) -> None:
    """Build the factory's model and run one forward pass at the data's shape, before anything
    starts: a factory that raises, returns no module, cannot take the input, gives the wrong
    number of outputs or lacks residual blocks for depth_wise is one UserError naming it."""
    model = imported_model_spec(path).builder(num_classes=num_classes, in_channels=in_channels)
    shape = (2, in_channels, image_size, image_size)
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(shape))
    except Exception as e:
        text = first_line(e) or type(e).__name__
        raise UserError(
            f"arch {path!r}: the model fails on a {'x'.join(map(str, shape[1:]))} input "
            f"({type(e).__name__}: {text})"
        ) from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(
            f"arch {path!r}: the model returns {got} for a batch of 2, expected (2, "
            f"{num_classes}) logits ({num_classes} classes)"
        )
    if depth_wise and not residual_blocks(model):
        raise UserError(
            f"depth_wise needs residual blocks (torchvision BasicBlock or Bottleneck); {path} "
            "has none"
        )

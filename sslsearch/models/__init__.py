"""Model registry: name -> constructor taking ``num_classes`` (and ``in_channels``).

``vgg16_bn`` and ``resnet50`` are torchvision's own architectures (the seed's); ``resnet20``,
``resnet56`` (He et al. 2016, CIFAR variant) and ``vgg_small`` are CPU-sized. Any torchvision
classifier by its name, and the user's own factory by import path (``my_models:small_cnn``).
"""

from __future__ import annotations

from sslsearch.models._blocks import (
    ResidualShortcut,
    is_residual_block,
    residual_blocks,
    residual_branch_parameters,
)
from sslsearch.models._imported import check_user_model
from sslsearch.models._io import (
    atomic_torch_save,
    load_model,
    model_from_payload,
    model_info,
    model_payload,
    safe_torch_load,
    save_model,
)
from sslsearch.models._registry import (
    MODELS,
    ModelSpec,
    create_model,
    get_model_spec,
    list_models,
    register_model,
)

__all__ = [
    "MODELS",
    "ModelSpec",
    "ResidualShortcut",
    "atomic_torch_save",
    "check_user_model",
    "create_model",
    "get_model_spec",
    "is_residual_block",
    "list_models",
    "load_model",
    "model_from_payload",
    "model_info",
    "model_payload",
    "register_model",
    "residual_blocks",
    "residual_branch_parameters",
    "safe_torch_load",
    "save_model",
]

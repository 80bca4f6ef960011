"""Names a config may use, known without importing torch.

The command line checks a space against these before it pays for importing torch and ray (about
5 s), so a typo costs a fraction of a second. The registries stay the source of truth for
building things; ``tests/test_config_names.py`` fails when this list and a registry disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sslsearch.config._typed import ConfigError
from sslsearch.imports import is_import_path
from sslsearch.vocabulary import SSL_FLOOR_RULES, SSL_STEP_RULES, SSL_TYPE_KEYS, SSL_WEIGHTINGS


@dataclass(frozen=True)
class ModelName:
    residual: bool  # has residual blocks (depth_wise applies)
    min_image_size: int  # smallest input its pooling allows
    input_size: int  # the input it is designed for: what `profile` measures by default


MODEL_NAMES: dict[str, ModelName] = {
    "resnet20": ModelName(residual=True, min_image_size=4, input_size=32),
    "resnet50": ModelName(residual=True, min_image_size=32, input_size=224),
    "resnet56": ModelName(residual=True, min_image_size=4, input_size=32),
    "vgg16_bn": ModelName(residual=False, min_image_size=32, input_size=224),
    "vgg_small": ModelName(residual=False, min_image_size=8, input_size=32),
}
# torchvision's classification models (``torchvision.models.list_models(module=...)``) as of the
# version below: a name here is accepted without importing torch. With another torchvision
# installed, names outside both lists are asked of torchvision itself (a torch import).
TORCHVISION_SNAPSHOT_VERSION = "0.29"
TORCHVISION_MODEL_NAMES = frozenset(
    {
        "alexnet",
        "convnext_base",
        "convnext_large",
        "convnext_small",
        "convnext_tiny",
        "densenet121",
        "densenet161",
        "densenet169",
        "densenet201",
        "efficientnet_b0",
        "efficientnet_b1",
        "efficientnet_b2",
        "efficientnet_b3",
        "efficientnet_b4",
        "efficientnet_b5",
        "efficientnet_b6",
        "efficientnet_b7",
        "efficientnet_v2_l",
        "efficientnet_v2_m",
        "efficientnet_v2_s",
        "googlenet",
        "inception_v3",
        "maxvit_t",
        "mnasnet0_5",
        "mnasnet0_75",
        "mnasnet1_0",
        "mnasnet1_3",
        "mobilenet_v2",
        "mobilenet_v3_large",
        "mobilenet_v3_small",
        "regnet_x_16gf",
        "regnet_x_1_6gf",
        "regnet_x_32gf",
        "regnet_x_3_2gf",
        "regnet_x_400mf",
        "regnet_x_800mf",
        "regnet_x_8gf",
        "regnet_y_128gf",
        "regnet_y_16gf",
        "regnet_y_1_6gf",
        "regnet_y_32gf",
        "regnet_y_3_2gf",
        "regnet_y_400mf",
        "regnet_y_800mf",
        "regnet_y_8gf",
        "resnet101",
        "resnet152",
        "resnet18",
        "resnet34",
        "resnet50",
        "resnext101_32x8d",
        "resnext101_64x4d",
        "resnext50_32x4d",
        "shufflenet_v2_x0_5",
        "shufflenet_v2_x1_0",
        "shufflenet_v2_x1_5",
        "shufflenet_v2_x2_0",
        "squeezenet1_0",
        "squeezenet1_1",
        "swin_b",
        "swin_s",
        "swin_t",
        "swin_v2_b",
        "swin_v2_s",
        "swin_v2_t",
        "vgg11",
        "vgg11_bn",
        "vgg13",
        "vgg13_bn",
        "vgg16",
        "vgg16_bn",
        "vgg19",
        "vgg19_bn",
        "vit_b_16",
        "vit_b_32",
        "vit_h_14",
        "vit_l_16",
        "vit_l_32",
        "wide_resnet101_2",
        "wide_resnet50_2",
    }
)
# dataset -> native image size (None: the files' own, imagefolder)
DATASET_NAMES: dict[str, int | None] = {
    "cifar10": 32,
    "cifar100": 32,
    "digits": 8,
    "imagefolder": None,
}
SSL_TYPE_NAMES = tuple(SSL_TYPE_KEYS)  # defined once, with the lambda keys each reads
PRUNE_TYPE_NAMES = ("channel_wise", "depth_wise", "filter_and_channel_wise", "filter_wise")
PRUNE_WAY_NAMES = ("group_lasso", "mean", "mean_abs", "sum", "sum_abs")


def _check(key: str, kind: str, value: Any, known: Any) -> None:
    if value not in known:
        from sslsearch.registry import unknown_name_message

        raise ConfigError(key, unknown_name_message(kind, value, sorted(known)))


def _torchvision_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torchvision")
    except PackageNotFoundError:
        return None


def _check_zoo_model(name: str) -> None:
    """A name outside the registered ones may be any torchvision classification model."""
    if name in TORCHVISION_MODEL_NAMES:
        return
    installed = _torchvision_version() or ""
    if not installed.startswith(TORCHVISION_SNAPSHOT_VERSION + "."):
        # another torchvision may know other models: ask it (imports torch, a few seconds)
        from sslsearch.errors import UserError
        from sslsearch.models import get_model_spec

        try:
            get_model_spec(name)
        except UserError as e:
            raise ConfigError("arch", str(e)) from None
        return
    import difflib

    close = difflib.get_close_matches(name, [*MODEL_NAMES, *TORCHVISION_MODEL_NAMES], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(
        "arch",
        f"unknown model {name!r}{hint}; known: {', '.join(sorted(MODEL_NAMES))}, or any "
        "torchvision classification model by its name (e.g. 'mobilenet_v2')",
    )


def _check_import_path(key: str, name: str) -> None:
    """The user's own factory: only its form here (importing it may import torch); the search
    imports and builds it before anything starts (``sslsearch.trial.check_user_parts``)."""
    from sslsearch.imports import import_path_problem

    problem = import_path_problem(name)
    if problem:
        raise ConfigError(key, problem)


def check_names(space: Any) -> None:
    """Raise ConfigError for the first unknown name in a SearchSpace (arch, dataset, params).

    Only names: combinations and input sizes are checked by ``sslsearch.trial.validate_space``,
    which the search runs as well.
    """
    from sslsearch.config._space import Choices

    if is_import_path(space.arch):
        _check_import_path("arch", space.arch)
    elif space.arch not in MODEL_NAMES:
        _check_zoo_model(space.arch)
    if is_import_path(space.data.name):
        _check_import_path("data.name", space.data.name)
    else:
        _check("data.name", "dataset", space.data.name, DATASET_NAMES)
    for param, kind, known in (
        ("ssl_type", "ssl type", SSL_TYPE_NAMES),
        ("ssl_weighting", "ssl weighting", tuple(SSL_WEIGHTINGS)),
        ("ssl_floor", "ssl floor rule", tuple(SSL_FLOOR_RULES)),
        ("ssl_step", "ssl step rule", tuple(SSL_STEP_RULES)),
        ("prune_type", "prune type", PRUNE_TYPE_NAMES),
        ("prune_way", "prune way", PRUNE_WAY_NAMES),
    ):
        spec = space.param_specs().get(param)
        values = spec.choices if isinstance(spec, Choices) else () if spec is None else (spec,)
        for v in values:
            _check(f"params.{param}", kind, v, known)

"""Names a config may use, known without importing torch.

The command line checks a space against these before it pays for importing torch and ray (about
5 s), so a typo costs a fraction of a second. The registries stay the source of truth for
building things; ``tests/test_config_names.py`` fails when this list and a registry disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sslsearch.config._typed import ConfigError


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
# dataset -> native image size (None: the files' own, imagefolder)
DATASET_NAMES: dict[str, int | None] = {
    "cifar10": 32,
    "cifar100": 32,
    "digits": 8,
    "imagefolder": None,
}
SSL_TYPE_NAMES = (
    "filter_wise",
    "channel_wise",
    "filter_and_channel_wise",
    "shape_wise",
    "depth_wise",
)
PRUNE_TYPE_NAMES = ("channel_wise", "depth_wise", "filter_and_channel_wise", "filter_wise")
PRUNE_WAY_NAMES = ("group_lasso", "mean", "mean_abs", "sum", "sum_abs")


def _check(key: str, kind: str, value: Any, known: Any) -> None:
    if value not in known:
        from sslsearch.registry import unknown_name_message

        raise ConfigError(key, unknown_name_message(kind, value, sorted(known)))


def check_names(space: Any) -> None:
    """Raise ConfigError for the first unknown name in a SearchSpace (arch, dataset, params).

    Only names: combinations and input sizes are checked by ``sslsearch.trial.validate_space``,
    which the search runs as well.
    """
    from sslsearch.config._space import Choices

    _check("arch", "model", space.arch, MODEL_NAMES)
    _check("data.name", "dataset", space.data.name, DATASET_NAMES)
    for param, kind, known in (
        ("ssl_type", "ssl type", SSL_TYPE_NAMES),
        ("prune_type", "prune type", PRUNE_TYPE_NAMES),
        ("prune_way", "prune way", PRUNE_WAY_NAMES),
    ):
        spec = space.param_specs().get(param)
        values = spec.choices if isinstance(spec, Choices) else () if spec is None else (spec,)
        for v in values:
            _check(f"params.{param}", kind, v, known)

"""Configuration: frozen dataclasses per concern, loaded from plain mappings or YAML."""

from __future__ import annotations

from sslsearch.config._names import (
    DATASET_NAMES,
    MODEL_NAMES,
    PRUNE_TYPE_NAMES,
    PRUNE_WAY_NAMES,
    SSL_TYPE_NAMES,
    ModelName,
    check_names,
)
from sslsearch.config._shipped import shipped_spaces, space_file, spaces_dir
from sslsearch.config._space import (
    OBJECTIVE_MODES,
    PARAM_TYPES,
    Budget,
    Choices,
    EarlyStopping,
    Economy,
    Objective,
    Range,
    Reference,
    Resources,
    Sampler,
    SearchSpace,
    apply_overrides,
    load_space,
    override_for,
    param_spec,
    read_yaml,
    space_from_mapping,
)
from sslsearch.config._trial import DataConfig, Recipe, TrialConfig
from sslsearch.config._typed import ConfigError, did_you_mean, from_mapping, to_mapping

__all__ = [
    "DATASET_NAMES",
    "MODEL_NAMES",
    "OBJECTIVE_MODES",
    "PARAM_TYPES",
    "PRUNE_TYPE_NAMES",
    "PRUNE_WAY_NAMES",
    "SSL_TYPE_NAMES",
    "Budget",
    "Choices",
    "ConfigError",
    "DataConfig",
    "EarlyStopping",
    "Economy",
    "ModelName",
    "Objective",
    "Range",
    "Recipe",
    "Reference",
    "Resources",
    "Sampler",
    "SearchSpace",
    "TrialConfig",
    "apply_overrides",
    "check_names",
    "did_you_mean",
    "from_mapping",
    "load_space",
    "override_for",
    "param_spec",
    "read_yaml",
    "shipped_spaces",
    "space_file",
    "space_from_mapping",
    "spaces_dir",
    "to_mapping",
]

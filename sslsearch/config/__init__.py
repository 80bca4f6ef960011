"""Configuration: frozen dataclasses per concern, loaded from plain mappings or YAML."""

from __future__ import annotations

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
    param_spec,
    read_yaml,
    space_from_mapping,
)
from sslsearch.config._trial import DataConfig, Recipe, TrialConfig
from sslsearch.config._typed import ConfigError, did_you_mean, from_mapping, to_mapping

__all__ = [
    "OBJECTIVE_MODES",
    "PARAM_TYPES",
    "Budget",
    "Choices",
    "ConfigError",
    "DataConfig",
    "EarlyStopping",
    "Economy",
    "Objective",
    "Range",
    "Recipe",
    "Reference",
    "Resources",
    "Sampler",
    "SearchSpace",
    "TrialConfig",
    "apply_overrides",
    "did_you_mean",
    "from_mapping",
    "load_space",
    "param_spec",
    "read_yaml",
    "space_from_mapping",
    "to_mapping",
]

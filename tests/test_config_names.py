"""The torch-free name lists the CLI checks spaces against agree with the registries."""

from __future__ import annotations

import pytest

from sslsearch.config import (
    DATASET_NAMES,
    MODEL_NAMES,
    PRUNE_TYPE_NAMES,
    PRUNE_WAY_NAMES,
    SSL_TYPE_NAMES,
    ConfigError,
    SearchSpace,
    check_names,
    space_from_mapping,
)
from sslsearch.data import get_dataset_spec, list_datasets
from sslsearch.models import get_model_spec, list_models
from sslsearch.pruning import list_prune_types
from sslsearch.sparsity import SSL_TYPES, list_criteria


def test_names_match_the_registries() -> None:
    assert sorted(MODEL_NAMES) == list_models()
    for name, known in MODEL_NAMES.items():
        spec = get_model_spec(name)
        assert (known.residual, known.min_image_size) == (spec.residual, spec.min_image_size)
        assert known.input_size >= spec.min_image_size
    assert sorted(DATASET_NAMES) == list_datasets()
    for name, size in DATASET_NAMES.items():
        assert size == get_dataset_spec(name).native_size
    assert set(SSL_TYPE_NAMES) == set(SSL_TYPES)
    assert set(PRUNE_TYPE_NAMES) == set(list_prune_types())
    assert set(PRUNE_WAY_NAMES) == set(list_criteria())


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"arch": "resnet21"}, "arch"),
        ({"data": {"name": "cifar11"}}, "data.name"),
        ({"params": {"prune_way": {"choices": ["mean", "l2"]}}}, "params.prune_way"),
        ({"params": {"ssl_type": "filterwise"}}, "params.ssl_type"),
        ({"params": {"prune_type": "filter"}}, "params.prune_type"),
    ],
)
def test_check_names_names_the_key(change: dict, key: str) -> None:  # type: ignore[type-arg]
    space = space_from_mapping(change)
    with pytest.raises(ConfigError) as e:
        check_names(space)
    assert e.value.key == key and "known:" in str(e.value)


def test_check_names_accepts_the_defaults() -> None:
    check_names(SearchSpace())


def test_torchvision_snapshot_matches_the_installed_torchvision() -> None:
    import torchvision
    import torchvision.models as tvm

    from sslsearch.config._names import TORCHVISION_MODEL_NAMES, TORCHVISION_SNAPSHOT_VERSION

    if not torchvision.__version__.startswith(TORCHVISION_SNAPSHOT_VERSION + "."):
        pytest.skip(f"snapshot is of torchvision {TORCHVISION_SNAPSHOT_VERSION}")
    assert set(tvm.list_models(module=tvm)) == TORCHVISION_MODEL_NAMES


def test_check_names_accepts_a_torchvision_model_by_its_name() -> None:
    # not registered, so the check asks torchvision (the zoo): any classification model works
    check_names(space_from_mapping({"arch": "mobilenet_v2"}))
    with pytest.raises(ConfigError) as e:
        check_names(space_from_mapping({"arch": "mobilenet_v9"}))
    assert e.value.key == "arch" and "mobilenet_v2" in str(e.value)

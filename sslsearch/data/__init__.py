"""Datasets registry: digits (embedded default), cifar10, cifar100, imagefolder, and the user's
own dataset function by import path (``my_data:load``, see ``_imported``).

Every dataset yields a train, a validation (carved from the training data; what the search
tunes on) and a test split. The test split is never used for tuning.
"""

from __future__ import annotations

from sslsearch.data._core import (
    DATASETS,
    DataConfig,
    Datasets,
    DatasetSpec,
    Split,
    TensorSplit,
    get_dataset_spec,
    list_datasets,
    load_datasets,
)

__all__ = [
    "DATASETS",
    "DataConfig",
    "DatasetSpec",
    "Datasets",
    "Split",
    "TensorSplit",
    "get_dataset_spec",
    "list_datasets",
    "load_datasets",
]

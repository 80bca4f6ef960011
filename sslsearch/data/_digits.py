"""scikit-learn's bundled 8x8 handwritten digits: the embedded default, no network needed."""

from __future__ import annotations

import torch

from sslsearch.data._core import (
    DATASETS,
    DataConfig,
    Datasets,
    DatasetSpec,
    stratified_split,
    tensor_datasets,
)

TEST_FRACTION = 0.2
TEST_SEED = 12345  # fixed: the test split never moves, whatever the search's seeds


def _load(cfg: DataConfig) -> Datasets:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # 0..16 intensities -> uint8 0..255, shape (N, 1, 8, 8)
    images = torch.from_numpy(bunch.images).mul(255.0 / 16.0).round().to(torch.uint8)
    images = images.unsqueeze(1).contiguous()
    labels = torch.from_numpy(bunch.target).long()
    rest, test = stratified_split(labels, TEST_FRACTION, TEST_SEED)
    return tensor_datasets(
        cfg,
        images[rest],
        labels[rest],
        images[test],
        labels[test],
        num_classes=10,
        pad=1,  # shift by up to one pixel; no flips: a flipped digit is another glyph
        flip=False,
    )


DATASETS.add(
    "digits",
    DatasetSpec(
        _load,
        num_classes=10,
        channels=1,
        native_size=8,
        description="scikit-learn's bundled 8x8 digits (1797 images, offline)",
    ),
)

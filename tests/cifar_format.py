"""Write a tiny archive in the real CIFAR "python version" pickle format (no network needed)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def write_cifar_archive(
    root: Path, variant: str = "cifar10", n_train: int = 50, n_test: int = 20, seed: int = 0
) -> Path:
    rng = np.random.default_rng(seed)
    if variant == "cifar10":
        folder, classes, key = root / "cifar-10-batches-py", 10, b"labels"
        train_files = [f"data_batch_{i}" for i in range(1, 6)]
        test_files = ["test_batch"]
    else:
        folder, classes, key = root / "cifar-100-python", 100, b"fine_labels"
        train_files, test_files = ["train"], ["test"]
    folder.mkdir(parents=True, exist_ok=True)

    def batch(n: int, offset: int) -> dict[bytes, object]:
        labels = [(offset + i) % classes for i in range(n)]
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        d: dict[bytes, object] = {b"data": data, key: labels, b"batch_label": b"synthetic"}
        if variant == "cifar100":
            d[b"coarse_labels"] = [lab % 20 for lab in labels]
        return d

    per = n_train // len(train_files)
    for i, name in enumerate(train_files):
        with (folder / name).open("wb") as f:
            pickle.dump(batch(per, i * per), f, protocol=2)
    for name in test_files:
        with (folder / name).open("wb") as f:
            pickle.dump(batch(n_test, 0), f, protocol=2)
    return folder

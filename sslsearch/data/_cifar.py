"""CIFAR-10/100 in torchvision's on-disk format (the "python version" pickles) or as an
image-folder tree (``<root>/cifar10/{train,test}/<class>/*.jpg``, decoded once: data._decoded).

Pickles are read with a restricted unpickler that only rebuilds numpy arrays and plain containers, so a
tampered archive cannot run code. Downloading happens only when the user asks (``download``).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from sslsearch.data._core import DATASETS, DataConfig, Datasets, DatasetSpec, tensor_datasets
from sslsearch.data._decoded import decode_tree
from sslsearch.errors import DataNotFoundError, UserError

_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR file")


def _read_batch(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            raw = _SafeUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise UserError(f"{path} is not a valid CIFAR batch file: {e}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path} is not a valid CIFAR batch file: expected a dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}


def _images(batch: dict[str, Any], path: Path) -> torch.Tensor:
    data = np.asarray(batch.get("data"))
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise UserError(f"{path}: 'data' must have shape (N, 3072), got {data.shape}")
    return torch.from_numpy(data.astype(np.uint8).reshape(-1, 3, 32, 32).copy())


class _Format(NamedTuple):
    folder: str
    train: list[str]
    test: list[str]
    label_key: str
    classes: int


_FORMATS = {
    "cifar10": _Format(
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        "labels",
        10,
    ),
    "cifar100": _Format("cifar-100-python", ["train"], ["test"], "fine_labels", 100),
}


def _load_files(folder: Path, files: list[str], key: str) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for name in files:
        batch = _read_batch(folder / name)
        if key not in batch:
            raise UserError(f"{folder / name}: no {key!r} entry; is this the right CIFAR variant?")
        xs.append(_images(batch, folder / name))
        ys.append(torch.as_tensor(np.asarray(batch[key]), dtype=torch.long))
    return torch.cat(xs), torch.cat(ys)


CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def _folder_root(root: Path, name: str) -> Path | None:
    """Where an image-folder copy lives: ``root/<name>/{train,test}`` or ``root/{train,test}``."""
    for base in (root / name, root):
        if (base / "train").is_dir() and (base / "test").is_dir():
            return base
    return None


def _from_folders(base: Path, classes: int) -> tuple[torch.Tensor, ...]:
    """The train and test trees decoded once (uint8 tensors, cached on disk: data._decoded)."""
    train = decode_tree(base / "train")
    test = decode_tree(base / "test")
    if len(train.classes) != classes or train.classes != test.classes:
        raise UserError(
            f"{base}: expected {classes} class folders, the same under train/ and test/; found "
            f"{len(train.classes)} under train/ and {len(test.classes)} under test/"
        )
    if classes == len(CIFAR10_CLASSES) and train.classes != CIFAR10_CLASSES:
        raise UserError(
            f"{base}: class folders {', '.join(train.classes)} are not CIFAR-10's "
            f"({', '.join(CIFAR10_CLASSES)})"
        )
    if tuple(train.images.shape[1:]) != (3, 32, 32):
        raise UserError(f"{base}: images are {tuple(train.images.shape[1:])}, not 3x32x32")
    return train.images, train.labels, test.images, test.labels


def _not_found(name: str, root: Path, folder: Path) -> DataNotFoundError:
    return DataNotFoundError(
        f"{name} not found under {root}: put torchvision's python version in {folder} "
        f"(`sslsearch trial --dataset {name} --download` or "
        f"torchvision.datasets.{name.upper()}('{root}', download=True), needs network) or an "
        f"image-folder copy in {root / name}/train/<class>/ and {root / name}/test/<class>/, "
        "or point data.root at where it is"
    )


def _loader(name: str) -> Any:
    folder_name, train_files, test_files, key, classes = _FORMATS[name]

    def load(cfg: DataConfig) -> Datasets:
        root = Path(cfg.root).expanduser()
        folder = root / folder_name
        missing = [f for f in train_files + test_files if not (folder / f).is_file()]
        tree = _folder_root(root, name) if missing else None
        if missing and tree is None and cfg.download:
            _download(name, root)
            missing = [f for f in train_files + test_files if not (folder / f).is_file()]
        if missing and tree is None:
            raise _not_found(name, root, folder)
        if tree is not None:
            xtr, ytr, xte, yte = _from_folders(tree, classes)
        else:
            xtr, ytr = _load_files(folder, train_files, key)
            xte, yte = _load_files(folder, test_files, key)
        if int(ytr.max()) >= classes or int(ytr.min()) < 0:
            raise UserError(f"{folder}: labels outside 0..{classes - 1}")
        return tensor_datasets(cfg, xtr, ytr, xte, yte, num_classes=classes, pad=4, flip=True)

    return load


def _download(name: str, root: Path) -> None:
    from torchvision import datasets as tvd

    cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
    try:
        cls(str(root), train=True, download=True)
    except Exception as e:  # network errors come in many types
        raise DataNotFoundError(f"could not download {name} into {root}: {e}") from None


for _name, _desc in (
    ("cifar10", "CIFAR-10 (32x32, 10 classes)"),
    ("cifar100", "CIFAR-100 (32x32, 100 classes)"),
):
    DATASETS.add(
        _name,
        DatasetSpec(
            _loader(_name),
            num_classes=_FORMATS[_name].classes,
            channels=3,
            native_size=32,
            description=_desc,
        ),
    )

"""A dataset the user builds in code: ``data: {name: my_data:load}``.

``load(root)`` runs on every node with that node's ``data.root`` and returns torch Datasets of
``(image, label)`` items (image: a float tensor C x H x W, as the model should see it; label:
an int): ``(train, test)``, or ``(train, test, train_eval)`` where ``train_eval`` holds the
training items without random augmentation (the validation split and BatchNorm recalibration
read it; without it they read ``train`` as it is). Validation is carved from the training items
by the same stratified split as every dataset (``data.val_fraction``, ``data.split_seed``);
the test split is never used for tuning.

Items are used as the Dataset returns them: sslsearch adds no augmentation and no
normalisation (``data.augment: false`` trains on ``train_eval``); ``data.image_size`` resizes
batches when set.
Class count: the Dataset's ``classes`` if it has them, else the largest label + 1. Labels for
the split are read from a ``targets`` attribute when there is one, else from every item once.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Subset

from sslsearch.config import DataConfig
from sslsearch.data._core import Datasets, DatasetSpec, LoaderSplit, stratified_split
from sslsearch.errors import UserError
from sslsearch.imports import call_user, load_object

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=32)
def imported_dataset_spec(path: str) -> DatasetSpec:
    """The spec of the dataset function ``path`` (imported once per process)."""
    fn = load_object(path, "data.name")
    return DatasetSpec(
        functools.partial(_load, path, fn),
        num_classes=0,  # known once loaded
        channels=0,
        native_size=None,
        description=f"{path} (your dataset function: {getattr(fn, '__module__', '?')})",
    )


def _call(path: str, fn: Callable[..., Any], root: str) -> tuple[Any, Any, Any]:
    out = call_user("data.name", path, f"{path}({root!r})", fn, root)
    if not isinstance(out, (tuple, list)) or len(out) not in (2, 3):
        raise UserError(
            f"data.name {path!r} returned {type(out).__name__}; it must return (train, test) "
            "torch Datasets, or (train, test, train_eval)"
        )
    for name, ds in zip(("train", "test", "train_eval"), out):
        if not (hasattr(ds, "__getitem__") and hasattr(ds, "__len__")):
            raise UserError(
                f"data.name {path!r}: its {name} is a {type(ds).__name__}, not a torch Dataset "
                "(needs __getitem__ and __len__)"
            )
        if len(ds) == 0:
            raise UserError(f"data.name {path!r}: its {name} dataset is empty")
    train, test = out[0], out[1]
    train_eval = out[2] if len(out) == 3 else train
    if len(train_eval) != len(train):
        raise UserError(
            f"data.name {path!r}: train_eval has {len(train_eval)} items, train {len(train)}; "
            "it must be the same items without augmentation"
        )
    return train, test, train_eval


def _labels(ds: Any) -> torch.Tensor:
    targets = getattr(ds, "targets", None)
    if targets is not None and len(targets) == len(ds):
        return torch.as_tensor(list(targets) if not torch.is_tensor(targets) else targets).long()
    return torch.tensor([int(ds[i][1]) for i in range(len(ds))], dtype=torch.long)


def _image_shape(path: str, ds: Any) -> Sequence[int]:
    x = ds[0][0]
    if not torch.is_tensor(x) or x.dim() != 3:
        got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise UserError(
            f"data.name {path!r}: an item's image is {got}; it must be a C x H x W tensor "
            "(e.g. torchvision.transforms.ToTensor())"
        )
    if x.shape[1] != x.shape[2]:
        raise UserError(
            f"data.name {path!r}: images are {x.shape[1]}x{x.shape[2]}; sslsearch measures "
            "square inputs (crop or resize them in the Dataset, or set data.image_size)"
        )
    return tuple(int(s) for s in x.shape)


def _load(path: str, fn: Callable[..., Any], cfg: DataConfig) -> Datasets:
    train, test, train_eval = _call(path, fn, cfg.root)
    channels, height, _ = _image_shape(path, train_eval)
    labels = _labels(train_eval)
    classes = getattr(train, "classes", None)
    num_classes = len(classes) if classes else int(labels.max()) + 1
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise UserError(
            f"data.name {path!r}: labels must be 0..{num_classes - 1}, got "
            f"{int(labels.min())}..{int(labels.max())}"
        )
    keep, val = stratified_split(labels, cfg.val_fraction, cfg.split_seed)
    if len(val) == 0 or len(keep) == 0:
        raise UserError(
            f"data.name {path!r}: {len(labels)} training items are too few to hold out "
            f"val_fraction={cfg.val_fraction} of every class"
        )
    out = cfg.image_size
    keep_list, val_list = keep.tolist(), val.tolist()
    log.info(
        "%s: %d train, %d val, %d test items, %d classes, %dx%dx%d",
        path,
        len(keep_list),
        len(val_list),
        len(test),
        num_classes,
        channels,
        height,
        height,
    )
    val_view = Subset(train_eval, val_list)
    return Datasets(
        # one process: a user's Dataset may hold open files or state that workers would copy
        train=LoaderSplit(Subset(train, keep_list), Subset(train_eval, keep_list), 0, out),
        val=LoaderSplit(val_view, val_view, 0, out),
        test=LoaderSplit(test, test, 0, out),
        num_classes=num_classes,
        channels=channels,
        image_size=out or height,
    )

"""Any image classification tree: <root>/train/<class>/*.jpg and <root>/test (or val)/<class>/.

Images are used at their own size unless ``image_size`` says otherwise (upscaling a 32x32
dataset to 224 would cost 49x the compute for no information): the size is the shorter side of
the training images, the median over a sample when they differ.
"""

from __future__ import annotations

import logging
import os
import statistics
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import Subset

from sslsearch.data._core import (
    DATASETS,
    DataConfig,
    Datasets,
    DatasetSpec,
    LoaderSplit,
    stratified_split,
    subset_per_class,
    tensor_datasets,
)
from sslsearch.data._decoded import decode_tree
from sslsearch.errors import DataNotFoundError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIZE_SAMPLE = 64  # images opened to find the dataset's own size

log = logging.getLogger(__name__)


def own_size(paths: list[str]) -> int:
    """The shorter side of the images (median over an evenly spread sample of them)."""
    from PIL import Image

    step = max(1, len(paths) // SIZE_SAMPLE)
    sides = []
    for p in paths[::step][:SIZE_SAMPLE]:
        with Image.open(p) as im:
            sides.append(min(im.size))
    return int(statistics.median_low(sides))


def _pick_size(requested: int | None, own: int, root: Path) -> int:
    if requested is None:
        log.info("imagefolder %s: using the images' own size, %dx%d", root, own, own)
        return own
    if requested > own:
        log.warning(
            "imagefolder %s: images are %dx%d; image_size %d upscales them (%.1fx the pixels "
            "and the compute; leave image_size unset to use their own size)",
            root,
            own,
            own,
            requested,
            (requested / own) ** 2,
        )
    return requested


def _load(cfg: DataConfig) -> Datasets:
    from torchvision import datasets as tvd
    from torchvision import transforms as T

    root = Path(cfg.root).expanduser()
    train_dir = root / "train"
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        raise DataNotFoundError(
            f"imagefolder not found: looked for {train_dir} and {root / 'test'} (or "
            f"{root / 'val'}), each holding one sub-folder of images per class"
        )
    try:
        train_aug = tvd.ImageFolder(str(train_dir))
        train_eval = tvd.ImageFolder(str(train_dir))
        test = tvd.ImageFolder(str(test_dir))
        size = _pick_size(cfg.image_size, own_size([s[0] for s in train_aug.samples]), root)
    except (FileNotFoundError, RuntimeError, OSError) as e:
        raise DataNotFoundError(f"imagefolder at {root}: {e}") from None
    if test.classes != train_aug.classes:
        raise DataNotFoundError(
            f"imagefolder at {root}: {test_dir} has other classes than {train_dir}"
        )
    if cfg.in_memory:
        return _in_memory(cfg, train_dir, test_dir, size, len(train_aug.classes))
    norm = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = T.Compose(
        [T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), norm]
        if cfg.augment
        else [T.Resize(size), T.CenterCrop(size), T.ToTensor(), norm]
    )
    # ImageNet's resize-then-crop margin (256/224) only when resizing anyway
    resize = size if cfg.image_size is None else int(size * 256 / 224)
    eval_tf = T.Compose([T.Resize(resize), T.CenterCrop(size), T.ToTensor(), norm])
    train_aug.transform = train_tf
    train_eval.transform = test.transform = eval_tf
    labels = torch.tensor(train_aug.targets)
    pool = torch.arange(len(labels))
    if cfg.per_class is not None:
        pool = subset_per_class(labels, cfg.per_class, cfg.split_seed)
    keep, val = stratified_split(labels[pool], cfg.val_fraction, cfg.split_seed)
    keep, val = pool[keep], pool[val]
    workers = min(4, max(0, (os.cpu_count() or 1) - 1))
    return Datasets(
        train=LoaderSplit(
            Subset(train_aug, keep.tolist()), Subset(train_eval, keep.tolist()), workers
        ),
        val=LoaderSplit(
            Subset(train_eval, val.tolist()), Subset(train_eval, val.tolist()), workers
        ),
        test=LoaderSplit(test, test, workers),
        num_classes=len(train_aug.classes),
        channels=3,
        image_size=size,
    )


def _in_memory(
    cfg: DataConfig, train_dir: Path, test_dir: Path, size: int, classes: int
) -> Datasets:
    """Decoded once into uint8 tensors (data._decoded), augmented like CIFAR: shifts by up to
    an eighth of the side (padded crops) and horizontal flips."""
    train = decode_tree(train_dir, size)
    test = decode_tree(test_dir, size)
    return tensor_datasets(
        replace(cfg, image_size=size),
        train.images,
        train.labels,
        test.images,
        test.labels,
        num_classes=classes,
        pad=max(1, size // 8),
        flip=True,
    )


DATASETS.add(
    "imagefolder",
    DatasetSpec(
        _load,
        num_classes=0,  # read from the folder
        channels=3,
        native_size=None,
        description="<root>/train/<class>/* and <root>/test|val/<class>/* image files",
    ),
)

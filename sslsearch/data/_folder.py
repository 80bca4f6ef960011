"""Any image classification tree: <root>/train/<class>/*.jpg and <root>/test (or val)/<class>/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from sslsearch.data._core import (
    DATASETS,
    Batch,
    DataConfig,
    Datasets,
    DatasetSpec,
    stratified_split,
)
from sslsearch.errors import DataNotFoundError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_SIZE = 224


class FolderSplit:
    """Files decoded by DataLoader workers; train-time and eval-time transforms kept apart."""

    def __init__(self, train_view: object, eval_view: object, num_workers: int) -> None:
        self.train_view = train_view
        self.eval_view = eval_view
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.eval_view)  # type: ignore[arg-type]

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool,
        augment: bool,
        seed: int,
        device: torch.device,
    ) -> Iterator[Batch]:
        gen = torch.Generator().manual_seed(seed)
        pin = device.type == "cuda"
        loader: DataLoader[Any] = DataLoader(
            self.train_view if augment else self.eval_view,  # type: ignore[arg-type]
            batch_size=batch_size,
            shuffle=shuffle,
            generator=gen,
            num_workers=self.num_workers,
            pin_memory=pin,
            persistent_workers=False,
            prefetch_factor=4 if self.num_workers else None,
        )
        for x, y in loader:
            yield x.to(device, non_blocking=pin), y.to(device, non_blocking=pin)


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
    size = cfg.image_size or DEFAULT_SIZE
    norm = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = T.Compose(
        [T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), norm]
        if cfg.augment
        else [T.Resize(size), T.CenterCrop(size), T.ToTensor(), norm]
    )
    eval_tf = T.Compose([T.Resize(int(size * 256 / 224)), T.CenterCrop(size), T.ToTensor(), norm])
    try:
        train_aug = tvd.ImageFolder(str(train_dir), transform=train_tf)
        train_eval = tvd.ImageFolder(str(train_dir), transform=eval_tf)
        test = tvd.ImageFolder(str(test_dir), transform=eval_tf)
    except (FileNotFoundError, RuntimeError) as e:
        raise DataNotFoundError(f"imagefolder at {root}: {e}") from None
    if test.classes != train_aug.classes:
        raise DataNotFoundError(
            f"imagefolder at {root}: {test_dir} has other classes than {train_dir}"
        )
    labels = torch.tensor(train_aug.targets)
    keep, val = stratified_split(labels, cfg.val_fraction, cfg.split_seed)
    workers = min(4, max(0, (os.cpu_count() or 1) - 1))
    return Datasets(
        train=FolderSplit(
            Subset(train_aug, keep.tolist()), Subset(train_eval, keep.tolist()), workers
        ),
        val=FolderSplit(
            Subset(train_eval, val.tolist()), Subset(train_eval, val.tolist()), workers
        ),
        test=FolderSplit(test, test, workers),
        num_classes=len(train_aug.classes),
        channels=3,
        image_size=size,
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

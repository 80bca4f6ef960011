from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from sslsearch.config import DataConfig
from sslsearch.errors import UserError
from sslsearch.imports import is_import_path
from sslsearch.registry import Registry

Batch = tuple[torch.Tensor, torch.Tensor]


class Split(Protocol):
    """A split a trainer can iterate over: normalised float batches on ``device``."""

    def __len__(self) -> int: ...

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool,
        augment: bool,
        seed: int,
        device: torch.device,
    ) -> Iterator[Batch]: ...


@dataclass
class Datasets:
    train: Split
    val: Split
    test: Split
    num_classes: int
    channels: int
    image_size: int  # what the model sees


@dataclass(frozen=True)
class DatasetSpec:
    loader: Callable[[DataConfig], Datasets]
    num_classes: int
    channels: int
    native_size: int | None  # None: varies (imagefolder)
    description: str


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def list_datasets() -> list[str]:
    _load_builtin()
    return DATASETS.names()


def get_dataset_spec(name: str) -> DatasetSpec:
    """A registered dataset, or the user's dataset function by import path (``my_data:load``)."""
    if is_import_path(name):
        from sslsearch.data._imported import imported_dataset_spec

        return imported_dataset_spec(name)
    _load_builtin()
    return DATASETS.get(name)


def load_datasets(cfg: DataConfig) -> Datasets:
    """Load (once per process: trials reuse workers) the train/val/test splits of ``cfg``."""
    get_dataset_spec(cfg.name)
    return _load_cached(cfg)


@functools.lru_cache(maxsize=4)
def _load_cached(cfg: DataConfig) -> Datasets:
    return get_dataset_spec(cfg.name).loader(cfg)


def _load_builtin() -> None:
    from sslsearch.data import _cifar, _digits, _folder  # noqa: F401


class TensorSplit:
    """An in-memory split: uint8 images (N, C, H, W) and int64 labels.

    Batches are built with tensor ops (no worker processes): augmentation (random shifts via
    padded crops, optional horizontal flips), resizing and normalisation run on ``device``.
    Shuffling and augmentation draw from a generator seeded per call, so an epoch is a pure
    function of its seed: resuming mid-training replays exactly the same batches.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        mean: torch.Tensor,
        std: torch.Tensor,
        out_size: int,
        pad: int,
        flip: bool,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError("images must be a uint8 tensor of shape (N, C, H, W)")
        if len(images) != len(labels):
            raise ValueError("images and labels differ in length")
        self.images = images
        self.labels = labels.long()
        self.mean = mean.view(1, -1, 1, 1)
        self.std = std.view(1, -1, 1, 1)
        self.out_size = out_size
        self.pad = pad
        self.flip = flip
        self._resident: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> TensorSplit:
        return TensorSplit(
            self.images[index],
            self.labels[index],
            mean=self.mean.flatten(),
            std=self.std.flatten(),
            out_size=self.out_size,
            pad=self.pad,
            flip=self.flip,
        )

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
        n = len(self)
        order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
        mean, std = self.mean.to(device), self.std.to(device)
        images, labels = self._on(device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size].to(images.device)
            x = images[idx].float().div_(255.0)
            y = labels[idx]
            if augment:
                x = self._augment(x, gen)
            if x.shape[-1] != self.out_size or x.shape[-2] != self.out_size:
                x = F.interpolate(
                    x, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False
                )
            yield (x - mean) / std, y

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The uint8 images and labels, copied once to a GPU (CIFAR-10 is 150 MB there):
        batches are then gathered on the device, with no host-to-device copy per step."""
        if device.type == "cpu":
            return self.images, self.labels
        if device not in self._resident:
            self._resident[device] = (self.images.to(device), self.labels.to(device))
        return self._resident[device]

    def _augment(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        if self.pad > 0:
            p = self.pad
            padded = F.pad(x, (p, p, p, p))
            dx = torch.randint(0, 2 * p + 1, (b,), generator=gen)
            dy = torch.randint(0, 2 * p + 1, (b,), generator=gen)
            # Gather per-sample crops with one indexing op (no Python loop over the batch).
            rows = (dy.view(b, 1) + torch.arange(h).view(1, h)).to(x.device)
            cols = (dx.view(b, 1) + torch.arange(w).view(1, w)).to(x.device)
            bi = torch.arange(b, device=x.device).view(b, 1, 1)
            x = padded.permute(0, 2, 3, 1)[bi, rows.view(b, h, 1), cols.view(b, 1, w)]
            x = x.permute(0, 3, 1, 2)
        if self.flip:
            flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
            x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
        return x.contiguous()


def stratified_split(
    labels: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (rest, held_out), holding out ``fraction`` of every class, reproducibly."""
    gen = torch.Generator().manual_seed(seed)
    rest, held = [], []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        k = max(1, math.floor(len(idx) * fraction + 0.5)) if len(idx) > 1 else 0
        held.append(idx[:k])
        rest.append(idx[k:])
    return torch.cat(rest).sort().values, torch.cat(held).sort().values


def subset_per_class(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Sorted indices of ``per_class`` items of every class, drawn at random with ``seed``:
    the same seed gives the same subset, and a larger ``per_class`` keeps the smaller one's."""
    gen = torch.Generator().manual_seed(seed)
    picked = []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) < per_class:
            raise UserError(
                f"per_class={per_class} but class {int(c)} has only {len(idx)} training images"
            )
        picked.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]])
    return torch.cat(picked).sort().values


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = images.float().div(255.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return mean, std


def tensor_datasets(
    cfg: DataConfig,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    num_classes: int,
    pad: int,
    flip: bool,
) -> Datasets:
    """Subset train (``per_class``), carve validation from it, normalise with train
    statistics, wrap as TensorSplits."""
    native = train_images.shape[-1]
    out_size = cfg.image_size or native
    if cfg.per_class is not None:
        chosen = subset_per_class(train_labels, cfg.per_class, cfg.split_seed)
        train_images, train_labels = train_images[chosen], train_labels[chosen]
    keep, val = stratified_split(train_labels, cfg.val_fraction, cfg.split_seed)
    if len(val) == 0 or len(keep) == 0:
        raise UserError(
            f"{cfg.name}: {len(train_labels)} training images are too few to hold out "
            f"val_fraction={cfg.val_fraction} of every class"
        )
    mean, std = channel_stats(train_images[keep])
    full = TensorSplit(
        train_images, train_labels, mean=mean, std=std, out_size=out_size, pad=pad, flip=flip
    )
    test = TensorSplit(
        test_images, test_labels, mean=mean, std=std, out_size=out_size, pad=pad, flip=flip
    )
    return Datasets(
        train=full.subset(keep),
        val=full.subset(val),
        test=test,
        num_classes=num_classes,
        channels=train_images.shape[1],
        image_size=out_size,
    )


class LoaderSplit:
    """A torch Dataset as a split: batches from a DataLoader in a seeded order, train-time and
    eval-time views kept apart (``augment`` picks the train view). Images become float and,
    with ``out_size``, are resized to it on the device; labels become int64."""

    def __init__(
        self, train_view: Any, eval_view: Any, num_workers: int, out_size: int | None = None
    ) -> None:
        self.train_view = train_view
        self.eval_view = eval_view
        self.num_workers = num_workers
        self.out_size = out_size

    def __len__(self) -> int:
        return len(self.eval_view)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool,
        augment: bool,
        seed: int,
        device: torch.device,
    ) -> Iterator[Batch]:
        from torch.utils.data import DataLoader

        gen = torch.Generator().manual_seed(seed)
        pin = device.type == "cuda"
        loader: DataLoader[Any] = DataLoader(
            self.train_view if augment else self.eval_view,
            batch_size=batch_size,
            shuffle=shuffle,
            generator=gen,
            num_workers=self.num_workers,
            pin_memory=pin,
            persistent_workers=False,
            prefetch_factor=4 if self.num_workers else None,
        )
        size = self.out_size
        for x, y in loader:
            x = x.to(device, non_blocking=pin).float()
            if size is not None and tuple(x.shape[-2:]) != (size, size):
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            yield x, y.to(device, non_blocking=pin).long()

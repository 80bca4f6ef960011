"""The CPU tier's data keys: a stratified per-class subset, CIFAR as an image-folder tree, and
the decoded-tensor cache (reused, rebuilt when the source changes). Tiny images, no network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from sslsearch.config import ConfigError, DataConfig
from sslsearch.data import load_datasets
from sslsearch.data._cifar import CIFAR10_CLASSES as CIFAR10
from sslsearch.data._core import subset_per_class
from sslsearch.data._decoded import decode_tree
from sslsearch.errors import DataNotFoundError, UserError


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSLSEARCH_CACHE", str(tmp_path / "cache"))


def _tree(root: Path, classes: tuple[str, ...], per_class: int, side: int = 32) -> None:
    from PIL import Image

    for c, name in enumerate(classes):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            # the class in the red channel, the index in the green one: decoding is checkable
            Image.new("RGB", (side, side), (c * 20, i * 10, 7)).save(d / f"{i:04d}.png")


def _cifar_tree(root: Path, train: int = 6, test: int = 2) -> Path:
    base = root / "cifar10"
    _tree(base / "train", CIFAR10, train)
    _tree(base / "test", CIFAR10, test)
    return base


def test_subset_is_stratified_seeded_and_nested() -> None:
    labels = torch.arange(100) % 4  # 25 per class
    a = subset_per_class(labels, 5, seed=3)
    assert torch.equal(a, subset_per_class(labels, 5, seed=3))
    assert not torch.equal(a, subset_per_class(labels, 5, seed=4))
    assert torch.bincount(labels[a]).tolist() == [5, 5, 5, 5]
    bigger = subset_per_class(labels, 10, seed=3)
    assert set(a.tolist()) <= set(bigger.tolist())  # growing N keeps the smaller subset
    with pytest.raises(UserError, match="only 25"):
        subset_per_class(labels, 26, seed=0)


def test_cifar10_image_folder_layout_with_a_per_class_subset(tmp_path: Path) -> None:
    _cifar_tree(tmp_path)
    cfg = DataConfig("cifar10", root=str(tmp_path), per_class=5, val_fraction=0.2, split_seed=1)
    ds = load_datasets(cfg)
    assert ds.num_classes == 10 and ds.image_size == 32 and ds.channels == 3
    assert len(ds.train) == 40 and len(ds.val) == 10 and len(ds.test) == 20
    for split, n in ((ds.train, 4), (ds.val, 1), (ds.test, 2)):
        assert torch.bincount(split.labels, minlength=10).tolist() == [n] * 10  # type: ignore[attr-defined]
    # labels follow the class folders in CIFAR-10's order (red channel = class * 20)
    red = ds.test.images[:, 0, 0, 0].long()  # type: ignore[attr-defined]
    assert torch.equal(red, ds.test.labels * 20)  # type: ignore[attr-defined]
    again = load_datasets(
        DataConfig(
            "cifar10",
            root=str(tmp_path),
            per_class=5,
            split_seed=1,
            val_fraction=0.2,
            image_size=32,
        )
    )
    assert torch.equal(again.train.images, ds.train.images)  # type: ignore[attr-defined]


def test_per_class_is_checked() -> None:
    with pytest.raises(ConfigError, match="per_class"):
        DataConfig("cifar10", per_class=1).check()


def test_decoded_cache_is_reused_then_rebuilt_when_the_source_changes(tmp_path: Path) -> None:
    root = tmp_path / "train"
    _tree(root, ("a", "b"), 3, side=8)
    first = decode_tree(root)
    assert first.images.shape == (6, 3, 8, 8) and first.classes == ("a", "b")
    files = list((tmp_path / "cache" / "data").glob("*.pt"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    again = decode_tree(root)  # from the cache: the file is read, not written
    assert torch.equal(again.images, first.images) and files[0].stat().st_mtime_ns == stamp
    from PIL import Image

    Image.new("RGB", (8, 8), (255, 255, 255)).save(root / "b" / "0001.png")  # rewritten
    os.utime(root / "b" / "0001.png", ns=(1, 1))  # any other modification time is a change
    changed = decode_tree(root)
    assert int(changed.images[4, 0, 0, 0]) == 255  # the new pixels, not the cached ones
    assert len(list((tmp_path / "cache" / "data").glob("*.pt"))) == 2


def test_damaged_cache_is_decoded_again(tmp_path: Path) -> None:
    root = tmp_path / "train"
    _tree(root, ("a", "b"), 2, side=8)
    decode_tree(root)
    (cache,) = (tmp_path / "cache" / "data").glob("*.pt")
    cache.write_bytes(b"not a tensor file")
    assert decode_tree(root).images.shape == (4, 3, 8, 8)


def test_imagefolder_in_memory_decodes_once_at_the_asked_size(tmp_path: Path) -> None:
    _tree(tmp_path / "train", ("cat", "dog"), 10, side=20)
    _tree(tmp_path / "test", ("cat", "dog"), 3, side=20)
    cfg = DataConfig("imagefolder", root=str(tmp_path), image_size=12, in_memory=True, per_class=5)
    ds = load_datasets(cfg)
    assert ds.image_size == 12 and len(ds.train) + len(ds.val) == 10 and len(ds.test) == 6
    x, y = next(ds.train.batches(4, shuffle=True, augment=True, seed=0, device=torch.device("cpu")))
    assert x.shape == (4, 3, 12, 12) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_missing_cifar10_says_where_to_put_it_and_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as e:
        load_datasets(DataConfig("cifar10", root=str(tmp_path / "nowhere")))
    msg = str(e.value)
    assert "\n" not in msg
    assert str(tmp_path / "nowhere" / "cifar10") + "/train/<class>/" in msg  # the folder layout
    assert "cifar-10-batches-py" in msg and "download" in msg  # and torchvision's


def test_cifar10_folder_with_other_classes_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "cifar10"
    other = tuple(f"c{i}" for i in range(10))
    _tree(base / "train", other, 2)
    _tree(base / "test", other, 1)
    with pytest.raises(UserError, match="not CIFAR-10's"):
        load_datasets(DataConfig("cifar10", root=str(tmp_path)))

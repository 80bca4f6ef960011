from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sslsearch.config import DataConfig
from sslsearch.data import list_datasets, load_datasets
from sslsearch.errors import DataNotFoundError, UserError

from .cifar_format import write_cifar_archive


def test_registry() -> None:
    assert set(list_datasets()) == {"digits", "cifar10", "cifar100", "imagefolder"}


def test_digits_splits_are_disjoint_and_fixed() -> None:
    ds = load_datasets(DataConfig("digits", val_fraction=0.25))
    n = len(ds.train) + len(ds.val) + len(ds.test)
    assert n == 1797
    assert ds.num_classes == 10 and ds.channels == 1 and ds.image_size == 8
    assert len(ds.val) == pytest.approx(0.25 * (len(ds.train) + len(ds.val)), abs=10)
    # the test split does not depend on the validation split's seed
    other = load_datasets(DataConfig("digits", val_fraction=0.25, split_seed=7))
    assert torch.equal(ds.test.labels, other.test.labels)  # type: ignore[attr-defined]


def test_batches_are_normalised_shaped_and_reproducible() -> None:
    ds = load_datasets(DataConfig("digits", image_size=16))
    cpu = torch.device("cpu")
    a = list(ds.train.batches(64, shuffle=True, augment=True, seed=3, device=cpu))
    b = list(ds.train.batches(64, shuffle=True, augment=True, seed=3, device=cpu))
    c = list(ds.train.batches(64, shuffle=True, augment=True, seed=4, device=cpu))
    assert a[0][0].shape == (64, 1, 16, 16)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    assert not torch.equal(a[0][1], c[0][1])
    native = load_datasets(DataConfig("digits"))
    x = torch.cat(
        [x for x, _ in native.train.batches(512, shuffle=False, augment=False, seed=0, device=cpu)]
    )  # normalised with the training split's own statistics
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-3


@pytest.mark.parametrize("variant", ["cifar10", "cifar100"])
def test_cifar_loader_reads_the_real_pickle_format(tmp_path: Path, variant: str) -> None:
    n_train = 100 if variant == "cifar10" else 300  # at least 2 images of each class
    write_cifar_archive(tmp_path, variant, n_train=n_train, n_test=20)
    ds = load_datasets(DataConfig(variant, root=str(tmp_path), val_fraction=0.2))
    assert ds.num_classes == (10 if variant == "cifar10" else 100)
    assert ds.channels == 3 and ds.image_size == 32
    assert len(ds.test) == 20
    assert len(ds.train) + len(ds.val) == n_train
    x, y = next(ds.val.batches(8, shuffle=False, augment=False, seed=0, device=torch.device("cpu")))
    assert x.shape == (8, 3, 32, 32) and y.dtype == torch.long


def test_cifar_resized_like_the_seed(tmp_path: Path) -> None:
    write_cifar_archive(tmp_path, "cifar10", n_train=50, n_test=10)
    ds = load_datasets(DataConfig("cifar10", root=str(tmp_path), image_size=64))
    x, _ = next(
        ds.test.batches(4, shuffle=False, augment=False, seed=0, device=torch.device("cpu"))
    )
    assert x.shape == (4, 3, 64, 64)


def test_missing_cifar_says_where_it_looked_and_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as e:
        load_datasets(DataConfig("cifar100", root=str(tmp_path / "nowhere")))
    msg = str(e.value)
    assert str(tmp_path / "nowhere" / "cifar-100-python") in msg and "--download" in msg


def test_cifar_file_with_code_is_refused(tmp_path: Path) -> None:
    import pickle

    folder = write_cifar_archive(tmp_path, "cifar100", n_train=10, n_test=10)

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("pwned",))

    with (folder / "train").open("wb") as f:
        pickle.dump({b"data": Evil()}, f)
    with pytest.raises(UserError, match="not a valid CIFAR batch file"):
        load_datasets(DataConfig("cifar100", root=str(tmp_path)))


def _image_tree(root: Path, side: int = 20) -> None:
    from PIL import Image

    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(6):
                Image.new("RGB", (side, side + 4), (i * 40, 0, 0)).save(d / f"{i}.png")


def test_imagefolder(tmp_path: Path) -> None:
    _image_tree(tmp_path)
    ds = load_datasets(DataConfig("imagefolder", root=str(tmp_path), image_size=16))
    assert ds.num_classes == 2 and ds.image_size == 16
    assert len(ds.test) == 12 and len(ds.train) + len(ds.val) == 12
    ds.train.num_workers = 0  # type: ignore[attr-defined]
    x, _ = next(ds.train.batches(4, shuffle=True, augment=True, seed=0, device=torch.device("cpu")))
    assert x.shape == (4, 3, 16, 16)


def test_missing_imagefolder(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="train"):
        load_datasets(DataConfig("imagefolder", root=str(tmp_path)))


def test_imagefolder_uses_the_images_own_size(tmp_path: Path) -> None:
    _image_tree(tmp_path, side=12)  # 12x16 images: the shorter side
    ds = load_datasets(DataConfig("imagefolder", root=str(tmp_path)))
    assert ds.image_size == 12
    for split in (ds.train, ds.test):
        split.num_workers = 0  # type: ignore[attr-defined]
        x, _ = next(
            split.batches(4, shuffle=False, augment=False, seed=0, device=torch.device("cpu"))
        )
        assert x.shape == (4, 3, 12, 12)


def test_imagefolder_warns_when_it_upscales(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _image_tree(tmp_path, side=8)
    with caplog.at_level("WARNING", logger="sslsearch.data"):
        ds = load_datasets(DataConfig("imagefolder", root=str(tmp_path), image_size=32))
    assert ds.image_size == 32
    assert any("upscales" in r.getMessage() and "8x8" in r.getMessage() for r in caplog.records)

"""sslsearch.finetune / `sslsearch finetune`: train a saved (pruned) model further."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sslsearch.cli import main
from sslsearch.config import Recipe
from sslsearch.models import create_model, load_model, model_info, save_model
from sslsearch.pruning import prune
from sslsearch.trial import evaluate, finetune, pick_device, trained_with


def _save(model: object, path: Path, classes: int = 10, channels: int = 1) -> Path:
    save_model(
        model,  # type: ignore[arg-type]
        path,
        arch="vgg_small",
        num_classes=classes,
        in_channels=channels,
        input_shape=(channels, 8, 8),
    )
    return path


def test_finetune_writes_a_model_and_its_metrics(tmp_path: Path) -> None:
    src = _save(create_model("vgg_small", 10, 1), tmp_path / "dense.pt")
    old = os.umask(0o022)
    try:
        r = finetune(src, recipe=Recipe(finetune_epochs=1, batch_size=128), out=tmp_path / "ft.pt")
    finally:
        os.umask(old)
    m = json.loads((tmp_path / "ft.json").read_text())
    assert m["top1"] == r.metrics["top1"] and m["epochs"] == 1 and len(r.history) == 1
    assert m["top1"] > m["top1_before"]  # one epoch from random init on digits
    assert (tmp_path / "ft.pt").stat().st_mode & 0o777 == 0o644
    # the new file keeps its settings: a second fine-tune or evaluate finds the same data/recipe
    data, recipe = trained_with(model_info(tmp_path / "ft.pt"))
    assert data.name == "digits" and recipe.finetune_epochs == 1 and recipe.batch_size == 128
    again = load_model(tmp_path / "ft.pt")
    ev = evaluate(again, r_split(), batch_size=256, device=pick_device("cpu"))
    assert ev.top1 == pytest.approx(m["top1"])


def r_split() -> object:
    from sslsearch.config import DataConfig
    from sslsearch.data import load_datasets

    return load_datasets(DataConfig()).val


def test_a_model_that_does_not_fit_the_data_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _save(create_model("vgg_small", 100, 3), tmp_path / "c100.pt", classes=100, channels=3)
    code = main(["finetune", str(src), "--dataset", "digits", "--out", str(tmp_path / "x.pt")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "100 classes" in err and "sslsearch trial --arch vgg_small --dataset digits" in err
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.slow
def test_finetuning_a_pruned_model_recovers_top1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a trained dense model (fine-tuning a fresh one is plain training)
    dense = _save(create_model("vgg_small", 10, 1), tmp_path / "fresh.pt")
    trained = finetune(
        dense, recipe=Recipe(finetune_epochs=6, finetune_lr=0.05), out=tmp_path / "dense.pt"
    )
    assert trained.metrics["top1"] > 95
    pruned = prune(
        load_model(tmp_path / "dense.pt"),
        (1, 8, 8),
        prune_type="filter_wise",
        prune_way="mean_abs",
        ratio=0.3,
        inplace=True,
    )
    _save(pruned.model, tmp_path / "pruned.pt")
    code = main(
        [
            "finetune",
            str(tmp_path / "pruned.pt"),
            "--epochs",
            "3",
            "--out",
            str(tmp_path / "ft.pt"),
            "--json",
        ]
    )
    m = json.loads(capsys.readouterr().out)
    assert code == 0
    assert m["top1_before"] < trained.metrics["top1"] - 5, m  # pruning cost accuracy
    assert m["top1"] > 95, m  # fine-tuning got it back
    assert m["flops"] < trained.metrics["flops"]  # still the pruned model

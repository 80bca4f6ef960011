"""Starting weights: SSL training starts from them, they are part of the SSL model's identity,
weights for another model are one line, and a search's baseline can be them as they are."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from sslsearch.config import DataConfig, Recipe, TrialConfig
from sslsearch.data import load_datasets
from sslsearch.errors import ModelFileError
from sslsearch.models import create_model, load_model, save_model
from sslsearch.report import Baseline
from sslsearch.report._markdown import baseline_text
from sslsearch.trial import (
    SSLCache,
    evaluate,
    load_weights,
    measure_weights_baseline,
    run_trial,
    ssl_model_id,
)

DIGITS = {"num_classes": 10, "in_channels": 1}


def _vgg(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("vgg_small", **DIGITS)


def _cfg(weights: Path | None, **changes: object) -> TrialConfig:
    recipe = Recipe(epochs=0, finetune_epochs=0, batch_size=64)
    base = TrialConfig(recipe=recipe, ratio=0.0, threads=1, latency_repeats=2)
    return base.with_(warm_start=str(weights) if weights else None, **changes)


def test_the_ssl_model_id_follows_the_weights_bytes_not_where_they_lie(
    tmp_path: Path,
) -> None:
    a, copy, other = tmp_path / "a.pt", tmp_path / "elsewhere" / "a.pt", tmp_path / "c.pt"
    torch.save(_vgg(0).state_dict(), a)
    copy.parent.mkdir()
    shutil.copyfile(a, copy)
    torch.save(_vgg(1).state_dict(), other)
    ids = {name: ssl_model_id(_cfg(p), "fp32") for name, p in [("a", a), ("copy", copy)]}
    assert ids["a"] == ids["copy"]  # the same tensors: the same SSL model
    assert ssl_model_id(_cfg(other), "fp32") != ids["a"]
    assert ssl_model_id(_cfg(None), "fp32") not in (ids["a"], ssl_model_id(_cfg(other), "fp32"))
    # new tensors under the same name (same size, newer file): a new id
    size = a.stat().st_size
    torch.save(_vgg(1).state_dict(), a)
    os.utime(a, ns=(os.stat(a).st_atime_ns, os.stat(a).st_mtime_ns + 10**9))
    assert a.stat().st_size == size
    changed = ssl_model_id(_cfg(a), "fp32")
    assert changed not in (ids["a"], ssl_model_id(_cfg(None), "fp32"))
    shutil.copyfile(a, copy)
    assert ssl_model_id(_cfg(copy), "fp32") == changed


@pytest.mark.parametrize("form", ["state_dict", "checkpoint", "model_file"])
def test_weights_load_in_every_form(tmp_path: Path, form: str) -> None:
    src = _vgg(3)
    path = tmp_path / "w.pt"
    if form == "state_dict":
        torch.save(src.state_dict(), path)
    elif form == "checkpoint":
        torch.save({"state_dict": src.state_dict(), "epoch": 7}, path)
    else:
        save_model(src, path, arch="vgg_small", **DIGITS)
    fresh = _vgg(4)
    load_weights(fresh, str(path), "vgg_small")
    for k, v in src.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v)


def test_ssl_training_starts_from_the_weights(tmp_path: Path) -> None:
    src = _vgg(5)
    path = tmp_path / "dense.pt"
    save_model(src, path, arch="vgg_small", **DIGITS)
    cfg = _cfg(path, cache_dir=str(tmp_path / "store"))
    result = run_trial(cfg)
    assert result.status == "ok"
    stored = SSLCache(str(tmp_path / "store")).get(result.metrics["ssl_model_id"])
    assert stored is not None  # 0 SSL epochs: the SSL model is the weights themselves
    for k, v in src.state_dict().items():
        torch.testing.assert_close(stored[0].state_dict()[k], v)
    assert result.metrics["weights"] == str(path)


def test_weights_for_another_model_name_the_first_tensors_that_do_not_fit(
    tmp_path: Path,
) -> None:
    resnet = create_model("resnet20", **DIGITS)
    as_file, as_dict = tmp_path / "r.pt", tmp_path / "r_state.pt"
    save_model(resnet, as_file, arch="resnet20", **DIGITS)
    torch.save(resnet.state_dict(), as_dict)
    with pytest.raises(ModelFileError) as e:
        load_weights(_vgg(0), str(as_file), "vgg_small")
    text = str(e.value)
    assert "hold a resnet20 (a sslsearch model file), not a vgg_small" in text
    assert "missing (first: features.0.weight)" in text and "\n" not in text
    with pytest.raises(ModelFileError) as e:
        load_weights(_vgg(0), str(as_dict), "vgg_small")
    assert "do not fit vgg_small" in str(e.value) and "(first: conv1.weight)" in str(e.value)
    ten_classes = tmp_path / "ten.pt"
    torch.save(create_model("vgg_small", num_classes=7, in_channels=1).state_dict(), ten_classes)
    with pytest.raises(ModelFileError, match=r"2 tensors have other shapes \(classifier"):
        load_weights(_vgg(0), str(ten_classes), "vgg_small")


def test_a_file_without_weights_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(ModelFileError, match="hold no state_dict"):
        load_weights(_vgg(0), str(path), "vgg_small")
    with pytest.raises(ModelFileError, match="weights file not found"):
        load_weights(_vgg(0), str(tmp_path / "none.pt"), "vgg_small")


def test_the_baseline_can_be_the_weights_measured_as_they_are(tmp_path: Path) -> None:
    src = _vgg(6)
    path = tmp_path / "dense.pt"
    save_model(src, path, arch="vgg_small", **DIGITS)
    result = measure_weights_baseline(_cfg(path), str(tmp_path / "exp"))
    m = result.metrics
    assert (result.status, m["role"], m["baseline"], m["epochs"], m["finetune_epochs"]) == (
        "ok",
        "baseline",
        "weights",
        0,
        0,
    )
    data = load_datasets(DataConfig())
    expected = evaluate(src.eval(), data.val, batch_size=256, device=torch.device("cpu"))
    assert m["top1"] == pytest.approx(expected.top1)  # nothing trained, BN untouched
    saved = load_model(tmp_path / "exp" / "baseline" / "model.pt")
    for k, v in src.state_dict().items():
        torch.testing.assert_close(saved.state_dict()[k], v)
    text = baseline_text(Baseline(m, 1), "")
    assert "from the given weights (dense.pt), measured as they are (no training)" in text
    # kept on resume: an existing result is not measured again
    again = measure_weights_baseline(_cfg(path), str(tmp_path / "exp"))
    assert json.dumps(again.metrics, sort_keys=True) == json.dumps(
        json.loads((tmp_path / "exp" / "baseline" / "result.json").read_text()), sort_keys=True
    )
    trained = {**m, "epochs": 3, "finetune_epochs": 1}
    assert "trained from the given weights (dense.pt) with the search's recipe (3 SSL" in (
        baseline_text(Baseline(trained, 1), "")
    )

"""A search over the user's own model, data and weights: what fails stops it before it starts
(one line, exit code 2, nothing written); what works reaches the trials (README example and the
cluster test run it end to end)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml

from sslsearch.cli import main
from sslsearch.config import space_from_mapping
from sslsearch.models import create_model, save_model
from sslsearch.search._user import stage_weights, user_modules

from .spaces import with_changes
from .user_code import write_user_code, write_user_objectives


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str, str]:
    """User modules beside the space file; the search runs from another directory."""
    models, data = write_user_code(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return tmp_path / "project", models, data


def _space(project: Path, tmp_path: Path, **changes: object) -> Path:
    space = with_changes(storage_path=str(tmp_path / "runs"), **changes)
    path = project / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def _weights(tmp_path: Path, arch: str, classes: int = 10) -> str:
    path = tmp_path / f"{arch.replace(':', '_')}.pt"
    model = create_model(arch, num_classes=classes, in_channels=1)
    save_model(model, path, arch=arch, num_classes=classes, in_channels=1)
    return str(path)


@pytest.mark.parametrize(
    ("changes", "text"),
    [
        ({"arch": "nowhere_module_q:cnn"}, "cannot import module 'nowhere_module_q'"),
        ({"arch": "{models}:raises"}, "raised ValueError: my factory is broken"),
        ({"arch": "{models}:not_a_model"}, "returned int, not a torch.nn.Module"),
        ({"arch": "{models}:flat_head"}, "the model fails on a 1x8x8 input"),
        ({"data": {"name": "{data}:broken"}}, "raised OSError: no data under"),
        ({"arch": "{models}:small_cnn", "weights": "resnet20"}, "hold a resnet20"),
        ({"weights": "{tmp}/none.pt"}, "weights file not found"),
        ({"reference": {"baseline": "weights"}}, "'weights' measures the space's weights"),
        ({"arch": "not a path:x"}, "is not an import path"),
        (
            {
                "arch": "{models}:small_cnn",
                "params": {"ssl_lambda": 0.01, "flops_budget": {"low": 0.01, "high": 0.1}},
            },
            "'params.flops_budget': the whole range 0.01..0.1 is below what pruning can reach",
        ),
        (
            {"objectives": [{"metric": "top1"}, {"metric": "{metrics}:weight_byts_int8"}]},
            "is your own objective: give direction: min or max",
        ),
        (
            {
                "objectives": [
                    {"metric": "top1"},
                    {"metric": "{metrics}:weight_byts_int8", "direction": "min"},
                ]
            },
            "has no 'weight_byts_int8' (did you mean 'weight_bytes_int8'?)",
        ),
        (
            {
                "objectives": [
                    {"metric": "top1"},
                    {"metric": "{metrics}:needs_batch", "mode": "min"},
                ]
            },
            "raised RuntimeError: no energy meter on this machine",
        ),
        (
            {
                "objectives": [
                    {"metric": "top1"},
                    {"metric": "{metrics}:not_a_number", "mode": "min"},
                ]
            },
            "returned 'fast', not a finite number",
        ),
        ({"objectives": [{"metric": "top1"}, {"metric": "flopz"}]}, "(did you mean 'flops'?)"),
    ],
)
def test_user_parts_that_fail_stop_the_search_before_anything_is_written(
    project: tuple[Path, str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    changes: dict[str, object],
    text: str,
) -> None:
    folder, models, data = project
    metrics = write_user_objectives(folder)
    fill = {"models": models, "data": data, "tmp": str(tmp_path), "metrics": metrics}
    resolved = yaml.safe_load(yaml.safe_dump(changes).format(**fill))
    if resolved.get("weights") == "resnet20":
        resolved["weights"] = _weights(tmp_path, "resnet20")
    code = main(["search", "--space", str(_space(folder, tmp_path, **resolved))])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "sslsearch: error:" in ln]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert text in lines[0], lines[0]
    # nothing started, nothing written (the storage path may exist: its write test ran)
    assert not list((tmp_path / "runs").rglob("*"))


def test_the_users_modules_are_shipped_and_the_weights_copied_into_the_experiment(
    project: tuple[Path, str, str], tmp_path: Path
) -> None:
    from sslsearch.search._setup import SearchOptions, prepare

    folder, _, data = project
    weights = _weights(tmp_path, "vgg_small")
    path = _space(folder, tmp_path, arch="vgg_small", data={"name": f"{data}:load"})
    raw = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**raw, "weights": Path(weights).name}))
    (Path.cwd() / Path(weights).name).write_bytes(Path(weights).read_bytes())
    space, exp_dir = prepare(SearchOptions(space=str(path)))
    assert space.weights == str(Path.cwd() / "vgg_small.pt")  # relative to where it runs
    assert user_modules(space) == [str((folder / f"{data}.py").resolve())]
    staged = stage_weights(space, exp_dir)
    assert staged.weights == f"{exp_dir}/weights/vgg_small.pt"
    assert Path(staged.weights).read_bytes() == Path(weights).read_bytes()
    # the experiment's copy is kept: a resume reads it even if the original changed
    torch.save({"x": torch.zeros(1)}, Path.cwd() / "vgg_small.pt")
    assert stage_weights(space, exp_dir).weights == staged.weights
    assert Path(staged.weights).read_bytes() == Path(weights).read_bytes()
    assert space_from_mapping(space.to_dict()).weights == space.weights


def test_an_error_raised_in_a_worker_keeps_its_message() -> None:
    """Ray pickles a trial's exception to the driver: a ConfigError (a user module that does not
    import on a node) must arrive as itself, not as a TypeError about its constructor."""
    import pickle

    from sslsearch.config import ConfigError

    e = ConfigError("arch", "arch 'm:f': cannot import module 'm'", "space.yaml")
    back = pickle.loads(pickle.dumps(e))
    assert isinstance(back, ConfigError) and str(back) == str(e) and back.key == "arch"

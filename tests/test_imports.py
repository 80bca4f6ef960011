"""The user's own code by import path: a model factory (``arch``) and a dataset function
(``data.name``) from modules outside the package, found, built, checked and saved."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from sslsearch.config import DataConfig
from sslsearch.data import load_datasets
from sslsearch.errors import ModelFileError, UserError
from sslsearch.imports import load_object, shipped_source
from sslsearch.models import check_user_model, create_model, load_model, save_model
from sslsearch.pruning import prune

from .user_code import write_user_code

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """Fresh user modules in a project directory that is the current directory."""
    project = tmp_path / "project"
    names = write_user_code(project)
    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_object appends the project dir
    yield names


# --- finding the code -----------------------------------------------------------------------


def test_a_module_in_the_current_directory_is_found_and_appended_to_the_path(
    user: tuple[str, str],
) -> None:
    models, _ = user
    factory = load_object(f"{models}:small_cnn", "arch")
    assert callable(factory)
    assert sys.path[-1] == str(Path.cwd())  # appended: never shadows an installed module


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("my models:cnn", "is not an import path: write module:attribute"),
        ("nowhere_module_xyz:cnn", "cannot import module 'nowhere_module_xyz'"),
        ("{models}:small_cn", "has no 'small_cn' (did you mean 'small_cnn'?)"),
        ("{models}:block.x", "has no 'block.x'"),
        ("sys:maxsize", "is a int, not a function or class"),
    ],
)
def test_a_name_that_does_not_import_is_one_line_naming_it(
    user: tuple[str, str], path: str, text: str
) -> None:
    with pytest.raises(UserError) as e:
        load_object(path.format(models=user[0]), "arch")
    assert text in str(e.value) and "\n" not in str(e.value)
    assert str(e.value).startswith("arch ")


def test_a_module_that_raises_on_import_is_one_line(user: tuple[str, str]) -> None:
    Path("bad_module_on_import.py").write_text("import torch\nraise RuntimeError('half done')\n")
    with pytest.raises(UserError) as e:
        load_object("bad_module_on_import:f", "data.name")
    assert "raised RuntimeError: half done" in str(e.value)


def test_shipped_source_is_the_users_file_or_package_never_an_installed_one(
    user: tuple[str, str],
) -> None:
    models, _ = user
    load_object(f"{models}:small_cnn", "arch")
    assert shipped_source(f"{models}:small_cnn") == str(Path.cwd().resolve() / f"{models}.py")
    pkg = Path.cwd() / "userpkg_ship_test"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("def f(num_classes, in_channels):\n    pass\n")
    load_object("userpkg_ship_test.sub:f", "arch")
    assert shipped_source("userpkg_ship_test.sub:f") == str(pkg.resolve())  # the top package
    load_object("torchvision.models:resnet18", "arch")
    assert shipped_source("torchvision.models:resnet18") is None  # installed: nodes have it
    assert shipped_source("sslsearch.models:create_model") is None  # shipped anyway


# --- a model by import path -------------------------------------------------------------------


def test_create_model_builds_the_users_factory(user: tuple[str, str]) -> None:
    model = create_model(f"{user[0]}:small_cnn", num_classes=4, in_channels=1)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 4)


@pytest.mark.parametrize(
    ("factory", "text"),
    [
        ("raises", "raised ValueError: my factory is broken"),
        ("not_a_model", "returned int, not a torch.nn.Module"),
        ("flat_head", "the model fails on a 1x8x8 input"),
    ],
)
def test_a_factory_that_fails_is_one_line_naming_it(
    user: tuple[str, str], factory: str, text: str
) -> None:
    with pytest.raises(UserError) as e:
        check_user_model(f"{user[0]}:{factory}", 4, 1, 8, depth_wise=False)
    assert text in str(e.value) and f"{user[0]}:{factory}" in str(e.value)
    assert "\n" not in str(e.value)


def test_the_output_must_be_one_logit_per_class_and_depth_wise_needs_blocks(
    user: tuple[str, str],
) -> None:
    models, _ = user
    check_user_model(f"{models}:small_cnn", 4, 1, 8, depth_wise=False)
    with pytest.raises(UserError, match=r"depth_wise needs residual blocks"):
        check_user_model(f"{models}:small_cnn", 4, 1, 8, depth_wise=True)
    Path(f"{models}_fixed.py").write_text(  # a factory that ignores num_classes
        f"from {models} import small_cnn\n"
        "def fixed(num_classes, in_channels):\n    return small_cnn(4, in_channels)\n"
    )
    with pytest.raises(UserError, match=r"returns \(2, 4\) for a batch of 2, expected \(2, 5\)"):
        check_user_model(f"{models}_fixed:fixed", 5, 1, 8, depth_wise=False)


def test_a_saved_user_model_loads_where_its_module_imports_and_says_why_where_not(
    user: tuple[str, str], tmp_path: Path
) -> None:
    models, _ = user
    model = create_model(f"{models}:small_cnn", num_classes=4, in_channels=1)
    r = prune(model, (1, 8, 8), prune_type="filter_wise", prune_way="mean_abs", ratio=0.5)
    path = tmp_path / "pruned.pt"
    save_model(r.model, path, arch=f"{models}:small_cnn", num_classes=4, input_shape=(1, 8, 8))
    # in this process (the module is importable): the pruned widths come back
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(load_model(path)(x), r.model.eval()(x))
    # another process, in the project directory: found there
    code = (
        "import sys, torch; from sslsearch.models import load_model; "
        "print(load_model(sys.argv[1])(torch.ones(1, 1, 8, 8)).shape)"
    )
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    ok = subprocess.run(
        [sys.executable, "-c", code, str(path)], cwd=Path.cwd(), env=env, capture_output=True
    )
    assert ok.returncode == 0 and b"torch.Size([1, 4])" in ok.stdout, ok.stderr
    # elsewhere: one line, exit 2, saying what is needed
    out = subprocess.run(
        [sys.executable, "-m", "sslsearch", "profile", str(path), "--no-latency"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert f"holds a model of your factory {models}:small_cnn" in lines[0]
    assert f"cannot import module '{models}'" in lines[0]


def test_profile_and_prune_take_a_user_model(
    user: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sslsearch.cli import main

    models, _ = user
    arch = f"{models}:small_cnn"
    assert main(["profile", "--arch", arch, "--in-channels", "1", "--image-size", "8"]) == 0
    assert f"{arch} at 1x8x8" in capsys.readouterr().out
    dense = tmp_path / "dense.pt"
    save_model(create_model(arch, 4, 1), dense, arch=arch, num_classes=4, input_shape=(1, 8, 8))
    out = tmp_path / "p.pt"
    args = ["prune", str(dense), "--prune-type", "filter_wise", "--ratio", "0.5"]
    assert main([*args, "--out", str(out)]) == 0
    assert load_model(out)(torch.zeros(1, 1, 8, 8)).shape == (1, 4)


# --- a dataset by import path -----------------------------------------------------------------


def test_a_dataset_function_gives_train_val_test_with_the_stratified_split(
    user: tuple[str, str], tmp_path: Path
) -> None:
    _, data = user
    ds = load_datasets(DataConfig(name=f"{data}:load", root=str(tmp_path), val_fraction=0.25))
    assert (ds.num_classes, ds.channels, ds.image_size) == (4, 1, 8)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (180, 60, 80)
    labels = torch.cat([y for _, y in ds.val.batches(64, **_plain())])
    assert torch.bincount(labels).tolist() == [15, 15, 15, 15]  # a quarter of every class
    a = [y for _, y in ds.train.batches(32, **_plain(shuffle=True, seed=3))]
    b = [y for _, y in ds.train.batches(32, **_plain(shuffle=True, seed=3))]
    c = [y for _, y in ds.train.batches(32, **_plain(shuffle=True, seed=4))]
    assert torch.equal(torch.cat(a), torch.cat(b)) and not torch.equal(torch.cat(a), torch.cat(c))
    # it ran with this node's data root
    assert (tmp_path / "loaded_from.txt").read_text().strip().endswith(f"{data}.py")


def test_data_image_size_resizes_the_users_batches(user: tuple[str, str]) -> None:
    ds = load_datasets(DataConfig(name=f"{user[1]}:with_eval_view", image_size=16))
    x, _ = next(iter(ds.test.batches(8, **_plain())))
    assert ds.image_size == 16 and x.shape == (8, 1, 16, 16)


@pytest.mark.parametrize(
    ("fn", "text"),
    [
        ("broken", "raised OSError: no data under"),
        ("not_datasets", "returned str; it must return (train, test) torch Datasets"),
        ("one_item", "too few to hold out"),
    ],
)
def test_a_dataset_function_that_fails_is_one_line(
    user: tuple[str, str], fn: str, text: str
) -> None:
    with pytest.raises(UserError) as e:
        load_datasets(DataConfig(name=f"{user[1]}:{fn}"))
    assert text in str(e.value) and "\n" not in str(e.value)


def _plain(shuffle: bool = False, seed: int = 0) -> dict[str, object]:
    return {"shuffle": shuffle, "augment": False, "seed": seed, "device": torch.device("cpu")}


def test_loading_a_model_file_of_a_missing_factory_is_a_model_file_error(
    tmp_path: Path,
) -> None:
    from sslsearch.models import model_payload
    from sslsearch.models._io import atomic_torch_save

    payload = model_payload(
        create_model("vgg_small", 10, 1), arch="vgg_small", num_classes=10, in_channels=1
    )
    payload["arch"] = "gone_module_abc:cnn"
    atomic_torch_save(payload, tmp_path / "m.pt")
    with pytest.raises(ModelFileError, match="holds a model of your factory gone_module_abc:cnn"):
        load_model(tmp_path / "m.pt")


def test_trial_takes_the_users_model_data_and_weights(
    user: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sslsearch.cli import main

    models, data = user
    arch = f"{models}:small_cnn"
    weights = tmp_path / "w.pt"
    save_model(create_model(arch, 4, 1), weights, arch=arch, num_classes=4, in_channels=1)
    args = ["trial", "--arch", arch, "--dataset", f"{data}:load", "--epochs", "1"]
    args += ["--finetune-epochs", "1", "--ratio", "0.5", "--threads", "1", "--json"]
    assert main([*args, "--weights", str(weights)]) == 0
    import json

    m = json.loads(capsys.readouterr().out)
    assert (m["arch"], m["dataset"], m["weights"], m["status"]) == (
        arch,
        f"{data}:load",
        str(weights),
        "ok",
    )
    assert m["flops"] < m["flops_before"]
    # a factory that raises: one line, exit code 2
    assert main(["trial", "--arch", f"{models}:raises", "--dataset", f"{data}:load"]) == 2
    err = capsys.readouterr().err
    assert err.count("sslsearch: error:") == 1 and "raised ValueError" in err

"""The command line: one clear line and exit code 2 for anything a user can get wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sslsearch.cli import main
from sslsearch.metrics import count_flops
from sslsearch.models import create_model, save_model

from .spaces import write_space


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_clean_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and "sslsearch: error:" in ln]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_bad_space_exits_2_and_starts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = write_space(tmp_path, recipe={"epochz": 1})
    code, _, err = _run(capsys, "search", "--space", str(space))
    assert code == 2
    assert "recipe.epochz" in _one_clean_line(err) and str(space) in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--num-samples", "0"], "--num-samples must be >= 1"),
        (["--confirm-front", "-1"], "--confirm-front must be >= 0"),
        (["--resume"], "nothing to resume"),
        (
            ["--set", "data.name=cifar10", "--data-root", "{tmp}/nodata"],
            "cifar10 not found under",
        ),
        (["--storage-path", "{tmp}/afile/runs"], "not writable"),
        (
            [
                "--gpus-per-trial",
                "0.5",
                "--set",
                "resources.cpu_fallback=false",
                "--num-samples",
                "1",
            ],
            "no GPU",
        ),
        (["--sampler", "cmaes"], "sampler.name"),
        (["--space", "{tmp}/missing.yaml"], "search space file not found"),
        (["--set", "params.flops_budget=1.5"], "flops_budget is a share of the dense model's cost"),
        (["--set", "params.ssl_weighting=flop"], "did you mean 'flops'"),
        (["--set", "params.ssl_floor=hld"], "did you mean 'hold'"),
        (["--set", "params.ssl_type=shape_wise"], "no prune type removes"),
    ],
)
def test_search_input_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], text: str
) -> None:
    (tmp_path / "afile").write_text("a file, not a directory")
    space = write_space(tmp_path)
    argv = ["search", "--space", str(space), *[a.replace("{tmp}", str(tmp_path)) for a in args]]
    if "--space" in args:
        argv = ["search", *[a.replace("{tmp}", str(tmp_path)) for a in args]]
    code, _, err = _run(capsys, *argv)
    assert code == 2, err
    assert text in _one_clean_line(err)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_existing_experiment_is_not_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = write_space(tmp_path)
    exp = tmp_path / "runs" / "tiny"
    exp.mkdir(parents=True)
    (exp / "trials.parquet").write_bytes(b"precious")
    code, _, err = _run(capsys, "search", "--space", str(space))
    assert code == 2 and "already exists" in _one_clean_line(err) and "--resume" in err
    assert (exp / "trials.parquet").read_bytes() == b"precious"


def test_unknown_argument_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "search", "--num-sample", "3")
    assert code == 2 and "unrecognized arguments" in _one_clean_line(err)


@pytest.mark.parametrize(
    ("argv", "text"),
    [
        (["trial", "--arch", "vgg17"], "did you mean 'vgg16_bn'"),
        (
            ["trial", "--prune-type", "depth_wise", "--blocks", "1"],
            "depth_wise needs residual blocks",
        ),
        (["trial", "--ratio", "1.0"], "ratio"),
        (["trial", "--ssl-weighting", "grad"], "unknown ssl weighting 'grad'"),
        (
            ["trial", "--ssl-type", "shape_wise"],
            "shape_wise zeroes filter shapes, which no prune type removes",
        ),
        (
            ["trial", "--ssl-type", "depth_wise", "--arch", "resnet20"],
            "allow_unmatched_prune",
        ),
        (["trial", "--dataset", "cifar100", "--data-root", "/nonexistent"], "cifar100 not found"),
        (["profile", "--arch", "nope"], "unknown model"),
        (["evaluate", "--model", "/nonexistent.pt"], "not found"),
        (["export", "/nonexistent/exp"], "experiment directory not found"),
        (
            [
                "prune",
                "--checkpoint",
                "/nonexistent.pt",
                "--prune-type",
                "filter_wise",
                "--ratio",
                "0.5",
                "--out",
                "/tmp/x.pt",
            ],
            "not found",
        ),
    ],
)
def test_other_commands_input_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], text: str
) -> None:
    code, _, err = _run(capsys, *argv)
    assert code == 2
    assert text in _one_clean_line(err)


def test_profile_json_and_prune_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys,
        "profile",
        "--arch",
        "resnet20",
        "--num-classes",
        "10",
        "--image-size",
        "32",
        "--repeats",
        "2",
        "--json",
    )
    d = json.loads(out)
    assert code == 0 and set(d) >= {"flops", "params", "size_mb", "latency_ms"}
    assert isinstance(d["flops"], int) and d["flops"] > 0 and d["latency_ms"] > 0
    ckpt = tmp_path / "dense.pt"
    save_model(
        create_model("resnet20", 10), ckpt, arch="resnet20", num_classes=10, input_shape=(3, 32, 32)
    )
    code, out, _ = _run(
        capsys,
        "prune",
        "--checkpoint",
        str(ckpt),
        "--prune-type",
        "channel_wise",
        "--prune-way",
        "mean_abs",
        "--ratio",
        "0.5",
        "--out",
        str(tmp_path / "p.pt"),
        "--json",
    )
    r = json.loads(out)
    assert code == 0 and r["flops_after"] < r["flops_before"]
    code, out, _ = _run(
        capsys, "profile", "--checkpoint", str(tmp_path / "p.pt"), "--no-latency", "--json"
    )
    assert json.loads(out)["flops"] == r["flops_after"]
    # --out exists now: refused without --force, nothing overwritten
    before = (tmp_path / "p.pt").read_bytes()
    code, _, err = _run(
        capsys,
        "prune",
        "--checkpoint",
        str(ckpt),
        "--prune-type",
        "filter_wise",
        "--ratio",
        "0.2",
        "--out",
        str(tmp_path / "p.pt"),
    )
    assert code == 2 and "exists" in err and (tmp_path / "p.pt").read_bytes() == before
    # a FLOPs budget: met, said in one line with the ratio it came to
    code, out, _ = _run(
        capsys,
        "prune",
        str(ckpt),
        "--prune-type",
        "filter_wise",
        "--flops-budget",
        "0.5",
        "--out",
        str(tmp_path / "b.pt"),
    )
    assert code == 0 and "flops budget 50.0%: reached" in out and "actual ratio" in out
    code, out, _ = _run(
        capsys, "profile", "--checkpoint", str(tmp_path / "b.pt"), "--no-latency", "--json"
    )
    dense = count_flops(create_model("resnet20", 10), (3, 32, 32))
    assert 0.49 * dense <= json.loads(out)["flops"] <= 0.5 * dense
    # two targets, or a budget the floors cannot meet: one line, exit 2, nothing written
    for extra, text in (
        (["--flops-budget", "0.5", "--ratio", "0.3"], "not both"),
        (["--flops-budget", "0.01"], "below what the layer floors allow"),
    ):
        code, _, err = _run(
            capsys,
            "prune",
            str(ckpt),
            "--prune-type",
            "filter_wise",
            *extra,
            "--out",
            str(tmp_path / "x.pt"),
        )
        assert code == 2 and text in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "x.pt").exists()


@pytest.mark.slow
def test_profile_reproduces_the_seed_baselines(capsys: pytest.CaptureFixture[str]) -> None:
    def profile(arch: str) -> dict:
        # FLOPs and parameters only: the latency of these 224x224 models takes most of the time
        # and test_profile_json_and_prune_cli checks the latency path
        code, out, _ = _run(
            capsys,
            "profile",
            "--arch",
            arch,
            "--num-classes",
            "100",
            "--image-size",
            "224",
            "--no-latency",
            "--json",
        )
        assert code == 0
        return json.loads(out)

    vgg, r50 = profile("vgg16_bn"), profile("resnet50")
    assert 15.49e9 <= vgg["flops"] <= 15.51e9 and round(vgg["params"] / 1e6, 2) == 134.68
    assert round(r50["flops"] / 1e9, 2) == 4.11 and round(r50["params"] / 1e6, 2) == 23.71


def test_launch_scripts_run_from_a_clone(tmp_path: Path) -> None:
    root = Path(__file__).parents[1]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, str(root / "launch" / "search.py"), "--space", str(tmp_path / "no.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert out.returncode == 2 and "search space file not found" in out.stderr
    assert "Traceback" not in out.stderr


def test_layering_trial_never_imports_ray_or_optuna() -> None:
    code = (
        "import sys, sslsearch, sslsearch.trial, sslsearch.report, sslsearch.cli; "
        "print(sorted(m for m in ('ray', 'optuna') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


# ---- a new user's first hour (issue 15) ------------------------------------------------------


def _heavy_modules_after(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter; which of torch, ray, optuna did it import?"""
    probe = f"{code}\nimport sys; print(sorted(m for m in ('torch', 'ray', 'optuna') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1].replace("'", '"'))


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["search", "--help"],
        ["search", "--set", "params.flops_budget.high=1.5"],
        ["search", "--space", "cifar10_resnet20", "--set", "arch=resnet21"],
        ["search", "--num-sample", "3"],
    ],
)
def test_parsing_and_space_checks_import_neither_torch_nor_ray(argv: list[str]) -> None:
    code = (
        "import contextlib, io\nfrom sslsearch.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        f"    try:\n        main({argv!r})\n    except SystemExit:\n        pass"
    )
    assert _heavy_modules_after(code) == []


def test_import_sslsearch_is_light_and_names_resolve_on_use() -> None:
    assert _heavy_modules_after("import sslsearch, sslsearch.config, sslsearch.cli") == []
    assert _heavy_modules_after("import sslsearch; sslsearch.prune") == ["torch"]


@pytest.mark.parametrize(
    ("argv", "where"),
    [
        (
            ["--set", "params.flops_budget.high=1.5"],
            "--set params.flops_budget.high=1.5: key 'params.flops_budget.high'",
        ),
        (["--set", "recipe.epochz=1"], "--set recipe.epochz=1: key 'recipe.epochz'"),
        (["--set", "arch=vgg17"], "--set arch=vgg17: key 'arch': unknown model 'vgg17'"),
        (["--epochs", "-1"], "--epochs -1: key 'recipe.epochs': must be >= 0"),
        (["--sampler", "cmaes"], "--sampler cmaes: key 'sampler.name'"),
    ],
)
def test_set_and_flag_errors_name_what_was_typed(
    capsys: pytest.CaptureFixture[str], argv: list[str], where: str
) -> None:
    code, _, err = _run(capsys, "search", *argv)
    assert code == 2
    line = _one_clean_line(err)
    assert line.startswith(f"sslsearch: error: {where}"), line
    assert "default.yaml" not in line


def test_space_errors_still_name_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = write_space(tmp_path, arch="resnet21")
    code, _, err = _run(capsys, "search", "--space", str(space), "--set", "recipe.lr=0.1")
    assert code == 2
    assert _one_clean_line(err).startswith(f"sslsearch: error: {space}: key 'arch'")


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["search", "--num-sample", "3"], "(did you mean --num-samples?)"),
        (["evaluate", "m.pt", "--jsn"], "(did you mean --json?)"),
        (["serch"], "(did you mean search?)"),
    ],
)
def test_wrong_flags_get_one_prefix_and_did_you_mean(
    capsys: pytest.CaptureFixture[str], argv: list[str], hint: str
) -> None:
    code, _, err = _run(capsys, *argv)
    line = _one_clean_line(err)
    assert code == 2 and line.count("sslsearch:") == 1 and line.endswith(hint), line


def test_search_space_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "search", "--space", "defualt")
    assert code == 2 and "did you mean 'default'" in _one_clean_line(err)
    code, _, err = _run(capsys, "search", "--space", "cifar10_resnet20", "--set", "arch=resnet21")
    assert code == 2 and "cifar10_resnet20" not in err and "--set arch=resnet21" in err


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    path = tmp_path / "dense.pt"
    save_model(
        create_model("vgg_small", 10, 1),
        path,
        arch="vgg_small",
        num_classes=10,
        in_channels=1,
        input_shape=(1, 8, 8),
    )
    return path


@pytest.mark.parametrize("form", ["positional", "--model", "--checkpoint"])
def test_one_name_for_a_model_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_model: Path, form: str
) -> None:
    def model_args(path: Path) -> list[str]:
        return [str(path)] if form == "positional" else [form, str(path)]

    out_file = tmp_path / "p.pt"
    code, out, err = _run(
        capsys,
        "prune",
        *model_args(tiny_model),
        "--prune-type",
        "filter_wise",
        "--ratio",
        "0.5",
        "--out",
        str(out_file),
        "--json",
    )
    assert code == 0, err
    flops_after = json.loads(out)["flops_after"]
    code, out, _ = _run(capsys, "profile", *model_args(out_file), "--no-latency", "--json")
    assert code == 0 and json.loads(out)["flops"] == flops_after
    code, out, _ = _run(capsys, "evaluate", *model_args(out_file), "--json")
    assert code == 0 and json.loads(out)["dataset"] == "digits"


def test_a_model_file_is_required_once(
    capsys: pytest.CaptureFixture[str], tiny_model: Path
) -> None:
    code, _, err = _run(capsys, "evaluate")
    assert code == 2 and "give a model file: sslsearch evaluate MODEL" in _one_clean_line(err)
    code, _, err = _run(capsys, "evaluate", str(tiny_model), "--model", "other.pt")
    assert code == 2 and "give one" in _one_clean_line(err)


def test_profile_defaults_to_the_models_own_input_size(capsys: pytest.CaptureFixture[str]) -> None:
    from sslsearch.metrics import count_flops

    code, out, _ = _run(capsys, "profile", "--arch", "vgg_small", "--no-latency", "--json")
    assert code == 0
    assert json.loads(out)["flops"] == count_flops(create_model("vgg_small", 10), (3, 32, 32))


def test_prune_prints_its_result_once_and_no_deprecation_noise(
    tmp_path: Path, tiny_model: Path
) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sslsearch",
            "prune",
            str(tiny_model),
            "--prune-type",
            "filter_wise",
            "--ratio",
            "0.5",
            "--out",
            str(tmp_path / "p.pt"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    both = out.stdout + out.stderr
    assert both.count("filter_wise/group_lasso") == 1, both
    assert "Warning" not in out.stderr, out.stderr


def test_warm_start_from_a_pruned_model_says_what_to_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_model: Path
) -> None:
    pruned = tmp_path / "p.pt"
    assert (
        _run(
            capsys,
            "prune",
            str(tiny_model),
            "--prune-type",
            "filter_wise",
            "--ratio",
            "0.5",
            "--out",
            str(pruned),
        )[0]
        == 0
    )
    code, _, err = _run(capsys, "trial", "--warm-start", str(pruned), "--epochs", "1")
    line = _one_clean_line(err)
    assert code == 2
    assert "tensors have other shapes" in line and line.rstrip().endswith(
        f"use `sslsearch finetune --model {pruned}`"
    ), line


def test_confirm_front_flag_reaches_the_search_options(tmp_path: Path) -> None:
    from sslsearch.cli._experiment_commands import search_options_from_args
    from sslsearch.cli._main import build_parser

    a = build_parser().parse_args(["search", "--confirm-front", "2"])
    assert search_options_from_args(a).confirm_front == 2
    a = build_parser().parse_args(["search"])
    assert search_options_from_args(a).confirm_front == 0


def test_cifar10_tier_without_the_data_is_one_line_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    code, _, err = _run(
        capsys,
        "search",
        "--space",
        "cifar10_cpu",
        "--data-root",
        str(tmp_path / "nowhere"),
        "--storage-path",
        str(runs),
    )
    line = _one_clean_line(err)
    assert code == 2 and "cifar10 not found" in line and "cifar10/train/<class>/" in line
    assert not any(runs.iterdir())  # the storage path may exist; no experiment is started

"""What a user gets from ``pip install sslsearch``: the shipped spaces, the extras, the scripts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from sslsearch.config import shipped_spaces, space_file, spaces_dir
from sslsearch.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:  # type: ignore[type-arg]
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())  # type: ignore[no-any-return]


def test_every_subpackage_and_the_spaces_are_packaged() -> None:
    tool = _pyproject()["tool"]["setuptools"]
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "sslsearch").rglob("__init__.py")
    }
    assert found <= set(tool["packages"]), "add the new subpackage to [tool.setuptools] packages"
    assert tool["package-dir"]["sslsearch.search_spaces"] == "search_spaces"
    assert tool["package-data"]["sslsearch.search_spaces"] == ["*.yaml"]


def test_shipped_spaces_are_found_by_name_and_paths_still_work(tmp_path: Path) -> None:
    names = shipped_spaces()
    assert {"default", "cifar10_resnet20"} <= set(names)
    assert Path(space_file()) == spaces_dir() / "default.yaml"
    assert Path(space_file("cifar10_resnet20")).is_file()
    mine = tmp_path / "mine.yaml"
    mine.write_text("name: mine\n")
    assert space_file(str(mine)) == str(mine)
    (tmp_path / "default").write_text("name: local\n")  # an existing file wins over a name
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert space_file("default") == "default"
    finally:
        os.chdir(cwd)
    with pytest.raises(UserError, match="did you mean 'default'"):
        space_file("defualt")


def test_onnx_extra_is_named_and_missing_onnxscript_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib.util

    from sslsearch import create_model, export_onnx

    extra = _pyproject()["project"]["optional-dependencies"]["onnx"]
    assert any(d.startswith("onnxscript") for d in extra)
    assert "sslsearch[onnx]" in (ROOT / "README.md").read_text()
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "onnxscript" else real(n, *a)
    )
    with pytest.raises(UserError, match=r"needs onnxscript: pip install 'sslsearch\[onnx\]'"):
        export_onnx(create_model("vgg_small", 10), (3, 8, 8), str(tmp_path / "m.onnx"))
    assert not (tmp_path / "m.onnx").exists()


def test_a_launch_wrapper_per_command() -> None:
    from sslsearch.cli._main import COMMANDS

    for command in COMMANDS:
        wrapper = ROOT / "launch" / f"{command}.py"
        assert wrapper.is_file(), wrapper
        assert f'run_command("{command}")' in wrapper.read_text()
    out = subprocess.run(
        [sys.executable, str(ROOT / "launch" / "finetune.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "usage: sslsearch finetune" in out


PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]


def _source_copy(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("sslsearch", "search_spaces"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    return src


def _bare_venv(tmp_path: Path) -> Path:
    """A venv whose heavy dependencies come from this interpreter's site-packages through a
    .pth file (no 6 GB reinstall); sslsearch itself is not importable in it yet."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    heavy = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "_heavy_deps.pth").write_text("\n".join(sorted(heavy)) + "\n")
    return venv


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """No PYTHONPATH: the checkout must not be importable, only what was installed."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["RAY_TMPDIR"] = env.get("RAY_TMPDIR", str(tmp_path / "ray"))
    return env


def _python(venv: Path, code: str, cwd: Path) -> str:
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        cwd=cwd,
        env=_clean_env(cwd),
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@pytest.mark.slow
def test_an_editable_install_finds_the_spaces_in_the_checkout(tmp_path: Path) -> None:
    src = _source_copy(tmp_path)
    venv = _bare_venv(tmp_path)
    py = str(venv / "bin" / "python")
    subprocess.run(
        [*PIP, "--python", py, "install", "--no-deps", "--no-build-isolation", "-e", str(src)],
        check=True,
        timeout=300,
    )
    code = "from sslsearch.config import space_file; print(space_file('cifar10_resnet20'))"
    assert _python(venv, code, tmp_path) == str(src / "search_spaces" / "cifar10_resnet20.yaml")


@pytest.mark.slow
def test_the_wheel_runs_a_search_with_no_space_given(tmp_path: Path) -> None:
    src = _source_copy(tmp_path)
    dist = tmp_path / "dist"
    subprocess.run(
        [*PIP, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)],
        check=True,
        timeout=300,
    )
    (wheel,) = dist.glob("sslsearch-*.whl")
    venv = _bare_venv(tmp_path)
    subprocess.run(
        [*PIP, "--python", str(venv / "bin" / "python"), "install", "--no-deps", str(wheel)],
        check=True,
        timeout=300,
    )
    shutil.rmtree(src)  # nothing of the source tree is left to import from
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _python(venv, "import sslsearch; print(sslsearch.__file__)", work)
    assert where.startswith(str(venv)), where
    run = subprocess.run(
        [
            str(venv / "bin" / "sslsearch"),
            "search",
            "--num-samples",
            "2",
            "--epochs",
            "1",
            "--finetune-epochs",
            "1",
            "--num-cpus",
            "2",
            "--no-dashboard",
            # the shipped space as found from the wheel, without its dense baseline and lambda = 0
            # points: they would double the search's time and say nothing about the packaging
            # (test_search.py runs the default space with them)
            "--set",
            "reference.baseline=false",
            "--set",
            "reference.lambda0=false",
        ],
        cwd=work,
        env=_clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "trials: 2 ok" in run.stdout, run.stdout
    assert "Pareto front" in run.stdout
    assert (work / "runs" / "default" / "trials.parquet").is_file()


def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    import re

    out = set()
    for line in text.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def test_every_link_of_the_docs_reaches_a_file_and_heading() -> None:
    """README, docs/ and benchmarks/README.md: each relative link's file exists and its
    #anchor is a heading there (sections that moved out of the README stay reachable)."""
    import re

    pages = [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        ROOT / "benchmarks/README.md",
    ]
    broken = []
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue  # http(s), mailto
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.name}: {target} (no file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest.read_text()):
                broken.append(f"{page.name}: {target} (no heading)")
    assert not broken, broken

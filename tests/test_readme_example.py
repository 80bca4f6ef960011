"""The README's "your own model" example, run as written: its files are taken from the README's
code blocks and its commands run verbatim in a fresh folder (``launch/`` linked there, as in a
clone). A README edit that breaks the example fails here."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
START, END = "**Worked example**", "**Measured: warm start"
FILE_BLOCK = re.compile(r"`(my_project/[\w./]+)`:\n\n```\w+\n(.*?)```", re.S)
COMMANDS = re.compile(r"```bash\n(.*?)```", re.S)


def readme_example() -> tuple[dict[str, str], str]:
    """The example's files (path -> text) and its shell commands, from README.md."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(START) : text.index(END)]
    files = {path: body for path, body in FILE_BLOCK.findall(section)}
    commands = COMMANDS.findall(section)
    assert len(commands) == 1, "the example has one block of commands"
    return files, commands[0]


def test_the_readme_example_has_its_files_and_commands() -> None:
    files, commands = readme_example()
    assert set(files) == {
        "my_project/my_models.py",
        "my_project/my_data.py",
        "my_project/space.yaml",
    }
    assert "python ../launch/search.py --space space.yaml" in commands


@pytest.mark.slow
def test_the_readme_example_runs_as_written() -> None:
    files, commands = readme_example()
    tmp = Path(tempfile.mkdtemp(prefix="sslreadme", dir="/tmp"))  # short: Ray's socket paths
    try:
        (tmp / "launch").symlink_to(ROOT / "launch")  # a clone: launch/ beside my_project/
        for path, body in files.items():
            (tmp / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp / path).write_text(body)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env.pop("PYTHONPATH", None)  # the launch scripts find the package themselves
        out = subprocess.run(
            ["bash", "-e", "-c", commands],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        text = out.stdout + out.stderr
        assert out.returncode == 0, text[-5000:]
        exp = tmp / "my_project" / "runs" / "my_cnn"
        rows = pq.read_table(exp / "trials.parquet").to_pylist()
        search = [r for r in rows if r["role"] == "search"]
        assert [r["status"] for r in search] == ["ok"] * 4, [r["error"] for r in search]
        assert {r["arch"] for r in rows} == {"my_models:small_cnn"}
        assert {r["dataset"] for r in rows} == {"my_data:load"}
        copy = exp / "weights" / "model.pt"
        assert copy.read_bytes() == (tmp / "my_project" / "dense" / "model.pt").read_bytes()
        assert {r["weights"] for r in rows} == {str(copy)}
        assert len({r["ssl_model_id"] for r in search}) == 2  # 2 points per SSL model
        [baseline] = [r for r in rows if r["role"] == "baseline"]
        assert baseline["epochs"] == 0 and baseline["status"] == "ok"
        assert (
            "Dense baseline: my_models:small_cnn from the given weights (model.pt), measured as "
            "they are (no training): top-1" in out.stdout
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

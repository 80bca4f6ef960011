"""The README's "your own model" example, run as written: its files are taken from the README's
code blocks and its commands run verbatim in a fresh folder (``launch/`` linked there, as in a
clone). A README edit that breaks the example fails here.

Its search is the main command on a local Ray, so the same run also shows what that exposes:
every port on 127.0.0.1, how to get the token, never the token."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from .procs import descendants, is_loopback, kill_tree, listening

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


@dataclass
class ExampleRun:
    returncode: int
    stdout: str
    text: str  # stdout and stderr
    folder: Path  # the fresh folder the commands ran in
    # every listener of the commands' processes and the Ray instance the search started,
    # trials included: (address, port) -> pid
    sockets: dict[tuple[str, int], int]
    trial_seen: bool  # sampled while a trial ran, not only at start-up


@pytest.fixture(scope="module")
def example_run() -> Iterator[ExampleRun]:
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
        env["RAY_TMPDIR"] = str(tmp / "ray")  # the Ray instance's files go with the folder
        out, err = tmp / "stdout.log", tmp / "stderr.log"
        with out.open("w") as fo, err.open("w") as fe:
            proc = subprocess.Popen(
                ["bash", "-e", "-c", commands], cwd=tmp, env=env, stdout=fo, stderr=fe
            )
        sockets: dict[tuple[str, int], int] = {}
        trial_seen = False
        jobs = tmp / "my_project" / "runs" / "my_cnn" / "jobs"
        try:
            deadline = time.monotonic() + 900
            while proc.poll() is None and time.monotonic() < deadline:
                sockets.update(listening(descendants(proc.pid)))
                trial_seen = trial_seen or any(jobs.glob("*/state-*.pt"))
                time.sleep(0.3)
        finally:
            if proc.poll() is None:
                kill_tree(proc.pid)
                proc.wait()
        stdout = out.read_text()
        yield ExampleRun(
            proc.returncode, stdout, stdout + err.read_text(), tmp, sockets, trial_seen
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
def test_the_readme_example_runs_as_written(example_run: ExampleRun) -> None:
    tmp, text = example_run.folder, example_run.text
    assert example_run.returncode == 0, text[-5000:]
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
        "they are (no training): top-1" in example_run.stdout
    )


@pytest.mark.slow
def test_local_search_listens_on_loopback_only_and_never_prints_the_token(
    example_run: ExampleRun,
) -> None:
    text, sockets = example_run.text, example_run.sockets
    assert example_run.returncode == 0, text[-5000:]
    assert example_run.trial_seen  # sampled while trials ran, not only at start-up
    # the dashboard's port: the default one, or a free one if another process holds it
    dashboard = re.search(r"Ray dashboard: http://127\.0\.0\.1:(\d+)", text)
    assert dashboard, text[-5000:]
    assert ("127.0.0.1", int(dashboard.group(1))) in sockets  # the sampling sees Ray's listeners
    assert len(sockets) >= 5, sockets  # GCS, raylet (node and object manager), agents, ...
    exposed = sorted(a for a in sockets if not is_loopback(a[0]))
    assert not exposed, f"listening beyond loopback: {exposed}"
    assert "ray get-auth-token" in text
    token_file = Path.home() / ".ray" / "auth_token"
    assert token_file.exists()
    token = token_file.read_text().strip()
    assert token and token not in text  # the CLI says how to get the token, never prints it
    assert "Pareto front top1 vs flops" in text
    assert (example_run.folder / "my_project" / "runs" / "my_cnn" / "pareto.md").exists()

"""The main command on a local Ray: dashboard on 127.0.0.1, how to get the token, never the token."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_launch_search_local_dashboard_and_token(tmp_path: Path) -> None:
    root = Path(__file__).parents[1]
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    cmd = [
        sys.executable,
        str(root / "launch" / "search.py"),
        "--storage-path",
        str(tmp_path),
        "--num-samples",
        "2",
        "--epochs",
        "1",
        "--finetune-epochs",
        "1",
        "--dashboard-port",
        str(port),
        "--num-cpus",
        "2",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert f"Ray dashboard: http://127.0.0.1:{port}" in text
    assert "ray get-auth-token" in text
    token_file = Path.home() / ".ray" / "auth_token"
    assert token_file.exists()
    token = token_file.read_text().strip()
    assert token and token not in text  # the CLI says how to get the token, never prints it
    assert "Pareto front top1 vs flops" in text
    assert (tmp_path / "default" / "pareto.md").exists()

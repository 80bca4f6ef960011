"""The main command on a local Ray: every port on 127.0.0.1, how to get the token, never the token."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from .procs import descendants, is_loopback, kill_tree, listening

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_local_search_listens_on_loopback_only_and_never_prints_the_token(tmp_path: Path) -> None:
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
    ray_tmp = tempfile.mkdtemp(prefix="sslx", dir="/tmp")  # short: Ray's socket paths
    env["RAY_TMPDIR"] = ray_tmp
    log = tmp_path / "search.log"
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=f, stderr=subprocess.STDOUT)
    sockets: dict[tuple[str, int], int] = {}
    trial_seen = False
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            # every listener of the driver and the Ray instance it started, trials included
            sockets.update(listening(descendants(proc.pid)))
            trial_seen = trial_seen or any((tmp_path / "default").glob("jobs/*/state-*.pt"))
            time.sleep(0.3)
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    text = log.read_text()
    assert proc.returncode == 0, text
    assert trial_seen  # sampled while trials ran, not only at start-up
    assert ("127.0.0.1", port) in sockets  # the sampling sees Ray's listeners
    assert len(sockets) >= 5, sockets  # GCS, raylet (node and object manager), agents, ...
    exposed = sorted(a for a in sockets if not is_loopback(a[0]))
    assert not exposed, f"listening beyond loopback: {exposed}"
    assert f"Ray dashboard: http://127.0.0.1:{port}" in text
    assert "ray get-auth-token" in text
    token_file = Path.home() / ".ray" / "auth_token"
    assert token_file.exists()
    token = token_file.read_text().strip()
    assert token and token not in text  # the CLI says how to get the token, never prints it
    assert "Pareto front top1 vs flops" in text
    assert (tmp_path / "default" / "pareto.md").exists()

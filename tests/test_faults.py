"""Faults a search must survive, proven on a real two-node Ray cluster on loopback.

The test starts the cluster itself (`ray start --head` and a worker node, one CPU each, token
authentication on, their own temp dirs and ports) and ends every process it started by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from sslsearch.report import compute_front
from sslsearch.search._cluster import _LOOPBACK_ENV as LOOPBACK_ENV

from .procs import descendants
from .spaces import write_space

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pids_mentioning(text: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if text in cmd and int(d.name) != os.getpid():
                pids.append(int(d.name))
    return pids


class Cluster:
    """A head node and worker nodes started with `ray start --block`, each in its own session."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sslrt", dir="/tmp"))  # short: socket paths
        token = self.root / "token"
        token.write_text(secrets.token_hex(32))
        # a local search earlier in this process set the single-machine switch in os.environ;
        # `ray start` refuses a multi-node cluster under it
        inherited = {k: v for k, v in os.environ.items() if k not in LOOPBACK_ENV}
        self.env = {
            **inherited,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token),
            "RAY_USAGE_STATS_ENABLED": "0",
            # notice a lost node within seconds, not half a minute
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
            # a node drains for up to 30 s on SIGTERM, and the drain waits on the GCS that the
            # same signal to the process group stops: end the test's nodes at once
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        }
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._start("head", ["--head", f"--port={self.port}", "--include-dashboard=false"])
        self.workers = 0

    def _start(self, name: str, args: list[str]) -> None:
        temp = self.root / name
        log = (self.root / f"{name}.log").open("wb")
        cmd = [
            RAY,
            "start",
            *args,
            "--num-cpus=1",
            f"--temp-dir={temp}",
            "--block",
            "--node-ip-address=127.0.0.1",
            "--disable-usage-stats",
        ]
        self.procs[name] = subprocess.Popen(
            cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 90
        while b"Ray runtime started" not in (self.root / f"{name}.log").read_bytes():
            if self.procs[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.root / f"{name}.log").read_text())
            time.sleep(0.5)

    def add_worker(self) -> str:
        self.workers += 1
        name = f"worker{self.workers}"
        ports = [_free_port() for _ in range(6)]
        lo = 20000 + 1000 * self.workers
        self._start(
            name,
            [
                f"--address={self.address}",
                f"--dashboard-agent-listen-port={ports[0]}",
                f"--dashboard-agent-grpc-port={ports[1]}",
                f"--metrics-export-port={ports[2]}",
                f"--runtime-env-agent-port={ports[3]}",
                f"--node-manager-port={ports[4]}",
                f"--object-manager-port={ports[5]}",
                f"--min-worker-port={lo}",
                f"--max-worker-port={lo + 999}",
                f'--resources={{"{name}": 1}}',
            ],
        )
        self.wait_nodes(1 + self.workers - self.dead_workers())
        return name

    def dead_workers(self) -> int:
        return sum(1 for n, p in self.procs.items() if n != "head" and p.poll() is not None)

    def alive_worker(self) -> str:
        """A worker node that is up: one started before, or a new one (a test killed the last)."""
        for name, p in self.procs.items():
            if name != "head" and p.poll() is None:
                return name
        return self.add_worker()

    def wait_nodes(self, n: int) -> None:
        code = (
            f"import ray; ray.init(address={self.address!r}, logging_level='ERROR'); "
            "print(sum(1 for x in ray.nodes() if x['Alive']))"
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = subprocess.run(
                [sys.executable, "-c", code], env=self.env, capture_output=True, text=True
            )
            if out.stdout.strip() == str(n):
                return
            time.sleep(1)
        raise RuntimeError(f"cluster did not reach {n} nodes")

    def node_id_of(self, name: str) -> str:
        code = (
            f"import ray, json; ray.init(address={self.address!r}, logging_level='ERROR'); "
            f"print(json.dumps([x['NodeID'] for x in ray.nodes() if x['Alive'] and {name!r} in x['Resources']]))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], env=self.env, capture_output=True, text=True, check=True
        )
        return str(json.loads(out.stdout.strip().splitlines()[-1])[0])

    def kill_node(self, name: str) -> list[int]:
        """SIGKILL every process of one node (its raylet, workers, agents), by PID.

        A worker renames itself (``ray::...``), so its command line no longer names the node's
        temp dir: the node's processes are the ones that name it and all their descendants,
        collected before anything is killed (a killed parent's children are re-parented)."""
        roots = {*_pids_mentioning(str(self.root / name)), self.procs[name].pid}
        pids = sorted(descendants(*roots))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.procs[name].wait(timeout=30)
        return pids

    def stop(self) -> None:
        alive = {p.pid for p in self.procs.values() if p.poll() is None}
        ours = descendants(*_pids_mentioning(str(self.root)), *alive)
        for name in reversed(list(self.procs)):
            p = self.procs[name]
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)  # `ray start --block` stops its node on SIGTERM
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
        for pid in ours | set(_pids_mentioning(str(self.root))):  # anything that outlived its node
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    try:
        yield c
    finally:
        c.stop()


def _search(cluster: Cluster, space: Path, *extra: str) -> subprocess.Popen[str]:
    cmd = [
        sys.executable,
        "-m",
        "sslsearch",
        "search",
        "--space",
        str(space),
        "--address",
        cluster.address,
        "--progress-every",
        "5",
        *extra,
    ]
    return subprocess.Popen(
        cmd, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _reports(exp: Path) -> dict[str, list[dict[str, Any]]]:
    """Per job (``jobs/<id>``, a row's trial_dir), its epochs as its trial wrote them, each
    with the node and process that trained it."""
    out: dict[str, list[dict[str, Any]]] = {}
    for d in exp.glob("jobs/*"):
        rows = []
        f = d / "history.jsonl"
        if f.exists():
            for line in f.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    rows.append(json.loads(line))
        out[f"jobs/{d.name}"] = rows
    return out


def _wait(pred: Any, proc: subprocess.Popen[str], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if proc.poll() is not None:
            raise AssertionError(
                f"search ended early:\n{proc.stdout.read() if proc.stdout else ''}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.3)


def _check_consistent(exp: Path, n: int) -> list[dict[str, Any]]:
    import optuna

    rows = pq.read_table(exp / "trials.parquet").to_pylist()
    assert len(rows) == n, [r["trial_id"] for r in rows]
    assert len({r["trial_id"] for r in rows}) == n  # every trial exactly once
    assert [r["status"] for r in rows] == ["ok"] * n, [(r["status"], r["error"]) for r in rows]
    study = optuna.load_study(study_name=exp.name, storage=f"sqlite:///{exp}/optuna.db")
    ids = [t.user_attrs["trial_id"] for t in study.trials]
    assert sorted(ids) == sorted(r["trial_id"] for r in rows)  # each trial once in the study
    by_id = {r["trial_id"]: r for r in rows}
    for t in study.trials:
        r = by_id[t.user_attrs["trial_id"]]
        assert t.state.name == "COMPLETE"
        assert t.values == pytest.approx([r["top1"], r["flops"], r["size_mb"]])  # true final values
    pareto = pq.read_table(exp / "pareto.parquet").to_pylist()
    for name, objectives in (
        ("top1_vs_flops", ["top1", "flops"]),
        ("top1_vs_size", ["top1", "size_mb"]),
    ):
        expected = {r["trial_id"] for r in compute_front(rows, objectives).rows}
        assert {p["trial_id"] for p in pareto if p["front"] == name} == expected
    return rows


def _mtimes(exp: Path, pattern: str) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in exp.glob(pattern)}


def test_driver_crash_then_ctrl_c_then_resume_loses_nothing_reruns_nothing_leaves_no_temp_file(
    cluster: Cluster, tmp_path: Path
) -> None:
    """One search, stopped twice, then resumed by the same command each time.

    The driver is killed (SIGKILL) between the points of one SSL model; the same command with
    --resume is then stopped by Ctrl-C mid-search: it stops, says how to continue, and leaves no
    temporary file (a writer killed mid-write leaves one: the driver sweeps them) and no
    placeholder; the unfinished points stay out of the study (nothing FAIL). The same command
    with --resume then ends with every point once, ok: no point finished before the crash is
    lost or re-run and no stored SSL model is trained again."""
    cluster.alive_worker()
    space = write_space(
        tmp_path,
        name="crash",
        recipe={"epochs": 4, "finetune_epochs": 2, "batch_size": 64},
        budget={"num_samples": 6, "max_concurrent": 2},
        economy={"points_per_ssl": 3},
    )
    exp = tmp_path / "runs" / "crash"
    proc = _search(cluster, space, "--num-samples", "6")

    def a_point_done_and_two_trials_past_ssl() -> bool:
        if not _mtimes(exp, "points/*/result.json"):
            return False
        running = [rows for rows in _reports(exp).values() if rows]
        # both trials are past SSL training (each has its states in jobs/<id>/)
        return len(running) >= 2 and all(
            max(r.get("global_epoch", 0) for r in rows) >= 5 for rows in running
        )

    _wait(a_point_done_and_two_trials_past_ssl, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    points_before = _mtimes(exp, "points/*/result.json")
    ssl_before = _mtimes(exp, "ssl_models/*.pt")
    assert points_before and len(ssl_before) == 2
    assert not (exp / "trials.parquet").exists()
    # the processes that trained until the kill (their workers may outlive the driver briefly)
    killed_pids = {r.get("pid") for rows in _reports(exp).values() for r in rows}

    def a_resumed_trial_reported() -> bool:
        return any(
            "pid" in r and r["pid"] not in killed_pids
            for rows in _reports(exp).values()
            for r in rows
        )

    # the same command with --resume, stopped by Ctrl-C once its own trials train
    proc = _search(cluster, space, "--num-samples", "6", "--resume")
    _wait(a_resumed_trial_reported, proc)
    job = next(exp.glob("jobs/*"))
    (job / ".state-00000099.pt.x1y2z3.sslsearch-tmp").write_bytes(b"half a state")  # killed
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "continue it with the same command and --resume" in out
    assert not list(exp.rglob("*.sslsearch-tmp")), list(exp.rglob("*.sslsearch-tmp"))
    assert not list(exp.rglob("checkpoint_*"))  # Tune keeps no checkpoint of ours
    import optuna

    study = optuna.load_study(study_name=exp.name, storage=f"sqlite:///{exp}/optuna.db")
    # only finished points are in the study, none FAIL: the unfinished are left to the resume
    assert len(study.trials) < 6 and {t.state.name for t in study.trials} <= {"COMPLETE"}
    rows = pq.read_table(exp / "trials.parquet").to_pylist()
    assert "unfinished" in {r["status"] for r in rows} and len(rows) == 6

    resumed = _search(cluster, space, "--num-samples", "6", "--resume")  # the same command
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    rows = _check_consistent(exp, 6)
    assert not list(exp.rglob("*.sslsearch-tmp"))
    after = _mtimes(exp, "points/*/result.json")
    for path, mtime in points_before.items():  # finished points were kept, not re-run
        assert after.get(path) == mtime
    ssl_after = _mtimes(exp, "ssl_models/*.pt")
    for path, mtime in ssl_before.items():  # no SSL model trained again
        assert ssl_after.get(path) == mtime
    assert len(ssl_after) == 2 == len({r["ssl_model_id"] for r in rows})
    assert len(after) == 6


def test_driver_killed_after_an_errored_trial_and_right_after_a_trial_starts(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A trial errors (its worker is killed, no retries left); the driver is killed right after,
    as the next trial starts (before Tune's snapshot knows it). The same command with --resume
    re-runs the errored trial and the unknown one: every point once, ok, COMPLETE in the study
    with its row's values, no row without parameters, no study trial left RUNNING."""
    space = write_space(
        tmp_path,
        name="errored",
        recipe={"epochs": 4, "finetune_epochs": 1, "batch_size": 64},
        budget={"num_samples": 3, "max_concurrent": 1, "max_failures": 0},
        economy={"points_per_ssl": 1},
    )
    exp = tmp_path / "runs" / "errored"
    proc = _search(cluster, space)

    def first_trial_training() -> list[int]:
        return [
            int(r["pid"])
            for rows in _reports(exp).values()
            for r in rows
            if r.get("global_epoch", 0) >= 2 and not r.get("final") and "pid" in r
        ]

    _wait(lambda: bool(first_trial_training()), proc)
    os.kill(first_trial_training()[0], signal.SIGKILL)  # the trial's worker: the trial errors
    # one trial at a time: the second job is asked only once the first has errored
    _wait(lambda: len(list(exp.glob("jobs/*/job.json"))) >= 2, proc)
    proc.send_signal(signal.SIGKILL)  # right as the next trial starts
    proc.wait(timeout=30)
    resumed = _search(cluster, space, "--resume")
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    rows = _check_consistent(exp, 3)  # all ok, once each, study COMPLETE = rows
    assert all(r["flops_budget"] is not None and r["ssl_lambda"] is not None for r in rows)
    import optuna

    study = optuna.load_study(study_name=exp.name, storage=f"sqlite:///{exp}/optuna.db")
    assert not [t.number for t in study.trials if t.state.name == "RUNNING"]


# last: it kills the worker node the tests above ran on
def test_node_loss_retries_trials_from_their_checkpoint(cluster: Cluster, tmp_path: Path) -> None:
    worker = cluster.alive_worker()
    worker_node = cluster.node_id_of(worker)
    space = write_space(
        tmp_path,
        name="nodeloss",
        recipe={"epochs": 10, "finetune_epochs": 2, "batch_size": 64},
        # two trials at once on the two 1-CPU nodes: one of them on the worker
        budget={"num_samples": 2, "max_concurrent": 2, "max_failures": 2},
        economy={"points_per_ssl": 1},
    )
    exp = tmp_path / "runs" / "nodeloss"
    proc = _search(cluster, space)

    def on_worker_mid_training() -> bool:
        for rows in _reports(exp).values():
            if any(
                r.get("node_id") == worker_node
                and r.get("global_epoch", 0) >= 3
                and not r.get("final")
                for r in rows
            ):
                return True
        return False

    _wait(on_worker_mid_training, proc)
    killed = cluster.kill_node(worker)
    assert killed
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    rows = _check_consistent(exp, 2)
    # the trial that was on the lost node finished elsewhere, resumed from its last state
    reports_of = _reports(exp)
    moved = [
        r
        for r in rows
        if {e.get("node_id") == worker_node for e in reports_of[r["trial_dir"]]} == {True, False}
    ]
    assert len(moved) == 1, out
    reports = reports_of[moved[0]["trial_dir"]]
    on_worker = [
        r["global_epoch"] for r in reports if r.get("node_id") == worker_node and not r.get("final")
    ]
    after = [
        r["global_epoch"] for r in reports if r.get("node_id") != worker_node and not r.get("final")
    ]
    assert on_worker and after and min(after) > 1  # did not start over from epoch 1
    assert moved[0]["node_id"] != worker_node
    assert "retry" in out

"""What a cluster needs and gets: the package travels to the workers, a trial must fit one node,
trials that cannot start are reported, and local searches share a machine.

The Ray tests start their own processes (a two-node loopback cluster whose Python cannot import
sslsearch, or local searches) and end them by PID.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow.parquet as pq
import pytest

from sslsearch.errors import UserError
from sslsearch.search._cluster import Cluster as RayInfo
from sslsearch.search._cluster import (
    PendingWatch,
    check_trial_fits,
    free_port,
    runtime_env,
    short_ray_temp_dir,
)

from .procs import kill_tree
from .spaces import write_space
from .test_faults import Cluster

ROOT = Path(__file__).resolve().parents[1]


# --- a trial must fit one node ------------------------------------------------------------------


def _info(*nodes: tuple[float, float]) -> RayInfo:
    return RayInfo(
        started_here=False,
        address="x:1",
        dashboard_url=None,
        auth="token",
        cpus=sum(c for c, _ in nodes),
        gpus=sum(g for _, g in nodes),
        nodes=len(nodes),
        node_resources=list(nodes),
    )


@pytest.mark.parametrize(
    ("cpus", "gpu", "nodes", "fits"),
    [
        (4, 0, [(4, 0), (4, 0)], True),
        (8, 0, [(4, 0), (4, 0)], False),  # 8 CPUs in all, but a trial runs on one node
        (1, 2, [(8, 1), (8, 1)], False),  # 2 GPUs in all, 1 per node
        (1, 0.5, [(8, 1)], True),  # a GPU fraction fits a 1-GPU node
        (6, 1, [(8, 0), (4, 1)], False),  # CPUs on one node, the GPU on another
        (4, 1, [(8, 0), (4, 1)], True),
    ],
)
def test_a_trial_must_fit_one_node(
    cpus: float, gpu: float, nodes: list[tuple[float, float]], fits: bool
) -> None:
    cluster = _info(*nodes)
    if fits:
        check_trial_fits(cpus, gpu, cluster)
        return
    with pytest.raises(UserError) as e:
        check_trial_fits(cpus, gpu, cluster)
    text = str(e.value)
    assert "\n" not in text and f"resources.cpus={cpus:g}" in text
    assert "no Ray node has that much" in text


# --- trials that wait with nothing running ------------------------------------------------------


def _trials(*statuses: str) -> list[SimpleNamespace]:
    return [SimpleNamespace(status=s) for s in statuses]


def test_pending_watch_warns_once_per_stall(caplog: pytest.LogCaptureFixture) -> None:
    watch = PendingWatch(after_s=60)
    assert watch.check(_trials("PENDING", "TERMINATED"), now=0) is None
    assert watch.check(_trials("PENDING", "TERMINATED"), now=59) is None
    msg = watch.check(_trials("PENDING", "TERMINATED"), now=61)
    assert msg is not None and "1 trial(s) waiting for 61s with none running" in msg
    assert "resources.cpus" in msg and msg in caplog.text
    assert watch.check(_trials("PENDING"), now=200) is None  # once per stall
    assert watch.check(_trials("RUNNING", "PENDING"), now=201) is None  # progress: re-armed
    assert watch.check(_trials("PENDING", "PENDING"), now=210) is None
    assert watch.check(_trials("PENDING", "PENDING"), now=271) is not None  # a second stall


def test_pending_watch_is_quiet_while_trials_queue_behind_running_ones() -> None:
    watch = PendingWatch(after_s=1)
    for t in range(100):
        assert watch.check(_trials("RUNNING", "PENDING", "PENDING"), now=float(t)) is None
    assert watch.check(_trials("TERMINATED", "TERMINATED"), now=200) is None  # nothing waits


def test_a_long_temp_dir_gets_a_short_one_for_rays_sockets() -> None:
    """CI's pytest temp dirs made ray.init fail (AF_UNIX path > 107 bytes); now it starts."""
    assert short_ray_temp_dir("/tmp") is None  # Ray's default is kept
    long = "/tmp/pytest-of-root/pytest-90/test_the_wheel_runs_a_search_w0/ray"
    short = short_ray_temp_dir(long)
    assert short is not None and short.startswith("/tmp/sslray-") and short.endswith("/ray")
    assert short_ray_temp_dir(os.path.dirname(short)) is None  # and it fits
    os.rmdir(os.path.dirname(short))


def test_runtime_env_ships_this_package_without_caches() -> None:
    env = runtime_env()
    (module,) = env["py_modules"]
    assert Path(module) == ROOT / "sslsearch"
    assert (Path(module) / "__init__.py").is_file()
    assert "__pycache__" in env["excludes"]


# --- a worker node whose Python cannot import sslsearch -----------------------------------------


def _python_without_sslsearch(dest: Path) -> Path:
    """A venv that sees every installed package except sslsearch (editable or not).

    Its site-packages links to each entry of this interpreter's site-packages but leaves out
    sslsearch, its editable-install finder and every .pth file (which could install a finder).
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True)
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    target = dest / "lib" / ver / "site-packages"
    sources = {Path(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")}
    for site in sources:
        for entry in site.iterdir():
            name = entry.name
            if name.startswith(("sslsearch", "__editable__")) or name.endswith(".pth"):
                continue
            if not (target / name).exists():
                (target / name).symlink_to(entry)
    return dest / "bin" / "python"


class ClusterWithoutSslsearch(Cluster):
    """test_faults' loopback cluster, every node run by a Python that cannot import sslsearch."""

    def __init__(self, python: Path) -> None:
        self.python = python
        super().__init__()

    def node_env(self) -> dict[str, str]:
        return {k: v for k, v in self.env.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def _start(self, name: str, args: list[str]) -> None:
        log_path = self.root / f"{name}.log"
        cmd = [
            str(self.python),
            "-m",
            "ray.scripts.scripts",
            "start",
            *args,
            "--num-cpus=1",
            f"--temp-dir={self.root / name}",
            "--block",
            "--node-ip-address=127.0.0.1",
            "--disable-usage-stats",
        ]
        with log_path.open("wb") as log:
            self.procs[name] = subprocess.Popen(
                cmd,
                env=self.node_env(),
                cwd=self.root,  # not the repository: nothing to import sslsearch from
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while b"Ray runtime started" not in log_path.read_bytes():
            if self.procs[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(log_path.read_text())
            time.sleep(0.5)


@pytest.fixture(scope="module")
def bare_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterWithoutSslsearch]:
    python = _python_without_sslsearch(tmp_path_factory.mktemp("nossl") / "venv")
    c = ClusterWithoutSslsearch(python)
    try:
        c.add_worker()
        yield c
    finally:
        c.stop()


def _search_command(cluster: Cluster, space: Path) -> tuple[list[str], dict[str, str]]:
    # the driver alone imports sslsearch (from this checkout); it runs outside the repository,
    # because Ray puts the driver's working directory on every worker's sys.path
    env = {**cluster.env, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "sslsearch", "search", "--space", str(space)]
    return [*cmd, "--address", cluster.address], env


def _search(cluster: Cluster, space: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd, env = _search_command(cluster, space)
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_trial_larger_than_any_node_is_refused_before_it_starts(
    bare_cluster: ClusterWithoutSslsearch, tmp_path: Path
) -> None:
    # two 1-CPU nodes: 2 CPUs in all, but no node has 2
    space = write_space(tmp_path, name="big", resources={"cpus": 2})
    out = _search(bare_cluster, space, tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    errors = [line for line in text.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in text, text
    assert "resources.cpus=2 per trial, but no Ray node has that much" in errors[0]
    assert not (tmp_path / "runs" / "big").exists()  # nothing started, nothing written


# --- one search on nodes without sslsearch: held back, then the user's own code on every node ---
#
# The search below starts while other jobs hold every CPU of the cluster (its trials are reported
# waiting, then run when the CPUs are freed), on nodes whose Python cannot import sslsearch, with
# a model, dataset, weights and objective of the user's own that no node has seen. Three tests
# check its run.

_HOLD = """
import sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
@ray.remote(num_cpus=1)
class Hold:
    def node(self):
        return ray.get_runtime_context().get_node_id()
holders = [Hold.remote() for _ in range(int(sys.argv[2]))]
print(sorted(ray.get([h.node.remote() for h in holders])), flush=True)
time.sleep(3600)  # the actors, and the CPUs they hold, go when this driver is killed
"""


@dataclass
class OwnSearch:
    """What the one search on the bare cluster left behind."""

    returncode: int
    text: str  # its output
    waiting: str  # its output when it was reported waiting (the CPUs still held)
    exp: Path
    rows: list[dict[str, Any]]
    project: Path  # the user's files: on no node's Python path
    data_root: Path
    arch: str
    data: str  # the user's dataset module


def _hold_every_cpu(cluster: Cluster, tmp: Path) -> subprocess.Popen[str]:
    """A driver whose actors hold every CPU of both 1-CPU nodes until it is killed."""
    hold_log = tmp / "hold.log"
    with hold_log.open("w") as f:
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLD, cluster.address, "2"],
            env=cluster.env,
            cwd=tmp,
            stdout=f,
            stderr=subprocess.STDOUT,
            text=True,
        )
    deadline = time.monotonic() + 300
    while "[" not in hold_log.read_text():  # every CPU of both nodes is held
        assert holder.poll() is None and time.monotonic() < deadline, hold_log.read_text()
        time.sleep(0.5)
    return holder


@pytest.fixture(scope="module")
def own_search(
    bare_cluster: ClusterWithoutSslsearch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OwnSearch]:
    import yaml

    from sslsearch.models import create_model, save_model

    from .spaces import with_changes
    from .user_code import write_user_code, write_user_objectives

    tmp = tmp_path_factory.mktemp("own")
    project = tmp / "project"  # on no node's Python path: only the driver reads it
    models, data = write_user_code(project)
    metrics = write_user_objectives(project)
    arch = f"{models}:small_cnn"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project)
        mp.setattr(sys, "path", list(sys.path))
        save_model(create_model(arch, 4, 1), project / "dense.pt", arch=arch, num_classes=4)
    data_root = tmp / "data"
    data_root.mkdir()
    space = with_changes(
        name="own",
        storage_path=str(tmp / "runs"),
        arch=arch,
        weights=str(project / "dense.pt"),
        data={"name": f"{data}:load", "root": str(data_root)},
        recipe={"epochs": 1, "finetune_epochs": 1, "batch_size": 64},
        # small_cnn's layer floors leave about 0.23 of its FLOPs: a lower budget is refused
        params={
            "ssl_lambda": {"low": 1e-3, "high": 1e-1, "log": True},
            "flops_budget": {"low": 0.3, "high": 0.8},
        },
        budget={"num_samples": 2, "max_concurrent": 2},
        economy={"points_per_ssl": 1},  # two trials, on whichever of the 1-CPU nodes is free
        # an objective of the user's own, shipped like the model: parameters at 8 bits
        objectives=[
            {"metric": "top1"},
            {"metric": "flops"},
            {"metric": f"{metrics}:weight_bytes_int8", "direction": "min"},
        ],
    )
    path = project / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    driver = tmp / "driver"  # Ray puts the driver's directory on the workers' path
    driver.mkdir()
    holder = _hold_every_cpu(bare_cluster, tmp)
    search = None
    try:
        cmd, env = _search_command(bare_cluster, path)
        env["SSLSEARCH_PENDING_WARN_S"] = "3"  # report the waiting trials after 3 s
        log = tmp / "search.log"
        with log.open("w") as f:
            search = subprocess.Popen(cmd, env=env, cwd=driver, stdout=f, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while "waiting for" not in log.read_text():
            assert search.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        waiting = log.read_text()
        holder.kill()  # frees the CPUs: the trials start and finish
        holder.wait(timeout=60)
        returncode = search.wait(timeout=600)
        exp = tmp / "runs" / "own"
        trials = exp / "trials.parquet"
        rows = pq.read_table(trials).to_pylist() if trials.exists() else []
        yield OwnSearch(
            returncode, log.read_text(), waiting, exp, rows, project, data_root, arch, data
        )
    finally:
        for p in (holder, search):
            if p is not None and p.poll() is None:
                p.kill()


@pytest.mark.slow
def test_nodes_without_sslsearch_run_trials_to_ok(
    bare_cluster: ClusterWithoutSslsearch, own_search: OwnSearch
) -> None:
    probe = subprocess.run(
        [str(bare_cluster.python), "-c", "import sslsearch"],
        env=bare_cluster.node_env(),
        cwd=bare_cluster.root,
        capture_output=True,
        text=True,
    )
    assert probe.returncode != 0 and "No module named 'sslsearch'" in probe.stderr
    deps = "import ray, torch, optuna, fvcore, torch_pruning, sklearn"
    env = bare_cluster.node_env()
    subprocess.run([str(bare_cluster.python), "-c", deps], env=env, check=True)
    assert own_search.returncode == 0, own_search.text
    rows = own_search.rows
    assert [r["status"] for r in rows] == ["ok", "ok"], [r["error"] for r in rows]


@pytest.mark.slow
def test_trials_that_cannot_start_are_reported_then_run_when_resources_free(
    own_search: OwnSearch,
) -> None:
    # both trials wait: the two 1-CPU nodes are held by another job
    assert "2 trial(s) waiting for" in own_search.waiting
    assert "with none running" in own_search.waiting
    assert own_search.returncode == 0, own_search.text  # the CPUs were freed: they ran
    assert [r["status"] for r in own_search.rows] == ["ok", "ok"]


@pytest.mark.slow
def test_a_users_model_data_and_weights_reach_nodes_that_never_saw_them(
    own_search: OwnSearch,
) -> None:
    assert own_search.returncode == 0, own_search.text
    rows, exp, arch, data = own_search.rows, own_search.exp, own_search.arch, own_search.data
    assert [r["status"] for r in rows] == ["ok", "ok"], [r["error"] for r in rows]
    assert {r["arch"] for r in rows} == {arch}
    assert {r["weights"] for r in rows} == {str(exp / "weights" / "dense.pt")}
    # the workers imported the shipped copy of the user's module, never the original file (a
    # reused worker loads the data once for both trials)
    loaded = (own_search.data_root / "loaded_from.txt").read_text().split()
    assert loaded and str(own_search.project / f"{data}.py") not in loaded, loaded
    assert all(p.endswith(f"/{data}.py") for p in loaded), loaded
    _assert_user_objective(exp, rows)


def _assert_user_objective(exp: Path, rows: list[dict[str, Any]]) -> None:
    """The user's objective (parameters at one byte each) is a column of trials.parquet and
    pareto.parquet, measured on the point and on the model it was pruned from, has its front in
    pareto.md and report.html, and is the study's third value."""
    import optuna

    for r in rows:
        assert r["weight_bytes_int8"] == r["params"] > 0
        assert r["weight_bytes_int8_before"] == r["params_before"] > r["params"]
    pareto = pq.read_table(exp / "pareto.parquet").to_pylist()
    assert pareto and all(r["weight_bytes_int8"] == r["params"] for r in pareto)
    from .report_data import md_tables

    tables = md_tables((exp / "pareto.md").read_text())
    assert any("top1 vs weight_bytes_int8" in t["h2"] for t in tables)
    assert any("weight_bytes_int8" in t["header"] for t in tables)
    assert "top1 vs weight_bytes_int8" in (exp / "report.html").read_text()
    study = optuna.load_study(study_name="own", storage=f"sqlite:///{exp}/optuna.db")
    assert study.metric_names == ["top1", "flops", "weight_bytes_int8"]
    by_id = {r["trial_id"]: r for r in rows}
    done = [t for t in study.trials if t.values]
    assert done and all(
        t.values[2] == by_id[t.user_attrs["trial_id"]]["weight_bytes_int8"] for t in done
    )


# --- two local searches on one machine ----------------------------------------------------------


def _local_search(tmp: Path, name: str, samples: int, epochs: int, port: int) -> subprocess.Popen:
    space = write_space(
        tmp,
        name=name,
        recipe={"epochs": epochs, "finetune_epochs": 1, "batch_size": 64},
        budget={"num_samples": samples, "max_concurrent": 1},
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PYTHONPATH=str(ROOT), RAY_TMPDIR=str(tmp / "ray"))
    cmd = [sys.executable, "-m", "sslsearch", "search", "--space", str(space), "--num-cpus", "1"]
    cmd += ["--dashboard-port", str(port)]
    log = (tmp / f"{name}.log").open("w")
    return subprocess.Popen(cmd, env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_two_local_searches_at_once_both_finish() -> None:
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="sslt", dir="/tmp"))  # short: Ray's socket paths
    port = free_port()
    first = _local_search(tmp, "first", samples=4, epochs=3, port=port)
    second = None
    try:
        deadline = time.monotonic() + 300
        while not list((tmp / "runs" / "first").glob("jobs/*/job.json")):
            assert first.poll() is None, (tmp / "first.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.5)
        # the first one's Ray and dashboard are up and a trial runs: start the second
        second = _local_search(tmp, "second", samples=1, epochs=1, port=port)
        while "Ray dashboard:" not in (tmp / "second.log").read_text():
            assert second.poll() is None, (tmp / "second.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.5)
        overlapped = first.poll() is None
        assert second.wait(timeout=600) == 0, (tmp / "second.log").read_text()
        assert first.wait(timeout=600) == 0, (tmp / "first.log").read_text()
        assert overlapped  # both Ray instances were up at once
        one, two = (tmp / "first.log").read_text(), (tmp / "second.log").read_text()
        assert f"Ray dashboard: http://127.0.0.1:{port}" in one
        assert f"dashboard port {port} is in use" in two
        assert f"Ray dashboard: http://127.0.0.1:{port}\n" not in two
        # neither instance lost a server to the other one's ports
        ray_logs = "".join(p.read_text(errors="replace") for p in tmp.glob("ray/**/*.log"))
        assert "exception occurred while starting the metrics server" not in ray_logs
        for name, n in (("first", 4), ("second", 1)):
            rows = pq.read_table(tmp / "runs" / name / "trials.parquet").to_pylist()
            assert [r["status"] for r in rows] == ["ok"] * n
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                kill_tree(p.pid)  # the driver and the Ray instance it started
        shutil.rmtree(tmp, ignore_errors=True)

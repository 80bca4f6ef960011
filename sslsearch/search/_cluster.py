"""Starting or joining Ray: what the workers get, what a local instance exposes, what fits.

* The sslsearch package travels to every worker in Ray's runtime_env (``py_modules``): a node
  needs Python, Ray and the heavy dependencies, not sslsearch itself, and runs exactly the
  driver's code.
* A local instance is held to this machine: every Ray port (GCS, raylet, object manager,
  workers, agents, dashboard) listens on 127.0.0.1. A second search on the same machine starts
  its own instance on free ports. Joining a cluster (``--address``) keeps Ray's own behaviour.
* A trial must fit on one node (not the cluster's sum); trials that wait with nothing running
  are reported.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sslsearch
from sslsearch.errors import UserError

log = logging.getLogger(__name__)

# Quiet, predictable Tune: our own progress lines instead of Tune's tables; every report need
# not carry the objectives (only the final one does); a job's error goes to jobs/<id>/error.txt.
_TUNE_ENV = {
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    "TUNE_PRINT_ALL_TRIAL_ERRORS": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    # Tune's experiment snapshots are never read back (a resume reads the experiment
    # directory), and each one serialises every trial: rarely.
    "TUNE_GLOBAL_CHECKPOINT_S": "600",
    # Tune's per-trial loggers (result.json, progress.csv, TensorBoard) cost the driver about
    # two thirds of its time per trial; the trial writes its own history (jobs/<id>/).
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    # Tune's own "insufficient resources" warning compares with cluster totals and names Tune
    # settings; PendingWatch below says it in sslsearch's terms.
    "TUNE_WARN_INSUFFICENT_RESOURCE_THRESHOLD_S": "1e9",
    "TUNE_WARN_INSUFFICENT_RESOURCE_THRESHOLD_S_AUTOSCALER": "1e9",
}
# On Linux Ray takes the machine's network address as the node address and binds its servers to
# it or to every interface. With this set (the macOS/Windows default), the node address is
# 127.0.0.1 and Ray binds everything to loopback. Read when ray is imported and by every process
# the local instance starts.
_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass
class Cluster:
    started_here: bool
    address: str
    dashboard_url: str | None
    auth: str  # "token" or "disabled"
    cpus: float
    gpus: float
    nodes: int
    # (CPUs, GPUs) of each alive node: a trial runs on one node, so it must fit one of these
    node_resources: list[tuple[float, float]] = field(default_factory=list)

    def access_hint(self) -> str:
        """How to reach the dashboard; never the token itself."""
        if not self.dashboard_url:
            return "Ray dashboard: not running"
        lines = [f"Ray dashboard: {self.dashboard_url}"]
        if self.auth == "token":
            path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
            lines.append(
                "  token authentication is on: run `ray get-auth-token` (the token is stored in "
                f"{path}) and paste it into the dashboard's login prompt; CLI clients on other "
                "machines need RAY_AUTH_MODE=token and the same token"
            )
        if self.dashboard_url.startswith("http://127.0.0.1"):
            port = self.dashboard_url.rsplit(":", 1)[-1].strip("/")
            lines.append(
                f"  listening on 127.0.0.1 only; from another machine: "
                f"ssh -L {port}:127.0.0.1:{port} <this host>"
            )
        return "\n".join(lines)


def tune_environment() -> None:
    for k, v in _TUNE_ENV.items():
        os.environ.setdefault(k, v)


def runtime_env(user_modules: Sequence[str] = ()) -> dict[str, Any]:
    """Ship the sslsearch package (this very code, not a node's copy) to every Ray worker, and
    the user's own modules (``arch`` / ``data.name`` import paths: files or package dirs)."""
    return {
        "py_modules": [str(Path(sslsearch.__file__).parent), *user_modules],
        "excludes": ["__pycache__", "*.pyc"],
    }


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _dashboard_port(host: str, port: int) -> int:
    """``port`` when free; else (another search's dashboard, say) a free one, with a warning."""
    if port == 0 or _port_free(port, host):
        return port
    other = free_port(host)
    log.warning("dashboard port %d is in use (another search?): using %d", port, other)
    return other


# Ray's autoscaler and dashboard metrics servers have fixed default ports (44217, 44227): a
# second local instance would start without them. Each local instance takes free ones (read
# from the environment by the processes ray.init starts); a value the user set is kept.
_METRICS_PORT_VARS = ("AUTOSCALER_METRIC_PORT", "DASHBOARD_METRIC_PORT")
_picked: dict[str, str] = {}


def _own_metrics_ports() -> None:
    for var in _METRICS_PORT_VARS:
        if var not in os.environ or os.environ[var] == _picked.get(var):
            _picked[var] = os.environ[var] = str(free_port())


# Ray keeps a local instance's Unix sockets under <temp>/ray/session_<date>_<time>_<us>_<pid>/
# sockets/; a socket path longer than 107 bytes fails ray.init with an OSError deep in Ray.
_AF_UNIX_MAX = 107
_SOCKET_TAIL = "ray/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store"


def system_temp_dir() -> str:
    """The directory a local Ray instance keeps its files under (Ray's own rule, Linux/macOS)."""
    if "RAY_TMPDIR" in os.environ:
        return os.environ["RAY_TMPDIR"]
    if sys.platform.startswith("linux") and "TMPDIR" in os.environ:
        return os.environ["TMPDIR"]
    return "/tmp" if sys.platform.startswith(("linux", "darwin")) else tempfile.gettempdir()


def short_ray_temp_dir(system_temp: str | None = None) -> str | None:
    """A short temp dir for Ray when ``system_temp`` would make its socket paths too long.

    None when the paths fit (Ray's default is kept). Otherwise a new directory under /tmp (the
    system's, whatever RAY_TMPDIR/TMPDIR say), so the search starts instead of failing.
    """
    base = system_temp if system_temp is not None else system_temp_dir()
    if len(os.path.join(os.path.abspath(base), _SOCKET_TAIL).encode()) <= _AF_UNIX_MAX:
        return None
    root = "/tmp" if os.path.isdir("/tmp") else None
    return os.path.join(tempfile.mkdtemp(prefix="sslray-", dir=root), "ray")


def connect(
    address: str | None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    dashboard: bool = True,
    dashboard_host: str = "127.0.0.1",
    dashboard_port: int = 8265,
    verbose: bool = False,
    user_modules: Sequence[str] = (),
) -> Cluster:
    """Join ``address`` (``auto`` or ``HOST:PORT``) or start a local instance (loopback only).

    Each search started without ``address`` gets its own Ray instance, on free ports: two
    searches on one machine run side by side, and neither outlives nor stops the other's
    workers (joining the first one's instance would end the second's trials when the first
    finishes and shuts it down). They share the machine's cores: give each ``--num-cpus``.
    """
    if address is None:
        # before `import ray`: the node address is read when ray is imported
        os.environ.update(_LOOPBACK_ENV)
    import ray

    tune_environment()
    if ray.is_initialized():
        _use_running_instance(user_modules)
        return _describe_cluster(address, None, started=False)
    if address:
        return _describe_cluster(address, _join(address, user_modules, verbose), started=False)
    ctx = _start_local(
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        dashboard=dashboard,
        dashboard_host=dashboard_host,
        dashboard_port=dashboard_port,
        verbose=verbose,
        user_modules=user_modules,
    )
    return _describe_cluster(address, ctx, started=True)


def _use_running_instance(user_modules: Sequence[str]) -> None:
    """Say that the Ray instance this process already started is used as it is."""
    log.info("using the Ray instance this process already started (its runtime_env as is)")
    if user_modules:
        log.warning(
            "Ray was started before the search: your modules (%s) reach its workers only "
            "if its runtime_env ships them (py_modules) or the workers can import them",
            ", ".join(user_modules),
        )


def _join(address: str, user_modules: Sequence[str], verbose: bool) -> Any:
    """Join the cluster at ``address``; one line (a UserError) when it cannot be reached."""
    import ray

    try:
        return ray.init(
            address=address,
            runtime_env=runtime_env(user_modules),
            logging_level=logging.WARNING,
            log_to_driver=verbose,
        )
    except ConnectionError as e:
        hint = ""
        if os.environ.get("RAY_AUTH_MODE") != "token":
            hint = " (if the cluster uses token authentication, set RAY_AUTH_MODE=token)"
        raise UserError(f"cannot join the Ray cluster at {address}: {e}{hint}") from None


def _start_local(
    *,
    num_cpus: int | None,
    num_gpus: int | None,
    dashboard: bool,
    dashboard_host: str,
    dashboard_port: int,
    verbose: bool,
    user_modules: Sequence[str],
) -> Any:
    """A new local instance of this search's own: free metrics ports, a temp dir short enough
    for its sockets, the dashboard on a free port."""
    import ray

    # Ray turns token authentication on for local clusters and creates the token
    # (~/.ray/auth_token) when RAY_AUTH_MODE is unset; keep its default, minus the warning.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.ERROR
    )
    log.info("starting a local Ray instance ...")
    _own_metrics_ports()
    short = short_ray_temp_dir()
    if short is not None:
        log.warning(
            "Ray's temp dir %s is too long for its socket paths (at most %d bytes); this "
            "instance keeps its files in %s (set RAY_TMPDIR to a short path to choose)",
            system_temp_dir(),
            _AF_UNIX_MAX,
            short,
        )
    ctx = ray.init(
        address="local",  # a new instance, even when RAY_ADDRESS names another one
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        include_dashboard=dashboard,
        dashboard_host=dashboard_host,
        dashboard_port=_dashboard_port(dashboard_host, dashboard_port) if dashboard else None,
        runtime_env=runtime_env(user_modules),
        logging_level=logging.WARNING,
        log_to_driver=verbose,
        _temp_dir=short,
    )
    node_ip = ray.util.get_node_ip_address()
    if node_ip not in LOOPBACK:
        # ray was imported before connect() could set _LOOPBACK_ENV (a Python API caller)
        log.warning("Ray was imported early: the local instance listens on %s", node_ip)
    return ctx


def _describe_cluster(address: str | None, ctx: Any, started: bool) -> Cluster:
    """What the search runs on: the dashboard's URL (from ``ctx``, ray.init's context) and the
    resources of the cluster and of each alive node."""
    import ray

    url = getattr(ctx, "dashboard_url", None) if ctx is not None else None
    if url and not url.startswith("http"):
        url = f"http://{url}"
    res = ray.cluster_resources()
    alive = [n for n in ray.nodes() if n.get("Alive")]
    return Cluster(
        started_here=started,
        address=address or "local",
        dashboard_url=url or None,
        auth=os.environ.get("RAY_AUTH_MODE", "token"),
        cpus=float(res.get("CPU", 0.0)),
        gpus=float(res.get("GPU", 0.0)),
        nodes=len(alive),
        node_resources=[
            (float(n["Resources"].get("CPU", 0.0)), float(n["Resources"].get("GPU", 0.0)))
            for n in alive
        ],
    )


def check_trial_fits(cpus: float, gpu: float, cluster: Cluster) -> None:
    """A trial runs on one node: refuse (one line) resources that no single node has."""
    fits = [(c, g) for c, g in cluster.node_resources if c >= cpus and g >= gpu]
    if fits or not cluster.node_resources:
        return
    most_cpus = max(c for c, _ in cluster.node_resources)
    most_gpus = max(g for _, g in cluster.node_resources)
    asked = f"resources.cpus={cpus:g}" + (f", resources.gpu={gpu:g}" if gpu else "")
    raise UserError(
        f"{asked} per trial, but no Ray node has that much: the largest have {most_cpus:g} CPUs "
        f"and {most_gpus:g} GPUs ({cluster.nodes} node(s), {cluster.cpus:g} CPUs in all; a "
        "trial runs on one node)"
    )


class PendingWatch:
    """Warns when trials wait (PENDING) while none of ours runs, for ``after_s`` seconds.

    Trials queue normally while others run; with nothing running, no trial can start: the
    resources are held by another job, a node left, or the cluster is still scaling up. Call
    ``check`` from the search loop (a Tune callback's ``on_step_end``); it warns once per
    stall and again after the next one. ``after_s`` defaults to $SSLSEARCH_PENDING_WARN_S or 60.
    """

    def __init__(self, after_s: float | None = None) -> None:
        if after_s is None:
            after_s = float(os.environ.get("SSLSEARCH_PENDING_WARN_S", "60"))
        self.after_s = after_s
        self._since: float | None = None
        self._warned = False

    def check(self, trials: Sequence[Any], now: float | None = None) -> str | None:
        now = time.monotonic() if now is None else now
        statuses = [getattr(t, "status", None) for t in trials]
        pending = statuses.count("PENDING")
        if not pending or "RUNNING" in statuses:
            self._since, self._warned = None, False
            return None
        if self._since is None:
            self._since = now
        if self._warned or now - self._since < self.after_s:
            return None
        self._warned = True
        msg = (
            f"{pending} trial(s) waiting for {now - self._since:.0f}s with none running: no Ray "
            "node has the resources.cpus / resources.gpu of a trial free (another job holds "
            "them, a node left, or the cluster is still scaling up; `ray status` shows what is "
            "free)"
        )
        log.warning("%s", msg)
        return msg


def shutdown(cluster: Cluster | None) -> None:
    import ray

    if cluster is not None and cluster.started_here and ray.is_initialized():
        ray.shutdown()

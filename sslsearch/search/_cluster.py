"""Starting or joining Ray, the dashboard (127.0.0.1 only by default) and its token."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from sslsearch.errors import UserError

log = logging.getLogger(__name__)

# Quiet, predictable Tune: our own progress lines instead of Tune's tables; every report need
# not carry the objectives (only the final one does); per-trial errors stay in error.txt.
_TUNE_ENV = {
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    "TUNE_PRINT_ALL_TRIAL_ERRORS": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    # Snapshot the experiment every 2 s (Tune's "auto" waits >= 10 s): after a driver crash,
    # fewer trials are unknown to Tune. The state is small; a snapshot costs milliseconds.
    "TUNE_GLOBAL_CHECKPOINT_S": "2",
}


@dataclass
class Cluster:
    started_here: bool
    address: str
    dashboard_url: str | None
    auth: str  # "token" or "disabled"
    cpus: float
    gpus: float
    nodes: int

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
            lines.append(
                "  listening on 127.0.0.1 only; from another machine: ssh -L 8265:127.0.0.1:8265 <this host>"
            )
        return "\n".join(lines)


def tune_environment() -> None:
    for k, v in _TUNE_ENV.items():
        os.environ.setdefault(k, v)


def connect(
    address: str | None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    dashboard: bool = True,
    dashboard_host: str = "127.0.0.1",
    dashboard_port: int = 8265,
    verbose: bool = False,
) -> Cluster:
    """Join ``address`` (``auto`` or ``HOST:PORT``) or start a local instance."""
    import ray

    tune_environment()
    if ray.is_initialized():
        started = False
        ctx = None
    elif address:
        try:
            ctx = ray.init(address=address, logging_level=logging.WARNING, log_to_driver=verbose)
        except ConnectionError as e:
            hint = ""
            if os.environ.get("RAY_AUTH_MODE") != "token":
                hint = " (if the cluster uses token authentication, set RAY_AUTH_MODE=token)"
            raise UserError(f"cannot join the Ray cluster at {address}: {e}{hint}") from None
        started = False
    else:
        # Ray turns token authentication on for local clusters and creates the token
        # (~/.ray/auth_token) when RAY_AUTH_MODE is unset; keep its default, minus the warning.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
            logging.ERROR
        )
        log.info("starting a local Ray instance ...")
        ctx = ray.init(
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=dashboard,
            dashboard_host=dashboard_host,
            dashboard_port=dashboard_port,
            logging_level=logging.WARNING,
            log_to_driver=verbose,
        )
        started = True
    url = getattr(ctx, "dashboard_url", None) if ctx is not None else None
    if url and not url.startswith("http"):
        url = f"http://{url}"
    res = ray.cluster_resources()
    return Cluster(
        started_here=started,
        address=address or "local",
        dashboard_url=url or None,
        auth=os.environ.get("RAY_AUTH_MODE", "token"),
        cpus=float(res.get("CPU", 0.0)),
        gpus=float(res.get("GPU", 0.0)),
        nodes=len([n for n in ray.nodes() if n.get("Alive")]),
    )


def shutdown(cluster: Cluster | None) -> None:
    import ray

    if cluster is not None and cluster.started_here and ray.is_initialized():
        ray.shutdown()

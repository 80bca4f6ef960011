"""The search's driver at scale: CPU per point and memory up to 10,000 points, kill and resume.

A real search (Ray Tune, the searcher, Optuna with its SQLite study, the experiment directory,
trials.parquet and the export) on a 3-node Ray cluster on loopback (``ray start``: a head and
two workers, one CPU each, token authentication, started and stopped by this script), whose
trial is a test double (``stub_points``): it has ``run_points``' signature and writes what a
trial writes (its states with ``StateStore``, each point's result with ``write_point``, a
report per epoch and per point) but trains nothing, so a point takes milliseconds and the
driver's own cost is what is measured. Each Tune trial runs ``points_per_ssl`` points (4),
as a real search does.

The driver runs as a separate process (``bench_scale.py drive ...``, the command a user would
run, with ``--resume`` the second time). It logs one progress line per point; a handler in it
writes the point count, its CPU time (``time.process_time``: every thread of the process) and
its memory (VmRSS, VmHWM) to a trace. From the traces:

* driver CPU per point in the window [M/2, M] for M = 100, 1,000 and the last point (10,000),
  each within one driver process (the one at 10,000 is the resumed driver, started at ~5,000);
  and per window of 500 points over the whole run (the figure);
* driver peak memory (VmHWM) when the driver reached 100, 1,000 and the last point;
* the driver is killed (SIGKILL) at ``--kill-at`` points, then the same command with
  ``--resume`` finishes; afterwards the study and trials.parquet must hold each point once;
* export time: ``sslsearch export`` of the finished experiment (wall and CPU).

A second table measures the sampler alone (in-process, no Ray): one GP ask at 25 .. 400
finished points, one TPE ask on a whole study of 100 .. 10,000 points against the same asks
through ``SamplerView`` (what the search uses), and picks ``sampler.gp_max_points`` (the most
points at which a GP ask costs at most 3 CPU-seconds) and ``sampler.max_history`` (the largest
view at which a TPE ask costs at most 25 ms).

    python benchmarks/bench_scale.py                                # 1,000 points, ~6 min
    nice -n 5 python benchmarks/bench_scale.py --points 10000 --kill-at 5000   # ~30+ min
    python benchmarks/bench_scale.py --sampler-only
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DEFAULT_SPACE = REPO / "search_spaces" / "default.yaml"
RAY = str(Path(sys.executable).parent / "ray")
GP_BUDGET_S = 3.0  # the most CPU-seconds one GP ask may cost (picks gp_max_points)
TPE_BUDGET_S = 0.025  # the most CPU-seconds one TPE ask may cost (picks max_history)


# ---- the trial's test double (shipped to the workers by value: it lives in __main__) --------


def stub_points(
    cfgs: Any,
    report: Any,
    state_dir: str | None = None,
    tags: dict[str, Any] | None = None,
    point_ids: Any = None,
    points_dir: str | None = None,
    stop: Any = None,
) -> list[Any]:
    """A test double of ``sslsearch.trial.run_points``: no model, no data, milliseconds.

    It keeps what the search relies on: a state per epoch (``StateStore``: a restarted job
    goes on from it), each point's result written the moment it finishes (``write_point``,
    never rewritten), a report per epoch and per point (``final``), and the point's metrics
    (a smooth function of ratio and lambda plus a per-point jitter, so fronts are non-trivial).
    """
    import hashlib

    from sslsearch.trial import STATE_VERSION, StateStore, describe, stored_point, write_point

    tags = dict(tags or {})
    store = StateStore(str(state_dir), version=STATE_VERSION)
    state = store.load() or {"version": STATE_VERSION, "phase": "ssl", "epoch": 0, "point": 0}
    rec = cfgs[0].recipe
    g = int(state["epoch"])

    def emit(m: dict[str, Any]) -> None:
        report({**tags, **m})

    while state["phase"] == "ssl" and state["epoch"] < rec.epochs:
        g = state["epoch"] + 1
        state = {**state, "epoch": g}
        store.save(state)
        emit(
            {
                "phase": "ssl",
                "epoch": g,
                "epochs": rec.epochs,
                "global_epoch": g,
                "val_top1": 50.0 + g,
                "final": False,
            }
        )
    if state["phase"] == "ssl":
        state = {**state, "phase": "points", "point": 0}
    started = time.time()
    for i in range(int(state["point"]), len(cfgs)):
        cfg, pid = cfgs[i], str(point_ids[i])
        final = stored_point(points_dir, pid)
        if final is None:
            for e in range(rec.finetune_epochs):
                g += 1
                state = {**state, "epoch": g, "point": i}
                store.save(state)
                emit(
                    {
                        "phase": "finetune",
                        "point": i,
                        "epoch": e + 1,
                        "global_epoch": g,
                        "epochs": rec.finetune_epochs,
                        "val_top1": 80.0,
                        "final": False,
                    }
                )
            r = float(cfg.ratio or 0.0)
            lam = float(cfg.ssl_lambda)  # type: ignore[arg-type]
            u = int(hashlib.sha256(pid.encode()).hexdigest()[:8], 16) / 2**32
            top1 = 99.0 - 45.0 * r**3 / (1.0 + 15.0 * lam) - 1.5 * u
            flops_before, params_before = 2_393_000, 288_200
            params = int(params_before * (1 - r) ** 2) + 500
            final = {
                **tags,
                **describe(cfg),
                "final": True,
                "point": i,
                "trial_id": pid,
                "status": "ok",
                "error": None,
                "ssl_model_id": "stub-" + hashlib.sha256(repr(lam).encode()).hexdigest()[:12],
                "top1": top1,
                "top5": min(100.0, top1 + 2.0),
                "val_top1": top1,
                "test_top1": top1 - 0.5,
                "test_top5": min(100.0, top1 + 1.5),
                "flops": int(flops_before * (1 - r) ** 1.6) + 1000,
                "params": params,
                "size_mb": params * 4 / 1e6,
                "latency_ms": 0.2 + 0.4 * (1 - r),
                "latency_batch_size": 1,
                "latency_device": "cpu",
                "latency_threads": 1,
                "flops_before": flops_before,
                "params_before": params_before,
                "size_mb_before": params_before * 4 / 1e6,
                "actual_ratio": r,
                "ssl_top1": 98.0,
                "pruned_top1": top1 - 10.0,
                "group_sparsity": 0.5,
                "ssl_reused": i > 0,
                "train_seconds": 0.0,
                "trial_seconds": time.time() - started,
                "started_at": started,
                "finished_at": time.time(),
                "global_epoch": g,
                "config": json.dumps(cfg.to_dict(), sort_keys=True),
            }
            write_point(str(points_dir), pid, final)
        state = {**state, "point": i + 1}
        store.save(state, keep=1 if i + 1 == len(cfgs) else None)
        emit(final)
    return []


# ---- the driver (a separate process, as a user runs it) -------------------------------------

_POINT = re.compile(r"^\[(\d+)/\d+\]")


class TraceHandler(logging.Handler):
    """Writes ``points cpu_s wall_s rss_mb hwm_mb`` for each point line the driver logs."""

    def __init__(self, path: Path) -> None:
        super().__init__(logging.INFO)
        self.f = path.open("a")
        self.last_flush = 0.0
        self.n = 0

    def emit(self, record: logging.LogRecord) -> None:
        m = _POINT.match(str(record.args[0]) if record.args else record.getMessage())
        if not m:
            return
        k = int(m.group(1))
        cpu, wall = time.process_time(), time.monotonic()
        rss = hwm = -1.0
        self.n += 1
        if self.n == 1 or k % 25 == 0 or k in (100, 1000):
            rss, hwm = _memory_mb()
        self.f.write(f"{k} {cpu:.4f} {wall:.4f} {rss:.1f} {hwm:.1f}\n")
        if wall - self.last_flush > 0.5:
            self.f.flush()
            self.last_flush = wall

    def close(self) -> None:
        self.f.flush()
        self.f.close()
        super().close()


def _memory_mb(pid: int | str = "self") -> tuple[float, float]:
    rss = hwm = -1.0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    return rss, hwm


def drive(args: argparse.Namespace) -> int:
    """Run (or resume) the search on the cluster at ``--address`` with the stub trial."""
    from sslsearch.search import SearchOptions, run_search

    trace_dir = Path(args.trace_dir)
    trace_dir.mkdir(parents=True, exist_ok=True)
    handler = TraceHandler(trace_dir / f"trace-{os.getpid()}.txt")
    progress = logging.getLogger("sslsearch.progress")
    progress.setLevel(logging.INFO)
    progress.addHandler(handler)
    progress.propagate = False
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("sslsearch.progress").propagate = False
    cpu0 = time.process_time()
    out = run_search(
        SearchOptions(
            space=args.space,
            resume=args.resume,
            address=args.address,
            dashboard=False,
            progress_every_s=300.0,
            runner=stub_points,
        )
    )
    handler.close()
    print(
        "DRIVER "
        + json.dumps(
            {
                "counts": out.counts,
                "interrupted": out.interrupted,
                "cpu_s": time.process_time() - cpu0,
                "hwm_mb": _memory_mb()[1],
            }
        ),
        flush=True,
    )
    return 0


# ---- a 3-node cluster on loopback -----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LoopbackCluster:
    """A head and ``workers`` worker nodes (``ray start --block``, one CPU each) on 127.0.0.1;
    every process is ended by PID in ``stop``."""

    def __init__(self, workers: int = 2) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sslbs", dir="/tmp"))  # short: socket paths
        token = self.root / "token"
        token.write_text(secrets.token_hex(32))
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"},
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        port = _free_port()
        self.address = f"127.0.0.1:{port}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._start("head", ["--head", f"--port={port}", "--include-dashboard=false"])
        for w in range(workers):
            ports = [_free_port() for _ in range(6)]
            lo = 21000 + 1000 * w
            self._start(
                f"worker{w}",
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
                ],
            )

    def _start(self, name: str, args: list[str]) -> None:
        log = (self.root / f"{name}.log").open("wb")
        cmd = [
            RAY,
            "start",
            *args,
            "--num-cpus=1",
            f"--temp-dir={self.root / name}",
            "--block",
            "--node-ip-address=127.0.0.1",
            "--disable-usage-stats",
        ]
        self.procs[name] = subprocess.Popen(
            cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 120
        while b"Ray runtime started" not in (self.root / f"{name}.log").read_bytes():
            if self.procs[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.root / f"{name}.log").read_text())
            time.sleep(0.5)

    def stop(self) -> None:
        for p in reversed(list(self.procs.values())):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)  # `ray start --block` stops its node
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
        for d in Path("/proc").iterdir():  # anything that outlived its node, by PID
            if d.name.isdigit() and int(d.name) != os.getpid():
                with contextlib.suppress(OSError):
                    if str(self.root) in (d / "cmdline").read_bytes().decode(errors="replace"):
                        os.kill(int(d.name), signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


# ---- the measurement -------------------------------------------------------------------------


def read_trace(path: Path) -> list[tuple[int, float, float, float, float]]:
    rows = []
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 5:
                with contextlib.suppress(ValueError):
                    k, cpu, wall, rss, hwm = parts
                    rows.append((int(k), float(cpu), float(wall), float(rss), float(hwm)))
    return rows


def run_driver(
    cmd: list[str], env: dict[str, str], trace_dir: Path, log: Path, kill_at: int | None
) -> dict[str, Any]:
    """Run one driver; SIGKILL it once its trace reaches ``kill_at`` points."""
    before = set(trace_dir.glob("trace-*.txt"))
    t0 = time.monotonic()
    with log.open("a") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    killed_at = None
    trace = trace_dir / f"trace-{proc.pid}.txt"
    while proc.poll() is None:
        time.sleep(0.5)
        if kill_at is not None:
            rows = read_trace(trace)
            if rows and rows[-1][0] >= kill_at:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed_at = rows[-1][0]
    wall = time.monotonic() - t0
    new = set(trace_dir.glob("trace-*.txt")) - before
    summary: dict[str, Any] = {}
    for line in log.read_text().splitlines():
        if line.startswith("DRIVER "):
            summary = json.loads(line[len("DRIVER ") :])
    rows = read_trace(trace)
    return {
        "pid": proc.pid,
        "returncode": proc.returncode,
        "wall_s": wall,
        # launch to its first point (CLOCK_MONOTONIC is one clock for every process)
        "to_first_point_s": rows[0][2] - t0 if rows else None,
        "killed_at": killed_at,
        "trace": str(trace),
        "new_traces": [str(t) for t in new],
        "summary": summary,
    }


def window_cpu(
    rows: list[tuple[int, float, float, float, float]], lo: int, hi: int
) -> float | None:
    """Driver CPU-seconds per point between the records at ``lo`` and ``hi`` points."""
    a = next((r for r in rows if r[0] >= lo), None)
    b = next((r for r in reversed(rows) if r[0] <= hi), None)
    if a is None or b is None or b[0] <= a[0]:
        return None
    return (b[1] - a[1]) / (b[0] - a[0])


def hwm_at(rows: list[tuple[int, float, float, float, float]], k: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB at the last memory record at or before ``k`` points."""
    mem = [r for r in rows if r[0] <= k and r[4] > 0]
    return (mem[-1][3], mem[-1][4]) if mem else (float("nan"), float("nan"))


def verify(exp: Path, n: int) -> dict[str, Any]:
    """The study and trials.parquet hold each of the ``n`` points once, all finished ok."""
    import optuna
    import pyarrow.parquet as pq

    study = optuna.load_study(study_name=exp.name, storage=f"sqlite:///{exp}/optuna.db")
    trials = study.get_trials(deepcopy=False)
    ids = [t.user_attrs.get("trial_id") for t in trials]
    rows = pq.read_table(exp / "trials.parquet").to_pylist()
    search = [r for r in rows if r["role"] == "search"]
    row_ids = [r["trial_id"] for r in search]
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    statuses: dict[str, int] = {}
    for r in search:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    return {
        "study_trials": len(trials),
        "study_unique_points": len(set(ids)),
        "study_states": states,
        "rows": len(search),
        "rows_unique": len(set(row_ids)),
        "row_statuses": statuses,
        "same_points": sorted(set(ids)) == sorted(set(row_ids)),
        "jobs": len(list((exp / "jobs").glob("*/job.json"))),
        "each_point_once": len(trials) == len(set(ids)) == len(search) == len(set(row_ids)) == n
        and states == {"COMPLETE": n}
        and statuses == {"ok": n},
    }


def export_time(exp: Path, env: dict[str, str]) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "sslsearch", "export", str(exp)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        cwd=REPO,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": time.monotonic() - t0, "cpu_s": cpu}


def sampler_costs(sizes_gp: list[int], sizes_tpe: list[int], views: list[int]) -> dict[str, Any]:
    """CPU-seconds of one ask: GP on n points; TPE on a whole study vs through SamplerView."""
    import random
    import warnings

    import optuna
    from optuna.trial import TrialState

    from sslsearch.config import space_from_mapping
    from sslsearch.search._params import define_by_run
    from sslsearch.search._plan import plan_search
    from sslsearch.search._sampler import SamplerView, make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")
    base = {
        "params": {
            "ssl_lambda": {"low": 1e-3, "high": 1e-1, "log": True},
            "ratio": {"low": 0.1, "high": 0.9},
        },
        "budget": {"num_samples": 100000},
    }
    dists = {
        "ssl_lambda": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True),
        "ratio": optuna.distributions.FloatDistribution(0.1, 0.9),
    }

    def point(rnd: random.Random) -> tuple[dict[str, float], list[float]]:
        p = {"ssl_lambda": 10 ** rnd.uniform(-3, -1), "ratio": rnd.uniform(0.1, 0.9)}
        r = p["ratio"]
        return p, [99 - 45 * r**3 + rnd.random(), 2.4e6 * (1 - r) ** 1.6, 1.15 * (1 - r) ** 2]

    def whole(name: str, n: int, asks: int) -> float:
        space = space_from_mapping({**base, "sampler": {"name": name}})
        study = optuna.create_study(
            directions=["maximize", "minimize", "minimize"], sampler=make_sampler(space, name)
        )
        rnd = random.Random(0)
        trials = []
        for _ in range(n):
            p, v = point(rnd)
            trials.append(optuna.trial.create_trial(params=p, distributions=dists, values=v))
        study.add_trials(trials)
        dbr = define_by_run(space)
        t0 = time.process_time()
        for _ in range(asks):
            t = study.ask()
            dbr(t)
            study.tell(t, point(rnd)[1])
        return (time.process_time() - t0) / asks

    def viewed(n: int, history: int, asks: int) -> float:
        space = space_from_mapping({**base, "sampler": {"name": "tpe", "max_history": history}})
        view = SamplerView(plan_search(space), define_by_run(space))
        rnd = random.Random(0)
        for i in range(n):
            p, v = point(rnd)
            view.record(f"x{i}", p, dists, TrialState.COMPLETE, v)
        t0 = time.process_time()
        for i in range(asks):
            p = view.propose(f"y{i}", {})[0]
            view.record(f"y{i}", p, dists, TrialState.COMPLETE, point(rnd)[1])
        return (time.process_time() - t0) / asks

    out: dict[str, Any] = {"gp": {}, "tpe_whole": {}, "tpe_view": {}, "tpe_view_sizes": {}}
    for n in sizes_gp:
        out["gp"][n] = whole("gp", n, 3)
        print(f"  GP ask at {n} points: {out['gp'][n]:.2f} CPU-s", flush=True)
    for h in views:
        out["tpe_view_sizes"][h] = whole("tpe", h, 10)
        print(f"  TPE ask on {h} points: {1000 * out['tpe_view_sizes'][h]:.1f} CPU-ms", flush=True)
    fits = [n for n in sizes_gp if out["gp"][n] <= GP_BUDGET_S]
    gp_max = max(fits) if fits else min(sizes_gp)
    fits = [h for h in views if out["tpe_view_sizes"][h] <= TPE_BUDGET_S]
    history = max(fits) if fits else min(views)
    for n in sizes_tpe:
        out["tpe_whole"][n] = whole("tpe", n, 5)
        out["tpe_view"][n] = viewed(n, history, 5)
        print(
            f"  TPE ask at {n} points: whole study {1000 * out['tpe_whole'][n]:.1f} CPU-ms, "
            f"through the view {1000 * out['tpe_view'][n]:.1f} CPU-ms",
            flush=True,
        )
    out["picked"] = {"gp_max_points": gp_max, "max_history": history}
    return out


def make_space(args: argparse.Namespace, storage: Path, name: str) -> Path:
    import yaml

    raw = yaml.safe_load(DEFAULT_SPACE.read_text())
    raw.update(name=name, storage_path=str(storage))
    raw["budget"] = {"num_samples": args.points, "max_concurrent": 3, "max_failures": 2}
    raw["economy"] = {"points_per_ssl": args.points_per_ssl}
    raw["recipe"].update(epochs=args.ssl_epochs, finetune_epochs=args.finetune_epochs)
    raw["sampler"] = {"name": args.sampler, "seed": 0}
    raw["reference"] = {"baseline": False, "lambda0": False}  # they would train real models
    path = storage / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def figure(
    traces: list[list[tuple[int, float, float, float, float]]], step: int, out: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    ax2 = ax.twinx()
    for i, rows in enumerate(traces):
        if not rows:
            continue
        lo, hi = rows[0][0], rows[-1][0]
        xs, ys = [], []
        for start in range(lo - lo % step, hi, step):
            c = window_cpu(rows, max(start, lo), min(start + step, hi))
            if c is not None:
                xs.append(min(start + step, hi))
                ys.append(1000 * c)
        label = "first driver" if i == 0 else "resumed driver"
        ax.plot(xs, ys, marker="o", ms=3, label=f"CPU ms/point, {label}")
        mem = [(r[0], r[3]) for r in rows if r[3] > 0]
        ax2.plot([m[0] for m in mem], [m[1] for m in mem], ls=":", label=f"RSS MB, {label}")
    ax.set_xlabel("points finished")
    ax.set_ylabel(f"driver CPU ms per point (windows of {step})")
    ax2.set_ylabel("driver RSS (MB)")
    ax.set_ylim(bottom=0)
    ax2.set_ylim(bottom=0)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="lower right", fontsize=8)
    ax.set_title("bench_scale: the search driver's cost per point (3-node loopback cluster)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="mode")
    d = sub.add_parser("drive", help="(internal) run or resume the search with the stub trial")
    d.add_argument("--space", required=True)
    d.add_argument("--address", required=True)
    d.add_argument("--trace-dir", required=True)
    d.add_argument("--resume", action="store_true")
    p.add_argument("--points", type=int, default=1000, help="budget.num_samples")
    p.add_argument(
        "--kill-at", type=int, default=None, help="SIGKILL the driver here (default: half)"
    )
    p.add_argument("--points-per-ssl", type=int, default=4)
    p.add_argument("--ssl-epochs", type=int, default=2, help="reports before a job's points")
    p.add_argument(
        "--finetune-epochs", type=int, default=1, help="reports per point before its final"
    )
    p.add_argument(
        "--sampler", default="tpe", help="the search's sampler (the table's is separate)"
    )
    p.add_argument("--sampler-only", action="store_true", help="only the sampler table")
    p.add_argument("--skip-sampler", action="store_true", help="no sampler table")
    p.add_argument("--keep", action="store_true", help="keep the experiment directory")
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.mode == "drive":
        return drive(args)
    sys.path.insert(0, str(BENCH_DIR))
    from _common import Col, machine_info, print_header, print_table, write_results

    started = time.time()
    machine = machine_info()
    print_header("bench_scale: the search driver at scale", machine)
    results: dict[str, Any] = {}
    if not args.skip_sampler:
        print("sampler: CPU-seconds of one ask (in-process, in-memory studies)", flush=True)
        results["sampler"] = sampler_costs(
            [25, 50, 100, 200, 400], [100, 1000, 3000, 10000], [250, 500, 1000, 2000]
        )
        s = results["sampler"]
        print_table(
            [
                {
                    "points": n,
                    "GP ask s": s["gp"].get(n),
                    "TPE whole ms": 1000 * s["tpe_whole"][n] if n in s["tpe_whole"] else None,
                    "TPE view ms": 1000 * s["tpe_view"][n] if n in s["tpe_view"] else None,
                }
                for n in sorted({*s["gp"], *s["tpe_whole"]})
            ],
            [
                Col("points", "points", "d"),
                Col("GP ask s", "GP ask CPU-s", ".2f"),
                Col("TPE whole ms", "TPE ask, whole study, CPU-ms", ".1f"),
                Col("TPE view ms", "TPE ask, SamplerView, CPU-ms", ".1f"),
            ],
            title=f"sampler (picked: {s['picked']})",
        )
    if args.sampler_only:
        write_results(
            "bench_scale",
            machine=machine,
            settings=vars(args),
            results=results,
            started=started,
            out=args.out,
        )
        return 0

    kill_at = args.kill_at if args.kill_at is not None else args.points // 2
    work = Path(tempfile.mkdtemp(prefix="sslscale-"))
    cluster = LoopbackCluster(workers=2)
    runs = []
    try:
        space = make_space(args, work, "scale")
        exp = work / "scale"
        trace_dir = work / "traces"
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "drive",
            "--space",
            str(space),
            "--address",
            cluster.address,
            "--trace-dir",
            str(trace_dir),
        ]
        print(
            f"\nsearch: {args.points} points, {args.points_per_ssl} per Tune trial, 3 nodes, "
            f"driver killed at {kill_at}",
            flush=True,
        )
        runs.append(run_driver(cmd, cluster.env, trace_dir, work / "driver.log", kill_at))
        print(
            f"  driver 1: killed at {runs[0]['killed_at']} points, {runs[0]['wall_s']:.0f}s",
            flush=True,
        )
        runs.append(
            run_driver([*cmd, "--resume"], cluster.env, trace_dir, work / "driver.log", None)
        )
        print(
            f"  driver 2 (the same command with --resume): rc {runs[1]['returncode']}, "
            f"{runs[1]['wall_s']:.0f}s",
            flush=True,
        )
        traces = [read_trace(Path(r["trace"])) for r in runs]
        results["runs"] = runs
        results["verify"] = verify(exp, args.points)
        results["export"] = export_time(exp, cluster.env)
        first, second = traces
        marks = [m for m in (100, 1000, 10000, args.points) if m <= args.points]
        table = []
        for m in sorted(set(marks)):
            rows = first if first and first[-1][0] >= m else second
            lo = max(m // 2, rows[0][0] + 1) if rows else m // 2
            rss, hwm = hwm_at(rows, m)
            table.append(
                {
                    "points": m,
                    "driver": "first" if rows is first else "resumed",
                    "window": f"{lo}-{m}",
                    "cpu_ms": 1000 * (window_cpu(rows, lo, m) or float("nan")),
                    "rss_mb": rss,
                    "hwm_mb": hwm,
                }
            )
        results["marks"] = table
        step = max(50, args.points // 20)
        results["windows"] = [
            {
                "driver": i + 1,
                "to": min(s + step, t[-1][0]),
                "cpu_ms": 1000
                * (window_cpu(t, max(s, t[0][0]), min(s + step, t[-1][0])) or float("nan")),
            }
            for i, t in enumerate(traces)
            if t
            for s in range(t[0][0] - t[0][0] % step, t[-1][0], step)
        ]
        print_table(
            table,
            [
                Col("points", "points", "d"),
                Col("driver", "driver", "s"),
                Col("window", "window (points)", "s"),
                Col("cpu_ms", "driver CPU ms/point", ".1f"),
                Col("rss_mb", "RSS MB", ".0f"),
                Col("hwm_mb", "peak RSS MB", ".0f"),
            ],
            title="driver cost per point",
        )
        base = table[0]
        last = table[-1]
        results["ratios"] = {
            "cpu_last_over_100": last["cpu_ms"] / base["cpu_ms"],
            "hwm_last_over_100": last["hwm_mb"] / base["hwm_mb"],
        }
        print(
            f"\nCPU/point at {last['points']} / at 100: {results['ratios']['cpu_last_over_100']:.2f}"
            f" (target <= 2); peak memory: {results['ratios']['hwm_last_over_100']:.2f} (<= 2)"
        )
        print(f"after kill and resume: {results['verify']}")
        print(
            f"export: {results['export']['wall_s']:.1f}s wall, {results['export']['cpu_s']:.1f} CPU-s"
        )
        # beside the results JSON (a run with --out elsewhere leaves nothing in results/)
        png = (
            Path(args.out).absolute().with_suffix(".png")
            if args.out
            else BENCH_DIR / "results" / "bench_scale.png"
        )
        figure(traces, step, png)
        results["figure"] = str(png.relative_to(REPO) if png.is_relative_to(REPO) else png)
    finally:
        cluster.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")
    write_results(
        "bench_scale",
        machine=machine,
        settings={
            **vars(args),
            "kill_at": kill_at,
            "nodes": 3,
            "cpus_per_node": 1,
            "max_concurrent": 3,
        },
        results=results,
        started=started,
        notes=[
            "driver CPU is time.process_time() of the driver process (all its threads), "
            "from its own progress log lines; the VM is shared with other jobs"
        ],
        out=args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Warm start: a search that starts SSL from the dense baseline's weights with a short SSL recipe,
against today's from-scratch recipe: front hypervolume and CPU-seconds, REAL searches.

Per seed s (the sampler's and the training seed):

* ``dense``: the dense baseline the warm search starts from: ``sslsearch trial`` with the
  default space's data, model and recipe for 12 + 4 epochs, no penalty, nothing pruned (what
  the search's own dense baseline is), written to a model file;
* ``scratch``: ``python launch/search.py`` on ``search_spaces/default.yaml`` as shipped (12 SSL
  epochs from a fresh initialisation, 4 fine-tuning epochs per point, 16 points, 4 per SSL
  model, GP);
* ``warm``: the same search with ``weights:`` the dense model and ``recipe.epochs`` 3 (the same
  learning rate and schedule, over 3 epochs).

Both searches run with the dense baseline and the lambda = 0 references off (the same for both:
the clocks time the search alone). Every run is its own process (``launch/search.py`` starts
and stops its own local Ray instance, 2 CPUs, no dashboard), under ``nice -n 5``. CPU-seconds
are those of the whole process tree (the driver, Ray's processes, every worker), counted by a
cgroup of its own (``CpuGroup``: needs a writable cgroup hierarchy, e.g. root on a VM). Wall
time is reported too, but the VM may be shared. The order of the two searches alternates
per seed. Hypervolume as the export computes it (top1/100 x FLOPs/dense FLOPs, reference point
top-1 0 at the dense FLOPs): of the search's own front (validation top-1, what it optimises),
and of the same front points' test top-1 (never tuned on).

    nice -n 5 python benchmarks/bench_warm_start.py                 # 3 seeds, ~10 min
    python benchmarks/bench_warm_start.py --seeds 1 --warm-epochs 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import Col, machine_info, median, print_header, print_table, write_results

from sslsearch.report import hypervolume, read_rows, to_minimization

ROOT = Path(__file__).resolve().parents[1]
DIRECTIONS = ["max", "min"]
COMMON = ["reference.baseline=false", "reference.lambda0=false"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--warm-epochs", type=int, default=3, help="SSL epochs from the weights")
    p.add_argument("--num-samples", type=int, default=16, help="points per search")
    p.add_argument(
        "--variants",
        nargs="+",
        default=["scratch", "warm"],
        choices=["scratch", "warm", "warm_lambda3x", "warm6"],
        help="scratch is always compared against (keep it in)",
    )
    p.add_argument("--set", action="append", default=[], help="extra key=value for both searches")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


class CpuGroup:
    """Counts the CPU time of a command and of every process it starts, exactly: a cgroup.

    The command enters its own cgroup before it runs; whatever it spawns (Ray's GCS, raylet,
    workers, however they are reparented or reaped) is in the same group, whose accounting
    (cgroup v1 ``cpuacct.usage`` or v2 ``cpu.stat`` ``usage_usec``) is the total. Needs a
    writable cgroup hierarchy (root, or a delegated subtree). ``getrusage(RUSAGE_CHILDREN)``
    is no substitute: it saw 10.6 of 21.0 CPU-s of a search here (Ray's processes are reaped
    where their times never reach the parent)."""

    V1 = Path("/sys/fs/cgroup/cpuacct")
    V2 = Path("/sys/fs/cgroup")

    def __init__(self, name: str) -> None:
        if (self.V1 / "cpuacct.usage").exists() and os.access(self.V1, os.W_OK):
            self.path, self.v2 = self.V1 / name, False
        elif (self.V2 / "cgroup.controllers").exists() and os.access(self.V2, os.W_OK):
            self.path, self.v2 = self.V2 / name, True
        else:
            raise SystemExit(
                "bench_warm_start needs a writable cgroup (v1 cpuacct or v2) to count the "
                "CPU-seconds of a search's whole process tree; run it as root or in a "
                "delegated cgroup"
            )
        self.path.mkdir()

    def enter(self) -> None:  # preexec_fn: runs in the child before exec
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def seconds(self) -> float:
        if self.v2:
            for line in (self.path / "cpu.stat").read_text().splitlines():
                if line.startswith("usage_usec"):
                    return int(line.split()[1]) / 1e6
        return int((self.path / "cpuacct.usage").read_text()) / 1e9

    def close(self, timeout_s: float = 120.0) -> float:
        """Wait until every process of the group has ended, remove it; its CPU-seconds."""
        deadline = time.monotonic() + timeout_s
        while (self.path / "cgroup.procs").read_text().strip():
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes left in {self.path} after the run ended")
            time.sleep(0.2)
        seconds = self.seconds()
        self.path.rmdir()
        return seconds


def measured(cmd: list[str], log: Path, out: Path | None = None) -> dict[str, float]:
    """Run ``cmd`` (nice 5); its wall seconds and the CPU-seconds of its whole process tree.
    stderr (and stdout, unless ``out``) go to ``log``."""
    group = CpuGroup(f"sslbench-{os.getpid()}-{time.monotonic_ns()}")
    t0 = time.monotonic()
    run = ["nice", "-n", "5", *cmd]
    with log.open("w") as f:
        if out is None:
            code = subprocess.call(run, stdout=f, stderr=subprocess.STDOUT, preexec_fn=group.enter)
        else:
            with out.open("w") as o:
                code = subprocess.call(run, stdout=o, stderr=f, preexec_fn=group.enter)
    wall = time.monotonic() - t0
    cpu = group.close()  # Ray's processes may outlive the driver by a moment
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}):\n{log.read_text()[-3000:]}")
    return {"wall_s": wall, "cpu_s": cpu}


def train_dense(seed: int, out: Path, log: Path) -> dict[str, Any]:
    """The default space's dense baseline: 12 + 4 epochs without penalty, nothing pruned."""
    cmd = [sys.executable, str(ROOT / "launch" / "trial.py"), "--ssl-lambda", "0"]
    cmd += ["--ratio", "0", "--epochs", "16", "--finetune-epochs", "0", "--seed", str(seed)]
    cmd += ["--threads", "1", "--out", str(out), "--json"]
    metrics = log.with_suffix(".json")
    cost = measured(cmd, log, metrics)
    import json

    m = json.loads(metrics.read_text())
    return {**cost, "val_top1": m["top1"], "test_top1": m["test_top1"], "model": str(out)}


def hv(points: np.ndarray) -> float:
    if len(points) == 0:
        return 0.0
    ref = to_minimization(np.array([[0.0, 1.0]]), DIRECTIONS)[0]
    return hypervolume(to_minimization(points, DIRECTIONS), ref)


def front_hv(rows: list[dict[str, Any]]) -> tuple[float, float, int]:
    """HV of the search's front (validation top-1) and of its points' test top-1."""
    ok = [r for r in rows if r["status"] == "ok" and r["top1"] is not None]
    if not ok:
        return 0.0, 0.0, 0
    val = np.array([[r["top1"] / 100.0, r["flops"] / r["flops_before"]] for r in ok])
    from sslsearch.report import non_dominated_mask

    on_front = non_dominated_mask(to_minimization(val, DIRECTIONS))
    test = np.array([[r["test_top1"] / 100.0, r["flops"] / r["flops_before"]] for r in ok])
    return hv(val), hv(test[on_front]), int(on_front.sum())


def search(
    args: argparse.Namespace, name: str, seed: int, base: Path, extra: list[str]
) -> dict[str, Any]:
    overrides = [
        f"name={name}",
        f"storage_path={base}",
        f"sampler.seed={seed}",
        f"seed={seed}",
        f"budget.num_samples={args.num_samples}",
        *COMMON,
        *extra,
        *args.set,
    ]
    cmd = [sys.executable, str(ROOT / "launch" / "search.py"), "--no-dashboard", "--num-cpus", "2"]
    cmd += [x for o in overrides for x in ("--set", o)]
    cost = measured(cmd, base / f"{name}.log")
    path = base / name / "trials.parquet"
    rows = read_rows(str(path))
    rows = [r for r in rows if r.get("role", "search") == "search"]
    hv_val, hv_test, front = front_hv(rows)
    return {
        **cost,
        "hv_val": hv_val,
        "hv_test": hv_test,
        "front_points": front,
        "points_ok": sum(r["status"] == "ok" for r in rows),
        "ssl_trainings": len({r["ssl_model_id"] for r in rows if r.get("ssl_model_id")}),
        "best_val_top1": max((r["top1"] or 0.0) for r in rows),
        "points": [
            {k: r[k] for k in ("ssl_lambda", "ratio", "top1", "test_top1", "flops", "status")}
            for r in rows
        ],
    }


def variant_overrides(name: str, weights: Path, args: argparse.Namespace) -> list[str]:
    """The space overrides of a variant (``scratch``: the default space as shipped)."""
    warm = [f"weights={weights}", f"recipe.epochs={args.warm_epochs}"]
    return {
        "scratch": [],
        "warm": warm,
        # the proximal step shrinks by lr x lambda per step: 3 epochs instead of 12 give the
        # penalty a quarter of the steps, so this variant searches lambda 3x higher
        "warm_lambda3x": [
            *warm,
            "params.ssl_lambda.low=3.0e-3",
            "params.ssl_lambda.high=3.0e-1",
        ],
        "warm6": [f"weights={weights}", "recipe.epochs=6"],
    }[name]


VARIANTS = ("scratch", "warm", "warm_lambda3x", "warm6")


def run_all(args: argparse.Namespace, seeds: list[int]) -> list[dict[str, Any]]:
    base = Path(tempfile.mkdtemp(prefix="sslw", dir="/tmp"))  # short: Ray's socket paths
    runs: list[dict[str, Any]] = []
    try:
        for k, seed in enumerate(seeds):
            dense = train_dense(seed, base / f"dense_s{seed}", base / f"dense_s{seed}.log")
            print(
                f"seed {seed} dense: {dense['cpu_s']:.0f} CPU-s, val top1 {dense['val_top1']:.2f}"
                f", test {dense['test_top1']:.2f}",
                flush=True,
            )
            weights = base / f"dense_s{seed}" / "model.pt"
            order = list(args.variants)
            order = order[k % len(order) :] + order[: k % len(order)]  # rotated per seed
            for v in order:
                extra = variant_overrides(v, weights, args)
                r = search(args, f"{v}_s{seed}", seed, base, extra)
                runs.append({"variant": v, "seed": seed, "dense": dense, "overrides": extra, **r})
                print(
                    f"seed {seed} {v:13s}: {r['wall_s']:.0f} s wall, {r['cpu_s']:.0f} CPU-s, "
                    f"HV val {r['hv_val']:.4f} test {r['hv_test']:.4f}, {r['points_ok']} ok, "
                    f"{r['ssl_trainings']} SSL trainings",
                    flush=True,
                )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return runs


def compare(runs: list[dict[str, Any]], seeds: list[int], variant: str) -> list[dict[str, Any]]:
    """Per seed: ``variant`` against ``scratch`` of the same seed."""
    by = {(r["variant"], r["seed"]): r for r in runs}
    out = []
    for s in seeds:
        sc, w = by[("scratch", s)], by[(variant, s)]
        out.append(
            {
                "variant": variant,
                "seed": s,
                "hv_val": w["hv_val"],
                "hv_val_scratch": sc["hv_val"],
                "hv_test": w["hv_test"],
                "hv_test_scratch": sc["hv_test"],
                "cpu": w["cpu_s"],
                "cpu_scratch": sc["cpu_s"],
                "cpu_dense": w["dense"]["cpu_s"],
                "cpu_ratio": w["cpu_s"] / sc["cpu_s"],
                "cpu_ratio_with_dense": (w["cpu_s"] + w["dense"]["cpu_s"]) / sc["cpu_s"],
                "wall": w["wall_s"],
                "wall_scratch": sc["wall_s"],
            }
        )
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.time()
    machine = machine_info()
    print_header("warm start vs from scratch: real searches on the default space", machine)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    runs = run_all(args, seeds)
    table: list[dict[str, Any]] = []
    medians: dict[str, Any] = {}
    for v in [v for v in args.variants if v != "scratch"]:
        per_seed = compare(runs, seeds, v)
        med = {
            k: median([r[k] for r in per_seed]) for k in per_seed[0] if k not in ("variant", "seed")
        }
        medians[v] = med
        table += [*per_seed, {"variant": v, "seed": "median", **med}]
    cols = [
        Col("variant", "variant"),
        Col("seed", "seed"),
        Col("hv_val", "HV val", ".4f"),
        Col("hv_val_scratch", "HV val scratch", ".4f"),
        Col("hv_test", "HV test", ".4f"),
        Col("hv_test_scratch", "HV test scratch", ".4f"),
        Col("cpu", "CPU-s", ".0f"),
        Col("cpu_scratch", "CPU-s scratch", ".0f"),
        Col("cpu_dense", "CPU-s dense", ".0f"),
        Col("cpu_ratio", "CPU / scratch", ".2f"),
        Col("cpu_ratio_with_dense", "(CPU + dense) / scratch", ".2f"),
        Col("wall", "wall s", ".0f"),
        Col("wall_scratch", "wall s scratch", ".0f"),
    ]
    print_table(
        table,
        cols,
        f"{args.num_samples} points per search; warm: {args.warm_epochs} SSL epochs from the "
        "dense baseline's weights; scratch: 12 from a fresh initialisation",
    )
    write_results(
        "bench_warm_start",
        machine=machine,
        settings=vars(args)
        | {
            "common": COMMON,
            "variants_def": {v: variant_overrides(v, Path("W"), args) for v in VARIANTS},
        },
        results={"table": table, "median": medians, "runs": runs},
        started=started,
        notes=[
            "CPU-s: CPU seconds of the whole process tree of each command (driver, Ray's "
            "processes, workers): the command runs in its own cgroup (cpuacct.usage)",
            "HV: top1/100 x FLOPs/dense FLOPs, reference top-1 0 at the dense FLOPs; HV val: "
            "the search's front on validation top-1; HV test: the same front points' test top-1",
            "dense: the default recipe's 12 + 4 epochs without penalty (sslsearch trial "
            "--ssl-lambda 0 --ratio 0 --epochs 16 --finetune-epochs 0), 1 thread; its CPU-s "
            "are what a user without a trained model pays first",
            "the dense baseline and lambda = 0 references of the searches are off (the same for "
            "every variant); the order of the variants rotates per seed",
        ],
        out=args.out,
    )


if __name__ == "__main__":
    main()

"""OpenMP's wait policy when a trial's cores are busy with other work.

A digits trial (``sslsearch.trial.run_trial``: vgg_small, 2 SSL epochs, 1 fine-tune epoch,
ratio 0.3) is timed in a fresh process with 1 and 2 torch threads, OpenMP's default wait policy
(threads spin while they wait) and ``OMP_WAIT_POLICY=PASSIVE`` (they sleep), while 0, 1 or 2
other processes keep a core each busy (a Python loop). Each cell runs the trial once to warm
up, then times the next run (wall and the process's CPU seconds). The cells alternate policies
within each (load, threads) pair, so a drift of the machine hits both alike.

What it informs: the test suite sets ``OMP_WAIT_POLICY=PASSIVE`` (``tests/conftest.py``) because
its processes share 2 cores; sslsearch itself does not (docs/guide.md, "Clusters").

    python benchmarks/bench_omp_wait.py          # about 5 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from _common import Col, machine_info, print_header, print_table, write_results

TRIAL = """
import json, sys, time
from sslsearch.config import TrialConfig
from sslsearch.trial import run_trial
cfg = TrialConfig.from_dict(
    {"ratio": 0.3, "threads": int(sys.argv[1]), "recipe": {"epochs": 2, "finetune_epochs": 1}}
)
run_trial(cfg)  # warm-up: imports, data, first allocations
t, c = time.perf_counter(), time.process_time()
run_trial(cfg)
print(json.dumps({"wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c}))
"""
BUSY = "while True: pass"
POLICIES = {"spin (default)": None, "passive": "PASSIVE"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2], help="busy cores")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def timed_trial(threads: int, policy: str | None) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run(
        [sys.executable, "-c", TRIAL, str(threads)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.time()
    machine = machine_info()
    print_header("OpenMP wait policy under other load", machine)
    rows: list[dict[str, Any]] = []
    for busy in args.busy:
        hogs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(busy)]
        try:
            for threads in args.threads:
                order = list(POLICIES.items())
                if threads % 2 == 0:  # alternate which policy goes first
                    order.reverse()
                for name, policy in order:
                    r = timed_trial(threads, policy)
                    rows.append({"busy": busy, "threads": threads, "policy": name, **r})
                    print(
                        f"busy {busy}, threads {threads}, {name}: {r['wall_s']:.1f} s",
                        flush=True,
                    )
        finally:
            for h in hogs:
                h.kill()
                h.wait()
    cols = [
        Col("busy", "busy cores", "d"),
        Col("threads", "torch threads", "d"),
        Col("policy", "OpenMP wait", ""),
        Col("wall_s", "trial wall s", ".1f"),
        Col("cpu_s", "trial CPU s", ".1f"),
    ]
    print_table(
        rows, cols, "one digits trial (2 SSL epochs + 1 fine-tune epoch), timed after a warm-up"
    )
    write_results(
        "bench_omp_wait",
        machine=machine,
        settings=vars(args),
        results={"rows": rows},
        started=started,
        notes=[
            "busy cores: other processes, each a Python loop holding one core",
            "spin (default): OMP_WAIT_POLICY unset; passive: OMP_WAIT_POLICY=PASSIVE",
        ],
        out=args.out,
    )


if __name__ == "__main__":
    main()

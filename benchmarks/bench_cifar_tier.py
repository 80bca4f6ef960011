"""The CIFAR-10 CPU tier, chosen by measurement: what decoding and loading cost, and what a dense
model reaches at each candidate subset, image size and model, on one core (a trial's share).

1. Decoding: the image-folder trees decoded into uint8 tensors the first time (a fresh cache
   directory) and read back from the cache the second time.
2. Loading share: per candidate (model, image size), the seconds an epoch's batches take to build
   (shuffle, augment, resize, normalise) against an epoch of training steps, one thread.
3. With ``--train``: each candidate (model, image size, images per class) trained dense for the
   tier's recipe (read from the space), validation and test top-1 at the end; one row each,
   appended to the rows file (a rerun skips what is there).

4. With ``--search``: the tier's search as a user runs it (``sslsearch search --space
   cifar10_cpu --data-root ROOT``, a fresh decoded-image cache, a new experiment in a temporary
   storage path), timed end to end: wall time, the dense baseline, the headline and the
   hypervolumes (``results/bench_cifar_tier_search.json``; nothing else may run meanwhile).

    python benchmarks/bench_cifar_tier.py                 # 1 and 2: about 2 minutes
    python benchmarks/bench_cifar_tier.py --train         # and 3: about 25 more
    python benchmarks/bench_cifar_tier.py --search        # 4 alone: about 20 minutes
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from _common import RESULTS_DIR, Col, machine_info, print_header, print_table, write_results
from _protocol import Rows
from _tier import tier_root

from sslsearch.config import DataConfig, Recipe, load_space, space_file
from sslsearch.data._core import _load_cached
from sslsearch.data._decoded import decode_tree
from sslsearch.models import create_model
from sslsearch.trial._train import evaluate, lr_at, make_optimizer, seed_everything, train_one_epoch

CANDIDATES = [  # (arch, image size, images per class)
    ("vgg_small", 16, 500),
    ("vgg_small", 16, 800),
    ("vgg_small", 16, 1000),
    ("vgg_small", 24, 500),
    ("vgg_small", 32, 500),
    ("resnet20", 16, 1000),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--space", default="cifar10_cpu")
    p.add_argument("--train", action="store_true", help="also train each candidate dense")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per candidate")
    p.add_argument("--search", action="store_true", help="only time the tier's search")
    p.add_argument(
        "--candidates",
        nargs="+",
        default=None,
        help="ARCH:SIZE:PER_CLASS to train (default: all of CANDIDATES)",
    )
    p.add_argument("--rows", default=str(RESULTS_DIR / "bench_cifar_tier.rows.jsonl"))
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def decoding(root: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as cache:
        old = os.environ.get("SSLSEARCH_CACHE")
        os.environ["SSLSEARCH_CACHE"] = cache
        try:
            out = {}
            for label in ("first (decode + write cache)", "again (from the cache)"):
                t = time.perf_counter()
                for split in ("train", "test"):
                    decode_tree(root / "cifar10" / split)
                out[label] = time.perf_counter() - t
            return out
        finally:
            if old is None:
                del os.environ["SSLSEARCH_CACHE"]
            else:
                os.environ["SSLSEARCH_CACHE"] = old


def _data(base: DataConfig, size: int, per_class: int) -> Any:
    return _load_cached(replace(base, image_size=size, per_class=per_class))


def loading_share(
    base: DataConfig, rec: Recipe, arch: str, size: int, steps: int
) -> dict[str, Any]:
    d = _data(base, size, 1000)
    dev = torch.device("cpu")
    t = time.perf_counter()
    n = sum(
        1 for _ in d.train.batches(rec.batch_size, shuffle=True, augment=True, seed=0, device=dev)
    )
    load = time.perf_counter() - t
    model = create_model(arch, 10, 3)
    opt = make_optimizer(model, rec.lr, rec)
    model.train()
    batches = d.train.batches(rec.batch_size, shuffle=True, augment=True, seed=1, device=dev)
    t = time.perf_counter()
    for i, (x, y) in enumerate(batches):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if i + 1 == steps:
            break
    step = (time.perf_counter() - t) / steps
    return {
        "arch": arch,
        "image_size": size,
        "batches": n,
        "load_s_per_epoch": load,
        "step_s_per_epoch": step * n,
        "load_share_pct": 100 * load / (load + step * n),
    }


def train_dense(
    base: DataConfig, rec: Recipe, arch: str, size: int, per_class: int
) -> dict[str, Any]:
    d = _data(base, size, per_class)
    seed_everything(0)
    model = create_model(arch, 10, 3)
    opt = make_optimizer(model, rec.lr, rec)
    steps = math.ceil(len(d.train) / rec.batch_size)
    dev = torch.device("cpu")
    t = time.perf_counter()
    for e in range(rec.epochs):
        train_one_epoch(
            model,
            d.train.batches(rec.batch_size, shuffle=True, augment=True, seed=e, device=dev),
            opt,
            lr_fn=lambda p: lr_at(p, rec.lr, rec.epochs, rec, rec.warmup_epochs),
            steps_per_epoch=steps,
            epoch=e,
            penalty=None,
            label_smoothing=0.0,
            device=dev,
        )
    secs = time.perf_counter() - t
    return {
        "arch": arch,
        "image_size": size,
        "per_class": per_class,
        "epochs": rec.epochs,
        "val_top1": evaluate(model, d.val, batch_size=256, device=dev).top1,
        "test_top1": evaluate(model, d.test, batch_size=256, device=dev).top1,
        "train_seconds": secs,
        "seconds_per_epoch": secs / rec.epochs,
    }


def search_summary(exp_dir: Path, wall_s: float) -> dict[str, Any]:
    """What a timed tier search gave: its wall time, dense baseline, counts and hypervolumes."""
    import json

    import pyarrow.parquet as pq

    rows = pq.read_table(exp_dir / "trials.parquet").to_pylist()
    base = next((r for r in rows if r.get("role") == "baseline"), {})
    search = [r for r in rows if r.get("role") == "search"]
    ok = [r for r in search if r.get("status") == "ok"]
    return {
        "wall_seconds": wall_s,
        "points": len(search),
        "statuses": {
            s: sum(r.get("status") == s for r in search) for s in {r.get("status") for r in search}
        },
        "references": sum(r.get("role") == "reference" for r in rows),
        "baseline": {k: base.get(k) for k in ("top1", "test_top1", "flops", "params")},
        "cheapest_ok_point": min(
            (
                {k: r.get(k) for k in ("flops", "top1", "test_top1", "flops_budget", "ssl_lambda")}
                for r in ok
            ),
            key=lambda r: r["flops"] or 0,
            default=None,
        ),
        "hypervolume": json.loads((exp_dir / "hypervolume.json").read_text()),
    }


def timed_search(space: str, root: Path) -> dict[str, Any]:
    import subprocess
    import sys

    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "SSLSEARCH_CACHE": str(Path(tmp) / "cache")}
        cmd = [
            sys.executable,
            "-m",
            "sslsearch",
            "search",
            "--space",
            space,
            "--data-root",
            str(root),
            "--storage-path",
            str(Path(tmp) / "runs"),
            "--name",
            "tier",
        ]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, env=env)
        wall = time.perf_counter() - t
        return {"command": " ".join(cmd[1:]), **search_summary(Path(tmp) / "runs" / "tier", wall)}


def main(argv: list[str] | None = None) -> None:
    started = time.time()
    args = parse_args(argv)
    if args.search:
        machine = machine_info()
        out = timed_search(args.space, tier_root())
        print(json.dumps({k: out[k] for k in ("wall_seconds", "points", "statuses", "baseline")}))
        write_results(
            "bench_cifar_tier_search",
            machine=machine,
            settings=vars(args),
            results=out,
            started=started,
            out=args.out,
        )
        return
    torch.set_num_threads(1)  # a trial's share on the tier (resources.cpus: 1)
    machine = machine_info()
    print_header("The CIFAR-10 CPU tier", machine, "one thread: what one trial gets")
    root = tier_root()
    space = load_space(space_file(args.space))
    base, rec = replace(space.data, root=str(root)), space.recipe
    todo = CANDIDATES
    if args.candidates:
        todo = [(a, int(s), int(n)) for a, s, n in (c.split(":") for c in args.candidates)]
    dec = decoding(root)
    print_table(
        [{"what": k, "seconds": v} for k, v in dec.items()],
        [Col("what", "decoding 60,000 images", "s"), Col("seconds", "seconds", ".2f")],
    )
    shares = [
        loading_share(base, rec, a, s, args.steps) for a, s in sorted({(a, s) for a, s, _ in todo})
    ]
    print_table(
        shares,
        [
            Col("arch", "model"),
            Col("image_size", "size", "d"),
            Col("load_s_per_epoch", "load s/epoch", ".2f"),
            Col("step_s_per_epoch", "train s/epoch", ".1f"),
            Col("load_share_pct", "loading share %", ".1f"),
        ],
        title=f"loading vs training, 8,000 training images, batch {rec.batch_size}",
    )
    trained: list[dict[str, Any]] = []
    if args.train:
        rows = Rows(Path(args.rows))
        for a, s, n in todo:
            key = f"{a}/{s}/{n}/{rec.epochs}"
            if key not in rows:
                rows.add(key, train_dense(base, rec, a, s, n))
            rows.progress(key, len(todo), 0)
            trained.append(rows.rows[key])
        print_table(
            trained,
            [
                Col("arch", "model"),
                Col("image_size", "size", "d"),
                Col("per_class", "per class", "d"),
                Col("epochs", "epochs", "d"),
                Col("seconds_per_epoch", "s/epoch", ".1f"),
                Col("val_top1", "val top-1", ".2f"),
                Col("test_top1", "test top-1", ".2f"),
            ],
            title="dense, the tier's recipe, seed 0",
        )
    write_results(
        "bench_cifar_tier",
        machine=machine,
        settings={**vars(args), "recipe": vars(rec)},
        results={"decoding_seconds": dec, "loading": shares, "dense": trained},
        started=started,
        out=args.out,
    )


if __name__ == "__main__":
    main()

"""Our pruner against Torch-Pruning at equal achieved FLOPs, and distillation on and off, on the
CIFAR-10 CPU tier (the protocol of benchmarks/_protocol.py: paired seeds, choices on validation,
test figures with bootstrap intervals).

The SSL model of every seed is bench_ssl_adds's first SSL candidate (the space ``cifar10_cpu``,
filter_wise, ``--ssl-lambda`` 0.05, training seed 1000 x seed), trained once by the product
(``run_points``, stored in the SSL model store under ``--work``) and then pruned many ways:

* **distill unit:** ``run_points`` prunes it to each budget of ``--distill-budgets`` and
  fine-tunes each point twice: plain cross-entropy, and with logit distillation from the SSL
  model before pruning (the product's default teacher), ``--distill-weight`` and
  ``--distill-temperature``. Figures: test top-1 per budget and the test hypervolume of the
  front chosen on validation (linear and log FLOPs axes), distilled minus plain.
* **TP units:** Torch-Pruning (MetaPruner, round_to 8, the last layer kept) prunes it to each
  budget of ``--tp-budgets``, globally (``--tp-steps`` iterative steps until within the
  budget, as TP's reproduce/main.py) and uniformly (one ratio for every layer, found by
  bisection), with an importance over the same group as the filter-wise penalty: the L2 norm of
  the producing convs' filters and biases and the BatchNorm scale and shift, without the
  consumers' input slices (``PenaltyGroupImportance``), normalised per layer by its mean as
  TP's default. Our pruner (filter_wise, group_lasso) then prunes the same SSL model to the
  FLOPs share the TP model achieved (fvcore's count), so ours keeps at most TP's FLOPs. Both
  get the same BatchNorm re-estimation, the same validation top-1 right after pruning and the
  same fine-tune (``sslsearch.finetune``, the space's recipe, the same seed).

Resumable (``Rows``, one row per unit); ``--summarize`` only reads the rows.

    python benchmarks/bench_tier_pruners.py --workers 2     # 2 cores: about 40 minutes
    python benchmarks/bench_tier_pruners.py --summarize
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import Any

from _common import RESULTS_DIR, Col, machine_info, print_header, print_table, write_results
from _protocol import (
    Point,
    Rows,
    front_scores,
    interval_text,
    paired_columns,
    paired_interval,
    seeds_or_die,
)
from _tier import tier_root
from bench_ssl_adds import base_config

from sslsearch.config import TrialConfig

HERE = Path(__file__).resolve().parent
METHODS = ("tp_global", "tp_uniform")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--space", default="cifar10_cpu")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--ssl-lambda", type=float, default=0.05)
    p.add_argument("--tp-budgets", type=float, nargs="+", default=[0.5, 0.25, 0.125])
    p.add_argument("--tp-steps", type=int, default=400)
    p.add_argument("--distill-budgets", type=float, nargs="+", default=[0.5, 0.25, 0.125, 0.0625])
    p.add_argument("--distill-weight", type=float, default=0.5)
    p.add_argument("--distill-temperature", type=float, default=4.0)
    p.add_argument("--workers", type=int, default=2, help="processes, one thread each")
    p.add_argument("--data-root", default=None, help="default: the unpacked shared CIFAR-10")
    p.add_argument("--rows", default=str(RESULTS_DIR / "bench_tier_pruners.rows.jsonl"))
    p.add_argument("--work", default=str(HERE / ".cache" / "tier_pruners"))
    p.add_argument("--summarize", action="store_true")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def ssl_config(args: argparse.Namespace, seed: int) -> TrialConfig:
    base = base_config(args, args.data_root or str(tier_root()))
    return replace(
        base,
        ssl_lambda=args.ssl_lambda,
        seed=1000 * seed,
        cache_dir=str(Path(args.work) / "ssl_models"),
    )


def distill_unit(args: argparse.Namespace, seed: int, key: str) -> dict[str, Any]:
    """The SSL model (trained and stored here), each budget fine-tuned with and without
    distillation by the product's pipeline."""
    import torch

    from sslsearch.trial import run_points

    torch.set_num_threads(1)
    t0 = time.time()
    cfg = ssl_config(args, seed)
    cfgs, ids = [], []
    for b in args.distill_budgets:
        for w in (0.0, args.distill_weight):
            rec = replace(
                cfg.recipe, distill_weight=w, distill_temperature=args.distill_temperature
            )
            cfgs.append(replace(cfg, flops_budget=b, recipe=rec))
            ids.append(f"b{b:g}-kd{w:g}")
    out = Path(args.work) / key
    results = run_points(
        cfgs, state_dir=str(out / "state"), points_dir=str(out / "points"), point_ids=ids
    )
    points = []
    for c, r in zip(cfgs, results):
        m = r.metrics
        points.append(
            {
                "budget": c.flops_budget,
                "distill": c.recipe.distill_weight,
                "status": r.status,
                "val": m.get("top1"),
                "test": m.get("test_top1"),
                "cost": (m.get("flops") or 0) / max(m.get("flops_before") or 1, 1),
                "pruned_val": m.get("pruned_top1"),
                "seconds": m.get("train_seconds"),
            }
        )
    return {
        "seed": seed,
        "ssl_val": results[0].metrics.get("ssl_top1"),
        "points": points,
        "seconds": time.time() - t0,
    }


class _Importance:
    """What the filter-wise SSL penalty's group holds, as a Torch-Pruning importance: the L2
    norm of the producing convs' (or Linears') output slices with their biases and the
    BatchNorm scale and shift; the consumers' input slices are left out. Normalised per layer
    by its mean, TP's default normaliser (what global pruning ranks across layers)."""

    def __call__(self, group: Any) -> Any:
        import torch
        import torch_pruning as tp

        outs = (tp.prune_conv_out_channels, tp.prune_linear_out_channels)
        acc = torch.zeros(len(group[0].idxs))
        for i, (dep, idxs) in enumerate(group):
            layer, fn = dep.layer, dep.pruning_fn
            if fn in outs:
                w = layer.weight.detach()[idxs].flatten(1).pow(2).sum(1)
                if layer.bias is not None:
                    w = w + layer.bias.detach()[idxs].pow(2)
            elif fn is tp.prune_batchnorm_out_channels and layer.affine:
                w = layer.weight.detach()[idxs].pow(2) + layer.bias.detach()[idxs].pow(2)
            else:
                continue
            acc.scatter_add_(0, torch.tensor(group[i].root_idxs), w.float())
        imp = acc.sqrt()
        return imp / imp.mean().clamp_min(1e-12)


def PenaltyGroupImportance() -> Any:  # a class made at call time: TP is imported late
    import torch_pruning as tp

    return type("PenaltyGroupImportance", (_Importance, tp.importance.Importance), {})()


def _measured(
    cfg: TrialConfig, model: Any, data: Any, shape: tuple[int, ...], seed: int, path: Path
) -> dict[str, Any]:
    """BN re-estimation, val top-1 right after pruning, then the product's fine-tune."""
    import torch

    from sslsearch import finetune
    from sslsearch.metrics import count_flops
    from sslsearch.models import save_model
    from sslsearch.trial._train import evaluate, recalibrate_bn, seed_everything

    cpu = torch.device("cpu")
    seed_everything(seed)
    recalibrate_bn(
        model,
        data.train.batches(
            cfg.recipe.batch_size, shuffle=True, augment=False, seed=seed, device=cpu
        ),
    )
    before = evaluate(model, data.val, batch_size=256, device=cpu)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path), arch=cfg.arch, num_classes=data.num_classes, input_shape=shape)
    r = finetune(path, data=cfg.data, recipe=cfg.recipe, seed=seed, device="cpu", threads=1)
    return {
        "flops": count_flops(model, shape),
        "pruned_val": before.top1,
        "val": r.metrics["top1"],
        "test": r.metrics["test_top1"],
    }


def tp_unit(args: argparse.Namespace, seed: int, method: str, budget: float, key: str) -> dict:
    """One TP model and ours at its achieved FLOPs, each re-estimated, measured, fine-tuned."""
    import torch
    from bench_budget import tp_global, tp_uniform

    from sslsearch.data import load_datasets
    from sslsearch.metrics import count_flops
    from sslsearch.pruning import prune
    from sslsearch.trial import ssl_model_id
    from sslsearch.trial._cache import SSLCache

    torch.set_num_threads(1)
    t0 = time.time()
    cfg = ssl_config(args, seed)
    # stored by this seed's distill unit (CPU: fp32); looked up by id, not by building a run
    hit = SSLCache(str(cfg.cache_dir)).get(ssl_model_id(cfg, "fp32"))
    assert hit is not None, "the distill unit trains and stores the SSL model first"
    ssl = hit[0].eval()
    data = load_datasets(cfg.data)
    shape = (data.channels, data.image_size, data.image_size)
    dense = count_flops(ssl, shape)
    imp = PenaltyGroupImportance()
    if method == "tp_global":
        tp_model = tp_global(ssl, shape, budget, args.tp_steps, imp)
    else:
        tp_model = tp_uniform(ssl, shape, budget, imp)
    share = count_flops(tp_model, shape) / dense
    ours = prune(
        copy.deepcopy(ssl),
        shape,
        prune_type=cfg.prune_type,
        prune_way=cfg.prune_way,
        flops_budget=share,
        min_width_share=cfg.min_width_share,
    ).model
    out = Path(args.work) / key
    fseed = 7919 * seed + 17
    row = {"seed": seed, "method": method, "budget": budget}
    for side, m in (("tp", tp_model), ("ours", ours)):
        got = _measured(cfg, m, data, shape, fseed, out / f"{side}.pt")
        row[side] = {**got, "cost": got["flops"] / dense}
    return {**row, "seconds": time.time() - t0}


def run_jobs(args: argparse.Namespace, rows: Rows, jobs: list[tuple[str, Any, tuple]]) -> None:
    left = [(k, fn, a) for k, fn, a in jobs if k not in rows]
    if not left:
        return
    total = len(rows.rows) + len(left)
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futs = {pool.submit(fn, args, *a, k): k for k, fn, a in left}  # type: ignore[call-arg]
        for i, fut in enumerate(as_completed(futs)):
            k = futs[fut]
            row = rows.add(k, fut.result())
            rows.progress(f"{k} ({row['seconds']:.0f} s)", total, len(left) - i - 1)


def summarize(args: argparse.Namespace, rows: Rows) -> dict[str, Any]:
    table: list[dict[str, Any]] = []

    def add(section: str, label: str, a: list[float], b: list[float], digits: int) -> None:
        st = paired_interval(a, b)
        table.append({"section": section, "figure": label, **st, "text": interval_text(st, digits)})

    # distillation
    dist = {r["seed"]: r for r in rows.where() if r["key"].endswith("/distill")}
    seeds = sorted(dist)

    def pts(r: dict, w: float) -> list[Point]:
        return [
            Point(p["cost"], p["val"], p["test"])
            for p in r["points"]
            if p["distill"] == w and p["status"] == "ok" and p["val"] is not None
        ]

    w = args.distill_weight
    on = [front_scores(pts(dist[s], w)) for s in seeds]
    off = [front_scores(pts(dist[s], 0.0)) for s in seeds]
    sec = f"distillation (weight {w:g}) - plain fine-tune"
    add(sec, "test HV, linear", [x["hv_test"] for x in on], [x["hv_test"] for x in off], 4)
    add(sec, "test HV, log", [x["hv_log_test"] for x in on], [x["hv_log_test"] for x in off], 4)

    def at(r: dict, b: float, kd: float) -> float | None:
        return next(
            (
                p["test"]
                for p in r["points"]
                if p["budget"] == b and p["distill"] == kd and p["status"] == "ok"
            ),
            None,
        )

    for b in args.distill_budgets:
        have = [
            s for s in seeds if at(dist[s], b, w) is not None and at(dist[s], b, 0.0) is not None
        ]
        add(
            sec,
            f"test top-1 at {b:.2%}",
            [at(dist[s], b, w) or 0.0 for s in have],
            [at(dist[s], b, 0.0) or 0.0 for s in have],
            2,
        )
    # Torch-Pruning
    tp_rows = [r for r in rows.where() if "method" in r]
    for method in METHODS:
        for b in args.tp_budgets:
            rs = sorted(
                (r for r in tp_rows if r["method"] == method and r["budget"] == b),
                key=lambda r: r["seed"],
            )
            if not rs:
                continue
            sec = f"ours - {method} at TP's FLOPs (target {b:.1%})"
            costs = [f"{r['tp']['cost']:.3f}/{r['ours']['cost']:.3f}" for r in rs]
            for field, label in (
                ("pruned_val", "val top-1 right after pruning"),
                ("test", "test top-1 after the fine-tune"),
            ):
                add(sec, label, [r["ours"][field] for r in rs], [r["tp"][field] for r in rs], 2)
                table[-1]["flops"] = ", ".join(costs)
    return {"table": table, "distill_seeds": seeds}


def main(argv: list[str] | None = None) -> None:
    started = time.time()
    args = parse_args(argv)
    seeds_or_die(args.seeds)
    rows = Rows(Path(args.rows))
    machine = machine_info()
    print_header("Our pruner vs Torch-Pruning, and distillation, on the CIFAR-10 tier", machine)
    if not args.summarize:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        run_jobs(args, rows, [(f"s{s}/distill", distill_unit, (s,)) for s in args.seeds])
        run_jobs(
            args,
            rows,
            [
                (f"s{s}/{m}/{b:g}", tp_unit, (s, m, b))
                for b in args.tp_budgets  # a whole cell (every seed) at a time
                for m in METHODS
                for s in args.seeds
            ],
        )
    out = summarize(args, rows)
    print_table(
        out["table"],
        [
            Col("section", "comparison", "s"),
            Col("figure", "figure", "s"),
            *paired_columns("A", "B"),
        ],
    )
    write_results(
        "bench_tier_pruners",
        machine=machine,
        settings=vars(args),
        results=out,
        started=started,
        out=args.out,
    )


if __name__ == "__main__":
    main()

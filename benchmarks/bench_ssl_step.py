"""SSL that costs no accuracy: the floor rule, the step under momentum, a lambda path and
OTO's HESSO, measured on the CIFAR-10 CPU tier (the space ``cifar10_cpu``: vgg_small at 16x16,
800 images per class, 15 SSL epochs, filter_wise; ``--arch`` and ``--ssl-type`` change them).

Every unit trains with the product's own parts (``build_penalty`` with the gradient weighting,
``make_optimizer``, ``train_and_evaluate``: the trial's epoch, flushed every epoch) and measures
each model it yields the same way:

* the SSL model's validation and test top-1 and ``removable_flops_share`` (``sparsity_report``);
* pruned to ``--budget`` of the dense FLOPs (filter_wise, group_lasso, the space's floor), the
  BatchNorm statistics re-estimated: validation top-1 right after pruning (``lost`` = SSL val -
  pruned val: what pruning itself cost);
* then the product's fine-tune (``sslsearch.finetune``, the space's 3 epochs): val and test.

Phases (``--phase``, any of them; each a set of units, rows appended as they finish):

* ``dense``: lambda = 0, the space's recipe (what SSL's own cost is measured against);
* ``floor``: each floor rule of ``--floors`` at each lambda of ``--lambdas``, step ``momentum``;
* ``step``: each step rule of ``--steps`` at each lambda, floor ``--floor`` (rule ``lr`` at
  ``lambda / (1 - momentum)``: its proximal step is ``lr``, so that it minimises the same
  objective as the others);
* ``path``: one training whose lambda grows along ``--lambdas``: ``--first-epochs`` at the
  first, then ``--segment-epochs`` at each next one with the cosine schedule restarted, a
  snapshot measured at the end of every segment (floor ``--floor``, step ``--step``);
* ``hesso``: HESSO's rule (``_hesso.py``) to ``--hesso-target`` of the FLOPs removable.

A lambda* per variant: the smallest lambda of ``--lambdas`` at which at least ``--budget``'s
complement of the FLOPs is removable and pruning there costs at most 1 point (validation; median
over seeds), with the SSL model's test top-1 against the dense model's (its SSL cost).

    python benchmarks/bench_ssl_step.py --phase dense floor --workers 2
    python benchmarks/bench_ssl_step.py --phase step path hesso --floor exempt --workers 2
    python benchmarks/bench_ssl_step.py --summarize
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import Any

from _common import RESULTS_DIR, Col, machine_info, print_header, print_table, write_results
from _protocol import Rows
from _tier import tier_root
from bench_ssl_adds import base_config

from sslsearch.config import TrialConfig

HERE = Path(__file__).resolve().parent
PHASES = ("dense", "floor", "step", "path", "hesso")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--space", default="cifar10_cpu")
    p.add_argument("--arch", default=None, help="default: the space's")
    p.add_argument("--ssl-type", default=None, help="default: the space's (prunes alike)")
    p.add_argument("--phase", nargs="+", choices=PHASES, default=[])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--lambdas", type=float, nargs="+", default=[0.08, 0.12, 0.18])
    p.add_argument("--floors", nargs="+", default=["scale", "hold", "exempt"])
    p.add_argument("--steps", nargs="+", default=["lr", "reset", "loss"])
    p.add_argument("--floor", default="exempt", help="floor rule of the step/path phases")
    p.add_argument("--step", default="momentum", help="step rule of the path phase")
    p.add_argument("--first-epochs", type=int, default=12)
    p.add_argument("--segment-epochs", type=int, default=3)
    p.add_argument("--hesso-target", type=float, nargs="+", default=[0.5])
    p.add_argument("--budget", type=float, default=0.5, help="share of the dense FLOPs kept")
    p.add_argument("--workers", type=int, default=2, help="processes, one thread each")
    p.add_argument("--data-root", default=None, help="default: the unpacked shared CIFAR-10")
    p.add_argument("--rows", default=str(RESULTS_DIR / "bench_ssl_step.rows.jsonl"))
    p.add_argument("--work", default=str(HERE / ".cache" / "ssl_step"))
    p.add_argument("--summarize", action="store_true")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def tier_config(args: argparse.Namespace) -> TrialConfig:
    base = base_config(args, args.data_root or str(tier_root()))
    if args.arch:
        base = replace(base, arch=args.arch)
    if args.ssl_type:
        base = replace(base, ssl_type=args.ssl_type, prune_type=args.ssl_type)
    return base


def tag(args: argparse.Namespace) -> str:
    """What every key of this run starts with (the network and SSL type)."""
    base = tier_config(args)
    return f"{base.arch}/{base.ssl_type}"


# ---- one unit: train, then measure every snapshot ---------------------------------------------


def _segments(cfg: TrialConfig, plan: list[tuple[float, int]]) -> list[tuple[float, int]]:
    return plan or [(float(cfg.ssl_lambda), cfg.recipe.epochs)]  # type: ignore[arg-type]


def train_unit(
    cfg: TrialConfig, plan: list[tuple[float, int]], hesso: float | None, budget: float, out: str
) -> dict[str, Any]:
    """Train one model along ``plan`` ((lambda, epochs) segments, each a cosine schedule from
    the recipe's lr) and measure it after every segment; ``hesso``: HESSO to that target."""
    import torch

    from sslsearch.data import load_datasets
    from sslsearch.models import create_model
    from sslsearch.pruning import build_penalty
    from sslsearch.trial._ssl import calibration_seed
    from sslsearch.trial._train import (
        EpochSettings,
        make_optimizer,
        seed_everything,
        train_and_evaluate,
    )

    torch.set_num_threads(1)
    t0 = time.time()
    seed_everything(cfg.seed)
    data = load_datasets(cfg.data)
    rec = cfg.recipe
    model = create_model(cfg.arch, data.num_classes, data.channels)
    dev = torch.device("cpu")
    example = torch.zeros((1, data.channels, data.image_size, data.image_size))
    opt = make_optimizer(model, rec.lr, rec)
    segs = _segments(cfg, plan)
    pen = None
    if segs[0][0] > 0:
        pen = build_penalty(
            model,
            cfg.ssl_type,
            segs[0][0],
            weighting=cfg.ssl_weighting,
            example_inputs=example,
            batches=data.train.batches(
                rec.batch_size,
                shuffle=True,
                augment=False,
                seed=calibration_seed(cfg.seed),
                device=dev,
            ),
            min_width_share=cfg.min_width_share,
        )
        pen.set_rules(cfg.ssl_floor, cfg.ssl_step)
    steps = -(-len(data.train) // rec.batch_size)
    hess = None
    if hesso is not None:
        from _hesso import Hesso

        hess = Hesso(
            model,
            example,
            hesso,
            steps_per_epoch=steps,
            warmup=2,
            periods=4,
            period_epochs=2,
            min_width_share=cfg.min_width_share,
        )
        _hook_optimizer(opt, hess)
    snaps, epoch_no, history = [], 0, []
    for k, (lam, epochs) in enumerate(segs):
        if pen is not None:
            pen.lam = dict.fromkeys(pen.lam, float(lam))
        settings = EpochSettings(
            recipe=rec, epochs=epochs, base_lr=rec.lr, warmup_epochs=0.0,
            augment=cfg.data.augment, device=dev, penalty=pen,
        )  # fmt: skip
        for e in range(epochs):
            st, ev = train_and_evaluate(
                model, data, opt, settings, epoch=e, seed=1_000_003 * cfg.seed + epoch_no
            )
            epoch_no += 1
            history.append({"epoch": epoch_no, "lambda": lam, "val": ev.top1, "loss": st.loss})
        snaps.append(measure(cfg, model, data, budget, f"{out}/snap{k}.pt", epoch_no, lam))
    return {
        "snapshots": snaps,
        "history": history,
        "epochs": epoch_no,
        **(hess.summary() if hess else {}),
        "seconds": time.time() - t0,
    }


def _hook_optimizer(opt: Any, hess: Any) -> None:
    step = opt.step

    def stepped(*a: Any, **k: Any) -> Any:
        r = step(*a, **k)
        hess.after_step_(opt)
        return r

    opt.step = stepped


def measure(
    cfg: TrialConfig, model: Any, data: Any, budget: float, path: str, epochs: int, lam: float
) -> dict[str, Any]:
    """An SSL model's own figures, then pruned to ``budget`` (bench_tier_pruners's measure)."""
    import torch
    from bench_tier_pruners import _measured

    from sslsearch.pruning import prune, sparsity_report
    from sslsearch.trial._train import evaluate

    dev = torch.device("cpu")
    shape = (data.channels, data.image_size, data.image_size)
    val = evaluate(model, data.val, batch_size=256, device=dev).top1
    test = evaluate(model, data.test, batch_size=256, device=dev).top1
    rep = sparsity_report(model, cfg.ssl_type, shape, min_width_share=cfg.min_width_share)
    out: dict[str, Any] = {
        "lambda": lam,
        "epochs": epochs,
        "ssl_val": val,
        "ssl_test": test,
        "removable_flops": rep["removable_flops_share"],
        "zero_share": rep["exact_zero_share"],
        "at_floor": len(rep["at_floor"]),
    }
    pruned = prune(
        copy.deepcopy(model).eval(),
        shape,
        prune_type=cfg.prune_type,
        prune_way=cfg.prune_way,
        flops_budget=budget,
        min_width_share=cfg.min_width_share,
    ).model
    got = _measured(cfg, pruned, data, shape, 7919 * cfg.seed + 17, Path(path))
    out.update(got)
    out["lost"] = val - got["pruned_val"]
    return out


# ---- the units of each phase ----------------------------------------------------------------


def units(args: argparse.Namespace) -> list[tuple[str, dict[str, Any], tuple]]:
    base = tier_config(args)
    t = tag(args)
    out: list[tuple[str, dict[str, Any], tuple]] = []

    def add(key: str, desc: dict[str, Any], cfg: TrialConfig, plan: list, hesso: Any) -> None:
        out.append((f"{t}/{key}", {**desc, "tag": t}, (cfg, plan, hesso, args.budget)))

    for s in args.seeds:
        seeded = replace(base, seed=1000 * s)
        if "dense" in args.phase:
            add(
                f"dense/s{s}",
                {"phase": "dense", "seed": s},
                replace(seeded, ssl_lambda=0.0),
                [],
                None,
            )
        for lam in args.lambdas:
            if "floor" in args.phase:
                for f in args.floors:
                    cfg = replace(seeded, ssl_lambda=lam, ssl_floor=f, ssl_step="momentum")
                    d = {"phase": "floor", "seed": s, "floor": f, "step": "momentum", "lambda": lam}
                    add(f"{f}-momentum/l{lam:g}/s{s}", d, cfg, [], None)
            if "step" in args.phase:
                for st in args.steps:
                    # rule lr's proximal step is lr, not lr / (1 - m): the same objective
                    eff = lam / (1.0 - base.recipe.momentum) if st == "lr" else lam
                    cfg = replace(seeded, ssl_lambda=eff, ssl_floor=args.floor, ssl_step=st)
                    d = {"phase": "step", "seed": s, "floor": args.floor, "step": st, "lambda": lam}
                    add(f"{args.floor}-{st}/l{lam:g}/s{s}", d, cfg, [], None)
        if "path" in args.phase:
            plan = [(args.lambdas[0], args.first_epochs)] + [
                (lam, args.segment_epochs) for lam in args.lambdas[1:]
            ]
            cfg = replace(
                seeded, ssl_lambda=args.lambdas[0], ssl_floor=args.floor, ssl_step=args.step
            )
            d = {"phase": "path", "seed": s, "floor": args.floor, "step": args.step, "plan": plan}
            add(f"path-{args.floor}-{args.step}/s{s}", d, cfg, plan, None)
        if "hesso" in args.phase:
            for target in args.hesso_target:
                d = {"phase": "hesso", "seed": s, "target": target}
                add(f"hesso/t{target:g}/s{s}", d, replace(seeded, ssl_lambda=0.0), [], target)
    return out


def run_all(args: argparse.Namespace, rows: Rows) -> None:
    todo = [(k, d, a) for k, d, a in units(args) if k not in rows]
    if not todo:
        return
    total = len(rows.rows) + len(todo)
    # the longest first: a path trains the most epochs
    todo.sort(key=lambda u: -sum(e for _, e in u[2][1]) if u[2][1] else 0)
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futs = {pool.submit(train_unit, *a, out=f"{args.work}/{k}"): (k, d) for k, d, a in todo}
        for i, fut in enumerate(as_completed(futs)):
            k, d = futs[fut]
            row = rows.add(k, {**d, **fut.result()})
            rows.progress(f"{k} ({row['seconds']:.0f} s)", total, len(todo) - i - 1)


# ---- the summary ----------------------------------------------------------------------------


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _spread(xs: list[float]) -> float:
    return max(xs) - min(xs) if len(xs) > 1 else float("nan")


def variant_rows(rows: Rows, t: str) -> dict[str, dict[float, list[dict[str, Any]]]]:
    """variant name -> lambda -> the snapshots (one per seed) at that lambda."""
    out: dict[str, dict[float, list[dict[str, Any]]]] = {}
    for r in rows.rows.values():
        if r.get("tag") != t or r["phase"] in ("dense", "hesso"):
            continue
        name = (
            f"path {r['floor']}/{r['step']}"
            if r["phase"] == "path"
            else f"{r['floor']}/{r['step']}"
        )
        for snap in r["snapshots"]:
            lam = float(r["lambda"]) if r["phase"] != "path" else float(snap["lambda"])
            out.setdefault(name, {}).setdefault(lam, []).append({**snap, "seed": r["seed"]})
    return out


def lambda_star(by_lam: dict[float, list[dict[str, Any]]], budget: float) -> float | None:
    """The smallest lambda whose median removable FLOPs reach 1 - budget at <= 1 point lost."""
    for lam in sorted(by_lam):
        snaps = by_lam[lam]
        if (
            _med([s["removable_flops"] for s in snaps]) >= 1 - budget - 1e-9
            and _med([s["lost"] for s in snaps]) <= 1.0
        ):
            return lam
    return None


def summarize(args: argparse.Namespace, rows: Rows) -> dict[str, Any]:
    t = tag(args)
    # the dense model (lambda 0) is the same whatever the SSL type: one trained for another
    # type of the same network stands in where this type has none (its own figures first)
    arch = t.split("/")[0]
    dense = {
        r["seed"]: r["snapshots"][0]
        for r in sorted(rows.where(phase="dense"), key=lambda r: r["tag"] == t)
        if r["tag"].split("/")[0] == arch
    }
    dense_test = _med([d["ssl_test"] for d in dense.values()])
    table, stars = [], []

    def ssl_cost(snaps: list[dict[str, Any]]) -> float:
        """The median of the paired (same seed) dense - SSL test top-1."""
        return _med(
            [dense[s["seed"]]["ssl_test"] - s["ssl_test"] for s in snaps if s["seed"] in dense]
        )

    for name, by_lam in sorted(variant_rows(rows, t).items()):
        for lam, snaps in sorted(by_lam.items()):
            table.append(
                {
                    "variant": name,
                    "lambda": lam,
                    "seeds": len(snaps),
                    "removable": 100 * _med([s["removable_flops"] for s in snaps]),
                    "removable_spread": 100 * _spread([s["removable_flops"] for s in snaps]),
                    "ssl_val": _med([s["ssl_val"] for s in snaps]),
                    "ssl_test": _med([s["ssl_test"] for s in snaps]),
                    "ssl_cost": ssl_cost(snaps),
                    "lost": _med([s["lost"] for s in snaps]),
                    "test_ft": _med([s["test"] for s in snaps]),
                    "test_ft_spread": _spread([s["test"] for s in snaps]),
                }
            )
        star = lambda_star(by_lam, args.budget)
        entry: dict[str, Any] = {"variant": name, "lambda_star": star}
        if star is not None:
            snaps = by_lam[star]
            entry.update(
                ssl_test=_med([s["ssl_test"] for s in snaps]),
                ssl_cost=ssl_cost(snaps),
                test_ft=_med([s["test"] for s in snaps]),
                within_1=ssl_cost(snaps) <= 1.0,
            )
        stars.append(entry)
    hesso = []
    ours = variant_rows(rows, t).get(f"{args.floor}/momentum", {})
    for r in rows.where(tag=t, phase="hesso"):
        s = r["snapshots"][0]
        # ours at the same budget: the lambda whose fine-tuned point is best on validation
        mine = [x for snaps in ours.values() for x in snaps if x["seed"] == r["seed"]]
        best = max(mine, key=lambda x: x["val"]) if mine else None
        hesso.append(
            {
                **s,
                "seed": r["seed"],
                "target": r["target"],
                "seconds": r["seconds"],
                "ours_lambda": best["lambda"] if best else None,
                "ours_test": best["test"] if best else None,
                "ours_cost": best["flops"] / s["flops"] if best else None,
            }
        )
    seconds = {ph: _med([r["seconds"] for r in rows.where(tag=t, phase=ph)]) for ph in PHASES}
    return {
        "tag": t,
        "path": path_against_separate(rows, t, args.floor),
        "dense_test": dense_test,
        "dense": dense,
        "table": table,
        "lambda_star": stars,
        "hesso": hesso,
        "median_seconds": seconds,
    }


def path_against_separate(rows: Rows, t: str, floor: str) -> list[dict[str, Any]]:
    """Each path snapshot against the model trained on its own at the same lambda and seed."""
    by = variant_rows(rows, t)
    sep = by.get(f"{floor}/momentum", {})
    out = []
    for r in rows.where(tag=t, phase="path"):
        for snap in r["snapshots"]:
            alone = [x for x in sep.get(float(snap["lambda"]), []) if x["seed"] == r["seed"]]
            if not alone:
                continue
            a = alone[0]
            out.append(
                {
                    "seed": r["seed"],
                    "lambda": snap["lambda"],
                    "epochs": snap["epochs"],
                    "ssl_test_path": snap["ssl_test"],
                    "ssl_test_alone": a["ssl_test"],
                    "removable_path": snap["removable_flops"],
                    "removable_alone": a["removable_flops"],
                    "test_ft_path": snap["test"],
                    "test_ft_alone": a["test"],
                }
            )
    return out


def show(res: dict[str, Any]) -> None:
    print(f"\n{res['tag']}: dense model's test top-1 {res['dense_test']:.2f} (median)")
    print_table(
        res["table"],
        [
            Col("variant", "variant"),
            Col("lambda", "lambda", ".3g"),
            Col("seeds", "n"),
            Col("removable", "removable FLOPs %", ".1f"),
            Col("removable_spread", "spread", ".1f"),
            Col("ssl_val", "SSL val", ".2f"),
            Col("ssl_test", "SSL test", ".2f"),
            Col("ssl_cost", "dense - SSL test", "+.2f"),
            Col("lost", "lost by pruning (val)", "+.2f"),
            Col("test_ft", "test after fine-tune", ".2f"),
            Col("test_ft_spread", "spread", ".2f"),
        ],
    )
    print_table(
        res["lambda_star"],
        [
            Col("variant", "variant"),
            Col("lambda_star", "lambda*", ".3g"),
            Col("ssl_test", "SSL test at lambda*", ".2f"),
            Col("ssl_cost", "SSL cost (dense - SSL, test)", "+.2f"),
            Col("test_ft", "test after fine-tune", ".2f"),
            Col("within_1", "within 1 point"),
        ],
    )
    if res["path"]:
        print_table(
            res["path"],
            [
                Col("seed", "seed"),
                Col("lambda", "lambda", ".3g"),
                Col("epochs", "epochs so far"),
                Col("ssl_test_path", "SSL test, path", ".2f"),
                Col("ssl_test_alone", "alone", ".2f"),
                Col("removable_path", "removable, path", ".2f"),
                Col("removable_alone", "alone", ".2f"),
                Col("test_ft_path", "fine-tuned test, path", ".2f"),
                Col("test_ft_alone", "alone", ".2f"),
            ],
        )
    if res["hesso"]:
        print_table(
            res["hesso"],
            [
                Col("seed", "seed"),
                Col("target", "target"),
                Col("removable_flops", "removable", ".3f"),
                Col("ssl_test", "test before pruning", ".2f"),
                Col("lost", "lost by pruning", "+.2f"),
                Col("test", "test after fine-tune", ".2f"),
                Col("ours_lambda", "ours: lambda (val)", ".3g"),
                Col("ours_test", "ours: test after fine-tune", ".2f"),
            ],
        )


def results_stem(args: argparse.Namespace) -> str:
    """The summary's file name: one per network and SSL type, so that a run for one never
    overwrites another's (``bench_ssl_step`` for the space's own, e.g.
    ``bench_ssl_step_resnet20_channel_wise`` for ``--arch resnet20 --ssl-type channel_wise``)."""
    space = base_config(args, args.data_root or "data")
    arch, ssl_type = tag(args).split("/")
    parts = ["bench_ssl_step"]
    parts += [arch] if arch != space.arch else []
    parts += [ssl_type] if ssl_type != space.ssl_type else []
    return "_".join(parts)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rows = Rows(Path(args.rows))
    started = time.time()
    machine = machine_info()
    print_header("bench_ssl_step: floor rule, step rule, lambda path, HESSO", machine)
    if not args.summarize:
        run_all(args, rows)
    res = summarize(args, rows)
    show(res)
    write_results(
        results_stem(args),
        machine=machine,
        settings=vars(args),
        results=res,
        started=started,
        out=args.out,
    )


if __name__ == "__main__":
    main()

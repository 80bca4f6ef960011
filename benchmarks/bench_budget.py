"""Budget pruning against the field's own tools, on the same SSL models, at the same FLOPs.

For each network (vgg_small and resnet20 on 8x8 digits, vgg16_bn on digits at 32x32), seed and
SSL lambda (0: the plain model a no-SSL front is drawn with; and values where SSL acts), one SSL
model is trained (the trial's proximal group Lasso, filter_wise), then pruned to each FLOPs
budget (share of the dense model's FLOPs, fvcore's count for every method) by:

* ``ours``: ``sslsearch.prune(..., flops_budget=b)``, filter_wise / group_lasso, with each
  selection variant (normalizer x cost_power) screened right after pruning on the validation
  split; the default (``--default``) is also fine-tuned;
* ``tp_global``: Torch-Pruning's MetaPruner, GroupMagnitudeImportance(p=2), global_pruning=True,
  round_to=8, stepped (iterative_steps, pruning_ratio=1.0) until the FLOPs are within the budget,
  as its reproduce/main.py does (there with a speed-up target);
* ``tp_uniform``: the same with global_pruning=False (the same ratio in every layer).

Each pruned model gets its BatchNorm statistics re-estimated on training batches (what the
trial does), then top-1 is measured right after pruning (no fine-tune) and after the same
fine-tune (the space's recipe), on the test split; the selection variants are chosen on the
validation split. The FLOPs each method reached is reported as a budget error.

    python benchmarks/bench_budget.py                                  # the full run (~1-2 h)
    python benchmarks/bench_budget.py --archs vgg_small --seeds 0 --lambdas 0   # a quick look
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from _common import Col, machine_info, print_header, print_table, set_threads, write_results
from bench_ssl_types import train
from torch import nn

from sslsearch.config import DataConfig, Recipe
from sslsearch.data import load_datasets
from sslsearch.metrics import count_flops
from sslsearch.models import create_model, load_model, save_model
from sslsearch.pruning import prune
from sslsearch.sparsity import SSLPenalty, final_layer
from sslsearch.trial._train import evaluate, recalibrate_bn, seed_everything

CACHE = Path(__file__).resolve().parent / ".cache" / "bench_budget"
IMAGE_SIZE = {"vgg_small": None, "resnet20": None, "resnet56": None, "vgg16_bn": 32}
VARIANTS = ["mean:0.0", "element:0.0", "mean:0.5", "mean:1.0", "sum:1.0"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--archs", nargs="+", default=["vgg_small", "resnet20", "vgg16_bn"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--lambdas", nargs="+", type=float, default=[0.0, 0.01, 0.03])
    p.add_argument("--budgets", nargs="+", type=float, default=[0.5, 0.25])
    p.add_argument("--epochs", type=int, default=12, help="SSL epochs (small models)")
    p.add_argument("--finetune-epochs", type=int, default=4)
    p.add_argument("--big-epochs", type=int, default=6, help="SSL epochs of vgg16_bn")
    p.add_argument("--big-finetune-epochs", type=int, default=2)
    p.add_argument("--variants", nargs="+", default=VARIANTS, help="normalizer:cost_power")
    p.add_argument(
        "--default", default="auto", help="variant to fine-tune (auto: best on validation)"
    )
    p.add_argument("--no-finetune", action="store_true")
    p.add_argument("--tp-steps", type=int, default=400, help="TP iterative_steps")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def recipe(arch: str, a: argparse.Namespace) -> tuple[Recipe, int, int]:
    big = arch == "vgg16_bn"
    # vgg16_bn at lr 0.05 diverged in its first epoch on digits: the seed's 0.01, one warm-up
    rec = (
        Recipe(epochs=a.big_epochs, lr=0.01, warmup_epochs=1.0) if big else Recipe(epochs=a.epochs)
    )
    return rec, rec.epochs, a.big_finetune_epochs if big else a.finetune_epochs


def ssl_model(arch: str, data: Any, seed: int, lam: float, rec: Recipe, epochs: int) -> nn.Module:
    """The SSL model (filter_wise penalty as a proximal step, the trial's recipe), cached."""
    key = hashlib.sha256(
        json.dumps([arch, IMAGE_SIZE.get(arch), seed, lam, epochs, rec.lr, 3]).encode()
    ).hexdigest()[:16]
    path = CACHE / f"{arch}-{key}.pt"
    if path.exists():
        return load_model(path)
    seed_everything(seed)
    model = create_model(arch, data.num_classes, data.channels)
    pen = SSLPenalty.build(model, "filter_wise", lam) if lam > 0 else None
    train(model, data, rec, epochs, rec.lr, pen, seed)  # flushed every epoch, as the trial does
    CACHE.mkdir(parents=True, exist_ok=True)
    shape = (data.channels, data.image_size, data.image_size)
    save_model(model, path, arch=arch, num_classes=data.num_classes, input_shape=shape)
    return model


def recal(model: nn.Module, data: Any, seed: int) -> nn.Module:
    recalibrate_bn(
        model,
        data.train.batches(32, shuffle=True, augment=False, seed=seed, device=torch.device("cpu")),
    )
    return model


def top1(model: nn.Module, split: Any) -> float:
    return evaluate(model, split, batch_size=256, device=torch.device("cpu")).top1


def _meta_pruner(
    m: nn.Module,
    example: torch.Tensor,
    global_pruning: bool,
    ratio: float,
    steps: int,
    importance: Any = None,
) -> Any:
    import torch_pruning as tp

    return tp.pruner.MetaPruner(
        m,
        example,
        importance=importance or tp.importance.GroupMagnitudeImportance(p=2),
        global_pruning=global_pruning,
        pruning_ratio=ratio,
        iterative_steps=steps,
        round_to=8,
        ignored_layers=[final_layer(m, example)],
    )


def fast_flops(model: nn.Module, example: torch.Tensor) -> float:
    """fvcore's count for convs, Linears and BatchNorms, from one forward pass with hooks (no
    tracing, no copy): what TP's stepping checks between steps; fvcore decides at the end."""
    total = [0.0]

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if isinstance(mod, nn.Conv2d):
            total[0] += mod.weight.numel() * out[0, 0].numel()
        elif isinstance(mod, nn.Linear):
            total[0] += mod.weight.numel() * inp[0][:1].numel() / mod.in_features
        else:
            total[0] += 2 * inp[0][:1].numel()

    kinds = (nn.Conv2d, nn.Linear, nn.BatchNorm2d)
    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in hooks:
            h.remove()
    return total[0]


def tp_global(
    model: nn.Module,
    shape: tuple[int, ...],
    budget: float,
    steps: int,
    importance: Any = None,
) -> nn.Module:
    """Torch-Pruning's global pruning as its reproduce/main.py runs it: pruning_ratio=1.0 over
    ``steps`` iterative steps, stepped until the FLOPs are within the budget (a hook count
    between steps, fvcore's to decide). ``importance``: default TP's GroupMagnitudeImportance."""
    m = copy.deepcopy(model).eval()
    example = torch.zeros(1, *shape)
    dense_fv = count_flops(m, shape)
    dense = fast_flops(m, example)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = _meta_pruner(m, example, True, 1.0, steps, importance)
        while pruner.current_step < steps:
            if (
                fast_flops(m, example) <= budget * dense
                and count_flops(m, shape) <= budget * dense_fv
            ):
                break
            pruner.step()
    return m


def tp_uniform(
    model: nn.Module, shape: tuple[int, ...], budget: float, importance: Any = None
) -> nn.Module:
    """The same ratio in every layer (MetaPruner, global_pruning=False, one shot): the largest
    kept FLOPs within the budget, the ratio found by bisection."""
    example = torch.zeros(1, *shape)
    dense = count_flops(model, shape)
    lo, hi = 0.0, 0.99
    best: nn.Module | None = None
    least: tuple[float, nn.Module] | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(14):
            mid = (lo + hi) / 2
            m = copy.deepcopy(model).eval()
            _meta_pruner(m, example, False, mid, 1, importance).step()
            flops = count_flops(m, shape)
            if least is None or flops < least[0]:
                least = (flops, m)
            if flops <= budget * dense:
                best, hi = m, mid
            else:
                lo = mid
    # no ratio met the budget (every layer at round_to keeps more): the cheapest seen, whose
    # FLOPs column then shows the miss
    assert least is not None
    return best if best is not None else least[1]


def finetuned(model: nn.Module, data: Any, rec: Recipe, epochs: int, seed: int) -> float:
    m = copy.deepcopy(model)
    train(m, data, rec, epochs, rec.finetune_lr, None, seed)
    return top1(m, data.test)


def mean_sd(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return "-"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.1f} ± {sd:.1f}"


ROWS_FILE = CACHE / "rows.jsonl"  # every measured row, appended as it comes (a rerun resumes)


def _key(*parts: Any) -> str:
    return json.dumps([str(p) for p in parts])


def _done() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if ROWS_FILE.exists():
        for line in ROWS_FILE.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            out[row["key"]] = row
    return out


def _append(row: dict[str, Any]) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    with ROWS_FILE.open("a") as f:
        f.write(json.dumps(row) + "\n")


def screen(a: argparse.Namespace, variants: list[str]) -> list[dict[str, Any]]:
    """Phase 1: every SSL model pruned by every method; top-1 right after pruning."""
    rows: list[dict[str, Any]] = []
    done = _done()
    for arch in a.archs:
        data = load_datasets(DataConfig(name="digits", image_size=IMAGE_SIZE.get(arch)))
        shape = (data.channels, data.image_size, data.image_size)
        rec, epochs, _ = recipe(arch, a)
        for seed in a.seeds:
            for lam in a.lambdas:
                t0 = time.time()
                model = ssl_model(arch, data, seed, lam, rec, epochs).eval()
                dense_flops = count_flops(model, shape)
                ssl_test = top1(model, data.test)
                print(
                    f"{arch} seed {seed} lambda {lam:g}: SSL model test top-1 {ssl_test:.2f} "
                    f"({time.time() - t0:.0f} s)",
                    flush=True,
                )
                for budget in a.budgets:
                    names = [f"ours[{v}]" for v in variants] + ["tp_global", "tp_uniform"]
                    keys = {n: _key(arch, seed, lam, budget, n, epochs, a.tp_steps) for n in names}
                    if all(k in done for k in keys.values()):
                        rows += [done[keys[n]] for n in names]
                        continue
                    for name, pm in methods(model, shape, budget, variants, a).items():
                        recal(pm, data, seed)
                        row = {
                            "key": keys[name],
                            "arch": arch,
                            "seed": seed,
                            "lambda": lam,
                            "ssl_test_top1": ssl_test,
                            "budget": budget,
                            "method": name,
                            "flops_share": count_flops(pm, shape) / dense_flops,
                            "pruned_val_top1": top1(pm, data.val),
                            "pruned_test_top1": top1(pm, data.test),
                            "widths": [
                                m.out_channels for m in pm.modules() if isinstance(m, nn.Conv2d)
                            ],
                        }
                        rows.append(row)
                        _append(row)
                        print(
                            f"  budget {budget:g} {name:20s} FLOPs {row['flops_share']:.3f} "
                            f"pruned val {row['pruned_val_top1']:.1f} "
                            f"test {row['pruned_test_top1']:.1f}",
                            flush=True,
                        )
    return rows


def methods(
    model: nn.Module, shape: tuple[int, ...], budget: float, variants: list[str], a: Any
) -> dict[str, nn.Module]:
    out: dict[str, nn.Module] = {}
    for v in variants:
        norm, power = v.split(":")
        r = prune(
            model,
            shape,
            prune_type="filter_wise",
            flops_budget=budget,
            normalizer=norm,
            cost_power=float(power),
        )
        out[f"ours[{v}]"] = r.model
    out["tp_global"] = tp_global(model, shape, budget, a.tp_steps)
    out["tp_uniform"] = tp_uniform(model, shape, budget)
    return out


def finetune_phase(a: argparse.Namespace, rows: list[dict[str, Any]], default: str) -> None:
    """Phase 2: the chosen variant, TP global and uniform pruned again (deterministic) and
    fine-tuned with the same recipe; test top-1 added to their rows."""
    keep = (f"ours[{default}]", "tp_global", "tp_uniform")
    done = _done()
    for arch in a.archs:
        data = load_datasets(DataConfig(name="digits", image_size=IMAGE_SIZE.get(arch)))
        shape = (data.channels, data.image_size, data.image_size)
        rec, epochs, ft_epochs = recipe(arch, a)
        for seed in a.seeds:
            for lam in a.lambdas:
                model = ssl_model(arch, data, seed, lam, rec, epochs).eval()
                for budget in a.budgets:
                    fkeys = {
                        n: _key("ft", arch, seed, lam, budget, n, epochs, ft_epochs) for n in keep
                    }
                    if all(k in done for k in fkeys.values()):
                        accs = {n: done[fkeys[n]]["acc"] for n in keep}
                    else:
                        pruned = methods(model, shape, budget, [default], a)
                        accs = {}
                        for name in keep:
                            pm = recal(pruned[name], data, seed)
                            seed_everything(seed)
                            accs[name] = finetuned(pm, data, rec, ft_epochs, seed)
                            _append({"key": fkeys[name], "acc": accs[name]})
                    for name in keep:
                        acc = accs[name]
                        for r in rows:
                            if (r["arch"], r["seed"], r["lambda"], r["budget"], r["method"]) == (
                                arch,
                                seed,
                                lam,
                                budget,
                                name,
                            ):
                                r["finetuned_test_top1"] = acc
                        print(
                            f"{arch} seed {seed} lambda {lam:g} budget {budget:g} {name}: "
                            f"fine-tuned test {acc:.1f}",
                            flush=True,
                        )


def choose(rows: list[dict[str, Any]], variants: list[str]) -> str:
    """The variant with the best mean validation top-1 right after pruning."""

    def mean_val(v: str) -> float:
        xs = [r["pruned_val_top1"] for r in rows if r["method"] == f"ours[{v}]"]
        return statistics.mean(xs) if xs else -math.inf

    return max(variants, key=mean_val)


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    started = time.time()
    set_threads(a.threads)
    machine = machine_info()
    print_header("bench_budget: FLOPs budgets, ours vs Torch-Pruning", machine)
    from sslsearch.pruning._units import DEFAULT_COST_POWER, DEFAULT_NORMALIZER

    library = f"{DEFAULT_NORMALIZER}:{DEFAULT_COST_POWER}"
    variants = list(dict.fromkeys([*a.variants, library]))
    rows = screen(a, variants)
    default = choose(rows, variants) if a.default in (None, "auto") else a.default
    print(f"\nchosen on the validation split: {default} (the library's default: {library})")
    if not a.no_finetune:
        finetune_phase(a, rows, default)
    summarise(rows, variants, default, a)
    write_results(
        "bench_budget",
        machine=machine,
        settings={**vars(a), "chosen_variant": default, "library_default": library},
        results={"rows": rows},
        started=started,
        notes=[
            "top-1 on the test split; selection variants compared on the validation split",
            "every method's pruned model gets the same BN re-estimation (20 training batches)",
        ],
        out=a.out,
    )


def summarise(rows: list[dict[str, Any]], variants: list[str], default: str, a: Any) -> None:
    # variants: mean validation top-1 right after pruning over every model, seed and budget
    screen = []
    for v in variants:
        xs = [r["pruned_val_top1"] for r in rows if r["method"] == f"ours[{v}]"]
        screen.append({"variant": v, "val": statistics.mean(xs) if xs else math.nan, "n": len(xs)})
    print_table(
        screen,
        [
            Col("variant", "normalizer:cost_power"),
            Col("val", "mean val top-1 right after pruning", ".2f"),
            Col("n", "n"),
        ],
        "Selection variants (validation split)",
    )
    out = []
    keys = sorted(
        {(r["arch"], r["lambda"], r["budget"]) for r in rows},
        key=lambda k: (a.archs.index(k[0]), k[1], -k[2]),
    )
    for arch, lam, budget in keys:
        sel = [r for r in rows if (r["arch"], r["lambda"], r["budget"]) == (arch, lam, budget)]
        row: dict[str, Any] = {"arch": arch, "lambda": lam, "budget": budget}
        for name, col in (
            (f"ours[{default}]", "ours"),
            ("tp_global", "tpg"),
            ("tp_uniform", "tpu"),
        ):
            m = [r for r in sel if r["method"] == name]
            row[f"{col}_p"] = mean_sd([r["pruned_test_top1"] for r in m])
            row[f"{col}_f"] = mean_sd([r.get("finetuned_test_top1", math.nan) for r in m])
            row[f"{col}_e"] = max((r["flops_share"] - budget for r in m), default=math.nan)
        out.append(row)
    print_table(
        out,
        [
            Col("arch", "model"),
            Col("lambda", "lambda"),
            Col("budget", "FLOPs budget"),
            Col("ours_p", "ours: pruned"),
            Col("ours_f", "ours: fine-tuned"),
            Col("tpg_p", "TP global: pruned"),
            Col("tpg_f", "TP global: fine-tuned"),
            Col("tpu_p", "uniform: pruned"),
            Col("tpu_f", "uniform: fine-tuned"),
            Col("ours_e", "ours: max FLOPs - budget", "+.3f"),
            Col("tpg_e", "TP global: max FLOPs - budget", "+.3f"),
            Col("tpu_e", "uniform: max FLOPs - budget", "+.3f"),
        ],
        f"Test top-1 (mean ± sd over seeds), ours = {default}",
    )


if __name__ == "__main__":
    main()

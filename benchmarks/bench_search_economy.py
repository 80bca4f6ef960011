"""Search economy: hypervolume against wall-clock time and SSL trainings, today's scheme vs the
new one, with REAL end-to-end searches (``sslsearch.search.run_search`` on a local Ray instance).

Schemes (each a full search on ``search_spaces/default.yaml``, 2 CPUs, the dense baseline and
the lambda = 0 references off):

* ``old``: one SSL training per point, TPE (the scheme before issue 12:
  ``economy.points_per_ssl=1``, ``sampler.name=tpe``, no early stopping), 16 points (the
  default space's budget);
* ``new``: one SSL training per 4 points (the points spread along the ratio range), the sampler
  ``auto`` picks (GP on this space), 32 points (a point costs 3 + 4 epochs instead of 12 + 4);
* ``new_es``: ``new`` plus early stopping of dominated points during fine-tuning (compared with
  finished points at the same fine-tune epoch, from epoch 3 of 4, margin 1 top-1 point);
* ``new_k2``: ``new`` with 2 points per SSL model, 32 points;
* ``old_gp``: ``old`` with GP: what the sampler alone gives, 16 points.

Variants run interleaved per seed (every scheme, then the next seed), so machine load hits
them alike. Hypervolume as the export computes it: top1/100 and flops/flops_before, reference
point top1 = 0 and the dense model's FLOPs. Time is measured from the call to ``run_search``
(Ray is started once beforehand) to each point's ``finished_at``.

    python benchmarks/bench_search_economy.py                 # 3 seeds x 5 schemes, ~15 min
    python benchmarks/bench_search_economy.py --seeds 1 --schemes old new

``--tier`` runs the same searches on the CIFAR-10 CPU tier (``search_spaces/cifar10_cpu.yaml``,
CIFAR-10 from ``_tier.py``) and judges them by the protocol (``_protocol.py``): each search's
front is chosen on validation and scored on the **test** split, on the log and the linear cost
axis, against the compute spent (the trials' CPU seconds, from the ``cpu_seconds`` column: other
load on the machine does not move it; core-seconds held, seconds x the CPUs Ray was given, beside
it),
with intervals over at least 5 paired seeds, and the screen's within-model Kendall tau
(screened validation top-1 against final test top-1 across each SSL model's fine-tuned points).
A rerun of the same command keeps the searches already in the runs file (``.runs.jsonl``,
written as each search ends) and runs the rest:

    python benchmarks/bench_search_economy.py --tier            # 5 seeds x 4 schemes, hours

The tier's schemes: ``spread`` (today's fixed stops), ``screen``, ``screen_mf25`` (the screen
with multi-fidelity rungs) and ``path_screen`` (the lambda path, ``economy.lambda_path``, with
the screen).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import Col, machine_info, median, print_header, print_table, write_results
from _protocol import (
    BOOTSTRAP,
    Point,
    bootstrap_median,
    front_scores,
    interval_text,
    paired_interval,
)

from sslsearch.report import hypervolume, read_rows, to_minimization

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_SPACE = ROOT / "search_spaces" / "default.yaml"
TIER_SPACE = ROOT / "search_spaces" / "cifar10_cpu.yaml"
CPUS = 2  # the CPUs Ray is given: the compute a search holds is its seconds x CPUS
OLD = ["economy.points_per_ssl=1", "sampler.name=tpe", "early_stopping.enabled=false"]
NEW = ["economy.points_per_ssl=4", "sampler.name=auto"]
SCHEMES: dict[str, list[str]] = {
    # issue 20: today's default (4 points per SSL model on fixed spread stops, GP) against the
    # screen (each SSL model pruned at 16 budgets, the 4 that add the most hypervolume tuned)
    "spread": ["economy.points_per_ssl=4", "economy.screen=0"],
    "screen": ["economy.points_per_ssl=4", "economy.screen=16"],
    # the screen's choice trusted more: 2 tuned points per SSL model, half the points (the
    # same 4 SSL models, half the fine-tunes)
    "screen_k2": ["economy.points_per_ssl=2", "economy.screen=16", "budget.num_samples=8"],
    # plus multi-fidelity: SSL models screened at 1/4 and 1/2 of their SSL epochs, the better
    # half by hypervolume contribution go on; twice the points asked (stopped ones are cheap)
    "screen_mf": [
        "economy.points_per_ssl=4",
        "economy.screen=16",
        "economy.rungs=[0.25,0.5]",
        "economy.keep=0.5",
        "budget.num_samples=32",
    ],
    # multi-fidelity as the tier's measurement advises (bench_screen_rank.py: across SSL models
    # the plain screen ranks at tau -0.28, 25 annealed recovery steps at 0.35): the rungs and
    # the choice compare SSL models on recovered copies
    "screen_mf25": [
        "economy.points_per_ssl=4",
        "economy.screen=16",
        "economy.screen_steps=25",
        "economy.rungs=[0.25,0.5]",
        "economy.keep=0.5",
        "budget.num_samples=32",
    ],
    # the lambda path (issue 28): each job one SSL training whose lambda steps up 4 times by 1.4
    # (15 epochs at the first, 3 more at each next), every step an SSL model whose 2 points the
    # screen chooses: 8 points a job, 2 jobs, 4 x 2 SSL models for 2 x 24 SSL epochs (spread:
    # 4 SSL models, 60 epochs)
    "path_screen": [
        "economy.points_per_ssl=2",
        "economy.screen=16",
        "economy.lambda_path=4",
        "economy.path_ratio=1.4",
        "economy.path_epochs=3",
    ],
    "old": OLD,
    "new": [*NEW, "early_stopping.enabled=false"],
    "new_es": [*NEW, "early_stopping.enabled=true"],
    "new_k2": ["economy.points_per_ssl=2", "sampler.name=auto", "early_stopping.enabled=false"],
    # the sampler alone: one SSL model per point as before, but GP (what sharing adds over it)
    "old_gp": ["economy.points_per_ssl=1", "sampler.name=gp", "early_stopping.enabled=false"],
}
# The dense baseline and the lambda = 0 reference points are the same for every scheme and run
# after (or beside) the search: off here, so the clocks time the search alone.
COMMON = ["reference.baseline=false", "reference.lambda0=false"]
DIRECTIONS = ["max", "min"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--tier",
        action="store_true",
        help="search the CIFAR-10 CPU tier (cifar10_cpu.yaml) and judge on test (the protocol)",
    )
    p.add_argument(
        "--seeds", type=int, default=None, help="sampler seeds per scheme (default 3; --tier 5)"
    )
    p.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. +seeds-1")
    p.add_argument(
        "--from-json",
        default=None,
        help="summarise the runs of an earlier result file again (no search is run)",
    )
    p.add_argument(
        "--schemes",
        nargs="+",
        default=None,
        choices=list(SCHEMES),
        help="default: spread screen screen_mf; --tier: spread screen screen_mf25 path_screen",
    )
    p.add_argument(
        "--baseline",
        default="spread",
        choices=list(SCHEMES),
        help="the scheme the others are compared with (issue 12's runs: old)",
    )
    p.add_argument("--num-samples", type=int, default=16, help="points of a search")
    p.add_argument(
        "--new-samples",
        type=int,
        default=32,
        help="points of a new* scheme search (issue 12: a point costs less, same wall time)",
    )
    p.add_argument("--space", default=None, help="default: default.yaml; --tier: cifar10_cpu.yaml")
    p.add_argument("--set", action="append", default=[], help="extra key=value for every run")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.seeds is None:
        args.seeds = 5 if args.tier else 3
    if args.schemes is None:
        args.schemes = (
            ["spread", "screen", "screen_mf25", "path_screen"]
            if args.tier
            else ["spread", "screen", "screen_mf"]
        )
    if args.space is None:
        args.space = str(TIER_SPACE if args.tier else DEFAULT_SPACE)
    if args.tier and args.out is None:
        args.out = str(RESULTS / "bench_search_economy_tier.json")
    return args


def normalised_hv(rows: list[dict[str, Any]]) -> float:
    ok = [r for r in rows if r["status"] == "ok" and r["top1"] is not None]
    if not ok:
        return 0.0
    vals = np.array([[r["top1"] / 100.0, r["flops"] / r["flops_before"]] for r in ok])
    ref = to_minimization(np.array([[0.0, 1.0]]), DIRECTIONS)[0]
    return hypervolume(to_minimization(vals, DIRECTIONS), ref)


def curve(rows: list[dict[str, Any]], t0: float) -> list[dict[str, float]]:
    """HV and SSL trainings after each finished point, by seconds since the search started."""
    done = sorted(
        (r for r in rows if r.get("finished_at") is not None), key=lambda r: r["finished_at"]
    )
    out = []
    for i, r in enumerate(done):
        upto = done[: i + 1]
        out.append(
            {
                "t": float(r["finished_at"]) - t0,
                "hv": normalised_hv(upto),
                "ssl_trainings": len({x["ssl_model_id"] for x in upto if x.get("ssl_model_id")}),
                "points": i + 1,
            }
        )
    return out


Curve = list[dict[str, float]]


def hv_at(c: Curve, t: float, x: str = "t", y: str = "hv") -> float:
    """The curve's best ``y`` by the moment ``t`` on its ``x`` axis (0.0 before its first)."""
    return max([p[y] for p in c if p[x] <= t], default=0.0)


def min_lead(new: Curve, old: Curve, grid: list[float], x: str = "t", y: str = "hv") -> float:
    """The smallest HV(new) - HV(old) at the given moments (0.0 with none)."""
    return min((hv_at(new, g, x, y) - hv_at(old, g, x, y) for g in grid), default=0.0)


def time_to(c: Curve, hv: float, x: str = "t", y: str = "hv") -> float | None:
    """The moment (on ``x``) the curve first reaches ``hv`` (None: never)."""
    return next((p[x] for p in c if p[y] >= hv - 1e-12), None)


def kendall(pairs: list[list[float]]) -> float | None:
    """Kendall's tau-b of (screened, final) top-1 pairs (None under 3 pairs)."""
    from sslsearch.report import kendall_tau

    return kendall_tau([a for a, _ in pairs], [b for _, b in pairs])


def settings_key(args: argparse.Namespace) -> str:
    """What makes two runs of a scheme and seed the same measurement (a rerun keeps them)."""
    return json.dumps([Path(args.space).name, args.num_samples, args.new_samples, args.set])


def tier_data() -> list[str]:
    from _tier import tier_root

    return [f"data.root={tier_root()}"]


def run_points(rows: list[dict[str, Any]], t0: float) -> list[dict[str, Any]]:
    """What the tier's summary needs of each point: both splits, cost, time, screen, SSL model."""
    out = []
    for r in rows:
        before = r.get("flops_before")
        out.append(
            {
                "status": r["status"],
                "job": r.get("trial_dir"),
                "ssl_model_id": r.get("ssl_model_id"),
                "cost": r["flops"] / before if r.get("flops") and before else None,
                "val": r.get("top1"),
                "test": r.get("test_top1"),
                "screen_top1": r.get("screen_top1"),
                "t": float(r["finished_at"]) - t0 if r.get("finished_at") else None,
                "job_started": float(r["started_at"]) - t0 if r.get("started_at") else None,
                "cpu_seconds": r.get("cpu_seconds"),
            }
        )
    return out


def run_one(args: argparse.Namespace, scheme: str, seed: int, base: Path) -> dict[str, Any]:
    from sslsearch.search import SearchOptions, run_search

    name = f"{scheme}_s{seed}"
    overrides = [
        f"name={name}",
        f"storage_path={base}",
        f"sampler.seed={seed}",
        f"budget.num_samples={args.new_samples if scheme.startswith('new') else args.num_samples}",
        *COMMON,
        *SCHEMES[scheme],
        *(tier_data() if args.tier else []),
        *args.set,
    ]
    t0 = time.time()
    out = run_search(
        SearchOptions(space=args.space, overrides=overrides, dashboard=False, progress_every_s=1e9)
    )
    wall = time.time() - t0
    rows = read_rows(out.trials_path)
    rows = [r for r in rows if r.get("role", "search") == "search" and not r.get("confirm_of")]
    c = curve(rows, t0)
    exp = Path(out.trials_path).parent
    files = [*exp.glob("jobs/*/screen.json"), *exp.glob("jobs/*/step*/screen.json")]
    screens = [json.loads(f.read_text()) for f in files]
    return {
        "scheme": scheme,
        "seed": seed,
        "key": settings_key(args),
        "points": run_points(rows, t0),
        "wall_s": wall,
        "last_point_s": c[-1]["t"] if c else None,
        "final_hv": c[-1]["hv"] if c else 0.0,
        "points_ok": sum(r["status"] == "ok" for r in rows),
        "points_stopped": sum(r["status"] == "stopped" for r in rows),
        "ssl_trainings": c[-1]["ssl_trainings"] if c else 0,
        "curve": c,
        "counts": out.counts,
        # (screened val top-1, final val top-1) of every fine-tuned point with a screen
        "screen_pairs": [
            [r["screen_top1"], r["top1"]]
            for r in rows
            if r["status"] == "ok" and r.get("screen_top1") is not None
        ],
        "screen_seconds": sum(float(x.get("seconds", 0.0)) for x in screens),
        "screened_values": sum(len(x.get("rows", [])) for x in screens),
    }


NEVER = 99.0  # compute share recorded when a scheme never reaches the baseline's HV
AXES = {"log": "hv_log_test", "linear": "hv_test"}
COMPUTE = "cpu_s"  # the x axis: the trials' CPU seconds (robust to other load on the machine)


def job_cpu(run: dict[str, Any]) -> dict[str, list[tuple[float, float]]]:
    """Each job's CPU seconds against seconds since the search started: 0 when it started,
    then its ``cpu_seconds`` when each of its points ended."""
    knots: dict[str, list[tuple[float, float]]] = {}
    for p in run["points"]:
        if p.get("cpu_seconds") is None or p.get("t") is None or not p.get("job"):
            continue
        k = knots.setdefault(p["job"], [])
        if p.get("job_started") is not None and not k:
            k.append((p["job_started"], 0.0))
        k.append((p["t"], float(p["cpu_seconds"])))
    return {j: sorted(set(k)) for j, k in knots.items()}


def cpu_at(knots: dict[str, list[tuple[float, float]]], t: float) -> float:
    """The trials' CPU seconds spent by ``t``: each job's, linear between its knots."""
    total = 0.0
    for k in knots.values():
        xs, ys = [x for x, _ in k], [y for _, y in k]
        total += float(np.interp(t, xs, ys, left=0.0, right=ys[-1]))
    return total


def tier_curve(run: dict[str, Any]) -> list[dict[str, float]]:
    """After each finished point: the compute so far (``cpu_s``: the trials' CPU seconds;
    ``core_s``: core-seconds held) and the test hypervolume (both axes) of the front chosen on
    validation from the points so far."""
    knots = job_cpu(run)
    ok = sorted(
        (p for p in run["points"] if p["status"] == "ok" and p["t"] is not None and p["cost"]),
        key=lambda p: p["t"],
    )
    out, pts = [], []
    for p in ok:
        pts.append(Point(cost=p["cost"], val=p["val"], test=p["test"]))
        sc = front_scores(pts)
        at = {"cpu_s": cpu_at(knots, p["t"]), "core_s": p["t"] * CPUS}
        out.append(at | {ax: sc[key] for ax, key in AXES.items()})
    return out


def trial_cpu(run: dict[str, Any]) -> float | None:
    """The trials' own CPU seconds (the product's sum: each job's last ``cpu_seconds``)."""
    from sslsearch.report import trials_cpu_seconds

    return trials_cpu_seconds(
        [{"trial_dir": p.get("job"), "cpu_seconds": p.get("cpu_seconds")} for p in run["points"]]
    )


def within_model_taus(run: dict[str, Any]) -> list[float]:
    """Per SSL model with 3 or more screened, fine-tuned points: Kendall tau between the
    screened validation top-1 and the final test top-1 (images the screen never saw)."""
    groups: dict[str, list[tuple[float, float]]] = {}
    for p in run["points"]:
        if p["status"] == "ok" and p.get("screen_top1") is not None and p.get("test") is not None:
            groups.setdefault(str(p["ssl_model_id"]), []).append((p["screen_top1"], p["test"]))
    taus = [kendall([list(x) for x in g]) for g in groups.values() if len(g) >= 3]
    return [t for t in taus if t is not None]


def _interval(values: list[float], fmt: str = ".2f") -> str:
    med, lo, hi = bootstrap_median(values)
    return f"{med:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def _share_interval(values: list[float], seed: int = 0) -> str:
    """Compute shares (``NEVER``: not reached): the median (the higher middle value for an even
    count: a share is never averaged with 'never'), its bootstrap 95% interval, every seed."""
    v = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    meds = np.quantile(rng.choice(v, size=(BOOTSTRAP, len(v))), 0.5, axis=1, method="higher")
    shown = [
        "never" if x >= NEVER else f"{x:.2f}"
        for x in (
            np.quantile(v, 0.5, method="higher"),
            np.quantile(meds, 0.025, method="lower"),
            np.quantile(meds, 0.975, method="higher"),
        )
    ]
    each = " / ".join("never" if x >= NEVER else f"{x:.2f}" for x in values)
    return f"{shown[0]} [{shown[1]}, {shown[2]}] ({each})"


def tier_summary(
    runs: list[dict[str, Any]], args: argparse.Namespace, seeds: list[int]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The protocol's table: test hypervolume vs compute, paired against the baseline."""
    by = {(r["scheme"], r["seed"]): r for r in runs}
    curves = {k: tier_curve(r) for k, r in by.items()}
    paired_seeds = [s for s in seeds if all((sc, s) in by for sc in args.schemes)]
    table, comparisons = [], {}
    for scheme in args.schemes:
        mine = [by[(scheme, s)] for s in paired_seeds]
        finals = {ax: [curves[(scheme, s)][-1][ax] for s in paired_seeds] for ax in AXES}
        taus = [t for r in mine for t in within_model_taus(r)]
        cpu = [c for c in (trial_cpu(r) for r in mine) if c is not None]
        row: dict[str, Any] = {
            "scheme": scheme,
            "seeds": len(mine),
            "core_s": median([r["wall_s"] * CPUS for r in mine]),
            "trial_cpu_s": median(cpu) if cpu else None,
            "ssl": median([r["ssl_trainings"] for r in mine]),
            "stopped": median([r["points_stopped"] for r in mine]),
            "tau": f"{median(taus):.2f} ({min(taus):.2f}..{max(taus):.2f}; {len(taus)} models)"
            if taus
            else "-",
        }
        for ax in AXES:
            row[f"hv_{ax}"] = _interval(finals[ax], ".4f")
        comp: dict[str, Any] = {"within_model_tau": taus, "final": finals}
        if scheme != args.baseline:
            for ax in AXES:
                fracs, leads = [], []
                for s in paired_seeds:
                    old, new = curves[(args.baseline, s)], curves[(scheme, s)]
                    t = time_to(new, old[-1][ax], COMPUTE, ax)
                    fracs.append(t / old[-1][COMPUTE] if t is not None else NEVER)
                    start = max(old[0][COMPUTE], new[0][COMPUTE])
                    grid = sorted({p[COMPUTE] for p in old + new if p[COMPUTE] >= start})
                    leads.append(min_lead(new, old, grid, COMPUTE, ax))
                base = [curves[(args.baseline, s)][-1][ax] for s in paired_seeds]
                diff = paired_interval(finals[ax], base)
                row[f"to_base_{ax}"] = _share_interval(fracs)
                row[f"lead_{ax}"] = f"{median(leads):+.4f} (min {min(leads):+.4f})"
                row[f"diff_{ax}"] = interval_text(diff, 4)
                comp[ax] = {"compute_share_to_baseline_final": fracs, "min_lead": leads, **diff}
        comparisons[scheme] = comp
        table.append(row)
    return table, comparisons


TIER_COLS = [
    Col("scheme", "scheme", ""),
    Col("seeds", "seeds", "d"),
    Col("hv_log", "test HV log axis [95%]", ""),
    Col("hv_linear", "test HV linear [95%]", ""),
    Col("diff_log", "- baseline, log [95%]", ""),
    Col("diff_linear", "- baseline, linear [95%]", ""),
    Col("to_base_log", "compute to baseline's final HV, log [95%] (per seed)", ""),
    Col("to_base_linear", "same, linear [95%] (per seed)", ""),
    Col("lead_log", "min HV lead at equal compute, log (median, min)", ""),
    Col("lead_linear", "same, linear", ""),
    Col("core_s", "core-s held", ".0f"),
    Col("trial_cpu_s", "trial CPU s", ".0f"),
    Col("ssl", "SSL trainings", ".0f"),
    Col("stopped", "stopped points", ".0f"),
    Col("tau", "within-model tau screen vs test (median, range)", ""),
]


def _runs_file(args: argparse.Namespace) -> Path:
    out = Path(args.out) if args.out else RESULTS / "bench_search_economy.json"
    return out.with_suffix(".runs.jsonl")


def kept_runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The runs of the same settings an earlier run of this command wrote (resume)."""
    path = _runs_file(args)
    if not path.is_file():
        return []
    found = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in found if r.get("key") == settings_key(args)]


def run_all(args: argparse.Namespace, seeds: list[int]) -> list[dict[str, Any]]:
    """Every scheme for every seed, interleaved, on one local Ray instance; the searches of an
    earlier run of the same command are kept, not run again."""
    runs = kept_runs(args)
    done = {(r["scheme"], r["seed"]) for r in runs}
    todo = [(seed, s) for seed in seeds for s in args.schemes if (s, seed) not in done]
    print(f"{len(done)} searches kept from {_runs_file(args).name}, {len(todo)} to run", flush=True)
    if not todo:
        return runs
    import ray

    ray.init(num_cpus=CPUS, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    base = Path(tempfile.mkdtemp(prefix="sslsearch-economy-"))
    _runs_file(args).parent.mkdir(parents=True, exist_ok=True)
    try:
        for n, (seed, scheme) in enumerate(todo, 1):
            print(f"[{n}/{len(todo)}] seed {seed} {scheme} ...", flush=True)
            r = run_one(args, scheme, seed, base)
            runs.append(r)
            with open(_runs_file(args), "a") as f:  # each run kept as soon as it ends
                f.write(json.dumps(r) + "\n")
            print(
                f"seed {seed} {scheme:7s}: {r['wall_s']:.0f}s, HV {r['final_hv']:.4f}, "
                f"{r['points_ok']} ok / {r['points_stopped']} stopped, "
                f"{r['ssl_trainings']} SSL trainings",
                flush=True,
            )
    finally:
        ray.shutdown()
        shutil.rmtree(base, ignore_errors=True)
    return runs


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.time()
    machine = machine_info()
    print_header("search economy: real searches, hypervolume vs wall time", machine)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    runs: list[dict[str, Any]] = []
    if args.from_json:
        src = Path(args.from_json)
        if src.suffix == ".jsonl":  # the runs of an interrupted or earlier run, one per line
            found = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
            args.measured = f"runs read from {src.name} (written as each search ended)"
        else:
            earlier = json.loads(src.read_text())
            found = earlier["results"]["runs"]
            args.measured = (
                f"runs measured {earlier['started_at']} by `{earlier['command']}` (load "
                f"average at the end {earlier.get('load_average_at_end')}); summarised again"
            )
        runs = found
    else:
        runs = run_all(args, seeds)
    runs = [r for r in runs if r["scheme"] in args.schemes and r["seed"] in seeds]
    if args.tier:
        _tier_report(runs, args, seeds, machine, started)
        return

    by = {(r["scheme"], r["seed"]): r for r in runs}
    table = []
    comparisons: dict[str, Any] = {}
    for scheme in args.schemes:
        mine = [r for r in runs if r["scheme"] == scheme]
        row: dict[str, Any] = {
            "scheme": scheme,
            "wall_s": median([r["wall_s"] for r in mine]),
            "final_hv": median([r["final_hv"] for r in mine]),
            "ssl": median([r["ssl_trainings"] for r in mine]),
            "stopped": median([r["points_stopped"] for r in mine]),
        }
        taus = [kendall(r.get("screen_pairs") or []) for r in mine]
        taus = [t for t in taus if t is not None]
        if taus:
            row["tau"] = median(taus)
            row["tau_range"] = f"{min(taus):.2f}..{max(taus):.2f}"
        if scheme != args.baseline and args.baseline in args.schemes:
            fracs, ahead, ahead_after = [], [], []
            for seed in seeds:
                old, new = by[(args.baseline, seed)], by[(scheme, seed)]
                t = time_to(new["curve"], old["final_hv"])
                fracs.append(t / old["last_point_s"] if t is not None else float("inf"))
                grid = sorted([p["t"] for p in old["curve"]] + [p["t"] for p in new["curve"]])
                firsts = [c[0]["t"] for c in (old["curve"], new["curve"]) if c]
                ahead.append(min_lead(new["curve"], old["curve"], grid))
                later = [g for g in grid if g >= max(firsts, default=0.0)]
                ahead_after.append(min_lead(new["curve"], old["curve"], later))
            row["time_to_old_hv"] = median(fracs)
            row["min_hv_lead"] = median(ahead)
            row["min_hv_lead_after"] = median(ahead_after)
            comparisons[scheme] = {
                "time_to_old_final_hv_fraction": fracs,
                "min_hv_lead": ahead,
                "min_hv_lead_once_both_have_a_point": ahead_after,
            }
        table.append(row)
    cols = [
        Col("scheme", "scheme", ""),
        Col("wall_s", "wall s (median)", ".0f"),
        Col("final_hv", "final HV", ".4f"),
        Col("ssl", "SSL trainings", ".0f"),
        Col("stopped", "stopped points", ".0f"),
        Col("time_to_old_hv", "time to baseline's final HV / its time", ".2f"),
        Col("min_hv_lead", "min HV lead over baseline at equal time", "+.4f"),
        Col("min_hv_lead_after", "same, once both have a point", "+.4f"),
        Col("tau", "Kendall tau screen vs final (median)", ".2f"),
        Col("tau_range", "tau range", ""),
    ]
    print_table(
        table,
        cols,
        f"median of {args.seeds} seeds; {args.num_samples} points a search (new*: "
        f"{args.new_samples}); baseline {args.baseline}",
    )
    write_results(
        "bench_search_economy",
        machine=machine,
        settings={k: v for k, v in vars(args).items() if k not in ("out", "measured")}
        | {"schemes_def": SCHEMES},
        results={"table": table, "comparisons": comparisons, "runs": runs},
        started=started,
        notes=[
            "time_to_old_hv: seconds until the scheme's HV reaches old's final HV (same seed) "
            "divided by old's time to its last point; <= 0.5 is the target",
            "min_hv_lead: over every moment either search finished a point, the smallest "
            "HV(scheme) - HV(old); >= 0 means never behind at equal wall time",
            "min_hv_lead_once_both_have_a_point: the same from the moment both searches have "
            "finished a point (a first point a second later reads as a lead of -HV otherwise)",
            "the dense baseline and the lambda = 0 reference points are off (the same for "
            "every scheme); old_gp: one SSL model per point with GP, the sampler's share",
            *([args.measured] if getattr(args, "measured", None) else []),
        ],
        out=args.out,
    )
    _plot(runs, args)


def _tier_report(
    runs: list[dict[str, Any]],
    args: argparse.Namespace,
    seeds: list[int],
    machine: dict[str, Any],
    started: float,
) -> None:
    table, comparisons = tier_summary(runs, args, seeds)
    print_table(
        table,
        TIER_COLS,
        f"CIFAR-10 tier ({Path(args.space).name}), seeds with every scheme: "
        f"{table[0]['seeds'] if table else 0} of {len(seeds)}; baseline {args.baseline}; "
        "medians with bootstrap 95% intervals over paired seeds",
    )
    write_results(
        "bench_search_economy",
        machine=machine,
        settings={k: v for k, v in vars(args).items() if k not in ("out", "measured")}
        | {"schemes_def": SCHEMES, "cpus": CPUS},
        results={"table": table, "comparisons": comparisons, "runs": runs},
        started=started,
        notes=[
            "test HV: the front chosen on validation from the points finished so far, scored "
            "on the test split (benchmarks/_protocol.py: top-1/100 against the FLOPs share, "
            "cost on a log axis over 2 decades, and linear)",
            "compute: the trials' CPU seconds (each job's cpu_seconds column, linear between "
            "its start and its points' ends, summed over jobs); core-s held: seconds since "
            "run_search was called x the CPUs Ray was given",
            "compute to baseline's final HV: the scheme's compute when its test HV first "
            "reaches the baseline's final test HV (same seed), as a share of the baseline's "
            f"compute to its last point; {NEVER:g} (shown 'never'): not reached",
            "min HV lead: over every moment either search finished a point, from the moment "
            "both have one, HV(scheme) - HV(baseline) at equal compute",
            "within-model tau: per SSL model with 3+ screened fine-tuned points, Kendall tau of "
            "screened validation top-1 vs final test top-1; only the chosen values (a biased "
            "sample: bench_screen_rank.py measures it over a random grid)",
            *([args.measured] if getattr(args, "measured", None) else []),
        ],
        out=args.out,
    )
    _plot_tier(runs, args)


def _plot_tier(runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = dict(zip(SCHEMES, plt.get_cmap("tab10").colors))
    labelled: set[str] = set()
    for r in runs:
        c = tier_curve(r)
        for ax, key in zip(axes, AXES):
            ax.step(
                [p[COMPUTE] for p in c],
                [p[key] for p in c],
                where="post",
                color=colors[r["scheme"]],
                alpha=0.7,
                label=r["scheme"] if r["scheme"] not in labelled else None,
            )
        labelled.add(r["scheme"])
    for ax, key in zip(axes, AXES):
        ax.set_xlabel("trials' CPU seconds")
        ax.set_ylabel(f"test hypervolume ({key} cost axis)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"CIFAR-10 tier searches, {CPUS} CPUs, one line per seed")
    fig.tight_layout()
    out = Path(args.out).with_suffix(".png")
    fig.savefig(out, dpi=110)
    print(f"wrote {out}", flush=True)


def _plot(runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = {
        "spread": "tab:gray",
        "screen": "tab:orange",
        "screen_mf": "tab:brown",
        "screen_mf25": "tab:pink",
        "path_screen": "tab:cyan",
        "screen_k2": "tab:olive",
        "old": "tab:gray",
        "new": "tab:blue",
        "new_es": "tab:green",
        "new_k2": "tab:red",
        "old_gp": "tab:purple",
    }
    for r in runs:
        c = r["curve"]
        kw = {"color": colors[r["scheme"]], "alpha": 0.8, "where": "post"}
        label = r["scheme"] if r["seed"] == args.first_seed else None
        axes[0].step([p["t"] for p in c], [p["hv"] for p in c], label=label, **kw)
        axes[1].step([p["ssl_trainings"] for p in c], [p["hv"] for p in c], label=label, **kw)
    axes[0].set_xlabel("wall-clock seconds since the search started")
    axes[1].set_xlabel("SSL trainings")
    for ax in axes:
        ax.set_ylabel("hypervolume (top1 x FLOPs)")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"default space, 2 CPUs, {args.seeds} seeds; old {args.num_samples} points, "
        f"new {args.new_samples}"
    )
    fig.tight_layout()
    out = (
        Path(args.out).with_suffix(".png")
        if args.out
        else Path(__file__).resolve().parent / "results" / "bench_search_economy.png"
    )
    fig.savefig(out, dpi=110)
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main()

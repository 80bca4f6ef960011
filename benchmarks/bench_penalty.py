"""SSL penalty cost: the extra time of the group-Lasso penalty in one training step.

For each architecture: one training step (forward, cross-entropy, backward, SGD step) on a fixed
random batch, without the penalty and with each SSL type's penalty (``SSLPenalty`` built once
over the model's dependency groups) applied the trial's way: ``prox_(lr)`` after
``optimizer.step()`` (the group-Lasso proximal step; on big models each call visits one chunk
of about ``elements_per_step`` parameters, with the steps it missed) and, for comparison, the
textbook way (added to the loss and back-propagated by autograd).

Headline (``amortised %``): the proximal step timed alone over whole cycles (every chunk
visited equally often), per call, as a share of the plain step's median: the mean cost per
training step, spikes included. Cross-check (``in-step %``): the variants share one model and
optimizer and run interleaved, one step each per round in a rotating order; the median of the
per-round differences to the plain step. Target: under 3%.

    python benchmarks/bench_penalty.py                      # CPU, 32x32, batch 32: ~4 min
    python benchmarks/bench_penalty.py --device cuda --image-size 224 --rounds 50
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from _common import (
    Col,
    interleaved,
    machine_info,
    median,
    paired,
    print_header,
    print_table,
    quantile,
    set_threads,
    summary,
    write_results,
)
from torch import nn

import sslsearch
from sslsearch.errors import NotPrunableError
from sslsearch.sparsity import SSL_TYPES, SSLPenalty
from sslsearch.trial import pick_device

TARGET_SHARE = 0.03


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--archs", nargs="+", default=["vgg16_bn", "resnet50"])
    p.add_argument("--ssl-types", nargs="+", default=list(SSL_TYPES), choices=SSL_TYPES)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=100)
    p.add_argument("--ssl-lambda", type=float, default=1e-4, help="any value > 0 costs the same")
    p.add_argument("--rounds", type=int, default=20, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/)")
    return p.parse_args(argv)


def _penalties(model: nn.Module, types: list[str], lam: float) -> dict[str, SSLPenalty]:
    out = {}
    for t in types:
        try:
            out[t] = SSLPenalty.build(model, t, lam)
        except NotPrunableError:
            continue  # depth_wise on a model without residual blocks
    return out


def _groups(pen: SSLPenalty) -> int:
    with torch.no_grad():
        return sum(int(n.numel()) for _, n in pen.norms())


def _chunks(pen: SSLPenalty) -> int:
    return pen.calls_per_cycle


def bench_arch(arch: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    model = sslsearch.create_model(arch, args.num_classes).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    y = torch.randint(0, args.num_classes, (args.batch_size,), device=device)
    pens = _penalties(model, args.ssl_types, args.ssl_lambda)
    sync = torch.cuda.synchronize if device.type == "cuda" else None

    lr = 1e-3  # tiny: timing only, the weights hardly move

    def step(pen: SSLPenalty | None, autograd: bool = False) -> None:
        out = model(x)
        loss = loss_fn(out, y)
        if pen is not None and autograd:  # the textbook way: the penalty in the loss
            loss = loss + pen()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if pen is not None and not autograd:  # the trial's way: proximal step after the update
            pen.prox_(lr)

    def penalty_cycle(pen: SSLPenalty) -> None:
        for _ in range(_chunks(pen)):  # one whole cycle: every chunk once
            pen.prox_(lr)

    def sgd_only() -> None:  # reference: the optimizer's own per-parameter cost
        opt.step()

    fns = {"plain": lambda: step(None)}
    fns.update({t: (lambda p=p: step(p)) for t, p in pens.items()})
    fns.update({f"{t}+autograd": (lambda p=p: step(p, autograd=True)) for t, p in pens.items()})
    t0 = time.perf_counter()

    def progress(r: int) -> None:
        if r >= 0 and (r + 1) % 5 == 0:
            print(
                f"  {arch}: round {r + 1}/{args.rounds} ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )

    steps = interleaved(fns, rounds=args.rounds, warmup=args.warmup, sync=sync, on_round=progress)
    step(None)  # every parameter has a gradient now
    alone_fns: dict[str, Any] = {t: (lambda p=p: penalty_cycle(p)) for t, p in pens.items()}
    alone_fns["sgd_step"] = sgd_only
    alone = interleaved(
        alone_fns,
        rounds=args.rounds,
        warmup=args.warmup,
        sync=sync,
    )
    opt.zero_grad(set_to_none=True)
    plain_med = median(steps["plain"])
    rows = []
    for t in pens:
        per_call = [c / _chunks(pens[t]) for c in alone[t]]
        extra = paired(steps["plain"], steps[t], "diff")
        share = [e / plain_med for e in extra]
        extra_autograd = paired(steps["plain"], steps[f"{t}+autograd"], "diff")
        rows.append(
            {
                "arch": arch,
                "ssl_type": t,
                "groups": _groups(pens[t]),
                "plain_ms": 1e3 * plain_med,
                "with_penalty_ms": 1e3 * median(steps[t]),
                "extra_ms": 1e3 * median(extra),
                "extra_share": median(share),
                "extra_share_p10": quantile(share, 0.1),
                "extra_share_p90": quantile(share, 0.9),
                "chunks": _chunks(pens[t]),
                "penalty_alone_ms": 1e3 * median(per_call),
                "penalty_alone_share": median(per_call) / plain_med,
                "sgd_step_alone_ms": 1e3 * median(alone["sgd_step"]),
                "under_target": median(per_call) / plain_med < TARGET_SHARE
                and median(share) < TARGET_SHARE,
                "autograd_extra_ms": 1e3 * median(extra_autograd),
                "autograd_extra_share": median(extra_autograd) / plain_med,
                "raw_extra_s": extra,
                "raw_extra_autograd_s": extra_autograd,
            }
        )
    return {
        "arch": arch,
        "params": sslsearch.count_params(model),
        "conv_layers": sum(isinstance(m, nn.Conv2d) for m in model.modules()),
        "plain_step_s": summary(steps["plain"]),
        "rows": rows,
        "raw_step_seconds": steps,
        "raw_penalty_alone_seconds": alone,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.time()
    threads = set_threads(args.threads)
    device = pick_device(args.device)
    machine = machine_info()
    print_header(
        "SSL penalty cost per training step",
        machine,
        f"device {device}, threads {threads}, input {args.image_size}x{args.image_size}, "
        f"batch {args.batch_size}, {args.num_classes} classes, {args.rounds} interleaved rounds",
    )
    archs = [bench_arch(a, args, device) for a in args.archs]
    rows = [r for a in archs for r in a["rows"]]
    table = [
        {
            **r,
            "extra_pct": 100 * r["extra_share"],
            "spread": f"{100 * r['extra_share_p10']:.1f}..{100 * r['extra_share_p90']:.1f}",
            "alone_pct": 100 * r["penalty_alone_share"],
            "autograd_pct": 100 * r["autograd_extra_share"],
            "target": "yes" if r["under_target"] else "NO",
        }
        for r in rows
    ]
    print_table(
        table,
        [
            Col("arch", "arch"),
            Col("ssl_type", "ssl type"),
            Col("groups", "units"),
            Col("chunks", "chunks"),
            Col("plain_ms", "plain step ms", ".1f"),
            Col("with_penalty_ms", "with penalty ms", ".1f"),
            Col("extra_ms", "extra ms", ".2f"),
            Col("alone_pct", "amortised % of step", ".2f"),
            Col("extra_pct", "in-step %", ".2f"),
            Col("spread", "in-step p10..p90 %"),
            Col("autograd_pct", "in-loss autograd %", ".2f"),
            Col("sgd_step_alone_ms", "SGD step alone ms", ".1f"),
            Col("target", f"< {100 * TARGET_SHARE:.0f}%"),
        ],
        title=(
            f"Extra time of the SSL penalty (median of per-round differences; {threads} threads, "
            f"{device})"
        ),
    )
    print(
        "\namortised %: prox_ alone over whole cycles of its chunks, per call / median plain "
        "step. in-step %: (step with penalty - plain step, same round) / median plain step.\n"
        "SGD step alone: optimizer.step() by itself (momentum, weight decay), a reference for a "
        "cost proportional to the parameter count."
    )
    write_results(
        "bench_penalty",
        machine=machine,
        settings={**vars(args), "threads_used": threads, "device_used": str(device)},
        results={"target_share": TARGET_SHARE, "archs": archs},
        started=started,
        notes=[
            "Variants share one model and optimizer; one step each per round, order rotated "
            "every round (interleaved).",
            "extra_share = median over rounds of (t_with_penalty - t_plain) / median(t_plain).",
        ],
        out=args.out,
    )


if __name__ == "__main__":
    main()

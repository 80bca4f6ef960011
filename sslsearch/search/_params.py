"""Trial parameters: the Optuna define-by-run space and the TrialConfig each trial runs."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sslsearch.config import (
    AMOUNT_KEYS,
    Choices,
    Range,
    SearchSpace,
    TrialConfig,
    space_from_mapping,
)
from sslsearch.vocabulary import (
    DEFAULT_SSL_FLOOR,
    DEFAULT_SSL_STEP,
    DEFAULT_SSL_WEIGHTING,
    MIN_WIDTH_SHARE,
)


def _suggest(trial: Any, name: str, spec: Range | Choices) -> Any:
    if isinstance(spec, Choices):
        return trial.suggest_categorical(name, list(spec.choices))
    if spec.integer:
        step = int(spec.step) if spec.step else 1
        return trial.suggest_int(name, int(spec.low), int(spec.high), step=step, log=spec.log)
    return trial.suggest_float(name, spec.low, spec.high, log=spec.log, step=spec.step)


class DefineByRun:
    """Optuna define-by-run space: searched values are suggested, fixed ones returned.

    ``blocks`` is only asked for depth_wise trials and the budget (or ``ratio``) for the others
    (a depth_wise space without blocks prunes blocks to its budget, or its ratio of them). A plain class, not
    a closure: Tune pickles the searcher, and with it this object, into every snapshot.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.space_dict = space.to_dict()

    def __call__(self, trial: Any) -> dict[str, Any]:
        specs = space_from_mapping(self.space_dict).param_specs()
        const: dict[str, Any] = {}

        def value(name: str, default: Any = None) -> Any:
            if name not in specs:
                if default is not None:
                    const[name] = default
                return default
            spec = specs[name]
            if isinstance(spec, (Range, Choices)):
                return _suggest(trial, name, spec)
            const[name] = spec
            return spec

        prune_type = value("prune_type", "filter_wise")
        value("prune_way", "group_lasso")
        value("ssl_type", prune_type)
        value("ssl_lambda")
        value("ssl_weighting")
        value("ssl_floor")
        value("ssl_step")
        if prune_type == "depth_wise" and "blocks" in specs:
            value("blocks")
        else:
            for name in AMOUNT_KEYS:  # one per space (checked when it is loaded)
                if name in specs:
                    value(name)
        value("min_width_share")
        value("allow_unmatched_prune")
        return const


# numeric pruning choices an SSL model's points spread over
SPREAD_PARAMS = (*AMOUNT_KEYS, "blocks")


def spread(spec: Range, first: float, i: int, k: int) -> float | int:
    """The value of point ``i`` of ``k`` from one SSL model, point 0 being the sampler's choice.

    One SSL model gives a whole pruning curve, and a front needs its ends: the range's top is
    the cheapest model the user allows (where the SSL penalty matters most), its bottom the
    most accurate. So the other points take the range's ``k`` evenly spaced stops, both ends
    included (on the range's own scale: log or linear), less the stop nearest the sampler's
    choice: 4 points on ratio 0.1..0.9 with the sampler at 0.67 are 0.67, 0.1, 0.37, 0.9.
    Asking the sampler for each of them instead returned the same ratio again (its joint
    optimum over lambda and ratio ignores the lambda already fixed: 3 of 4 points of one SSL
    model at ratio 0.9 on the default space).
    """
    if i == 0:
        return first
    lo, hi = (math.log(spec.low), math.log(spec.high)) if spec.log else (spec.low, spec.high)
    x = math.log(first) if spec.log else float(first)
    stops = [lo + j * (hi - lo) / (k - 1) for j in range(k)]
    stops.remove(min(stops, key=lambda s: abs(s - x)))
    v = stops[i - 1]
    v = math.exp(v) if spec.log else v
    if spec.step:
        v = spec.low + round((v - spec.low) / spec.step) * spec.step
    v = min(max(v, spec.low), spec.high)
    return round(v) if spec.integer else float(v)


def spread_params(space: SearchSpace, first: dict[str, Any], i: int, k: int) -> dict[str, Any]:
    """The spread numeric pruning choices (budget, ratio, blocks) of point ``i`` given point
    0's."""
    specs = space.param_specs()
    return {
        n: spread(spec, first[n], i, k)
        for n in SPREAD_PARAMS
        if isinstance(spec := specs.get(n), Range) and n in first
    }


def path_lambdas(space: SearchSpace, last: float, steps: int) -> list[float]:
    """The lambdas of a lambda path of ``steps`` steps ending at the sampler's ``last``: each
    ``economy.path_ratio`` times the one before, those below the space's lowest lambda left
    out (3 steps at ratio 1.4 ending at 0.2: 0.102, 0.143, 0.2)."""
    spec = space.param_specs().get("ssl_lambda")
    low = spec.low if isinstance(spec, Range) else 0.0
    r = space.economy.path_ratio
    lams = [float(last) * r ** (i - (steps - 1)) for i in range(steps)]
    return [max(lam, low) for lam in lams if lam >= low * (1 - 1e-9)]


def define_by_run(space: SearchSpace) -> Callable[[Any], dict[str, Any]]:
    return DefineByRun(space)


def trial_config(
    space: SearchSpace,
    params: dict[str, Any],
    *,
    threads: int | None,
    cache_dir: str | None,
) -> TrialConfig:
    """The TrialConfig of one trial: the space's data, model and recipe plus its parameters."""
    prune_type = params.get("prune_type", "filter_wise")
    blocks = params.get("blocks") if prune_type == "depth_wise" else None
    amount = {k: params[k] for k in AMOUNT_KEYS if k in params and blocks is None}
    return TrialConfig(
        arch=space.arch,
        data=space.data,
        recipe=space.recipe,
        ssl_type=params.get("ssl_type", prune_type),
        ssl_lambda=params["ssl_lambda"],
        ssl_weighting=params.get("ssl_weighting", DEFAULT_SSL_WEIGHTING),
        ssl_floor=params.get("ssl_floor", DEFAULT_SSL_FLOOR),
        ssl_step=params.get("ssl_step", DEFAULT_SSL_STEP),
        prune_type=prune_type,
        prune_way=params.get("prune_way", "group_lasso"),
        blocks=blocks,
        min_width_share=params.get("min_width_share", MIN_WIDTH_SHARE),
        allow_unmatched_prune=bool(params.get("allow_unmatched_prune", False)),
        seed=space.seed,
        threads=threads,
        warm_start=space.weights,
        cache_dir=cache_dir,
        objectives=space.user_objectives(),
        **amount,
    )


def with_data_root(space: SearchSpace, root: str) -> SearchSpace:
    return replace(space, data=replace(space.data, root=root))

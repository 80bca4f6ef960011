"""Trial parameters: the Optuna define-by-run space and the TrialConfig each trial runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sslsearch.config import Choices, Range, SearchSpace, TrialConfig, space_from_mapping


def _suggest(trial: Any, name: str, spec: Range | Choices) -> Any:
    if isinstance(spec, Choices):
        return trial.suggest_categorical(name, list(spec.choices))
    if spec.integer:
        step = int(spec.step) if spec.step else 1
        return trial.suggest_int(name, int(spec.low), int(spec.high), step=step, log=spec.log)
    return trial.suggest_float(name, spec.low, spec.high, log=spec.log, step=spec.step)


class DefineByRun:
    """Optuna define-by-run space: searched values are suggested, fixed ones returned.

    ``blocks`` is only asked for depth_wise trials and ``ratio`` for the others (a depth_wise
    space without blocks uses its ratio as a share of the residual blocks). A plain class, not
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
        if prune_type == "depth_wise" and "blocks" in specs:
            value("blocks")
        else:
            value("ratio")
        return const


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
    return TrialConfig(
        arch=space.arch,
        data=space.data,
        recipe=space.recipe,
        ssl_type=params.get("ssl_type", prune_type),
        ssl_lambda=params["ssl_lambda"],
        prune_type=prune_type,
        prune_way=params.get("prune_way", "group_lasso"),
        ratio=params.get("ratio") if prune_type != "depth_wise" or "blocks" not in params else None,
        blocks=params.get("blocks") if prune_type == "depth_wise" else None,
        seed=space.seed,
        threads=threads,
        cache_dir=cache_dir,
    )


def with_data_root(space: SearchSpace, root: str) -> SearchSpace:
    return replace(space, data=replace(space.data, root=root))

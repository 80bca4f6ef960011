"""Names in configs checked against the registries, before anything starts."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Any

from sslsearch.config import (
    AMOUNT_KEYS,
    BUILTIN,
    Choices,
    ConfigError,
    Range,
    SearchSpace,
    TrialConfig,
)
from sslsearch.data import Datasets, get_dataset_spec
from sslsearch.errors import UserError
from sslsearch.imports import is_import_path, load_object
from sslsearch.models import check_user_model, create_model, get_model_spec
from sslsearch.pruning import PRUNE_TYPES
from sslsearch.sparsity import CRITERIA, SSL_TYPES

log = logging.getLogger(__name__)


def _check(key: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except ConfigError:
        raise
    except UserError as e:
        raise ConfigError(key, str(e)) from None


def _ssl_type(name: str) -> None:
    if name not in SSL_TYPES:
        from sslsearch.registry import unknown_name_message

        raise UserError(unknown_name_message("ssl type", name, list(SSL_TYPES)))


def check_combination(arch: str, ssl_type: str, prune_type: str, key: str = "") -> None:
    spec = get_model_spec(arch)
    for what, value in (("ssl_type", ssl_type), ("prune_type", prune_type)):
        if value == "depth_wise" and not spec.residual:
            raise ConfigError(
                key or what,
                f"depth_wise needs residual blocks; {arch} has none "
                f"(use a ResNet: resnet20, resnet56, resnet50)",
            )


# What each SSL type's penalty drives to zero, and what each prune type removes.
TARGETS = {
    "filter_wise": "channels",
    "channel_wise": "channels",
    "filter_and_channel_wise": "channels",
    "group_wise": "channels",
    "depth_wise": "residual blocks",
    "shape_wise": "filter shapes",
}
REMOVES = {
    "filter_wise": "channels",
    "channel_wise": "channels",
    "filter_and_channel_wise": "channels",
    "depth_wise": "residual blocks",
}


def check_matched(ssl_type: str, prune_type: str, allowed: bool, key: str = "") -> None:
    """Refuse to prune an SSL model with a prune type whose structures its penalty did not
    target (unless ``allow_unmatched_prune``): its zeros would save nothing."""
    target, removes = TARGETS.get(ssl_type), REMOVES.get(prune_type)
    if allowed or target is None or removes is None or target == removes:
        return
    if ssl_type == "shape_wise":
        why = (
            "ssl_type shape_wise zeroes filter shapes, which no prune type removes: its zeros "
            f"save no FLOPs, and prune_type {prune_type} removes {removes} its penalty never "
            "targeted"
        )
    else:
        why = (
            f"ssl_type {ssl_type} drives {target} to zero but prune_type {prune_type} removes "
            f"{removes}: use the matching prune type"
        )
    raise ConfigError(key or "ssl_type", f"{why}; or set allow_unmatched_prune: true")


def validate_trial(cfg: TrialConfig) -> None:
    """Raise ConfigError (a UserError) naming the key of the first wrong name in ``cfg``."""
    spec = _check("arch", get_model_spec, cfg.arch)
    data = _check("data.name", get_dataset_spec, cfg.data.name)
    _check("ssl_type", _ssl_type, cfg.ssl_type)
    _check("prune_type", PRUNE_TYPES.get, cfg.prune_type)
    _check("prune_way", CRITERIA.get, cfg.prune_way)
    check_combination(cfg.arch, cfg.ssl_type, cfg.prune_type)
    check_matched(cfg.ssl_type, cfg.prune_type, cfg.allow_unmatched_prune)
    _check_input_size(cfg.arch, spec, cfg.data.name, cfg.data.image_size or data.native_size)


def _check_input_size(arch: str, spec: Any, dataset: str, size: int | None) -> None:
    if size is not None and size < spec.min_image_size:
        raise ConfigError(
            "data.image_size",
            f"{arch} needs inputs of at least {spec.min_image_size}x{spec.min_image_size}, "
            f"{dataset} gives {size}x{size}; set data.image_size",
        )


def _values(spec: Any) -> list[Any]:
    if isinstance(spec, Choices):
        return list(spec.choices)
    if isinstance(spec, Range):
        return []
    return [spec]


def validate_space(space: SearchSpace, where: str | None = None) -> None:
    """Every name a trial of ``space`` could get, checked before any trial starts."""
    try:
        _validate_space(space)
    except ConfigError as e:
        raise (e.located(where) if where else e) from None


def _validate_space(space: SearchSpace) -> None:
    specs = space.param_specs()
    arch = _check("arch", get_model_spec, space.arch)
    data = _check("data.name", get_dataset_spec, space.data.name)
    prune_types = _values(specs.get("prune_type", "filter_wise"))
    for v in prune_types:
        _check("params.prune_type", PRUNE_TYPES.get, v)
    ssl_types = _values(specs["ssl_type"]) if "ssl_type" in specs else []
    for v in ssl_types:
        _check("params.ssl_type", _ssl_type, v)
    for v in _values(specs.get("prune_way", "group_lasso")):
        _check("params.prune_way", CRITERIA.get, v)
    for v in ssl_types:
        check_combination(space.arch, v, "filter_wise", "params.ssl_type")
    for v in prune_types:
        check_combination(space.arch, "filter_wise", v, "params.prune_type")
    allowed = bool(specs.get("allow_unmatched_prune", False))
    for ssl in ssl_types:  # without an ssl_type the penalty follows the prune type
        for v in prune_types:
            check_matched(ssl, v, allowed, "params.ssl_type")
    amount = [k for k in AMOUNT_KEYS if k in specs]
    if any(t != "depth_wise" for t in prune_types) and not amount:
        raise ConfigError(
            "params.flops_budget",
            "say how far to prune: flops_budget, params_budget or latency_budget (a share of "
            "the dense model's cost to keep), or ratio",
        )
    if "depth_wise" in prune_types and "blocks" not in specs and not amount:
        raise ConfigError("params.blocks", "depth_wise needs blocks or a budget")
    if "ssl_lambda" not in specs:
        raise ConfigError("params.ssl_lambda", "required (a value or a range)")
    if "blocks" in specs and "depth_wise" not in prune_types:
        raise ConfigError("params.blocks", "only used by prune_type depth_wise")
    _check_input_size(space.arch, arch, space.data.name, space.data.image_size or data.native_size)


def check_user_parts(space: SearchSpace, data: Datasets | None = None) -> None:
    """The user's own parts of a space, checked on the driver before anything starts: the
    factory (``arch: module:function``) builds a model that takes the data's input and gives
    one logit per class, and the starting ``weights`` load into it.

    ``data``: the loaded datasets (a local search loads them anyway); None on a cluster, where
    each node reads its own data root: then the dataset's registered class count and size are
    used, and for a dataset of the user's own (unknown until loaded on a node) only that the
    weights are a readable weights file.
    """
    _check_user_parts(space, data)
    _check_user_objectives(space, data)


def _check_user_objectives(space: SearchSpace, data: Datasets | None) -> None:
    """Each objective of the user's own imports, takes no column the results already have,
    and (where the data is loaded) gives a finite number on the dense model."""
    from sslsearch.report import reserved_columns

    taken = reserved_columns()
    defs = [d for d in space.objective_defs() if d.measure and d.name not in BUILTIN]
    for d in defs:
        load_object(str(d.measure), "objectives")
        for col in (d.name, d.before):
            if col in taken:
                raise UserError(
                    f"objective {d.measure!r} would write the column {col!r}, which the "
                    "results already have: rename the function"
                )
    shape = _model_shape(space, data)
    if not defs or data is None or shape is None:
        return
    import torch

    from sslsearch.metrics import measure_objectives

    model = create_model(space.arch, shape[0], shape[1])
    measure_objectives(defs, model, torch.zeros(2, shape[1], shape[2], shape[2]))


def _model_shape(space: SearchSpace, data: Datasets | None) -> tuple[int, int, int] | None:
    """(classes, channels, image size) of the space's data: loaded, else as registered; None
    for a dataset of the user's own that is not loaded here."""
    if data is not None:
        return (data.num_classes, data.channels, data.image_size)
    spec = get_dataset_spec(space.data.name)
    size = space.data.image_size or spec.native_size
    known = spec.num_classes > 0 and spec.channels > 0 and size is not None
    return (spec.num_classes, spec.channels, int(size or 0)) if known else None


def _check_user_parts(space: SearchSpace, data: Datasets | None) -> None:
    user_arch = is_import_path(space.arch)
    if not user_arch and not space.weights:
        return
    shape = _model_shape(space, data)
    if shape is None:
        if space.weights:
            from sslsearch.trial._start_weights import read_weights

            read_weights(space.weights)
        return
    num_classes, channels, size = shape
    if user_arch:
        specs = space.param_specs()
        kinds = [*_values(specs.get("prune_type", "filter_wise")), *_values(specs.get("ssl_type"))]
        check_user_model(space.arch, num_classes, channels, size, "depth_wise" in kinds)
    if space.weights:
        from sslsearch.trial._start_weights import load_weights

        load_weights(create_model(space.arch, num_classes, channels), space.weights, space.arch)


def check_trial_start(cfg: TrialConfig, data: Datasets) -> None:
    """A trial of the user's factory: the forward check of ``check_user_parts``, at the start
    of the trial (its data is loaded), so a failing factory is one line, not a trace."""
    if is_import_path(cfg.arch):
        check_user_model(
            cfg.arch,
            data.num_classes,
            data.channels,
            data.image_size,
            "depth_wise" in (cfg.prune_type, cfg.ssl_type),
        )


FLOOR_MARGIN = 1.02  # a budget this far above the floors' share is met by every prune type


def clamp_budget_ranges(space: SearchSpace, data: Datasets | None = None) -> SearchSpace:
    """The space with each FLOPs or parameter budget range raised to what its model can reach.

    Every prunable layer keeps its floor (``min_width_share``), so a model has a least share of
    its dense cost that pruning can reach (``sslsearch.pruning.floor_share``); a point asking
    less fails. A range whose low end is below it starts at the floors' share (plus
    ``FLOOR_MARGIN``), said in one log line; a range wholly below it is a ConfigError. Channel
    prune types only (depth_wise removes blocks, not widths); the least floor over the prune
    types and ``min_width_share`` values the space can give."""
    specs = space.param_specs()
    keys = [k for k in ("flops_budget", "params_budget") if isinstance(specs.get(k), Range)]
    prune_types = _values(specs.get("prune_type", "filter_wise"))
    shape = _model_shape(space, data)
    if not keys or not prune_types or "depth_wise" in prune_types or shape is None:
        return space
    from sslsearch.pruning import floor_share
    from sslsearch.vocabulary import MIN_WIDTH_SHARE

    mws = specs.get("min_width_share", MIN_WIDTH_SHARE)
    share = float(mws.low if isinstance(mws, Range) else min(_values(mws)))
    num_classes, channels, size = shape
    model = create_model(space.arch, num_classes, channels)
    params = dict(space.params)
    for k in keys:
        kind, rng = k.split("_")[0], specs[k]
        assert isinstance(rng, Range)
        floor = min(
            floor_share(
                model, (channels, size, size), prune_type=t, kind=kind, min_width_share=share
            )
            for t in prune_types
        )
        lowest = floor * FLOOR_MARGIN
        why = (
            f"{space.arch}'s layer floors keep about {floor:.3g} of its dense {kind} "
            f"(min_width_share {share:g})"
        )
        if rng.high <= lowest:
            raise ConfigError(
                f"params.{k}",
                f"the whole range {rng.low:g}..{rng.high:g} is below what pruning can reach: "
                f"{why}; raise it above {lowest:.3g} or lower min_width_share",
            )
        if rng.low < lowest:
            low = float(f"{math.ceil(lowest * 1e4) / 1e4:.4g}")
            if rng.step:
                low = rng.low + math.ceil((lowest - rng.low) / rng.step) * rng.step
            log.info("params.%s: %s; the search samples %g..%g", k, why, low, rng.high)
            params[k] = {**space.params[k], "low": low}
    return replace(space, params=params)

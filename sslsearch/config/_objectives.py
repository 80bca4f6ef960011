"""Objectives: each one defined once, here, and read by everything that uses it.

An objective is a column of trials.parquet that a search optimises: its name, direction, unit,
Arrow type, axis scale, hypervolume reference, the column of its value on the unpruned model,
whether it is known exactly once a point is pruned, and how it is measured. The space's
``objectives``, the Optuna study (which names its values after them), early stopping, the
screen, the results schema (trials.parquet, pareto.*), tables, plots and report.html all read
these definitions; none keeps a list of its own.

A user's objective is one more entry, named by import path in the space::

    objectives:
      - {metric: top1}
      - {metric: my_metrics:weight_bytes_int8, direction: min}

``my_metrics.weight_bytes_int8(model, inputs) -> float`` is called on every finished point (the
fine-tuned, pruned model in eval mode on the trial's device; ``inputs`` a batch of up to
``EXAMPLE_BATCH`` validation images on that device) and on the dense model it was pruned from
(``<name>_before``); its column is the function's name. The module ships to the Ray workers like
a user's model. No torch here: the command line and the report read this without it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from sslsearch.config._typed import ConfigError, did_you_mean
from sslsearch.imports import is_import_path

Direction = Literal["max", "min"]
EXAMPLE_BATCH = 8  # validation images a measured objective is given


@dataclass(frozen=True)
class ObjectiveDef:
    """One objective. ``measure``: ``module:function`` taking (model, inputs) and returning a
    number, called on each finished point and its dense model; None for the objectives the
    pipeline measures itself (accuracy, FLOPs, parameters, size, latency)."""

    name: str  # its column in trials.parquet and pareto.*
    direction: Direction
    label: str  # axis title, without the unit (added as it is scaled: "FLOPs (M)")
    unit: str = ""  # shown after a value: "%", "MB", "ms"; "" for counts (K/M/G by size)
    column_type: Literal["float64", "int64"] = "float64"
    axis: Literal["linear", "log"] = "linear"  # how plots draw it
    # hypervolume normalisation: "percent" divides by 100 % (the reference is 0 % when maximised,
    # 100 % when minimised); "dense" divides by the dense model's value, which is the reference
    # of a minimised objective (a point adds volume only if it is cheaper than the dense model)
    reference: Literal["percent", "dense"] = "dense"
    before: str | None = None  # column of its value on the unpruned model
    # exact once a point is pruned (early stopping bounds it during the fine-tune; a screen
    # measures it): costs of the structure. False: known only when the point is finished
    exact_after_pruning: bool = False
    noisy: bool = False  # repeated measurements differ (accuracy, timing): averaged over runs
    short: str = ""  # name in front names ("top1_vs_<short>"); default the name
    measure: str | None = None  # import path "module:function" (see the module docstring)

    @property
    def front_name(self) -> str:
        return f"top1_vs_{self.short or self.name}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _count(name: str, label: str, short: str = "") -> ObjectiveDef:
    return ObjectiveDef(
        name,
        "min",
        label,
        column_type="int64",
        before=f"{name}_before",
        exact_after_pruning=True,
        short=short,
    )


BUILTIN: dict[str, ObjectiveDef] = {
    d.name: d
    for d in (
        ObjectiveDef("top1", "max", "validation top-1", "%", reference="percent", noisy=True),
        ObjectiveDef("top5", "max", "validation top-5", "%", reference="percent", noisy=True),
        _count("flops", "FLOPs, fvcore multiply-adds"),
        _count("params", "parameters"),
        ObjectiveDef(
            "size_mb",
            "min",
            "model size, fp32",
            "MB",
            before="size_mb_before",
            exact_after_pruning=True,
            short="size",
        ),
        ObjectiveDef(
            "latency_ms",
            "min",
            "latency, measured",
            "ms",
            noisy=True,
            short="latency",
        ),
        ObjectiveDef(
            "peak_activation_mb",
            "min",
            "peak activation memory, fp32, batch 1",
            "MB",
            before="peak_activation_mb_before",
            exact_after_pruning=True,
            short="activation",
            measure="sslsearch.metrics:peak_activation_mb",
        ),
    )
}
# objectives of experiments read in this process (user objectives, from their metadata)
_KNOWN: dict[str, ObjectiveDef] = dict(BUILTIN)


def column_of(metric: str) -> str:
    """The column an objective's values go to: its name, or a user function's name."""
    return metric.rpartition(":")[2].rpartition(".")[2] if is_import_path(metric) else metric


def user_objective(
    path: str,
    direction: Direction,
    *,
    label: str | None = None,
    unit: str = "",
    axis: Literal["linear", "log"] = "linear",
) -> ObjectiveDef:
    """The definition of a user's objective ``module:function`` (measured when a point is
    finished; its column is the function's name)."""
    name = column_of(path)
    return ObjectiveDef(
        name,
        direction,
        label or name,
        unit,
        axis=axis,
        before=f"{name}_before",
        measure=path,
    )


def objective(metric: str, direction: str | None = None) -> ObjectiveDef:
    """The definition of ``metric``: a built-in, a user's objective registered in this process
    (``register``) or named by import path (then ``direction`` is required). KeyError: unknown."""
    if is_import_path(metric):
        if direction not in ("max", "min"):
            raise KeyError(f"{metric!r} needs a direction: max or min")
        return user_objective(metric, direction)  # type: ignore[arg-type]
    d = _KNOWN[metric]
    return d if direction in (None, d.direction) else replace(d, direction=direction)  # type: ignore[arg-type]


def register(d: ObjectiveDef) -> None:
    """Make ``d`` known by its name in this process (the report of an experiment with a user's
    objective registers the definitions saved in its metadata). A built-in is never replaced."""
    if d.name not in BUILTIN:
        _KNOWN[d.name] = d


def known_objectives() -> dict[str, ObjectiveDef]:
    return dict(_KNOWN)


def measured(defs: list[ObjectiveDef] | tuple[ObjectiveDef, ...]) -> list[ObjectiveDef]:
    """The built-ins with a ``measure`` (every point measures them) plus ``defs``' own."""
    out = [d for d in BUILTIN.values() if d.measure]
    return out + [d for d in defs if d.measure and d.name not in BUILTIN]


def defs_to_json(defs: list[ObjectiveDef]) -> str:
    return json.dumps([d.to_dict() for d in defs])


def defs_from_json(text: str) -> list[ObjectiveDef]:
    """Definitions saved by ``defs_to_json`` (unknown keys of a newer version are dropped)."""
    fields = set(ObjectiveDef.__dataclass_fields__)
    return [ObjectiveDef(**{k: v for k, v in d.items() if k in fields}) for d in json.loads(text)]


@dataclass(frozen=True)
class Objective:
    """One objective of the space: a built-in's name (``sslsearch.config.BUILTIN``) or a user's
    ``module:function`` (see config/_objectives.py), with its direction (``mode`` and
    ``direction`` are one key under two names; a user's objective needs one). ``label``,
    ``unit`` and ``axis`` (linear | log) say how a user's objective is shown."""

    metric: str
    mode: Literal["max", "min"] | None = None
    direction: Literal["max", "min"] | None = None
    label: str | None = None
    unit: str = ""
    axis: Literal["linear", "log"] = "linear"

    def check(self) -> None:
        if self.mode and self.direction and self.mode != self.direction:
            raise ConfigError("direction", f"{self.direction!r} contradicts mode {self.mode!r}")
        if is_import_path(self.metric):
            if column_of(self.metric) in BUILTIN:
                raise ConfigError(
                    "metric",
                    f"{self.metric!r} would write the built-in column "
                    f"{column_of(self.metric)!r}: rename the function",
                )
            if self.goal is None:
                raise ConfigError(
                    "direction",
                    f"{self.metric!r} is your own objective: give direction: min or max",
                )
            return
        if ":" in self.metric:
            raise ConfigError("metric", f"{self.metric!r} is not an import path (module:function)")
        if self.metric not in known_objectives():
            hint = did_you_mean(self.metric, known_objectives())
            raise ConfigError(
                "metric",
                f"unknown objective {self.metric!r}{hint}; known: {', '.join(BUILTIN)}, or your "
                "own as module:function",
            )
        if self.label is not None or self.unit or self.axis != "linear":
            raise ConfigError("label", "label, unit and axis are for your own objectives")

    @property
    def goal(self) -> str | None:
        """The direction given (``mode`` or ``direction``), or None."""
        return self.mode or self.direction

    @property
    def definition(self) -> ObjectiveDef:
        if is_import_path(self.metric):
            return user_objective(
                self.metric,
                self.goal,  # type: ignore[arg-type]
                label=self.label,
                unit=self.unit,
                axis=self.axis,
            )
        return objective(self.metric, self.goal)

    @property
    def column(self) -> str:
        return column_of(self.metric)

"""Search spaces: YAML files naming data, model, recipe, fixed and searched parameters,
objectives, budget, resources and sampler. Structure and types are checked here; names of
architectures, datasets, prune types and ways are checked against the registries by
``sslsearch.trial.validate_space`` (a higher layer)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml

from sslsearch.config._objectives import Objective, ObjectiveDef
from sslsearch.config._trial import AMOUNT_KEYS, BUDGET_KEYS, DataConfig, Recipe
from sslsearch.config._typed import ConfigError, convert, did_you_mean, from_mapping, to_mapping
from sslsearch.imports import is_import_path
from sslsearch.vocabulary import LAMBDA_KEYS

# Parameters a trial takes from the space: fixed (a scalar) or searched (a range or choices).
PARAM_TYPES: dict[str, type] = {
    "ssl_type": str,
    "ssl_lambda": float,
    "ssl_weighting": str,
    "ssl_floor": str,
    "ssl_step": str,
    "prune_type": str,
    "prune_way": str,
    "ratio": float,
    "blocks": int,
    "flops_budget": float,
    "params_budget": float,
    "latency_budget": float,
    "min_width_share": float,
    "allow_unmatched_prune": bool,
}


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool = False
    step: float | None = None
    integer: bool = False

    def check(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ConfigError("", "range bounds must be finite")
        if self.high <= self.low:
            word = "empty" if self.high == self.low else "inverted"
            raise ConfigError("", f"{word} range: low={self.low} must be < high={self.high}")
        if self.log and self.low <= 0:
            raise ConfigError("low", f"a log-scale range needs low > 0, got {self.low}")
        if self.step is not None:
            self._check_step(self.step)

    def _check_step(self, step: float) -> None:
        # Optuna refuses log together with step only once it samples (after Ray started), and
        # quietly lowers a top that is off the step grid (one warning): refuse both here.
        if step <= 0 or not math.isfinite(step):
            raise ConfigError("step", f"must be a finite number > 0, got {step}")
        if self.log:
            raise ConfigError("step", "a log-scale range cannot have a step (drop one of them)")
        # The same exact decimal test Optuna applies before it lowers the top.
        low, d_step = Decimal(str(self.low)), Decimal(str(step))
        span = Decimal(str(self.high)) - low
        if span % d_step != 0:
            top = float(span // d_step * d_step + low)
            raise ConfigError(
                "step",
                f"step {step:g} does not divide the range [{self.low:g}, {self.high:g}]: "
                f"high - low must be a multiple of step (e.g. high: {top:g})",
            )


@dataclass(frozen=True)
class Choices:
    choices: tuple[Any, ...]


@dataclass(frozen=True)
class Budget:
    num_samples: int = 16
    max_concurrent: int = 2
    max_failures: int = 2  # retries of a trial whose worker or node died (from its checkpoint)
    time_budget_s: float | None = None

    def check(self) -> None:
        if self.num_samples < 1:
            raise ConfigError("num_samples", f"must be >= 1, got {self.num_samples}")
        if self.max_concurrent < 1:
            raise ConfigError("max_concurrent", f"must be >= 1, got {self.max_concurrent}")
        if self.max_failures < 0:
            raise ConfigError("max_failures", f"must be >= 0, got {self.max_failures}")


@dataclass(frozen=True)
class Resources:
    cpus: float = 1.0
    gpu: float = 0.0  # fraction of a GPU per trial; several trials share a GPU
    cpu_fallback: bool = True  # on a cluster with no GPU, run on CPU instead of refusing

    def check(self) -> None:
        if self.cpus <= 0:
            raise ConfigError("cpus", f"must be > 0, got {self.cpus}")
        if self.gpu < 0 or (self.gpu > 1 and not float(self.gpu).is_integer()):
            raise ConfigError(
                "gpu", f"must be a fraction in [0, 1] or a whole number, got {self.gpu}"
            )


@dataclass(frozen=True)
class Sampler:
    # auto: gp (best in benchmarks/bench_search_efficiency.py) unless the space is conditional
    # (depth_wise asks for blocks, the other prune types for a ratio), where GP would fall back
    # to random sampling: then tpe.
    name: Literal["auto", "tpe", "nsga2", "gp", "random"] = "auto"
    seed: int = 0
    # SSL models (jobs) proposed at random before the model kicks in (None: a third of the
    # search's SSL models, 2 to 10); the points of one SSL model are not counted
    n_startup_trials: int | None = None
    # A GP ask fits one Gaussian process per objective, cubic in the finished points: past this
    # many, GP hands over to TPE (benchmarks/bench_scale.py picked it; the log says when).
    gp_max_points: int = 100
    # GP and TPE see every finished point up to this many, then the best fronts plus this many
    # most recent ones: an ask costs the same at 10,000 points as at 1,000 (bench_scale.py).
    max_history: int = 1000

    def check(self) -> None:
        if self.gp_max_points < 1:
            raise ConfigError("gp_max_points", f"must be >= 1, got {self.gp_max_points}")
        if self.max_history < 100:
            raise ConfigError("max_history", f"must be >= 100, got {self.max_history}")


@dataclass(frozen=True)
class EarlyStopping:
    """Stop a point during fine-tuning when a finished point was better at the same epoch.

    Never during SSL training: there, ratio and criterion have not acted yet. After pruning a
    point's costs (FLOPs, params, size) are exact. After fine-tune epoch ``e`` its best top-1 so
    far plus ``margin`` (top-1 points) is compared with each finished point's validation top-1
    at the same epoch ``e`` (a multi-step schedule lifts top-1 after each drop: a finished
    point's final top-1 would stop points that end on the front). A finished point at least as
    good in every objective, better in one, stops it: status ``stopped`` with the reason in
    ``error`` (trials.parquet), PRUNED in Optuna, never on a front.

    Never at epoch 0 and never before the first epoch trained wholly after the first drop of the
    fine-tune learning rate: multistep, the first milestone (20 epochs at 0.5: epoch 11); cosine
    and constant, half the fine-tune epochs (4: epoch 3). ``grace_epochs`` can only delay the
    first check further. An objective known only at the end (``latency_ms``, ``top5``) turns
    early stopping off: the point cannot be bounded in it.
    """

    enabled: bool = False
    margin: float = 1.0  # top-1 points added to the point's best so far before comparing
    grace_epochs: int = 0  # fine-tune epochs before the first check, at least (see above)

    def check(self) -> None:
        if self.margin < 0 or self.grace_epochs < 0:
            raise ConfigError("margin", "needs margin >= 0 and grace_epochs >= 0")


@dataclass(frozen=True)
class Economy:
    """How many points (pruning choices) one SSL model yields.

    Each Ray Tune trial trains (or reuses) one SSL model, then prunes and fine-tunes
    ``points_per_ssl`` points from it, each its own Optuna trial chosen by the sampler at the
    same SSL settings. ``points_per_ssl: 1`` is one SSL training per point (the old scheme).
    ``budget.num_samples`` counts points.
    """

    points_per_ssl: int = 4
    # > 0: after SSL training each job prunes its SSL model at this many values spread over
    # the space's amount range (plus the sampler's own), measures validation top-1 right after
    # pruning (BN re-estimated, no fine-tune: seconds each) and fine-tunes the points_per_ssl
    # values that add the most hypervolume; 0: the points take fixed stops (_params.spread)
    screen: int = 0
    # > 0 (needs screen): each screened value's pruned copy first trains this many steps (SGD
    # at finetune_lr decayed to 0 along a cosine) before it is measured: right after pruning a
    # cheap budget or a lightly sparse SSL model looks far worse than it ends after the
    # fine-tune (benchmarks/README.md, the screen's ranking); 0: BN re-estimation alone
    screen_steps: int = 0
    # multi-fidelity (needs screen): at these fractions of the SSL epochs each job screens its
    # SSL model part-way and goes on only if its screen ranks in the best `keep` share of the
    # SSL models screened at that point (hypervolume contribution; search/_promotion.py); a
    # stopped model's points are never fine-tuned. (): off
    rungs: tuple[float, ...] = ()
    keep: float = 0.5
    # >= 2: the lambda path. Each job trains one SSL run whose lambda steps up through this many
    # values, each path_ratio times the one before and the last the sampler's lambda: the
    # recipe's epochs at the first, then path_epochs more at each next (warm-started from the
    # step before, the schedule restarted). Every step's end is an SSL model of its own, with
    # points_per_ssl points (screened and chosen like any SSL model's), so a job has
    # lambda_path x points_per_ssl points. Steps below the space's lowest lambda are left out.
    # 0: one SSL model per job
    lambda_path: int = 0
    path_ratio: float = 1.4
    path_epochs: int = 3

    def check(self) -> None:
        if self.lambda_path < 0 or self.lambda_path == 1:
            raise ConfigError(
                "lambda_path", f"must be 0 (off) or >= 2 steps, got {self.lambda_path}"
            )
        if not self.path_ratio > 1.0:
            raise ConfigError(
                "path_ratio",
                f"must be > 1 (each step's lambda over the last), got {self.path_ratio}",
            )
        if self.path_epochs < 1:
            raise ConfigError("path_epochs", f"must be >= 1, got {self.path_epochs}")
        if self.lambda_path and self.rungs:
            raise ConfigError(
                "rungs",
                "multi-fidelity judges one SSL training part-way; a lambda path's steps are "
                "SSL models of their own: set rungs: [] or lambda_path: 0",
            )
        if any(not 0.0 < f < 1.0 for f in self.rungs) or list(self.rungs) != sorted(
            set(self.rungs)
        ):
            raise ConfigError(
                "rungs",
                f"must be increasing fractions of the SSL epochs in (0, 1), got {list(self.rungs)}",
            )
        if not 0.0 < self.keep < 1.0:
            raise ConfigError("keep", f"must be a share in (0, 1), got {self.keep}")
        if self.rungs and not self.screen:
            raise ConfigError("rungs", "multi-fidelity judges screens: set economy.screen too")
        if self.points_per_ssl < 1:
            raise ConfigError("points_per_ssl", f"must be >= 1, got {self.points_per_ssl}")
        if self.screen_steps < 0:
            raise ConfigError("screen_steps", f"must be >= 0, got {self.screen_steps}")
        if self.screen_steps and not self.screen:
            raise ConfigError(
                "screen_steps", "recovery steps are the screen's: set economy.screen too"
            )
        if self.screen < 0 or self.screen == 1:
            raise ConfigError("screen", f"must be 0 (off) or >= 2 values, got {self.screen}")
        if self.screen and self.points_per_ssl > self.screen:
            raise ConfigError(
                "screen",
                f"screens {self.screen} values but fine-tunes points_per_ssl "
                f"{self.points_per_ssl} of them: screen at least as many",
            )


@dataclass(frozen=True)
class Reference:
    """What an experiment measures besides its search.

    ``baseline``: the dense, unpruned model trained with the same recipe (SSL epochs +
    fine-tuning epochs, no penalty; from the space's ``weights`` when it has them), once per
    experiment (reused on resume), as a row with ``role: baseline`` in trials.parquet.
    ``baseline: weights``: the space's ``weights`` measured as they are, no training (the model
    the user already has is the reference).
    ``lambda0``: reference points: after the search, one SSL model at lambda = 0 (plain
    training) pruned and fine-tuned at every pruning choice the search finished, as rows with
    ``role: reference`` (what SSL adds on the task).
    """

    baseline: bool | Literal["weights"] = False
    lambda0: bool = False


@dataclass(frozen=True)
class SearchSpace:
    name: str = "default"
    description: str = ""
    arch: str = "vgg_small"  # a registered or torchvision name, or your factory: module:function
    # SSL training starts from these weights (TrialConfig.warm_start): a model file written by
    # sslsearch or a plain state_dict of ``arch``; a local path or a storage URI
    weights: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    recipe: Recipe = field(default_factory=Recipe)
    params: dict[str, Any] = field(default_factory=dict)
    objectives: tuple[Objective, ...] = (
        Objective("top1"),
        Objective("flops"),
        Objective("size_mb"),
    )
    budget: Budget = field(default_factory=Budget)
    resources: Resources = field(default_factory=Resources)
    sampler: Sampler = field(default_factory=Sampler)
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    economy: Economy = field(default_factory=Economy)
    reference: Reference = field(default_factory=Reference)
    seed: int = 0  # training seed of every trial
    storage_path: str = "runs"

    def check(self) -> None:
        if not self.name or any(c in self.name for c in "/\\") or self.name in (".", ".."):
            raise ConfigError("name", f"must be a plain directory name, got {self.name!r}")
        if not self.objectives:
            raise ConfigError("objectives", "needs at least one objective")
        metrics = [o.column for o in self.objectives]
        if len(set(metrics)) != len(metrics):
            raise ConfigError("objectives", f"an objective is listed twice: {metrics}")
        for name, value in self.params.items():
            param_spec(name, value)  # raises ConfigError with the right key
        amounts = [k for k in AMOUNT_KEYS if k in self.params]
        if len(amounts) > 1:
            raise ConfigError(
                f"params.{amounts[1]}",
                f"a space prunes to one target: {' and '.join(amounts)} are alternatives "
                "(keep one)",
            )
        if amounts and amounts[0] in BUDGET_KEYS and "blocks" in self.params:
            raise ConfigError(
                "params.blocks",
                f"with {amounts[0]}, depth_wise removes blocks to the budget: drop blocks",
            )
        if self.economy.screen:
            self._check_screen(amounts)
        if self.economy.lambda_path:
            self._check_path()
        if self.reference.baseline == "weights" and not self.weights:
            raise ConfigError(
                "reference.baseline", "'weights' measures the space's weights, but it has none"
            )
        if self.weights is not None and not self.weights.strip():
            raise ConfigError("weights", "empty path (leave the key out to train from scratch)")

    def _check_screen(self, amounts: list[str]) -> None:
        key = "economy.screen"
        if not amounts or not isinstance(param_spec(amounts[0], self.params[amounts[0]]), Range):
            raise ConfigError(
                key,
                "screens the range of a searched flops_budget, params_budget or ratio; this "
                "space searches none (set screen: 0)",
            )
        if amounts[0] == "latency_budget":
            raise ConfigError(
                key,
                "latency budgets are not screened (every value would be timed): search "
                "flops_budget, or set screen: 0",
            )

    def _check_path(self) -> None:
        spec = param_spec("ssl_lambda", self.params.get("ssl_lambda", 0.0))
        low = spec.low if isinstance(spec, Range) else spec
        if not isinstance(low, (int, float)) or isinstance(low, bool) or not low > 0:
            raise ConfigError(
                "economy.lambda_path",
                "steps one ssl_lambda up to the sampler's value: give params.ssl_lambda a "
                "range or a single value above 0 (not choices, not one per type)",
            )

    def objective_pairs(self) -> list[tuple[str, str]]:
        """The objectives as (column, "max" | "min") pairs."""
        return [(d.name, d.direction) for d in self.objective_defs()]

    def objective_defs(self) -> list[ObjectiveDef]:
        return [o.definition for o in self.objectives]

    def user_objectives(self) -> tuple[str, ...]:
        """The import paths of the user's own objectives (``module:function``)."""
        return tuple(o.metric for o in self.objectives if is_import_path(o.metric))

    def param_specs(self) -> dict[str, Range | Choices | Any]:
        return {k: param_spec(k, v) for k, v in self.params.items()}

    def searched(self) -> dict[str, Range | Choices]:
        return {k: v for k, v in self.param_specs().items() if isinstance(v, (Range, Choices))}

    def fixed(self) -> dict[str, Any]:
        return {k: v for k, v in self.param_specs().items() if not isinstance(v, (Range, Choices))}

    def to_dict(self) -> dict[str, Any]:
        return dict(to_mapping(self))


def param_spec(name: str, value: Any) -> Range | Choices | Any:
    """A fixed value, a Range or Choices for the trial parameter ``name``."""
    key = f"params.{name}"
    if name not in PARAM_TYPES:
        raise ConfigError(key, "unknown parameter" + did_you_mean(name, PARAM_TYPES))
    tp = PARAM_TYPES[name]
    if isinstance(value, dict) and "choices" in value:
        extra = set(value) - {"choices"}
        if extra:
            raise ConfigError(f"{key}.{sorted(extra)[0]}", "unknown key next to 'choices'")
        choices = convert(value["choices"], tuple[tp, ...], f"{key}.choices")  # type: ignore[valid-type]
        if not choices:
            raise ConfigError(f"{key}.choices", "empty list of choices")
        if len(set(choices)) != len(choices):
            raise ConfigError(f"{key}.choices", f"a choice is listed twice: {list(choices)}")
        for c in choices:
            _check_value(name, c, f"{key}.choices")
        return Choices(tuple(choices))
    if isinstance(value, dict) and name == "ssl_lambda" and set(value) <= set(LAMBDA_KEYS):
        lam = convert(value, dict[str, float], key)
        for k, v in lam.items():
            _check_value(name, v, f"{key}.{k}")
        return lam
    if isinstance(value, dict):
        if tp in (str, bool):
            raise ConfigError(key, "a categorical parameter takes a value or {choices: [...]}")
        rng = from_mapping(Range, value, key)
        if tp is int:
            if not (float(rng.low).is_integer() and float(rng.high).is_integer()):
                raise ConfigError(key, "an integer range needs integer bounds")
            if rng.step is not None and not float(rng.step).is_integer():
                raise ConfigError(
                    f"{key}.step", f"an integer range needs an integer step, got {rng.step}"
                )
            rng = Range(rng.low, rng.high, rng.log, rng.step, integer=True)
        for bound, v in (("low", rng.low), ("high", rng.high)):
            _check_value(name, v, f"{key}.{bound}")
        if name == "ssl_lambda" and not rng.log:
            pass  # linear lambda ranges are allowed, just unusual
        return rng
    v = convert(value, tp, key)
    _check_value(name, v, key)
    return v


def _check_value(name: str, v: Any, key: str) -> None:
    if name == "ratio" and not 0.0 <= float(v) < 1.0:
        raise ConfigError(key, f"ratio must be in [0, 1), got {v}")
    if name == "ssl_lambda" and not (float(v) >= 0.0 and math.isfinite(float(v))):
        raise ConfigError(key, f"ssl_lambda must be finite and >= 0, got {v}")
    if name == "blocks" and int(v) < 0:
        raise ConfigError(key, f"blocks must be >= 0, got {v}")
    if name in BUDGET_KEYS and not 0.0 < float(v) <= 1.0:
        raise ConfigError(key, f"{name} is a share of the dense model's cost in (0, 1], got {v}")
    if name == "min_width_share" and not 0.0 <= float(v) <= 1.0:
        raise ConfigError(key, f"min_width_share must be in [0, 1], got {v}")


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError("", "search space file not found", str(p))
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError("", f"malformed YAML{at}: {problem}", str(p)) from None
    except (UnicodeDecodeError, OSError) as e:
        raise ConfigError("", f"cannot read: {e}", str(p)) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("", "the top level must be a mapping of keys", str(p))
    return raw


def apply_overrides(
    raw: dict[str, Any], overrides: list[str], where: str = "--set"
) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a raw mapping, copying it."""
    import copy

    out = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError("", f"override {item!r} must look like key.path=value", where)
        path, _, text = item.partition("=")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        node = out
        parts = [p for p in path.strip().split(".") if p]
        if not parts:
            raise ConfigError("", f"override {item!r} has an empty key", where)
        for p in parts[:-1]:
            nxt = node.get(p)
            if not isinstance(nxt, dict):
                nxt = {}
                node[p] = nxt
            node = nxt
        node[parts[-1]] = value
    return out


def space_from_mapping(raw: dict[str, Any], where: str | None = None) -> SearchSpace:
    try:
        return from_mapping(SearchSpace, raw)
    except ConfigError as e:
        raise e.located(where) if where else e from None


def load_space(path: str | Path, overrides: list[str] | None = None) -> SearchSpace:
    """Read, override and structurally validate a search space file."""
    raw = read_yaml(path)
    if overrides:
        raw = apply_overrides(raw, overrides)
    try:
        return from_mapping(SearchSpace, raw)
    except ConfigError as e:
        # blame what the user typed: the --set that wrote the key, else the file
        raise e.located(override_for(e.key, overrides or []) or str(path)) from None


def override_for(key: str, overrides: list[str]) -> str | None:
    """``--set K=V``, the last override that wrote ``key`` or a key above or below it."""
    for item in reversed(overrides):
        k = item.split("=", 1)[0].strip()
        if key and (key == k or key.startswith(k + ".") or k.startswith(key + ".")):
            return f"--set {item}"
    return None

"""A search's plan: what the search does, read from its space once.

The searcher, the sampler, the study and the trials take this plan rather than each reading the
space again: the objectives (the study's values, in order), what one SSL model's points share,
how many points each SSL model gives and how many SSL models the budget buys, which sampler
proposes (``auto`` resolved) and how many SSL models it proposes at random first, and what each
SSL model screens.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from sslsearch.config import SSL_PARAMS, Choices, Range, SearchSpace
from sslsearch.trial import SCREEN_KEYS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchPlan:
    space: SearchSpace
    objectives: tuple[tuple[str, str], ...]  # (column, "max" | "min"): the study's values
    ssl_params: frozenset[str]  # the parameters every point of one SSL model shares
    points_per_ssl: int
    ssl_trainings: int  # SSL models (jobs) the budget's points take
    sampler: str  # gp | tpe | nsga2 | random (``auto`` resolved)
    startup_trials: int  # SSL models proposed at random before the sampler's model is used
    screen: tuple[str, tuple[float, ...]] | None  # the amount each SSL model screens, values
    path: int = 0  # steps of a job's lambda path (economy.lambda_path); 0: one SSL model a job

    @property
    def points_per_job(self) -> int:
        """The points one job asks: one SSL model's, or every step's of its lambda path."""
        return self.points_per_ssl * max(1, self.path)


def plan_search(space: SearchSpace) -> SearchPlan:
    """The plan of a search over ``space``."""
    shared = _ssl_params(space)
    varies = any(n not in shared for n in space.searched())
    per_ssl = space.economy.points_per_ssl if varies else 1
    jobs = -(-space.budget.num_samples // per_ssl)
    s = space.sampler
    return SearchPlan(
        space=space,
        objectives=tuple(space.objective_pairs()),
        ssl_params=frozenset(shared),
        points_per_ssl=per_ssl,
        ssl_trainings=jobs,
        sampler=_sampler_name(space),
        startup_trials=s.n_startup_trials
        if s.n_startup_trials is not None
        else max(2, min(10, jobs // 3)),
        screen=_screen_grid(space),
        path=space.economy.lambda_path,
    )


def _ssl_params(space: SearchSpace) -> set[str]:
    """The SSL settings (``SSL_PARAMS``: what determines an SSL model), and the prune type when
    the space does not set the ssl type (it follows the prune type)."""
    names = set(SSL_PARAMS)
    if "ssl_type" not in space.params:
        names.add("prune_type")
    return names


def is_conditional(space: SearchSpace) -> bool:
    """Whether the space asks for different parameters per trial (GP would sample randomly)."""
    specs = space.param_specs()
    pt = specs.get("prune_type")
    if not isinstance(pt, Choices) or "blocks" not in specs:
        return False
    return "depth_wise" in pt.choices and any(c != "depth_wise" for c in pt.choices)


def _sampler_name(space: SearchSpace) -> str:
    """The sampler ``auto`` stands for: GP (best in bench_search_efficiency.py), but TPE on a
    conditional space, where Optuna's GP falls back to random sampling."""
    name = space.sampler.name
    if name == "auto":
        return "tpe" if is_conditional(space) else "gp"
    if name == "gp" and is_conditional(space):
        log.warning("sampler gp on a conditional space: Optuna's GP samples it at random")
    return name


def _screen_grid(space: SearchSpace) -> tuple[str, tuple[float, ...]] | None:
    """The amount a job screens and the values: ``economy.screen`` evenly spaced stops of its
    range on the range's own scale (log or linear), both ends included; None: no screen."""
    n = space.economy.screen
    key = next((k for k in SCREEN_KEYS if k in space.params), None)
    spec = space.param_specs().get(key) if key else None
    if not n or key is None or not isinstance(spec, Range):
        return None
    lo, hi = (math.log(spec.low), math.log(spec.high)) if spec.log else (spec.low, spec.high)
    stops = [lo + j * (hi - lo) / (n - 1) for j in range(n)]
    values = [math.exp(v) if spec.log else v for v in stops]
    values[0], values[-1] = spec.low, spec.high  # exactly: exp(log(0.03)) is 0.0299999...
    return key, tuple(float(min(max(v, spec.low), spec.high)) for v in values)

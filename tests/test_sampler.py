"""The sampler's view: what GP and TPE see is bounded (the best fronts plus the most recent
points), and GP hands over to TPE past sampler.gp_max_points."""

from __future__ import annotations

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from optuna.distributions import FloatDistribution  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from sslsearch.config import space_from_mapping  # noqa: E402
from sslsearch.search._params import define_by_run  # noqa: E402
from sslsearch.search._plan import plan_search  # noqa: E402
from sslsearch.search._sampler import (  # noqa: E402
    ELITE,
    ELITE_MAX,
    Record,
    SamplerView,
    first_fronts,
)

from .spaces import with_changes  # noqa: E402

SEARCHED = {
    "ssl_lambda": {"low": 1e-3, "high": 1e-1, "log": True},
    "ratio": {"low": 0.1, "high": 0.8},
}
DISTS = {
    "ssl_lambda": FloatDistribution(1e-3, 1e-1, log=True),
    "ratio": FloatDistribution(0.1, 0.8),
}


def test_first_fronts_match_their_definition() -> None:
    rng = np.random.default_rng(0)
    losses = rng.random((300, 3))
    chosen = first_fronts(losses, 40)

    def dominated(i: int, among: list[int]) -> bool:
        return any((losses[j] <= losses[i]).all() and (losses[j] < losses[i]).any() for j in among)

    remaining, expected = list(range(len(losses))), []
    while len(expected) < 40:
        front = [i for i in remaining if not dominated(i, remaining)]
        expected += front
        remaining = [i for i in remaining if i not in front]
    assert sorted(chosen) == sorted(expected)


def test_the_samplers_view_stays_bounded_and_keeps_the_best_fronts() -> None:
    space = space_from_mapping(
        with_changes(params=SEARCHED, sampler={"name": "tpe", "max_history": 100})
    )
    view = SamplerView(plan_search(space), define_by_run(space))
    rng = np.random.default_rng(1)
    values = []
    for i in range(600):
        params = view.propose(f"p{i}", {})[0] if i % 50 == 0 else {"ssl_lambda": 0.01, "ratio": 0.5}
        v = [float(rng.uniform(50, 99)), float(rng.uniform(1e5, 1e6)), float(rng.uniform(0.1, 1))]
        values.append(v)
        view.record(f"p{i}", params, DISTS, TrialState.COMPLETE, v)
        assert len(view.study.trials) <= 150 + ELITE_MAX + 1
    assert view.rebuilds >= 5 and view.finished == 600
    # every point of the true first front of all 600 is still seen
    losses = np.array(values) * np.array([-1.0, 1.0, 1.0])
    front = {tuple(values[i]) for i in first_fronts(losses, 1)}
    seen = {tuple(t.values) for t in view.study.trials if t.values}
    assert front <= seen and len(view.elite) >= ELITE
    # the 100 most recent points too
    assert {tuple(v) for v in values[-100:]} <= seen


def test_gp_hands_over_to_tpe_past_gp_max_points() -> None:
    space = space_from_mapping(
        with_changes(params=SEARCHED, sampler={"name": "gp", "gp_max_points": 3})
    )
    view = SamplerView(plan_search(space), define_by_run(space))
    assert isinstance(view.study.sampler, optuna.samplers.GPSampler)
    for i in range(4):
        params = view.propose(f"p{i}", {})[0]
        view.record(f"p{i}", params, DISTS, TrialState.COMPLETE, [90.0 - i, 1e5 * i, 0.5])
    assert isinstance(view.study.sampler, optuna.samplers.TPESampler) and view.model == "tpe"
    assert len(view.study.trials) == 4  # the new view holds every finished point
    resumed = SamplerView(plan_search(space), define_by_run(space))
    resumed.load(
        [Record(i, {"ratio": 0.5}, {"ratio": DISTS["ratio"]}, [1.0, 2.0, 3.0]) for i in range(5)]
    )
    assert resumed.model == "tpe"


def test_auto_picks_gp_unless_the_space_is_conditional() -> None:
    plain = space_from_mapping(with_changes(sampler={"name": "auto"}))
    assert plan_search(plain).sampler == "gp"
    cond = space_from_mapping(
        with_changes(
            arch="resnet20",
            sampler={"name": "auto"},
            params={
                "ssl_lambda": 0.01,
                "ratio": {"low": 0.1, "high": 0.5},
                "blocks": {"low": 1, "high": 3},
                "prune_type": {"choices": ["filter_wise", "depth_wise"]},
            },
        )
    )
    assert plan_search(cond).sampler == "tpe"

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sslsearch.config import (
    ConfigError,
    Range,
    SearchSpace,
    TrialConfig,
    load_space,
    space_from_mapping,
)
from sslsearch.trial import validate_space

from .spaces import TINY, with_changes

SPACES = sorted((Path(__file__).parents[1] / "search_spaces").glob("*.yaml"))


@pytest.mark.parametrize("path", SPACES, ids=[p.stem for p in SPACES])
def test_shipped_spaces_are_valid(path: Path) -> None:
    space = load_space(path)
    validate_space(space, str(path))
    assert space.searched(), "a search space searches something"


def test_the_shipped_spaces_include_the_required_ones() -> None:
    names = {p.stem for p in SPACES}
    assert {"default", "cifar10_resnet20", "vgg16_bn_cifar100", "resnet50_cifar100_depth"} <= names
    default = load_space(SPACES[[p.stem for p in SPACES].index("default")])
    assert default.data.name == "digits"


def _write(tmp_path: Path, data: object) -> Path:
    p = tmp_path / "space.yaml"
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def _bad(tmp_path: Path, data: object) -> ConfigError:
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as e:
        validate_space(load_space(path), str(path))
    assert str(path) in str(e.value)  # names the file
    assert "\n" not in str(e.value)  # one line
    return e.value


_with = with_changes


CASES = [
    ("malformed yaml", "arch: [vgg_small\nparams: {", "", "malformed YAML at line"),
    ("unknown key", _with(recipe={"epochz": 3}), "recipe.epochz", "did you mean 'epochs'"),
    ("unknown top key", _with(budgett={}), "budgett", "did you mean 'budget'"),
    ("wrong type", _with(recipe={"epochs": "many"}), "recipe.epochs", "expected an integer"),
    (
        "empty range",
        _with(params={"ssl_lambda": 0.01, "ratio": {"low": 0.3, "high": 0.3}}),
        "params.ratio",
        "empty range",
    ),
    (
        "inverted range",
        _with(params={"ssl_lambda": {"low": 0.1, "high": 0.01, "log": True}, "ratio": 0.3}),
        "params.ssl_lambda",
        "inverted range",
    ),
    (
        "ratio above 1",
        _with(params={"ssl_lambda": 0.01, "ratio": {"low": 0.1, "high": 1.2}}),
        "params.ratio.high",
        "ratio must be in [0, 1)",
    ),
    (
        "fixed ratio 1",
        _with(params={"ssl_lambda": 0.01, "ratio": 1.0}),
        "params.ratio",
        "ratio must be in [0, 1)",
    ),
    (
        "zero lambda on log",
        _with(params={"ssl_lambda": {"low": 0.0, "high": 0.1, "log": True}, "ratio": 0.3}),
        "params.ssl_lambda.low",
        "log-scale range needs low > 0",
    ),
    (
        "negative lambda",
        _with(params={"ssl_lambda": -1e-3, "ratio": 0.3}),
        "params.ssl_lambda",
        ">= 0",
    ),
    ("unknown arch", _with(arch="resnet21"), "arch", "did you mean 'resnet20'"),
    ("unknown dataset", _with(data={"name": "cifar1000"}), "data.name", "unknown dataset"),
    (
        "unknown ssl type",
        _with(params={"ssl_lambda": 0.01, "ratio": 0.3, "ssl_type": "kernel_wise"}),
        "params.ssl_type",
        "unknown ssl type",
    ),
    (
        "unknown prune type",
        _with(params={"ssl_lambda": 0.01, "ratio": 0.3, "prune_type": "filterwise"}),
        "params.prune_type",
        "did you mean 'filter_wise'",
    ),
    (
        "unknown prune way",
        _with(params={"ssl_lambda": 0.01, "ratio": 0.3, "prune_way": {"choices": ["l1"]}}),
        "params.prune_way",
        "unknown prune way",
    ),
    (
        "depth_wise without blocks",
        _with(params={"ssl_lambda": 0.01, "prune_type": "depth_wise", "blocks": 1}),
        "params.prune_type",
        "depth_wise needs residual blocks",
    ),
    (
        "log with step",
        _with(params={"ssl_lambda": {"low": 1e-3, "high": 1e-1, "log": True, "step": 1e-3}}),
        "params.ssl_lambda.step",
        "a log-scale range cannot have a step",
    ),
    (
        "step not dividing the range",
        _with(params={"ssl_lambda": 0.01, "ratio": {"low": 0.1, "high": 0.8, "step": 0.3}}),
        "params.ratio.step",
        "does not divide the range [0.1, 0.8]: high - low must be a multiple of step (e.g. high: 0.7)",
    ),
    (
        "zero step",
        _with(params={"ssl_lambda": 0.01, "ratio": {"low": 0.1, "high": 0.8, "step": 0.0}}),
        "params.ratio.step",
        "must be a finite number > 0",
    ),
    (
        "fractional step on an integer range",
        _with(
            params={
                "ssl_lambda": 0.01,
                "prune_type": "depth_wise",
                "blocks": {"low": 1, "high": 4, "step": 1.5},
            },
            arch="resnet20",
        ),
        "params.blocks.step",
        "an integer range needs an integer step",
    ),
    ("num_samples 0", _with(budget={"num_samples": 0}), "budget.num_samples", "must be >= 1"),
    (
        "unknown objective",
        _with(objectives=[{"metric": "accuracy"}]),
        "objectives[0].metric",
        "unknown objective",
    ),
    ("unknown sampler", _with(sampler={"name": "cmaes"}), "sampler.name", "must be one of"),
    (
        "unknown param",
        _with(params={"ssl_lambda": 0.01, "ratios": 0.3}),
        "params.ratios",
        "did you mean 'ratio'",
    ),
    (
        "budget above 1",
        _with(params={"ssl_lambda": 0.01, "flops_budget": {"low": 0.1, "high": 1.5}}),
        "params.flops_budget.high",
        "flops_budget is a share of the dense model's cost in (0, 1], got 1.5",
    ),
    (
        "zero budget",
        _with(params={"ssl_lambda": 0.01, "params_budget": 0.0}),
        "params.params_budget",
        "in (0, 1]",
    ),
    (
        "budget and ratio",
        _with(params={"ssl_lambda": 0.01, "flops_budget": 0.5, "ratio": 0.3}),
        "params.ratio",
        "a space prunes to one target: flops_budget and ratio are alternatives",
    ),
    (
        "two budgets",
        _with(params={"ssl_lambda": 0.01, "flops_budget": 0.5, "latency_budget": 0.5}),
        "params.latency_budget",
        "flops_budget and latency_budget are alternatives",
    ),
    (
        "blocks with a budget",
        _with(
            params={
                "ssl_lambda": 0.01,
                "prune_type": "depth_wise",
                "blocks": 2,
                "flops_budget": 0.5,
            },
            arch="resnet20",
        ),
        "params.blocks",
        "depth_wise removes blocks to the budget: drop blocks",
    ),
    (
        "no pruning target",
        _with(params={"ssl_lambda": 0.01}),
        "params.flops_budget",
        "say how far to prune",
    ),
    (
        "floor share above 1",
        _with(params={"ssl_lambda": 0.01, "flops_budget": 0.5, "min_width_share": 2.0}),
        "params.min_width_share",
        "min_width_share must be in [0, 1]",
    ),
]


@pytest.mark.parametrize(("what", "data", "key", "text"), CASES, ids=[c[0] for c in CASES])
def test_bad_space_names_file_and_key(
    tmp_path: Path, what: str, data: object, key: str, text: str
) -> None:
    err = _bad(tmp_path, data)
    assert err.key == key
    assert text in str(err)


def test_yaml_1e_notation_without_a_dot_is_a_number(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "params:\n  ssl_lambda: {low: 1e-5, high: 1e-2, log: true}\n  ratio: 0.3\n"
    )
    spec = load_space(path).searched()["ssl_lambda"]
    assert isinstance(spec, Range) and spec.low == 1e-5 and spec.log


def test_overrides_change_any_key(tmp_path: Path) -> None:
    path = _write(tmp_path, TINY)
    space = load_space(path, ["recipe.lr=0.2", "budget.num_samples=9", "params.flops_budget=0.5"])
    assert space.recipe.lr == 0.2 and space.budget.num_samples == 9
    assert space.fixed()["flops_budget"] == 0.5
    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        load_space(path, ["recipe.lrr=0.2"])


def test_fixed_searched_and_choices() -> None:
    s = SearchSpace(
        params={
            "ssl_lambda": {"low": 1e-4, "high": 1e-2, "log": True},
            "prune_way": {"choices": ["mean", "sum"]},
            "ratio": 0.4,
        }
    )
    assert set(s.searched()) == {"ssl_lambda", "prune_way"}
    assert s.fixed() == {"ratio": 0.4}


def test_trial_config_round_trip() -> None:
    cfg = TrialConfig.from_dict(
        {
            "arch": "resnet20",
            "ssl_lambda": {"n": 1e-4, "c": 2e-4},
            "ssl_type": "filter_and_channel_wise",
            "recipe": {"milestones": [0.3, 0.6]},
        }
    )
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg


def test_the_ssl_model_is_known_by_its_weighting_and_floor_unless_nothing_acts() -> None:
    base = TrialConfig(ssl_lambda=0.3)
    assert base.with_(ssl_weighting="none").ssl_key() != base.ssl_key()
    assert base.with_(min_width_share=0.2).ssl_key() != base.ssl_key()
    plain = TrialConfig(ssl_lambda=0.0)  # lambda = 0: one plain model whatever the weighting
    assert plain.with_(ssl_weighting="none", min_width_share=0.2).ssl_key() == plain.ssl_key()
    with pytest.raises(ConfigError, match=r"ssl_weighting.*did you mean 'flops'"):
        TrialConfig(ssl_weighting="flop").check()


def test_the_floor_and_step_rules_name_the_ssl_model() -> None:
    base = TrialConfig(ssl_lambda=0.3)
    keys = {
        base.with_(ssl_floor=f, ssl_step=s).ssl_key()
        for f in ("scale", "hold", "exempt")
        for s in ("momentum", "loss")
    }
    assert len(keys) == 6
    plain = TrialConfig(ssl_lambda=0.0)
    assert plain.with_(ssl_floor="exempt", ssl_step="loss").ssl_key() == plain.ssl_key()
    with pytest.raises(ConfigError, match=r"ssl_floor.*did you mean 'exempt'"):
        TrialConfig(ssl_floor="exampt").check()
    with pytest.raises(ConfigError, match=r"ssl_step.*did you mean 'reset'"):
        TrialConfig(ssl_step="rest").check()


def test_shape_wise_is_refused_with_any_prune_type_unless_asked() -> None:
    from sslsearch.trial import validate_trial

    cfg = TrialConfig(ssl_type="shape_wise", prune_type="filter_wise")
    with pytest.raises(ConfigError, match="no prune type removes"):
        validate_trial(cfg)
    validate_trial(cfg.with_(allow_unmatched_prune=True))
    params = {**TINY["params"], "ssl_type": "shape_wise"}
    with pytest.raises(ConfigError, match=r"params\.ssl_type"):
        validate_space(space_from_mapping(with_changes(params=params)))
    allowed = {**params, "allow_unmatched_prune": True}
    validate_space(space_from_mapping(with_changes(params=allowed)))


@pytest.mark.parametrize(
    ("low", "high", "step"),
    [(0.1, 0.8, 0.1), (0.1, 0.9, 0.05), (0.0, 0.3, 0.1), (0.25, 0.75, 0.125)],
)
def test_a_step_that_divides_the_range_keeps_its_top(low: float, high: float, step: float) -> None:
    """What passes validation is sampled by Optuna over exactly [low, high] (no lowered top)."""
    import optuna

    space = SearchSpace(
        params={"ssl_lambda": 0.01, "ratio": {"low": low, "high": high, "step": step}}
    )
    spec = space.searched()["ratio"]
    assert isinstance(spec, Range)
    dist = optuna.distributions.FloatDistribution(spec.low, spec.high, step=spec.step)
    assert dist.high == high


def test_a_trial_prunes_to_one_target_and_defaults_to_half_the_flops() -> None:
    assert TrialConfig().amount() == {"flops_budget": 0.5}
    assert TrialConfig().budget() == ("flops", 0.5)
    assert (
        TrialConfig(ratio=0.3).amount() == {"ratio": 0.3}
        and TrialConfig(ratio=0.3).budget() is None
    )
    assert TrialConfig(latency_budget=0.4).budget() == ("latency", 0.4)
    for bad, key in (
        ({"flops_budget": 0.5, "ratio": 0.3}, "ratio"),
        ({"flops_budget": 0.5, "params_budget": 0.5}, "params_budget"),
        ({"flops_budget": 1.5}, "flops_budget"),
        ({"blocks": 2}, "ratio"),
    ):
        with pytest.raises(ConfigError) as e:
            TrialConfig.from_dict(bad)
        assert e.value.key == key, (bad, e.value)


def test_shipped_spaces_search_a_budget() -> None:
    for path in SPACES:
        space = load_space(path)
        searched = space.searched()
        budgets = [k for k in ("flops_budget", "params_budget", "latency_budget") if k in searched]
        assert budgets, f"{path.name} searches no budget"
        metrics = [o.metric for o in space.objectives]
        kind = budgets[0].removesuffix("_budget")
        assert kind in ("flops", "params") or "latency_ms" in metrics, path.name


def test_the_ssl_model_is_known_by_its_training_subset() -> None:
    from dataclasses import replace

    base = TrialConfig(ssl_lambda=0.3)
    sub = base.with_(data=replace(base.data, per_class=100))
    assert sub.ssl_key() != base.ssl_key()
    assert sub.ssl_key() != base.with_(data=replace(base.data, per_class=200)).ssl_key()
    assert base.with_(data=replace(base.data, in_memory=True)).ssl_key() != base.ssl_key()
    # unset, the key is what it was before these keys existed (the value on main before them):
    # SSL models stored by earlier searches still match (they were trained with the floor rule
    # scale; the default is hold now, which names its models)
    assert base.with_(ssl_floor="scale").ssl_key() == "9275870b901e600134a0"
    assert base.ssl_key() != "9275870b901e600134a0"

"""SSL weightings: each against its written-out definition; the penalty uses them."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from sslsearch.errors import UserError
from sslsearch.metrics import count_flops
from sslsearch.models import create_model
from sslsearch.pruning import build_penalty, penalty_weights
from sslsearch.pruning._units import _apply_plan
from sslsearch.sparsity import SSLPenalty, ssl_penalty
from sslsearch.vocabulary import SSL_WEIGHTINGS

SHAPE = (3, 16, 16)


def _batches(n: int = 3, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(8, *SHAPE, generator=g), torch.randint(0, 10, (8,), generator=g))
        for _ in range(n)
    ]


def _example() -> torch.Tensor:
    return torch.zeros(1, *SHAPE)


def test_none_is_all_ones_and_the_plain_sum() -> None:
    model = create_model("vgg_small", 10)
    pen = build_penalty(model, "filter_wise", 0.3, weighting="none", example_inputs=_example())
    assert all(w == 1.0 for ws in pen.weights().values() for w in ws)
    torch.testing.assert_close(pen(), ssl_penalty(model, "filter_wise", 0.3))


def test_size_is_sqrt_of_the_element_count_with_mean_one() -> None:
    model = create_model("vgg_small", 10)
    pen = SSLPenalty.build(model, "filter_wise", 0.3, _example())
    (w,) = penalty_weights(pen, model, "size", _example()).values()
    convs = [model.get_submodule(g.name) for g in pen.terms[0].groups]
    # a filter unit: its conv filter + the BatchNorm's scale and shift
    sizes = [c.weight[0].numel() + 2 for c in convs]
    units = [c.out_channels for c in convs]
    raw = [math.sqrt(n) for n in sizes]
    mean = sum(u * r for u, r in zip(units, raw)) / sum(units)
    assert w == pytest.approx([r / mean for r in raw])


def test_flops_is_what_removing_one_channel_saves() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20", 10)
    pen = SSLPenalty.build(model, "filter_wise", 0.3, _example())
    (term,) = pen.terms
    w = penalty_weights(pen, model, "flops", _example())["n"]
    dense = count_flops(model, SHAPE)
    saved = []
    for g in term.groups:
        one = copy.deepcopy(model)
        _apply_plan(one, _example(), {g.name: [0]})
        saved.append(dense - count_flops(one, SHAPE))
    mean = sum(g.units * s for g, s in zip(term.groups, saved)) / sum(g.units for g in term.groups)
    # (the cost model leaves out what no parameter carries: the pooling of the last stage)
    assert w == pytest.approx([s / mean for s in saved], rel=1e-3)


def test_gradient_is_each_layers_median_pull_and_changes_nothing() -> None:
    torch.manual_seed(0)
    model = create_model("vgg_small", 10)
    for m in model.modules():  # train-mode statistics that the calibration must not touch
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
    state = copy.deepcopy(model.state_dict())
    batches = _batches()
    rng = torch.get_rng_state()
    pen = build_penalty(
        model, "filter_wise", 0.3, weighting="gradient", example_inputs=_example(), batches=batches
    )
    for k, v in model.state_dict().items():  # weights and BatchNorm statistics as they were
        torch.testing.assert_close(v, state[k], msg=k)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in model.parameters())
    # by hand: the mean cross-entropy gradient over the batches, per filter unit, median per layer
    ref = copy.deepcopy(model).train()
    loss = sum(nn.functional.cross_entropy(ref(x), y) for x, y in batches) / len(batches)
    loss.backward()  # type: ignore[union-attr]
    expected = []
    for g in pen.terms[0].groups:  # vgg_small: features.i is a conv, features.i+1 its BN
        c = ref.get_submodule(g.name)
        parent, _, i = g.name.rpartition(".")
        b = ref.get_submodule(f"{parent}.{int(i) + 1}")
        per_unit = (
            c.weight.grad.flatten(1).square().sum(1) + b.weight.grad.square() + b.bias.grad.square()
        ).sqrt()
        expected.append(float(per_unit.median()))
    assert pen.weights()["n"] == pytest.approx(expected, rel=1e-4)


def test_weights_scale_each_groups_threshold() -> None:
    torch.manual_seed(0)
    model = create_model("vgg_small", 10)
    pen = SSLPenalty.build(model, "filter_wise", 0.1, _example())
    (term,) = pen.terms
    weights = [0.0] + [1.0] * (len(term.groups) - 1)  # the first layer feels no penalty
    pen.set_weights("custom", {"n": weights})
    first = term.groups[0].squares("filter").clone()
    second = term.groups[1].squares("filter").clone()
    pen.prox_(0.5)
    torch.testing.assert_close(term.groups[0].squares("filter"), first)
    assert bool((term.groups[1].squares("filter") < second).all())
    # and the value: lambda * weight * norm, summed; its direct gradient agrees with autograd
    model = create_model("vgg_small", 10)
    plain = SSLPenalty.build(model, "filter_wise", 0.1, _example())()
    pen = SSLPenalty.build(model, "filter_wise", 0.1, _example())
    pen.set_weights("double", {"n": [2.0] * len(pen.terms[0].groups)})
    value = pen()
    torch.testing.assert_close(value, 2 * plain)
    value.backward()
    expected = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad(set_to_none=True)
    torch.testing.assert_close(pen.add_grad_(), value.detach())
    got = [p.grad for p in model.parameters() if p.grad is not None]
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


def test_unknown_weighting_and_missing_batches_are_user_errors() -> None:
    model = create_model("vgg_small", 10)
    with pytest.raises(UserError, match=r"unknown ssl weighting 'flop'.*did you mean 'flops'"):
        build_penalty(model, "filter_wise", 0.1, weighting="flop")
    with pytest.raises(UserError, match="pass batches="):
        build_penalty(model, "filter_wise", 0.1, weighting="gradient")
    assert set(SSL_WEIGHTINGS) == {"none", "size", "flops", "gradient"}

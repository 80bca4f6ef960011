from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sslsearch.errors import NotPrunableError, UserError
from sslsearch.models import create_model
from sslsearch.sparsity import (
    CRITERIA,
    SSL_TYPES,
    Group,
    Slice,
    SSLPenalty,
    criterion_scores,
    model_groups,
    ssl_penalty,
)
from sslsearch.sparsity._penalty import TERMS


class ConvBN(nn.Module):
    """conv-BN-ReLU, conv-BN-ReLU, pool, linear: two channel groups with known slices."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(2, 3, 3, bias=False), nn.BatchNorm2d(3)
        self.c2, self.b2 = nn.Conv2d(3, 4, 2, bias=False), nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.b2(self.c2(x)))
        return self.fc(x.mean(dim=(2, 3)))


def _by_hand(net: ConvBN, kind: str) -> torch.Tensor:
    """The group Lasso of ConvBN written out: which slices belong to which channel."""
    total = torch.zeros(())
    layers = [
        (net.c1, net.b1, lambda c: net.c2.weight[:, c]),
        (net.c2, net.b2, lambda c: net.fc.weight[:, c]),
    ]
    for conv, bn, reader in layers:
        for c in range(conv.out_channels):
            anchor = [bn.weight[c].view(1), bn.bias[c].view(1)]
            filt = [conv.weight[c].flatten(), *anchor]
            chan = [reader(c).flatten(), *anchor]
            parts = {"filter": filt, "channel": chan, "group": [*filt, reader(c).flatten()]}[kind]
            total = total + torch.cat(parts).pow(2).sum().sqrt()
    return total


@pytest.mark.parametrize(
    ("ssl_type", "kind"),
    [("filter_wise", "filter"), ("channel_wise", "channel"), ("group_wise", "group")],
)
def test_channel_groups_are_the_coupled_slices(ssl_type: str, kind: str) -> None:
    net = ConvBN()
    with torch.no_grad():
        for b in (net.b1, net.b2):
            b.weight.uniform_(0.5, 1.5)
            b.bias.uniform_(-0.5, 0.5)
    torch.testing.assert_close(ssl_penalty(net, ssl_type, 0.37), 0.37 * _by_hand(net, kind))


def test_filter_and_channel_have_their_own_lambdas() -> None:
    net = ConvBN()
    got = ssl_penalty(net, "filter_and_channel_wise", {"n": 0.5, "c": 2.0})
    torch.testing.assert_close(got, 0.5 * _by_hand(net, "filter") + 2.0 * _by_hand(net, "channel"))


def _elements(s: Slice, u: int) -> torch.Tensor:
    """The parameter elements of unit ``u`` in slice ``s``, gathered one position at a time."""
    w, kind = s.axis.param, s.axis.kind
    parts = []
    for p in s.pos[s.unit == u].tolist():
        if kind == "rows":
            parts.append(w[p].flatten())
        elif kind == "cols":
            parts.append(w[:, p])
        elif kind == "conv_in":
            g = s.axis.groups
            ipg, opg = w.shape[1], w.shape[0] // g
            grp = p // ipg
            parts.append(w[grp * opg : (grp + 1) * opg, p % ipg].flatten())
        elif kind == "shapes":
            c, rest = divmod(p, w.shape[2] * w.shape[3])
            parts.append(w[:, c, rest // w.shape[3], rest % w.shape[3]])
        else:
            parts.append(w.flatten())
    return torch.cat(parts) if parts else torch.zeros(0)


def _loop(model: nn.Module, ssl_type: str, lam: float) -> torch.Tensor:
    """lambda * sum over the dependency groups' units of the unit's L2 norm, by explicit loops."""
    from sslsearch.vocabulary import SSL_TYPE_KEYS

    gs = model_groups(model)
    total = torch.zeros((), dtype=torch.float64)
    for key in SSL_TYPE_KEYS[ssl_type]:
        source, part = TERMS[key]
        for g in getattr(gs, source):
            if not g.has(part):
                continue
            norms = torch.stack(
                [
                    torch.cat([_elements(s, u) for s in g.part(part)]).double().pow(2).sum().sqrt()
                    for u in range(g.units)
                ]
            )
            if key == "s":  # shape groups: relative to the layer's RMS shape norm
                norms = norms / norms.pow(2).mean().sqrt()
            total = total + lam * norms.sum()
    return total


@pytest.mark.parametrize("arch", ["vgg_small", "resnet20"])
@pytest.mark.parametrize("ssl_type", SSL_TYPES)
def test_penalty_equals_a_loop_over_the_dependency_groups(arch: str, ssl_type: str) -> None:
    if ssl_type == "depth_wise" and arch == "vgg_small":
        pytest.skip("no residual blocks")
    torch.manual_seed(0)
    model = create_model(arch, 10)
    value = ssl_penalty(model, ssl_type, 0.3)
    torch.testing.assert_close(value.double(), _loop(model, ssl_type, 0.3), rtol=1e-5, atol=1e-5)
    value.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)


def test_loop_covers_grouped_and_depthwise_convs() -> None:
    model = create_model("regnet_x_400mf", 10)
    gs = model_groups(model)
    kinds = {(s.axis.kind, s.axis.groups > 1) for g in gs.channel for s in g.slices}
    assert ("conv_in", True) in kinds  # a grouped conv's input slices
    # a slice of the grouped conv's input: every conv group's filters see their own channels
    torch.testing.assert_close(
        ssl_penalty(model, "channel_wise", 1.0).double(),
        _loop(model, "channel_wise", 1.0),
        rtol=1e-5,
        atol=1e-4,
    )


@pytest.mark.parametrize("arch", ["vgg_small", "resnet20"])
@pytest.mark.parametrize("ssl_type", SSL_TYPES)
def test_rescaling_convs_behind_a_batchnorm_does_not_empty_the_penalty(
    arch: str, ssl_type: str
) -> None:
    if ssl_type == "depth_wise" and arch == "vgg_small":
        pytest.skip("no residual blocks")
    torch.manual_seed(0)
    model = create_model(arch, 10)
    before = float(ssl_penalty(model, ssl_type, 1.0))
    feeds_bn = _convs_feeding_a_bn(model)
    assert len(feeds_bn) >= 6
    with torch.no_grad():
        for conv in feeds_bn:  # the network's function is unchanged (up to BN's eps)
            conv.weight.mul_(1e-3)
    after = float(ssl_penalty(model, ssl_type, 1.0))
    assert after > 0.1 * before


def _convs_feeding_a_bn(model: nn.Module) -> list[nn.Conv2d]:
    gs = model_groups(model)
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    out = []
    for g in gs.channel:
        has_bn = any(s.role == "norm" for s in g.slices)
        for s in g.slices:
            if has_bn and s.role == "out" and s.layer in convs and s.axis.kind == "rows":
                out.append(convs[s.layer])
    return list({id(c): c for c in out}.values())


@pytest.mark.parametrize("ssl_type", SSL_TYPES)
def test_gradients_flow_and_stay_finite_at_zero(ssl_type: str) -> None:
    model = create_model("resnet20", 10)
    with torch.no_grad():
        model.layer1[0].conv1.weight.zero_()  # a whole zero group must not give NaN gradients
        model.layer1[0].bn1.weight.zero_()
        model.layer1[0].bn1.bias.zero_()
    pen = ssl_penalty(model, ssl_type, 1e-3)
    pen.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("ssl_type", SSL_TYPES)
def test_direct_gradient_equals_autograd(ssl_type: str) -> None:
    model = create_model("resnet20", 10)
    with torch.no_grad():
        model.layer2[0].conv1.weight[:3].zero_()  # zero groups: subgradient 0 both ways
        model.layer2[0].bn1.weight[:3].zero_()
        model.layer2[0].bn1.bias[:3].zero_()
        model.layer2[0].conv2.weight[:, :3].zero_()
    lam = {"n": 0.3, "c": 0.2} if ssl_type == "filter_and_channel_wise" else 0.3
    pen = SSLPenalty.build(model, ssl_type, lam)
    value = pen()
    value.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    direct = pen.add_grad_()
    got = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], msg=name, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(direct, value.detach())


def test_prox_is_the_closed_form_shrinkage_and_makes_exact_zeros() -> None:
    torch.manual_seed(0)
    net = WideConvBN()
    pen = SSLPenalty.build(net, "filter_wise", 0.5)
    g1 = next(g for g in pen.groups.channel if g.name == "c1")
    norms = g1.squares("filter").sqrt()
    w0, gamma0 = net.c1.weight.detach().clone(), net.b1.weight.detach().clone()
    lr = float(norms.sort().values[2]) / 0.5  # threshold lr * lam between the norms
    pen.prox_(lr)
    # every unit is shrunk, the strongest too: the floor (8 of 12) is not reached
    factor = (1 - lr * 0.5 / norms).clamp_min(0)
    torch.testing.assert_close(net.c1.weight.detach(), w0 * factor.view(-1, 1, 1, 1))
    torch.testing.assert_close(net.b1.weight.detach(), gamma0 * factor)
    dead = factor == 0
    assert int(dead.sum()) == 3 and bool((net.c1.weight[dead] == 0).all())
    assert bool((factor[~dead] < 1).all())


def test_prox_visits_big_models_in_chunks_with_the_missed_steps() -> None:
    torch.manual_seed(0)
    a, b = create_model("vgg_small", 10), create_model("vgg_small", 10)
    b.load_state_dict(a.state_dict())
    whole = SSLPenalty.build(a, "filter_wise", 0.5)
    chunked = SSLPenalty.build(b, "filter_wise", 0.5, elements_per_step=20_000)
    whole.prox_(3.0)
    chunked.prox_(3.0)  # visits the first chunk; the others owe this step
    n_chunks = chunked.calls_per_cycle
    assert n_chunks > 1
    for _ in range(n_chunks - 1):
        chunked.prox_(0.0)  # each remaining chunk gets the step it missed
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, msg=name)
    assert any(
        bool((p == 0).all(dim=tuple(range(1, p.dim()))).any())
        for p in a.parameters()
        if p.dim() == 4
    )


def test_groups_are_built_once_per_model() -> None:
    model = create_model("resnet20", 10)
    assert model_groups(model) is model_groups(model)
    assert SSLPenalty.build(model, "filter_wise", 0.1).groups is model_groups(model)


def test_depth_wise_needs_residual_blocks() -> None:
    with pytest.raises(NotPrunableError, match="residual"):
        ssl_penalty(create_model("vgg_small", 10), "depth_wise", 1e-3)


def test_group_wise_has_its_own_lambda_key() -> None:
    net = ConvBN()
    torch.testing.assert_close(
        ssl_penalty(net, "group_wise", {"g": 0.2}), ssl_penalty(net, "group_wise", 0.2)
    )


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), {"n": 1.0}, {"x": 1.0}])
def test_bad_lambda(bad: object) -> None:
    with pytest.raises(UserError):
        ssl_penalty(ConvBN(), "channel_wise", bad)  # type: ignore[arg-type]


def test_unknown_ssl_type() -> None:
    with pytest.raises(UserError, match="unknown ssl type"):
        ssl_penalty(ConvBN(), "kernel_wise", 1.0)


def test_criteria_as_defined() -> None:
    g = torch.tensor([[3.0, -4.0], [1.0, 1.0]])
    expected = {
        "group_lasso": [5.0, 2**0.5],
        "mean_abs": [3.5, 1.0],
        "mean": [-0.5, 1.0],
        "sum_abs": [7.0, 2.0],
        "sum": [-1.0, 2.0],
    }
    assert set(CRITERIA.names()) == set(expected)
    for way, values in expected.items():
        torch.testing.assert_close(
            criterion_scores(way, g), torch.tensor(values, dtype=torch.float64)
        )
    assert {n for n in CRITERIA.names() if CRITERIA.get(n).signed} == {"mean", "sum"}
    assert all("not an importance" in CRITERIA.get(n).description for n in ("mean", "sum"))


@pytest.mark.parametrize("way", ["group_lasso", "mean_abs", "mean", "sum_abs", "sum"])
def test_scores_from_moments_equal_scores_of_the_concatenated_group(way: str) -> None:
    from sslsearch.sparsity import moments, scores_from_moments

    a, b = torch.randn(6, 10), torch.randn(6, 3)  # two parts of the same 6 groups
    direct = criterion_scores(way, torch.cat([a, b], dim=1))
    torch.testing.assert_close(scores_from_moments(way, moments(a, 1) + moments(b, 1)), direct)


def test_group_moments_add_up_over_slices() -> None:
    model = create_model("resnet20", 10)
    g: Group = max(model_groups(model).channel, key=lambda g: len(g.slices))
    m = g.moments("group")
    for u in (0, g.units - 1):
        flat = torch.cat([_elements(s, u) for s in g.slices]).double()
        torch.testing.assert_close(m[u, 2], flat.pow(2).sum())
        torch.testing.assert_close(m[u, 1], flat.abs().sum())
        assert int(m[u, 3]) == flat.numel()


@pytest.mark.slow
def test_the_default_penalty_makes_half_the_flops_removable_without_costing_accuracy() -> None:
    from sslsearch.config import TrialConfig
    from sslsearch.trial import run_trial

    def train(lam: float) -> dict[str, float]:
        cfg = {
            "arch": "vgg_small",
            "ssl_lambda": lam,
            "ratio": 0.0,
            "recipe": {"finetune_epochs": 0},
        }
        return run_trial(cfg).metrics

    dense, sparse = train(0.0), train(float(TrialConfig().ssl_lambda))  # type: ignore[arg-type]
    assert dense["exact_zero_share"] == 0.0 and dense["removable_flops_share"] == 0.0
    assert sparse["removable_flops_share"] > 0.5  # exactly zero, at no change of the function
    assert sparse["ssl_top1"] >= dense["ssl_top1"] - 3.0


def test_shape_prox_zeroes_shapes_but_keeps_each_layer_on_its_sphere() -> None:
    torch.manual_seed(0)
    model = create_model("vgg_small", 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        convs[2].weight[:, :16].mul_(0.01)  # weak shapes: the step removes them
    before = [float(c.weight.norm()) for c in convs]
    SSLPenalty.build(model, "shape_wise", 0.5).prox_(0.1)
    for c, b in zip(convs, before):
        assert float(c.weight.norm()) == pytest.approx(b, rel=1e-4)
    assert bool((convs[2].weight[:, :16] == 0).all())
    assert bool((convs[2].weight[:, 16:] != 0).any())


class WideConvBN(ConvBN):
    """ConvBN with 12 and 10 channels: wider than the floor a layer keeps (8 channels)."""

    def __init__(self) -> None:
        nn.Module.__init__(self)
        self.c1, self.b1 = nn.Conv2d(2, 12, 3, bias=False), nn.BatchNorm2d(12)
        self.c2, self.b2 = nn.Conv2d(12, 10, 2, bias=False), nn.BatchNorm2d(10)
        self.fc = nn.Linear(10, 2)


@pytest.mark.parametrize("ssl_type", ["filter_wise", "channel_wise", "group_wise"])
def test_prox_holds_a_layer_at_its_floor_with_its_strongest_units_unshrunk(ssl_type: str) -> None:
    torch.manual_seed(0)
    net = WideConvBN()
    with torch.no_grad():
        net.b1.weight.copy_(torch.linspace(0.5, 1.6, 12))  # distinct strengths
    pen = SSLPenalty.build(net, ssl_type, 10.0)
    (term,) = pen.terms
    before = {g.name: g.squares(term.part).sqrt() for g in term.groups}
    pen.prox_(1.0)  # a threshold far above every norm: without the floor all would be zero
    for g in term.groups:
        after = g.squares(term.part).sqrt()
        alive = after > 0
        assert int(alive.sum()) == g.min_units() == 8, g.name
        strongest = before[g.name].topk(8).indices
        assert bool(alive[strongest].all())
        if ssl_type != "group_wise":  # (group_wise groups overlap: readers shrink them too)
            # the default floor rule (hold): the survivors are not shrunk at all
            torch.testing.assert_close(after[alive], before[g.name][alive])


def test_prox_floor_counts_a_channel_dead_by_either_part() -> None:
    """filter_and_channel_wise: the filter and the channel term may zero different channels;
    the floor holds for the channels both leave alive."""
    torch.manual_seed(0)
    net = WideConvBN()
    with torch.no_grad():
        net.b1.weight.copy_(torch.linspace(0.5, 1.6, 12))
        net.c2.weight[:, 8:].mul_(1e-3)  # the strongest filters of c1 are barely read
    pen = SSLPenalty.build(net, "filter_and_channel_wise", {"n": 10.0, "c": 10.0})
    g = next(g for g in pen.groups.channel if g.name == "c1")
    pen.prox_(1.0)
    filt, chan = g.squares("filter") > 0, g.squares("channel") > 0
    assert int((filt & chan).sum()) == g.min_units() == 8


def test_a_layer_no_wider_than_its_floor_is_never_zeroed() -> None:
    torch.manual_seed(0)
    net = ConvBN()  # 3 and 4 channels: each layer is its own floor
    SSLPenalty.build(net, "filter_wise", 10.0).prox_(1.0)
    for conv in (net.c1, net.c2):
        assert bool((conv.weight.flatten(1).norm(dim=1) > 0).all())


def test_flush_leaves_every_group_below_its_threshold_at_exactly_zero() -> None:
    torch.manual_seed(0)
    model = create_model("vgg_small", 10)
    pen = SSLPenalty.build(model, "filter_wise", 0.02, elements_per_step=20_000)
    (term,) = pen.terms
    assert pen.calls_per_cycle > 2
    with torch.no_grad():  # a quarter of every layer's filters weak enough to go
        for g in term.groups:
            for s in g.part("filter"):
                s.axis.param[: g.units // 4].mul_(1e-4)
    lr = 1.0
    below = {g.name: g.squares("filter").sqrt() <= lr * 0.02 for g in term.groups}
    assert all(int(v.sum()) == g.units // 4 for g, v in zip(term.groups, below.values()))
    pen.prox_(lr)  # visits one chunk; the others owe this step
    assert any(bool((g.squares("filter")[below[g.name]] > 0).any()) for g in term.groups)
    pen.flush_()
    for g in term.groups:
        assert bool((g.squares("filter")[below[g.name]] == 0).all()), g.name
    assert pen._calls == 0  # the next cycle starts at the first chunk


def _strengths(net: WideConvBN, norms: list[float]) -> SSLPenalty:
    """c1's filter-wise units with exactly these norms (each unit: its BatchNorm scale only)."""
    with torch.no_grad():
        net.c1.weight.zero_()
        net.b1.bias.zero_()
        net.b1.weight.copy_(torch.tensor(norms))
    return SSLPenalty.build(net, "filter_wise", 1.0)


# c1 has 12 units, its floor is 8 (min_width(12) with round_to 8); norms 12, 11, ..., 1.
# Threshold 6.5: only 6 would survive a plain step. Threshold 2.5: 10 would, above the floor.
FLOOR_CASES = {
    ("scale", 6.5): [8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0, 0],  # threshold cut to the 9th norm, 4
    ("hold", 6.5): [12, 11, 10, 9, 8, 7, 6, 5, 0, 0, 0, 0],  # the 8 strongest not shrunk
    ("exempt", 6.5): [12, 11, 10, 9, 8, 7, 6, 5, 0, 0, 0, 0],
    ("scale", 2.5): [9.5, 8.5, 7.5, 6.5, 5.5, 4.5, 3.5, 2.5, 1.5, 0.5, 0, 0],  # all shrunk
    ("hold", 2.5): [9.5, 8.5, 7.5, 6.5, 5.5, 4.5, 3.5, 2.5, 1.5, 0.5, 0, 0],  # as scale
    ("exempt", 2.5): [12, 11, 10, 9, 8, 7, 6, 5, 1.5, 0.5, 0, 0],  # the 8 strongest never
}


@pytest.mark.parametrize(("rule", "threshold"), list(FLOOR_CASES))
def test_each_floor_rule_gives_the_norms_worked_out_by_hand(rule: str, threshold: float) -> None:
    net = WideConvBN()
    pen = _strengths(net, [12.0 - i for i in range(12)])
    pen.set_rules(floor_rule=rule)
    pen.prox_(threshold)  # lambda 1: the threshold is the step
    got = net.b1.weight.detach().abs()
    want = torch.tensor(FLOOR_CASES[rule, threshold], dtype=torch.float32)
    torch.testing.assert_close(got, want)


def test_unknown_rules_are_refused_with_the_known_names() -> None:
    pen = SSLPenalty.build(WideConvBN(), "filter_wise", 1.0)
    with pytest.raises(UserError, match="exempt"):
        pen.set_rules(floor_rule="exampt")
    with pytest.raises(UserError, match="momentum"):
        pen.set_rules(step_rule="adam")


class _Linear(nn.Module):
    """conv (16 filters, penalised) then a frozen linear read-out: a convex group Lasso."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(6, 16, 1, bias=False)
        self.fc = nn.Linear(16, 12)
        self.fc.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.c1(x).flatten(1))


def test_the_step_rules_reach_the_minimum_of_the_same_objective_under_momentum() -> None:
    """SGD with momentum 0.9 and each step rule, against plain proximal gradient descent (the
    reference, no momentum, the group Lasso's prox written out here) on the same objective
    mean((f(x) - y)^2) + lam * sum_c ||W_c||. ``momentum``, ``reset`` and ``loss`` reach its
    minimum (the same value, the same 12 live filters of 16); ``lr``, a proximal step of lr
    under momentum, minimises the objective with lam * (1 - momentum) instead."""
    torch.manual_seed(0)
    x = torch.randn(128, 6, 1, 1)
    y = x.flatten(1) @ torch.randn(6, 12) + 0.3 * torch.randn(128, 12)
    lam, eta, iters = 0.1, 0.05, 800
    base = _Linear()

    def loss(m: _Linear) -> torch.Tensor:
        return ((m(x) - y) ** 2).mean()

    def objective(m: _Linear) -> tuple[float, torch.Tensor]:
        with torch.no_grad():
            norms = m.c1.weight.flatten(1).norm(dim=1)
            return float(loss(m) + lam * norms.sum()), norms > 0

    ref = copy.deepcopy(base)
    for _ in range(iters):
        ref.zero_grad()
        loss(ref).backward()
        with torch.no_grad():
            for p in ref.parameters():
                if p.grad is not None:
                    p -= eta * p.grad
            w = ref.c1.weight
            w.mul_(
                (1 - eta * lam / w.flatten(1).norm(dim=1).clamp_min(1e-30)).clamp_min(0)[
                    :, None, None, None
                ]
            )
    want, live = objective(ref)
    assert 8 < int(live.sum()) < 16  # some filters zero, above the layer's floor of 8

    for rule in ("momentum", "reset", "loss", "lr"):
        m = copy.deepcopy(base)
        pen = SSLPenalty.build(m, "filter_wise", lam, torch.zeros(1, 6, 1, 1))
        pen.set_rules(step_rule=rule)
        opt = torch.optim.SGD(
            [p for p in m.parameters() if p.requires_grad], lr=eta / 10, momentum=0.9
        )
        for _ in range(iters):  # the trial's loop: backward, before, step, after
            opt.zero_grad()
            loss(m).backward()
            pen.before_step_()
            opt.step()
            pen.after_step_(eta / 10, opt)
        got, got_live = objective(m)
        if rule == "lr":
            assert got > want * 1.05 and int(got_live.sum()) > int(live.sum()), rule
        else:
            assert got == pytest.approx(want, rel=1e-3), rule
            assert torch.equal(got_live, live), rule

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from sslsearch.errors import ModelFileError, NotPrunableError, UserError
from sslsearch.metrics import count_flops, count_params
from sslsearch.models import create_model, load_model, model_info, save_model
from sslsearch.pruning import PruneResult, export_onnx, prune, round_keep
from sslsearch.sparsity import list_criteria

from .conftest import randomize_bn

CHANNEL_TYPES = ["filter_wise", "channel_wise", "filter_and_channel_wise"]
SMALL = [("vgg_small", (3, 16, 16)), ("resnet20", (3, 16, 16))]
BIG = [("vgg16_bn", (3, 32, 32)), ("resnet50", (3, 32, 32))]


def _zeroed_reference(dense: nn.Module, result: PruneResult, x: torch.Tensor) -> torch.Tensor:
    """Dense output with the removed channels' activations (or removed blocks' branches) zeroed."""
    modules = dict(dense.named_modules())
    hooks = []
    for name, idx in result.removed_channels.items():

        def zero(
            mod: nn.Module, inp: object, out: torch.Tensor, idx: list[int] = idx
        ) -> torch.Tensor:
            out = out.clone()
            out[:, idx] = 0
            return out

        hooks.append(modules[name].register_forward_hook(zero))
    for name in result.removed_blocks:
        last_bn = [m for m in modules[name].children() if isinstance(m, nn.BatchNorm2d)][-1]
        hooks.append(last_bn.register_forward_hook(lambda m, i, o: torch.zeros_like(o)))
    try:
        with torch.no_grad():
            return dense(x)
    finally:
        for h in hooks:
            h.remove()


def _check_equivalent(dense: nn.Module, result: PruneResult, shape: tuple[int, ...]) -> None:
    x = torch.randn(4, *shape)
    ref = _zeroed_reference(dense, result, x)
    with torch.no_grad():
        out = result.model.eval()(x)
    assert out.shape == ref.shape  # the classifier's output size never changes
    rel = float((out - ref).norm() / ref.norm())
    assert rel < 1e-4, rel


def _check_result(dense: nn.Module, r: PruneResult, shape: tuple[int, ...]) -> None:
    assert r.groups_removed > 0
    assert r.flops_after < r.flops_before and r.params_after < r.params_before
    assert r.flops_before == count_flops(dense, shape)
    assert r.flops_after == count_flops(r.model, shape)
    assert r.params_after == count_params(r.model)
    assert r.actual_ratio == pytest.approx(r.groups_removed / r.groups_total)
    _check_equivalent(dense, r, shape)


def _widths_follow_the_rules(dense: nn.Module, pruned: nn.Module) -> None:
    before = {n: m.out_channels for n, m in dense.named_modules() if isinstance(m, nn.Conv2d)}
    for name, m in pruned.named_modules():
        if isinstance(m, nn.Conv2d) and m.out_channels != before[name]:
            assert m.out_channels >= 8 and m.out_channels % 8 == 0, (name, m.out_channels)


@pytest.mark.parametrize(("arch", "shape"), SMALL)
@pytest.mark.parametrize("prune_type", CHANNEL_TYPES)
@pytest.mark.parametrize("way", list_criteria())
def test_every_type_and_way_on_small_models(
    arch: str, shape: tuple[int, ...], prune_type: str, way: str
) -> None:
    dense = randomize_bn(create_model(arch, 10))
    r = prune(dense, shape, prune_type=prune_type, prune_way=way, ratio=0.6)
    _check_result(dense, r, shape)
    _widths_follow_the_rules(dense, r.model)


@pytest.fixture(scope="module")
def seed_models() -> dict[str, nn.Module]:
    """One dense vgg16_bn and resnet50 for all pairs (prune works on a copy, never in place)."""
    return {arch: randomize_bn(create_model(arch, 100)) for arch, _ in BIG}


# Every type (by group_lasso) and every way (on the type that couples the most) on the seed's
# models: a way only scores units, so the whole product runs on the small models above
SEED_PAIRS = sorted(
    {("group_lasso", t) for t in CHANNEL_TYPES}
    | {(w, "filter_and_channel_wise") for w in list_criteria()}
)


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "shape"), BIG)
@pytest.mark.parametrize(("way", "prune_type"), SEED_PAIRS)
def test_every_type_and_way_on_the_seed_models(
    seed_models: dict[str, nn.Module], arch: str, shape: tuple[int, ...], prune_type: str, way: str
) -> None:
    dense = seed_models[arch]
    r = prune(dense, shape, prune_type=prune_type, prune_way=way, ratio=0.5)
    _check_result(dense, r, shape)
    _widths_follow_the_rules(dense, r.model)


@pytest.mark.parametrize("way", list_criteria())
@pytest.mark.parametrize("arch", ["resnet20", pytest.param("resnet50", marks=pytest.mark.slow)])
def test_depth_wise_removes_the_lowest_blocks(arch: str, way: str) -> None:
    dense = randomize_bn(create_model(arch, 10))
    shape = (3, 32, 32)
    r = prune(dense, shape, prune_type="depth_wise", prune_way=way, blocks=2)
    assert len(r.removed_blocks) == 2 and r.groups_removed == 2
    assert r.actual_ratio == pytest.approx(2 / r.groups_total)
    _check_result(dense, r, shape)


def test_depth_wise_picks_the_block_with_the_smallest_norm() -> None:
    dense = randomize_bn(create_model("resnet20", 10))
    with torch.no_grad():
        for p in dense.layer2[1].parameters():
            p.mul_(1e-3)
    r = prune(dense, (3, 16, 16), prune_type="depth_wise", prune_way="group_lasso", blocks=1)
    assert r.removed_blocks == ["layer2.1"]


def test_filter_wise_removes_the_zeroed_filters_first() -> None:
    dense = randomize_bn(create_model("vgg_small", 10))
    conv, bn = dense.features[3], dense.features[4]  # second conv (32 filters) and its BN
    with torch.no_grad():
        conv.weight[:16].zero_()
        bn.weight[:16].zero_()
        bn.bias[:16].zero_()
    # 16 of 224 filters is ~7%: a 7% ratio must take exactly those
    r = prune(dense, (3, 8, 8), prune_type="filter_wise", prune_way="group_lasso", ratio=16 / 224)
    assert r.removed_channels["features.3"] == list(range(16))
    assert r.model.features[3].out_channels == 16


def test_rounding_keeps_the_best_of_the_would_be_removed_channels() -> None:
    assert [round_keep(k, 32) for k in (0, 1, 8, 9, 17, 31, 32)] == [8, 8, 8, 16, 24, 32, 32]
    assert round_keep(2, 6) == 6  # a layer narrower than 8 is never pruned
    dense = randomize_bn(create_model("vgg_small", 10))
    conv = dense.features[0]
    with torch.no_grad():  # filter scores 1..32 in order, so the choice is visible
        scale = torch.arange(1, 33, dtype=torch.float32).view(32, 1, 1, 1)
        conv.weight.copy_(scale / conv.weight[:, :1].norm() * 0 + scale)
        dense.features[1].weight.fill_(0.0)
        dense.features[1].bias.fill_(0.0)
    r = prune(dense, (3, 8, 8), prune_type="filter_wise", prune_way="sum", ratio=0.02)
    removed = r.removed_channels.get("features.0", [])
    # whatever the global threshold took from this layer, the kept width is a multiple of 8
    # and the removed channels are the lowest-scoring ones
    assert (32 - len(removed)) % 8 == 0
    assert removed == list(range(len(removed)))


def test_deterministic() -> None:
    dense = randomize_bn(create_model("resnet20", 10))
    a = prune(dense, (3, 16, 16), prune_type="channel_wise", prune_way="mean_abs", ratio=0.4)
    b = prune(dense, (3, 16, 16), prune_type="channel_wise", prune_way="mean_abs", ratio=0.4)
    assert a.removed_channels == b.removed_channels


def test_ratio_zero_changes_nothing() -> None:
    dense = randomize_bn(create_model("vgg_small", 10))
    r = prune(dense, (3, 8, 8), prune_type="filter_wise", ratio=0.0)
    assert r.groups_removed == 0 and r.flops_after == r.flops_before


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"prune_type": "filter_wise", "ratio": 1.0}, UserError, r"ratio must be in \[0, 1\)"),
        ({"prune_type": "filter_wise", "ratio": -0.1}, UserError, "ratio"),
        ({"prune_type": "filter_wise"}, UserError, "needs a ratio"),
        ({"prune_type": "kernel_wise", "ratio": 0.5}, UserError, "unknown prune type"),
        (
            {"prune_type": "filter_wise", "prune_way": "median", "ratio": 0.5},
            UserError,
            "unknown prune way",
        ),
        ({"prune_type": "depth_wise", "blocks": 1}, NotPrunableError, "residual"),
    ],
)
def test_bad_input_leaves_the_model_untouched(kwargs: dict, error: type, match: str) -> None:
    dense = create_model("vgg_small", 10)
    before = {k: v.clone() for k, v in dense.state_dict().items()}
    with pytest.raises(error, match=match):
        prune(dense, (3, 8, 8), **kwargs)
    after = dense.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_too_many_blocks() -> None:
    with pytest.raises(UserError, match="blocks must be in"):
        prune(create_model("resnet20", 10), (3, 8, 8), prune_type="depth_wise", blocks=9)


# ---- save / load / onnx ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "prune_type"),
    [("vgg_small", "filter_wise"), ("resnet20", "channel_wise"), ("resnet20", "depth_wise")],
)
def test_pruned_model_reloads_without_rebuilding_by_hand(
    tmp_path: Path, arch: str, prune_type: str
) -> None:
    dense = randomize_bn(create_model(arch, 10))
    r = prune(dense, (3, 16, 16), prune_type=prune_type, ratio=0.5, blocks=3)
    path = tmp_path / "pruned.pt"
    save_model(
        r.model, path, arch=arch, num_classes=10, input_shape=(3, 16, 16), meta={"note": "x"}
    )
    loaded = load_model(path)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), r.model.eval()(x))
    info = model_info(path)
    assert info["arch"] == arch and info["meta"] == {"note": "x"}
    assert info["input_shape"] == [3, 16, 16]


def test_model_file_holds_no_code(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    save_model(create_model("vgg_small", 10), path, arch="vgg_small", num_classes=10)
    torch.load(path, weights_only=True)  # the whole file is plain data and tensors


def test_file_with_pickled_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (marker.touch, ())

    path = tmp_path / "evil.pt"
    torch.save({"format": "sslsearch.model/1", "x": Evil()}, path)
    with pytest.raises(ModelFileError, match="refused"):
        load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_file_gives_a_clear_error(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "m.pt"
    save_model(create_model("vgg_small", 10), path, arch="vgg_small", num_classes=10)
    data = path.read_bytes()
    path.write_bytes(
        {"truncate": data[: len(data) // 2], "garbage": b"not a model", "empty": b""}[damage]
    )
    with pytest.raises(ModelFileError, match="corrupted, truncated"):
        load_model(path)


def test_missing_or_foreign_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "nope.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ModelFileError, match="not a sslsearch model file"):
        load_model(tmp_path / "foreign.pt")


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.pt"
    save_model(create_model("vgg_small", 10), path, arch="vgg_small", num_classes=10)
    good = path.read_bytes()

    def boom(*a: object, **k: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_model(create_model("vgg_small", 10), path, arch="vgg_small", num_classes=10)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_onnx_export_of_a_pruned_model_runs(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    dense = randomize_bn(create_model("resnet20", 10))
    r = prune(dense, (3, 16, 16), prune_type="filter_wise", ratio=0.5)
    path = tmp_path / "m.onnx"
    export_onnx(r.model, (3, 16, 16), str(path))
    x = torch.randn(3, 3, 16, 16)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"input": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), r.model.eval()(x), rtol=1e-4, atol=1e-4)

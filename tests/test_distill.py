"""Logit distillation in the fine-tune (trial/_distill.py): the loss against its definition,
weight 0 as the plain fine-tune, a student that moves towards its teacher, what a result says
about its teacher, and the errors a user can cause."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from sslsearch.cli import main
from sslsearch.config import ConfigError, Recipe, TrialConfig
from sslsearch.errors import ModelFileError
from sslsearch.models import create_model, save_model
from sslsearch.trial import (
    MODEL_FILE,
    Distiller,
    distill_kl,
    finetune,
    run_baseline,
    run_trial,
)
from sslsearch.trial._train import make_optimizer, train_one_epoch

from .conftest import randomize_bn

QUICK = {"epochs": 1, "finetune_epochs": 1, "batch_size": 128}


def _cfg(**changes: Any) -> TrialConfig:
    recipe = {**QUICK, **changes.pop("recipe", {})}
    base: dict[str, Any] = {
        "arch": "vgg_small",
        "flops_budget": 0.3,
        "threads": 1,
        "latency_repeats": 1,
        "recipe": recipe,
    }
    return TrialConfig.from_dict({**base, **changes})


# ---- the loss --------------------------------------------------------------------------------


def test_distill_kl_is_t_squared_times_kl_of_the_softened_outputs() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    for temp in (1.0, 4.0):
        ps, pt = torch.softmax(s / temp, 1), torch.softmax(t / temp, 1)
        explicit = sum(
            float(pt[i, c] * (math.log(pt[i, c]) - math.log(ps[i, c])))
            for i in range(5)
            for c in range(7)
        )
        got = float(distill_kl(s, t, temp))
        assert got == pytest.approx(temp * temp * explicit / 5, rel=1e-5)
    assert float(distill_kl(t, t, 4.0)) == pytest.approx(0.0, abs=1e-6)


def _tiny(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 10),
    )


def _batches(n: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g))] * n


def _epochs(model: nn.Module, epochs: int, distill: Distiller | None) -> list[Any]:
    opt = make_optimizer(model, 0.05, Recipe())
    return [
        train_one_epoch(
            model,
            iter(_batches()),
            opt,
            lr_fn=lambda p: 0.05,
            steps_per_epoch=4,
            epoch=e,
            penalty=None,
            label_smoothing=0.0,
            device=torch.device("cpu"),
            distill=distill,
        )
        for e in range(epochs)
    ]


def test_weight_zero_is_the_plain_finetune_exactly() -> None:
    plain, mixed = _tiny(0), _tiny(0)
    teacher = randomize_bn(_tiny(1))
    a = _epochs(plain, 2, None)
    b = _epochs(mixed, 2, Distiller(teacher, 0.0, 4.0, "test"))
    assert [s.loss for s in a] == [s.loss for s in b]
    for (name, p), q in zip(plain.state_dict().items(), mixed.state_dict().values()):
        assert torch.equal(p, q), name
    assert math.isnan(a[0].distill) and b[0].distill > 0  # measured, weighed at 0


def _kl_on(student: nn.Module, teacher: nn.Module) -> float:
    x = torch.cat([b[0] for b in _batches(1)])
    with torch.no_grad():
        return float(distill_kl(student.eval()(x), teacher.eval()(x), 4.0))


def test_the_student_moves_towards_the_teacher_which_stays_as_it_is() -> None:
    teacher = randomize_bn(_tiny(1))
    frozen = copy.deepcopy(teacher.state_dict())
    before = _kl_on(_tiny(0), teacher)
    student, plain = _tiny(0), _tiny(0)
    stats = _epochs(student, 6, Distiller(teacher, 1.0, 4.0, "test"))
    _epochs(plain, 6, None)
    after = _kl_on(student, teacher)
    assert after < 0.5 * before and after < 0.5 * _kl_on(plain, teacher)
    assert stats[-1].distill < stats[0].distill  # the term the loss reports goes down too
    # eval mode under no_grad: no BatchNorm statistics, no weights of the teacher changed
    assert not teacher.training
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, frozen[k]), k


# ---- a trial ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def baseline_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dense baseline's model file, as a search writes it (``<exp>/baseline/model.pt``)."""
    exp = tmp_path_factory.mktemp("exp")
    result = run_baseline(_cfg(recipe={"epochs": 2, "finetune_epochs": 0}), str(exp))
    assert result.status == "ok"
    return exp / "baseline" / MODEL_FILE


def test_a_trial_says_what_it_distilled_from(baseline_file: Path) -> None:
    plain = run_trial(_cfg())
    assert plain.metrics["distilled_from"] is None and plain.metrics["distill_weight"] == 0
    fine = [h for h in plain.history if h["phase"] == "finetune"]
    assert math.isnan(fine[0]["distill_kl"])

    taught = run_trial(_cfg(recipe={"distill_weight": 0.5}, teacher=str(baseline_file)))
    m = taught.metrics
    assert taught.status == "ok" and m["distilled_from"] == "baseline"
    assert (m["distill_weight"], m["distill_temperature"]) == (0.5, 4.0)
    assert m["pruned_top1"] == plain.metrics["pruned_top1"]  # the same pruned model
    assert m["top1"] != plain.metrics["top1"] or m["test_top1"] != plain.metrics["test_top1"]
    fine = [h for h in taught.history if h["phase"] == "finetune"]
    assert fine[0]["distill_kl"] > 0

    own = run_trial(_cfg(recipe={"distill_weight": 0.5}))
    assert own.status == "ok" and own.metrics["distilled_from"] == "ssl_model"
    assert json.loads(own.metrics["config"])["recipe"]["distill_weight"] == 0.5


def test_a_distilled_point_resumed_mid_finetune_ends_as_an_uninterrupted_one(
    baseline_file: Path, tmp_path: Path
) -> None:
    cfg = _cfg(recipe={"finetune_epochs": 2, "distill_weight": 0.5}, teacher=str(baseline_file))
    full = run_trial(cfg).metrics
    store = str(tmp_path / "store")

    def stop_after_first_finetune_epoch(metrics: dict[str, Any], *_: Any) -> None:
        if metrics.get("phase") == "finetune":  # its state is saved before it is reported
            raise KeyboardInterrupt("simulated stop")

    with pytest.raises(KeyboardInterrupt):
        run_trial(cfg, stop_after_first_finetune_epoch, store)
    again: list[dict[str, Any]] = []
    resumed = run_trial(cfg, lambda m, *_: again.append(m), store).metrics
    # only the fine-tune's second epoch ran again, distilled
    trained = [m for m in again if not m["final"]]
    assert [(m["phase"], m["epoch"]) for m in trained] == [("finetune", 2)]
    assert trained[0]["distill_kl"] > 0
    assert resumed["distilled_from"] == "baseline"
    for k in ("top1", "test_top1", "flops"):
        assert resumed[k] == pytest.approx(full[k]), k


def test_a_user_teacher_is_named_by_its_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.pt"
    save_model(
        create_model("resnet20", 10, 1), path, arch="resnet20", num_classes=10, in_channels=1
    )
    r = run_trial(_cfg(recipe={"distill_weight": 0.3, "distill_temperature": 2}, teacher=str(path)))
    assert r.status == "ok" and r.metrics["distilled_from"] == str(path)


def test_distillation_does_not_change_the_ssl_model() -> None:
    a = _cfg()
    b = _cfg(recipe={"distill_weight": 0.5, "distill_temperature": 2.0})
    assert a.ssl_key() == b.ssl_key()


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"recipe": {"distill_weight": 1.5}}, "recipe.distill_weight"),
        ({"recipe": {"distill_weight": -0.1}}, "recipe.distill_weight"),
        (
            {"recipe": {"distill_weight": 0.5, "distill_temperature": 0}},
            "recipe.distill_temperature",
        ),
        ({"teacher": "t.pt"}, "teacher"),  # a teacher without a weight
        ({"recipe": {"distill_weight": 0.5}, "teacher": " "}, "teacher"),
    ],
)
def test_bad_distillation_settings_name_the_key(changes: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        _cfg(**changes)
    assert e.value.key == key


def test_a_missing_or_foreign_teacher_stops_the_trial_before_ssl_training(
    tmp_path: Path,
) -> None:
    reports: list[dict[str, Any]] = []
    with pytest.raises(ModelFileError, match="teacher not found"):
        run_trial(
            _cfg(recipe={"distill_weight": 0.5}, teacher=str(tmp_path / "none.pt")),
            lambda m, *_: reports.append(m),
        )
    assert reports == []  # nothing trained
    four = tmp_path / "four.pt"
    save_model(
        create_model("vgg_small", 4, 1), four, arch="vgg_small", num_classes=4, in_channels=1
    )
    with pytest.raises(ModelFileError, match=r"gives 4 classes .* 10 classes"):
        run_trial(_cfg(recipe={"distill_weight": 0.5}, teacher=str(four)))


def test_cli_bad_settings_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        (["--distill-weight", "2"], "recipe.distill_weight"),
        (["--distill-weight", "0.5", "--teacher", str(tmp_path / "x.pt")], "teacher not found"),
        (["--teacher", str(tmp_path / "x.pt")], "distill_weight > 0"),
        (["--distill-weight", "0.5", "--distill-temperature", "-1"], "distill_temperature"),
    ]
    for args, text in cases:
        assert main(["trial", "--out", str(tmp_path / "out"), *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and text in err, err
    assert not (tmp_path / "out").exists()


# ---- sslsearch finetune ----------------------------------------------------------------------


def test_finetune_distils_only_with_a_teacher(
    baseline_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "small.pt"
    save_model(
        create_model("vgg_small", 10, 1),
        src,
        arch="vgg_small",
        num_classes=10,
        in_channels=1,
        input_shape=(1, 8, 8),
    )
    rec = Recipe(finetune_epochs=1, batch_size=128, distill_weight=0.5)
    with pytest.raises(ConfigError, match="needs a teacher"):
        finetune(src, recipe=rec)
    r = finetune(src, recipe=rec, teacher=str(baseline_file), out=tmp_path / "ft.pt")
    assert r.metrics["distilled_from"] == "baseline" and r.history[0]["loss"] > 0
    # the file's own recipe distilled; without --teacher the command fine-tunes plainly
    args = ["finetune", str(tmp_path / "ft.pt"), "--out", str(tmp_path / "again.pt"), "--json"]
    assert main([*args, "--epochs", "1"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["distilled_from"] is None and again["distill_weight"] == 0


# ---- a search --------------------------------------------------------------------------------


def test_search_points_distil_from_the_baseline_when_there_is_one(tmp_path: Path) -> None:
    from sslsearch.config import space_from_mapping
    from sslsearch.search._trainable import distill_teacher

    from .spaces import with_changes

    def teacher(**changes: Any) -> str | None:
        return distill_teacher(space_from_mapping(with_changes(**changes)), str(tmp_path))

    on = {"recipe": {**QUICK, "distill_weight": 0.5}}
    assert teacher(reference={"baseline": True}, **on) == str(tmp_path / "baseline" / MODEL_FILE)
    assert teacher(reference={"baseline": "weights"}, weights="w.pt", **on) is not None
    assert teacher(**on) is None  # no baseline: each point's SSL model teaches
    assert teacher(reference={"baseline": True}) is None  # no distillation


# A distilled search end to end (its baseline trained first, every point distilled from it):
# test_search.py's test_a_distilled_search_trains_its_baseline_first_and_says_so, on the
# search that module's reference tests share.

"""Early stopping inside fine-tuning: a point is compared with finished points at the same
fine-tune epoch, never at epoch 0 or before the first drop of the learning rate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from sslsearch.config import Recipe, TrialConfig
from sslsearch.search._study import classify
from sslsearch.trial import run_points
from sslsearch.trial._early import CURVE_KEY, FrontStop, first_check_epoch

OBJ = [("top1", "max"), ("flops", "min"), ("size_mb", "min")]
# a multi-step fine-tune of 20 epochs, milestones 0.5 and 0.75 (vgg16_bn / resnet50 spaces):
# top-1 jumps after epochs 10 and 15
JUMPS = [50.0 + e for e in range(10)] + [80.0 + e / 10 for e in range(5)] + [85.0] * 5
MULTISTEP = Recipe(finetune_epochs=20, schedule="multistep", milestones=(0.5, 0.75))


def _finished(tmp: Path, pid: str, **row: Any) -> str:
    d = tmp / "points" / pid
    d.mkdir(parents=True)
    full = {"status": "ok", "trial_id": pid, "flops": 100, "size_mb": 1.0, **row}
    (d / "result.json").write_text(json.dumps(full))
    return str(tmp / "points")


def _cand(epoch: int, top1: float, recipe: Recipe = MULTISTEP, **kw: float) -> dict[str, float]:
    return {
        "top1": top1,
        "flops": 120.0,
        "params": 10.0,
        "size_mb": 1.5,
        "epoch": float(epoch),
        "epochs": float(recipe.finetune_epochs),
        "first_check": float(first_check_epoch(recipe)),
        **kw,
    }


def test_first_check_is_one_whole_epoch_after_the_first_lr_drop() -> None:
    assert first_check_epoch(MULTISTEP) == 11
    assert first_check_epoch(Recipe(finetune_epochs=15, schedule="multistep")) == 9  # drop 7.5
    assert first_check_epoch(Recipe(finetune_epochs=20, schedule="multistep", milestones=(0.3,)))
    assert first_check_epoch(Recipe(finetune_epochs=4, schedule="cosine")) == 3
    assert first_check_epoch(Recipe(finetune_epochs=10, schedule="constant")) == 6
    assert first_check_epoch(Recipe(finetune_epochs=1, schedule="cosine")) == 2  # never: 1 epoch


def test_never_at_epoch_0_nor_before_the_first_drop_nor_at_the_end(tmp_path: Path) -> None:
    # a finished point better and cheaper at every epoch
    points = _finished(tmp_path, "a-0", top1=99.0, flops=1, size_mb=0.1, **{CURVE_KEY: [99.0] * 20})
    stop = FrontStop(points, OBJ, margin=0.0)
    assert stop(_cand(0, 0.0)) is None  # right after pruning
    assert all(stop(_cand(e, 1.0)) is None for e in range(1, 11))  # before the first milestone
    assert stop(_cand(20, 1.0)) is None  # done: nothing left to save
    assert stop(_cand(11, 1.0))  # one whole epoch after the drop
    # without the fine-tune's schedule (the old epoch-0 call's candidate) it never stops
    assert stop({"top1": 1.0, "flops": 120.0, "size_mb": 1.5, "epoch": 0.0}) is None
    assert stop({"top1": 1.0, "flops": 120.0, "size_mb": 1.5, "epoch": 12.0}) is None
    # grace_epochs delays the first check; it never brings it before the drop
    assert FrontStop(points, OBJ, margin=0.0, grace_epochs=14)(_cand(13, 1.0)) is None
    assert FrontStop(points, OBJ, margin=0.0, grace_epochs=14)(_cand(14, 1.0))
    assert FrontStop(points, OBJ, margin=0.0, grace_epochs=1)(_cand(5, 1.0)) is None


def test_stops_a_point_a_finished_one_dominates_at_the_same_epoch(tmp_path: Path) -> None:
    points = _finished(tmp_path, "a-0", top1=85.0, **{CURVE_KEY: JUMPS})
    (tmp_path / "points" / "b-0").mkdir()  # a point still running: no result yet
    stop = FrontStop(points, OBJ, margin=1.0)
    why = stop(_cand(12, 79.0))  # a-0 had 80.1 at epoch 12, at lower costs
    assert why and "a-0" in why and "epoch 12/20" in why
    assert stop(_cand(12, 79.2)) is None  # within the margin
    assert FrontStop(points, OBJ, margin=0.0)(_cand(12, 79.2))
    # not cheaper in every cost: not dominated, whatever its top-1
    assert stop(_cand(12, 10.0, flops=90.0)) is None
    assert stop(_cand(12, 10.0, size_mb=0.5)) is None


def test_below_a_finished_points_final_top1_but_not_at_the_same_epoch_is_not_stopped(
    tmp_path: Path,
) -> None:
    # the multi-step jump: at epoch 11 a-0 had 80.0; it ended at 85.0. A point at 82 after
    # epoch 11 may still jump at epoch 15 and end on the front: comparing it with a-0's final
    # 85 (the old rule) would stop it
    points = _finished(tmp_path, "a-0", top1=85.0, **{CURVE_KEY: JUMPS})
    stop = FrontStop(points, OBJ, margin=1.0)
    assert stop(_cand(11, 82.0)) is None
    assert stop(_cand(16, 82.0))  # after the second drop a-0 was at 85.0 already


def test_only_comparable_finished_points_dominate(tmp_path: Path) -> None:
    d = tmp_path / "p"
    for pid, row in {
        "old-0": {"top1": 99.0},  # finished before curves were kept: no curve
        "short-0": {"top1": 99.0, CURVE_KEY: [99.0] * 10},  # another fine-tune length
        "stopped-0": {"status": "stopped", CURVE_KEY: [99.0] * 20},
        "failed-0": {"status": "failed", CURVE_KEY: [99.0] * 20},
    }.items():
        _finished(d, pid, flops=1, size_mb=0.1, **row)
    assert FrontStop(str(d / "points"), OBJ, margin=0.0)(_cand(12, 1.0)) is None


def test_an_objective_known_only_at_the_end_turns_it_off(tmp_path: Path) -> None:
    points = _finished(
        tmp_path, "a-0", top1=99.0, latency_ms=0.1, top5=100.0, **{CURVE_KEY: [99.0] * 20}
    )
    for extra in ("latency_ms", "top5"):
        assert FrontStop(points, [*OBJ, (extra, "min")], margin=0.0)(_cand(12, 1.0)) is None


def test_a_stopped_point_has_status_stopped_its_curve_and_is_pruned_in_the_study(
    tmp_path: Path,
) -> None:
    base = TrialConfig.from_dict(
        {
            "arch": "vgg_small",
            "ssl_lambda": 0.03,
            "threads": 1,
            "recipe": {"epochs": 1, "finetune_epochs": 4, "batch_size": 64},
            "latency_repeats": 1,
            "cache_dir": str(tmp_path / "ssl_models"),
        }
    )
    # a finished point with the same fine-tune, better and cheaper than any real one
    points = _finished(
        tmp_path, "a-0", top1=100.0, flops=1, params=1, size_mb=1e-6, **{CURVE_KEY: [100.0] * 4}
    )
    front = FrontStop(points, OBJ, margin=0.0)
    seen: list[dict[str, Any]] = []

    def stop(candidate: dict[str, Any]) -> str | None:
        why = front(candidate)
        seen.append({**candidate, "why": why})
        return why

    [res] = run_points([base.with_(ratio=0.3)], stop=stop, point_ids=["b-0"], points_dir=points)
    assert res.status == "stopped" and res.error and "a-0" in res.error
    checks = [c for c in seen if "first_check" in c]  # asked after fine-tune epochs 1-3
    assert [(c["epoch"], c["why"] is None) for c in checks] == [(1, True), (2, True), (3, False)]
    assert all(c["why"] is None for c in seen if c["epoch"] < 3)  # never at epoch 0, nor 1, 2
    on_disk = json.loads((tmp_path / "points" / "b-0" / "result.json").read_text())
    assert on_disk["status"] == "stopped" and len(on_disk[CURVE_KEY]) == 3
    assert on_disk["flops"] < on_disk["flops_before"]  # exact costs kept
    state, values, reason = classify(on_disk, ["top1", "flops", "size_mb"])
    assert state == TrialState.PRUNED and values is None and reason == on_disk["error"]
    # a point run to its end carries its whole curve: what the next points are compared with
    [ok] = run_points([base.with_(ratio=0.3)], point_ids=["c-0"])
    assert ok.status == "ok" and len(ok.metrics[CURVE_KEY]) == 4
    assert ok.metrics[CURVE_KEY][-1] == round(ok.metrics["val_top1"], 4)
    assert ok.metrics[CURVE_KEY] == [
        round(m["val_top1"], 4) for m in ok.history if m["phase"] == "finetune"
    ]

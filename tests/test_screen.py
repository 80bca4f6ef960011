"""The screen: an SSL model pruned at a grid of budgets before any point is fine-tuned; only the
chosen values become points (rows, Optuna trials); a crash during or after the screen resumes
without training the SSL model again."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from sslsearch.config import ConfigError, TrialConfig, space_from_mapping
from sslsearch.trial import SCREEN_FILE, ScreenSpec, choose, run_points

from .spaces import with_changes
from .test_points import _ssl_epochs_trained
from .test_trial import Recorder

TINY = {"epochs": 2, "finetune_epochs": 1, "batch_size": 64}
GRID = (0.05, 0.1, 0.2, 0.4, 0.8)
IDS = ["j-0", "j-1", "j-2"]
OBJ = (("top1", "max"), ("flops", "min"))


def _row(value: float, top1: float, flops: float) -> dict[str, Any]:
    return {
        "value": value,
        "top1": top1,
        "flops": flops,
        "params": flops,
        "size_mb": flops / 100,
        "flops_before": 100.0,
        "params_before": 100.0,
        "size_mb_before": 1.0,
    }


def test_choose_takes_the_values_that_add_the_most_hypervolume() -> None:
    rows = [
        _row(0.1, 20.0, 10.0),  # cheap but near chance: adds little
        _row(0.2, 90.0, 20.0),  # the knee: adds the most
        _row(0.4, 91.0, 40.0),
        _row(0.6, 89.0, 60.0),  # dominated by the 0.4 row
        _row(0.8, 95.0, 80.0),
    ]
    first = choose(rows, 1, OBJ)
    assert first == [1]
    two = choose(rows, 2, OBJ)
    assert two[0] == 1 and 3 not in two
    assert sorted(choose(rows, 4, OBJ)) == [0, 1, 2, 4]  # every non-dominated value first
    # more points than non-dominated values: the dominated one fills in, never twice
    assert sorted(choose(rows, 5, OBJ)) == [0, 1, 2, 3, 4]
    assert sorted(choose(rows, 9, OBJ)) == [0, 1, 2, 3, 4]


def test_choose_fills_from_the_next_fronts_spread_in_the_amount() -> None:
    # saturated: 90 % from 0.1 up; only 0.05 and 0.1 add hypervolume
    rows = [_row(0.05, 50.0, 5.0)] + [_row(v, 90.0, 100 * v) for v in (0.1, 0.2, 0.3, 0.8)]
    rows.append(_row(0.6, 85.0, 60.0))  # dominated by 0.2 and 0.3 alike
    picks = choose(rows, 4, OBJ)
    assert sorted(picks[:2]) == [0, 1]
    # then the best remaining front ({0.2}), then the next ({0.3}), never a value twice
    assert picks[2:] == [2, 3]
    # a collapsed SSL model (chance everywhere): the cheapest values, one after another
    flat = [_row(v, 10.0, 100 * v) for v in (0.05, 0.1, 0.2, 0.4, 0.8)]
    assert choose(flat, 3, OBJ) == [0, 1, 2]


def _cfgs(tmp: Path) -> list[TrialConfig]:
    base = TrialConfig.from_dict(
        {
            "arch": "vgg_small",
            "ssl_lambda": 0.1,
            "threads": 1,
            "recipe": dict(TINY),
            "latency_repeats": 1,
            "min_width_share": 0.05,
            "cache_dir": str(tmp / "ssl_models"),
        }
    )
    return [base.with_(flops_budget=0.3)] * 3  # the screen chooses every point's budget


def _spec() -> ScreenSpec:
    return ScreenSpec("flops_budget", GRID, OBJ)


def _screened_job(tmp_path: Path, **kw: Any) -> tuple[Recorder, list[Any]]:
    """One job of three points from ``_cfgs``, screened at ``GRID``, its states recorded."""
    rec = Recorder(tmp_path / "rec")
    points = str(tmp_path / "points")
    results = run_points(
        _cfgs(tmp_path), rec, rec.store, point_ids=IDS, points_dir=points, screen=_spec(), **kw
    )
    return rec, results


def test_a_screened_job_fine_tunes_only_the_chosen_values(tmp_path: Path) -> None:
    rec, results = _screened_job(tmp_path)
    assert [r.status for r in results] == ["ok"] * 3
    screen = json.loads((rec.state_dir / SCREEN_FILE).read_text())
    rows = screen["rows"]
    # the grid plus the value the sampler asked (0.3), in order, each measured
    assert [r["value"] for r in rows] == sorted([*GRID, 0.3])
    assert all(0 <= r["top1"] <= 100 and r["flops"] < r["flops_before"] for r in rows)
    assert screen["key"] == "flops_budget" and screen["ssl_lambda"] == 0.1
    chosen = {r["point_id"]: r for r in rows if r["chosen"]}
    assert sorted(chosen) == IDS  # exactly one screened value per point, never more
    for pid, r in zip(IDS, results):
        m = r.metrics
        assert m["flops_budget"] == chosen[pid]["value"]  # the point ran what was chosen
        assert m["screen_top1"] == chosen[pid]["top1"]
        assert m["screen_candidates"] == len(rows)
        # the same pruning as the screen's: the same costs
        assert m["flops"] == chosen[pid]["flops"]
        on_disk = json.loads((tmp_path / "points" / pid / "result.json").read_text())
        assert on_disk["flops_budget"] == m["flops_budget"]
    assert len({r.metrics["flops_budget"] for r in results}) == 3


def test_a_crash_during_the_screen_resumes_without_training_the_ssl_model_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sslsearch.trial._pipeline as pipeline

    real = pipeline.screen_model

    def crash(*a: Any, **k: Any) -> Any:
        raise KeyboardInterrupt("killed during the screen")

    monkeypatch.setattr(pipeline, "screen_model", crash)
    rec = Recorder(tmp_path / "rec")
    kw: dict[str, Any] = {"point_ids": IDS, "points_dir": str(tmp_path / "points")}
    with pytest.raises(KeyboardInterrupt):
        run_points(_cfgs(tmp_path), rec, rec.store, screen=_spec(), **kw)
    assert _ssl_epochs_trained(rec) == 2 and not (rec.state_dir / SCREEN_FILE).exists()

    calls = []

    def counted(*a: Any, **k: Any) -> Any:
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(pipeline, "screen_model", counted)
    again = Recorder(tmp_path / "rec2", resume=rec.state_dir)
    first = run_points(_cfgs(tmp_path), again, again.store, screen=_spec(), **kw)
    assert _ssl_epochs_trained(again) == 0  # the SSL model came from the state, not trained again
    assert calls == [1] and [r.status for r in first] == ["ok"] * 3

    # killed after the screen, during the second point: the same choices, no new screen
    monkeypatch.setattr(pipeline, "screen_model", crash)
    import shutil

    shutil.rmtree(tmp_path / "points")
    third = Recorder(tmp_path / "rec3")
    stopped = {"n": 0}
    real_prune = pipeline.prune_point

    def prune_then_die(*a: Any, **k: Any) -> Any:
        stopped["n"] += 1
        if stopped["n"] == 2:
            raise KeyboardInterrupt("killed at the second point")
        return real_prune(*a, **k)

    monkeypatch.setattr(pipeline, "screen_model", counted)
    monkeypatch.setattr(pipeline, "prune_point", prune_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_points(_cfgs(tmp_path), third, third.store, screen=_spec(), **kw)
    assert calls == [1, 1]
    monkeypatch.setattr(pipeline, "screen_model", crash)  # a second screen would fail
    monkeypatch.setattr(pipeline, "prune_point", real_prune)
    fourth = Recorder(tmp_path / "rec4", resume=third.state_dir)
    done = run_points(_cfgs(tmp_path), fourth, fourth.store, screen=_spec(), **kw)
    assert _ssl_epochs_trained(fourth) == 0
    assert [r.metrics["flops_budget"] for r in done] == [
        r.metrics["flops_budget"] for r in first
    ]  # the choices the state kept (the screen is deterministic: the same as before)


def test_a_screen_needs_a_searched_flops_params_or_ratio_range() -> None:
    ok = space_from_mapping(with_changes(economy={"points_per_ssl": 3, "screen": 8}))
    assert ok.economy.screen == 8
    bad = [
        (
            {"params": {"ssl_lambda": {"low": 1e-3, "high": 1e-1}, "flops_budget": 0.3}},
            "searches none",
        ),
        (
            {
                "params": {
                    "ssl_lambda": {"low": 1e-3, "high": 1e-1},
                    "latency_budget": {"low": 0.3, "high": 0.9},
                }
            },
            "latency budgets are not screened",
        ),
        ({"economy": {"points_per_ssl": 4, "screen": 3}}, "screen at least as many"),
        ({"economy": {"points_per_ssl": 1, "screen": 1}}, "0 (off) or >= 2"),
    ]
    for changes, text in bad:
        changes.setdefault("economy", {"points_per_ssl": 2, "screen": 4})
        with pytest.raises(ConfigError, match="screen") as e:
            space_from_mapping(with_changes(**changes))
        assert text in str(e.value)


def _final(pid: str, budget: float, top1: float, lam: float) -> dict[str, Any]:
    return {
        "final": True,
        "trial_id": pid,
        "point": int(pid.rsplit("-", 1)[1]),
        "status": "ok",
        "top1": top1,
        "flops": 1000 * budget,
        "size_mb": budget,
        "flops_budget": budget,
        "ssl_lambda": lam,
        "ratio": float("nan"),
        "blocks": -1,
        "screen_top1": top1 - 5,
        "screen_candidates": 8,
        "error": None,
    }


def _write(exp: Path, result: dict[str, Any]) -> None:
    d = exp / "points" / result["trial_id"]
    d.mkdir(parents=True, exist_ok=True)
    (d / "result.json").write_text(json.dumps(result))


def test_each_screened_point_is_one_optuna_trial_with_the_values_it_ran(tmp_path: Path) -> None:
    optuna = pytest.importorskip("optuna")
    from sslsearch.search._searcher import PointSearcher

    space = space_from_mapping(
        with_changes(
            economy={"points_per_ssl": 3, "screen": 8},
            budget={"num_samples": 12, "max_concurrent": 2},
            sampler={"name": "gp", "seed": 0},
        )
    )
    exp = tmp_path / "exp"
    s = PointSearcher(space, str(exp), f"sqlite:///{tmp_path}/study.db")
    s.open()
    assert s.view is not None and s.view.startup == 2  # 4 SSL models: 2 at random
    job = s.suggest("a")
    lam = job["points"][0]["ssl_lambda"]
    # the points copy the first: the screen chooses their budgets after SSL training
    assert all(p == {**job["points"][0], "trial_id": p["trial_id"]} for p in job["points"])
    ran = {"a-0": 0.11, "a-1": 0.27, "a-2": 0.64}
    for i, (pid, b) in enumerate(ran.items()):
        _write(exp, _final(pid, b, 90.0 + i, lam))
    s.on_trial_complete("a")
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path}/study.db")
    trials = {t.user_attrs["trial_id"]: t for t in study.trials}
    assert set(trials) == set(ran)  # screened values are never trials, only the points
    for pid, b in ran.items():
        t = trials[pid]
        assert t.state.name == "COMPLETE"
        assert t.params["flops_budget"] == b and t.params["ssl_lambda"] == lam  # what it ran
        assert t.values == [float(90 + int(pid[-1])), 1000 * b, b]
    # the sampler's view holds what the points ran, not what they were asked
    assert s.view.finished == 3
    got = {
        tuple(sorted(t.params.items())) for t in s.view.study.trials if t.state.name == "COMPLETE"
    }
    assert got == {
        tuple(sorted({"flops_budget": b, "ssl_lambda": lam}.items())) for b in ran.values()
    }
    # the random start-up counts SSL models: three points of one model leave it random
    assert s.view.in_startup()
    s.suggest("b")
    for i, b in enumerate((0.2, 0.3, 0.5)):
        _write(exp, _final(f"b-{i}", b, 80.0 + i, s.jobs["b"].points[0]["params"]["ssl_lambda"]))
    s.on_trial_complete("b")
    assert not s.view.in_startup()


def test_a_repeated_ssl_setting_is_replaced_by_a_random_one(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    from sslsearch.search._searcher import PointSearcher

    space = space_from_mapping(
        with_changes(
            economy={"points_per_ssl": 2, "screen": 4},
            budget={"num_samples": 8, "max_concurrent": 2},
        )
    )
    s = PointSearcher(space, str(tmp_path / "exp"), f"sqlite:///{tmp_path}/study.db")
    s.open()
    first = s.suggest("a")["points"][0]
    assert s.view is not None
    real = s.view.propose

    def repeat(pid: str, fixed: dict[str, Any], random: bool = False) -> Any:
        searched, params = real(pid, fixed, random)
        if random:
            return searched, params
        # what GP does when asked twice before anything finished: the same lambda again
        return {**searched, "ssl_lambda": first["ssl_lambda"]}, {
            **params,
            "ssl_lambda": first["ssl_lambda"],
        }

    s.view.propose = repeat  # type: ignore[method-assign]
    second = s.suggest("b")["points"][0]
    assert second["ssl_lambda"] != first["ssl_lambda"]


def _rungs(decide: Any, fractions: tuple[float, ...] = (0.5,), epochs: int = 2) -> Any:
    from sslsearch.trial import Rungs, rung_epochs

    return Rungs(rung_epochs(fractions, epochs), decide)


def test_an_ssl_model_stopped_at_a_rung_is_never_fine_tuned(tmp_path: Path) -> None:
    asked: list[tuple[int, dict[str, Any]]] = []

    def stop(rung: int, record: dict[str, Any]) -> tuple[bool, str]:
        asked.append((rung, record))
        return False, "rank 3 of 3"

    rec, results = _screened_job(tmp_path, rungs=_rungs(stop))
    assert [r.status for r in results] == ["stopped"] * 3
    for r in results:
        assert r.metrics["stopped_by"] == "multi_fidelity"
        assert "after 1 of 2 SSL epochs" in str(r.error) and "rank 3 of 3" in str(r.error)
        assert r.metrics.get("top1") is None and r.metrics.get("flops") is None
    assert _ssl_epochs_trained(rec) == 1  # stopped at the rung: half the SSL training
    assert not any(m.get("phase") == "finetune" for m in rec.metrics)
    # the rung's screen is kept, marked stopped; the part-trained model is never stored
    [(rung, record)] = asked
    assert rung == 0 and record["epochs_trained"] == 1 and len(record["rows"]) == 6
    kept = json.loads((rec.state_dir / "screen-r0.json").read_text())
    assert kept["status"] == "stopped" and kept["rung"] == 0
    assert not (rec.state_dir / SCREEN_FILE).exists()
    assert not list((tmp_path / "ssl_models").glob("*.pt"))


def test_a_promoted_ssl_model_trains_on_and_a_decision_is_asked_once(
    tmp_path: Path,
) -> None:
    calls: list[int] = []

    def once_killed(rung: int, record: dict[str, Any]) -> tuple[bool, str]:
        calls.append(rung)
        if len(calls) == 1:
            raise KeyboardInterrupt("killed while deciding")
        return True, "rank 1 of 2"

    kw: dict[str, Any] = {
        "point_ids": IDS,
        "points_dir": str(tmp_path / "points"),
        "screen": _spec(),
        "rungs": _rungs(once_killed),
    }
    rec = Recorder(tmp_path / "rec")
    with pytest.raises(KeyboardInterrupt):
        run_points(_cfgs(tmp_path), rec, rec.store, **kw)
    again = Recorder(tmp_path / "rec2", resume=rec.state_dir)
    results = run_points(_cfgs(tmp_path), again, again.store, **kw)
    assert calls == [0, 0]  # decided again after the kill, then never asked once more
    assert _ssl_epochs_trained(again) == 1  # the epoch before the rung was not trained again
    assert [r.status for r in results] == ["ok"] * 3
    kept = json.loads((again.state_dir / "screen-r0.json").read_text())
    assert kept["status"] == "ok" and kept["reason"] == "rank 1 of 2"
    assert json.loads((again.state_dir / SCREEN_FILE).read_text())["epochs_trained"] == 2


def test_the_search_keeps_the_ssl_models_whose_screens_add_the_most(tmp_path: Path) -> None:
    from sslsearch.search._promotion import make_promote
    from sslsearch.trial import rung_file

    def record(job: str, top1s: list[float]) -> dict[str, Any]:
        rows = [_row(v, t, 100 * v) for v, t in zip((0.1, 0.2, 0.4, 0.8), top1s)]
        return {"job_id": job, "rows": rows}

    exp = tmp_path / "exp"
    promote = make_promote(str(exp), "c", 0.5, list(OBJ))
    # alone at the rung: nothing to compare with
    go, why = promote(0, record("c", [10, 20, 30, 40]))
    assert go and "nothing to compare with" in why
    for job, top1s in (("a", [60, 80, 90, 95]), ("b", [70, 70, 75, 80])):
        d = exp / "jobs" / job
        d.mkdir(parents=True)
        (d / rung_file(0)).write_text(json.dumps(record(job, top1s)))
    go, why = promote(0, record("c", [10, 20, 30, 40]))  # dominated by a everywhere
    assert not go and "ranks 3 of 3" in why
    go, _ = promote(0, record("c", [99, 99, 99, 99]))  # the best everywhere
    assert go
    assert make_promote(str(exp), "c", 0.5, list(OBJ))(1, record("c", [1, 1, 1, 1]))[
        0
    ]  # rung 1: alone


def test_two_near_duplicate_good_models_are_not_both_stopped_at_a_rung(tmp_path: Path) -> None:
    """a and a2 (close lambdas) cover each other: alone each adds almost nothing to the union, so
    ranking by plain contribution keeps the two mediocre unique models and stops both of them."""
    from sslsearch.search._promotion import make_promote
    from sslsearch.trial import contributions, rung_file

    def record(job: str, values: tuple[float, ...], top1s: list[float]) -> dict[str, Any]:
        return {"job_id": job, "rows": [_row(v, t, 100 * v) for v, t in zip(values, top1s)]}

    grid = (0.1, 0.2, 0.4, 0.8)
    screens = {
        "a": record("a", grid, [60, 80, 90, 95]),
        "a2": record("a2", grid, [60, 80, 90, 95.1]),
        "b": record("b", grid, [70, 70, 75, 80]),  # alone ahead at 10% of the FLOPs
        "c": record("c", (0.05, 0.1, 0.2, 0.4), [50, 55, 60, 65]),  # alone at 5%
    }
    exp = tmp_path / "exp"
    for job in ("a", "b", "c"):
        (exp / "jobs" / job).mkdir(parents=True)
        (exp / "jobs" / job / rung_file(0)).write_text(json.dumps(screens[job]))
    # the plain rule (today's): a and a2 rank below b and c, and the best 2 of 4 go on
    plain = contributions([screens[j]["rows"] for j in ("a", "b", "c", "a2")], list(OBJ))
    assert sorted(range(4), key=lambda i: plain[i], reverse=True)[:2] == [2, 1]
    go, why = make_promote(str(exp), "a2", 0.5, list(OBJ))(0, screens["a2"])
    assert go and "shared with its nearest, job a" in why and "of 4 SSL models" in why
    # and a, judged with a2 at the rung too, goes on as well
    (exp / "jobs" / "a2").mkdir()
    (exp / "jobs" / "a2" / rung_file(0)).write_text(json.dumps(screens["a2"]))
    assert make_promote(str(exp), "a", 0.5, list(OBJ))(0, screens["a"])[0]


def test_multi_fidelity_needs_a_screen_and_increasing_fractions() -> None:
    ok = space_from_mapping(
        with_changes(
            economy={"points_per_ssl": 2, "screen": 4, "rungs": [0.25, 0.5], "screen_steps": 20}
        )
    )
    assert ok.economy.rungs == (0.25, 0.5) and ok.economy.screen_steps == 20
    for economy, text in (
        ({"points_per_ssl": 2, "rungs": [0.5]}, "set economy.screen too"),
        ({"points_per_ssl": 2, "screen": 4, "rungs": [0.5, 0.25]}, "increasing fractions"),
        ({"points_per_ssl": 2, "screen": 4, "rungs": [1.0]}, "increasing fractions"),
        ({"points_per_ssl": 2, "screen": 4, "rungs": [0.5], "keep": 1.0}, "share in (0, 1)"),
        ({"points_per_ssl": 2, "screen_steps": 20}, "set economy.screen too"),
        ({"points_per_ssl": 2, "screen": 4, "screen_steps": -1}, "must be >= 0"),
    ):
        with pytest.raises(ConfigError) as e:
            space_from_mapping(with_changes(economy=economy))
        assert text in str(e.value)


def test_the_screen_grid_spans_the_range_exactly_on_its_own_scale() -> None:
    from sslsearch.search._plan import plan_search

    space = space_from_mapping(
        with_changes(
            params={
                "ssl_lambda": {"low": 1e-3, "high": 1e-1, "log": True},
                "flops_budget": {"low": 0.03, "high": 0.5, "log": True},
            },
            economy={"points_per_ssl": 2, "screen": 5},
        )
    )
    grid = plan_search(space).screen
    assert grid is not None
    key, values = grid
    assert key == "flops_budget" and len(values) == 5
    assert values[0] == 0.03 and values[-1] == 0.5  # exp(log(0.03)) would be 0.0299999...
    ratios = [b / a for a, b in itertools.pairwise(values)]
    assert ratios == pytest.approx([ratios[0]] * 4)  # evenly spaced in log FLOPs
    assert plan_search(space_from_mapping(with_changes())).screen is None  # screen 0: off


def test_the_end_of_a_search_never_overwrites_a_result_on_disk(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    from sslsearch.search._searcher import PointSearcher

    space = space_from_mapping(
        with_changes(economy={"points_per_ssl": 2}, budget={"num_samples": 2, "max_concurrent": 1})
    )
    exp = tmp_path / "exp"
    s = PointSearcher(space, str(exp), f"sqlite:///{tmp_path}/study.db")
    s.open()
    job = s.suggest("a")
    lam = job["points"][0]["ssl_lambda"]
    _write(exp, _final("a-0", 0.5, 90.0, lam))
    _write(exp, _final("a-1", 0.95, 91.0, lam))  # outside the range: the study refuses it
    s.on_trial_complete("a")
    s.suggest("b")  # FINISHED: every point asked
    assert s.ended_by_itself()
    assert s.close() == 0
    kept = json.loads((exp / "points" / "a-1" / "result.json").read_text())
    assert kept["status"] == "ok" and kept["top1"] == 91.0


def test_a_budget_below_the_layer_floors_fails_its_point_not_its_job(tmp_path: Path) -> None:
    base = _cfgs(tmp_path)[0]
    cfgs = [base.with_(flops_budget=b) for b in (0.5, 0.001, 0.3)]
    results = run_points(cfgs, point_ids=IDS, points_dir=str(tmp_path / "points"))
    assert [r.status for r in results] == ["ok", "failed", "ok"]
    assert "below what the layer floors allow" in str(results[1].error)
    # and a screen leaves such values out instead of failing the job
    rec = Recorder(tmp_path / "rec")
    spec = ScreenSpec("flops_budget", (0.001, 0.1, 0.4), OBJ)
    done = run_points(cfgs[:2], rec, rec.store, point_ids=IDS[:2], screen=spec)
    assert [r.status for r in done] == ["ok", "ok"]
    rows = json.loads((rec.state_dir / SCREEN_FILE).read_text())["rows"]
    assert [r["value"] for r in rows] == [0.1, 0.4, 0.5]  # 0.5: the value the points asked


def test_a_screen_chooses_what_adds_most_to_the_other_ssl_models_screens(tmp_path: Path) -> None:
    """Alone, the best single value is 40% of the FLOPs; another SSL model's screen already
    covers it (and 80%) better, so against the search's screens a cheap value is chosen."""
    from sslsearch.trial import SCREEN_FILE, ScreenSpec, choose

    grid = (0.1, 0.2, 0.4, 0.8)
    own = [_row(v, t, 100 * v) for v, t in zip(grid, [30, 50, 80, 90])]
    other = [_row(v, t, 100 * v) for v, t in zip(grid, [25, 45, 95, 97])]
    assert choose(own, 1, list(OBJ)) == [2]  # 0.4: the most hypervolume on its own
    (pick,) = choose(own, 1, list(OBJ), other)
    assert grid[pick] in (0.1, 0.2)
    # the other screens are the finished screen.json of the other jobs, of the same amount
    jobs = tmp_path / "jobs"
    for job, rows, key in (
        ("mine", own, "ratio"),
        ("b", other, "ratio"),
        ("c", own, "flops_budget"),
    ):
        (jobs / job).mkdir(parents=True)
        (jobs / job / SCREEN_FILE).write_text(json.dumps({"key": key, "rows": rows}))
    (jobs / "d").mkdir()  # still training: no screen yet
    spec = ScreenSpec("ratio", grid, OBJ, others=str(jobs))
    assert spec.other_screens("mine") == other
    assert spec.with_asked(_cfgs(tmp_path)[0]).others == str(jobs)


def test_recovery_steps_train_each_screened_copy_before_it_is_measured(tmp_path: Path) -> None:
    """``steps``: each pruned copy trains before it is measured (at the same costs, from the
    same SSL model, which stays as it was); a copy pruned hard recovers much of what pruning
    took, as it would in its fine-tune."""
    import torch

    from sslsearch.trial._pipeline import _log_report
    from sslsearch.trial._run import Run
    from sslsearch.trial._screen import screen_model
    from sslsearch.trial._ssl import train_ssl_model

    cfg = _cfgs(tmp_path)[0]
    run = Run(cfg, _log_report, {}, None)
    ssl = train_ssl_model(run)
    before = {k: v.clone() for k, v in ssl.model.state_dict().items()}
    plain = screen_model(run, cfg, ssl, ScreenSpec("flops_budget", (0.05, 0.3), OBJ))
    trained = screen_model(run, cfg, ssl, ScreenSpec("flops_budget", (0.05, 0.3), OBJ, steps=40))
    assert [r["flops"] for r in trained] == [r["flops"] for r in plain]
    assert trained[0]["top1"] > plain[0]["top1"] + 5  # the hard-pruned copy recovered
    assert all(torch.equal(v, before[k]) for k, v in ssl.model.state_dict().items())
    # the same steps again: the same figures (seeded batches)
    again = screen_model(run, cfg, ssl, ScreenSpec("flops_budget", (0.05, 0.3), OBJ, steps=40))
    assert [r["top1"] for r in again] == [r["top1"] for r in trained]
    with pytest.raises(ValueError, match=">= 0"):
        ScreenSpec("flops_budget", (0.1,), OBJ, steps=-1)

"""End-to-end searches on a local Ray instance (one per module, 2 CPUs, seconds per trial)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from sslsearch.search import SearchOptions, run_search
from sslsearch.search._references import distinct_choices

from .spaces import write_space

pytestmark = pytest.mark.slow
optuna = pytest.importorskip("optuna")


@pytest.fixture(scope="module")
def ray_cluster() -> Any:
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
    )
    yield ray
    ray.shutdown()


def _study(exp_dir: str) -> Any:
    return optuna.load_study(
        study_name=Path(exp_dir).name, storage=f"sqlite:///{exp_dir}/optuna.db"
    )


def _rows(exp_dir: str) -> list[dict[str, Any]]:
    return pq.read_table(Path(exp_dir) / "trials.parquet").to_pylist()


@pytest.fixture(scope="module")
def tiny(ray_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One real tiny search (4 points from one SSL model, its trial given both CPUs), shared by
    the tests below."""
    space = write_space(tmp_path_factory.mktemp("tiny"), resources={"cpus": 2})
    return run_search(SearchOptions(space=str(space), progress_every_s=1.0))


def test_tiny_search_end_to_end(tiny: Any) -> None:
    out = tiny
    rows = _rows(out.exp_dir)
    assert len(rows) == 4 and len({r["trial_id"] for r in rows}) == 4
    assert all(r["status"] == "ok" for r in rows)
    for r in rows:
        assert r["flops"] < r["flops_before"] and 0 < r["top1"] <= 100
        assert (Path(out.exp_dir) / r["model_path"]).is_file()
    # the study is multi-objective, in the space's order, and holds the true final values
    study = _study(out.exp_dir)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MINIMIZE"]
    assert study.metric_names == ["top1", "flops", "size_mb"]  # named for optuna-dashboard
    by_id = {r["trial_id"]: r for r in rows}
    for t in study.trials:
        assert t.state.name == "COMPLETE"
        r = by_id[t.user_attrs["trial_id"]]
        assert t.values == pytest.approx([r["top1"], r["flops"], r["size_mb"]])
    for name in ("pareto.md", "pareto.csv", "pareto.parquet", "pareto.png", "space.yaml"):
        assert (Path(out.exp_dir) / name).is_file(), name
    assert out.pareto is not None and out.pareto["fronts"][0].rows


def test_failed_and_early_stopped_trials_never_enter_the_study_as_complete(
    ray_cluster: Any, tmp_path: Path
) -> None:
    space = write_space(
        tmp_path,
        name="faults",
        # 3e38: the SSL penalty overflows float32 at the first step ("loss became inf"); a merely
        # huge lambda no longer fails a trial (the layer floor holds every layer at its floor)
        params={"ssl_lambda": {"choices": [3e38, 0.01]}, "ratio": {"low": 0.1, "high": 0.8}},
        recipe={"epochs": 4, "finetune_epochs": 1, "batch_size": 64},
        budget={"num_samples": 6, "max_concurrent": 2},
        early_stopping={"enabled": True, "margin": 0.0},
        economy={"points_per_ssl": 3},
    )
    out = run_search(SearchOptions(space=str(space)))
    rows = _rows(out.exp_dir)
    states = {t.user_attrs["trial_id"]: t for t in _study(out.exp_dir).trials}
    assert len(rows) == 6 and set(states) == {r["trial_id"] for r in rows}
    pareto_ids = set(
        pq.read_table(Path(out.exp_dir) / "pareto.parquet").column("trial_id").to_pylist()
    )
    for r in rows:
        t = states[r["trial_id"]]
        if r["ssl_lambda"] > 1e30:
            assert r["status"] == "failed" and "loss became" in r["error"]
            assert t.state.name == "FAIL" and "loss became" in t.user_attrs["reason"]
        if r["status"] == "ok":
            assert t.state.name == "COMPLETE"
            assert t.values[0] == pytest.approx(r["top1"])
        else:
            assert t.state.name in ("FAIL", "PRUNED")
            assert t.values is None
            assert r["trial_id"] not in pareto_ids
        if r["status"] == "stopped":
            assert t.state.name == "PRUNED"
    assert any(r["status"] == "failed" for r in rows)
    md = (Path(out.exp_dir) / "pareto.md").read_text()
    assert "failed" in md and "excluded" in md


def test_a_screened_multi_fidelity_search_keeps_study_rows_and_fronts_in_line(
    ray_cluster: Any, tmp_path: Path
) -> None:
    """Screen + multi-fidelity end to end: every ok point's row equals its Optuna trial (with
    the budget the screen chose), screened values are never rows, trials or front points, and
    an SSL model the rule stopped is never fine-tuned."""
    space = write_space(
        tmp_path,
        name="screened",
        recipe={"epochs": 2, "finetune_epochs": 1, "batch_size": 64},
        budget={"num_samples": 8, "max_concurrent": 1},
        economy={"points_per_ssl": 2, "screen": 4, "rungs": [0.5], "keep": 0.5},
    )
    out = run_search(SearchOptions(space=str(space)))
    exp = Path(out.exp_dir)
    rows = _rows(out.exp_dir)
    trials = {t.user_attrs["trial_id"]: t for t in _study(out.exp_dir).trials}
    assert len(rows) == 8 and set(trials) == {r["trial_id"] for r in rows}
    screens = pq.read_table(exp / "screens.parquet").to_pylist()
    assert screens and not {s["point_id"] for s in screens if s["point_id"]} - set(trials)
    pareto = pq.read_table(exp / "pareto.parquet").to_pylist()
    by_id = {r["trial_id"]: r for r in rows}
    assert all(by_id[p["trial_id"]]["status"] == "ok" for p in pareto)
    for r in rows:
        t = trials[r["trial_id"]]
        if r["status"] == "ok":  # the row is its trial: the budget it ran, its final values
            assert t.state.name == "COMPLETE"
            assert t.params["flops_budget"] == r["flops_budget"]
            assert t.params["ssl_lambda"] == r["ssl_lambda"]
            assert t.values == pytest.approx([r["top1"], r["flops"], r["size_mb"]])
            assert r["screen_candidates"] >= 4 and r["screen_top1"] is not None
        else:
            assert r["status"] == "stopped" and r["stopped_by"] == "multi_fidelity"
            assert t.state.name == "PRUNED" and t.values is None
    for job in {r["trial_dir"] for r in rows}:
        rung = json.loads((exp / job / "screen-r0.json").read_text())
        mine = [r for r in rows if r["trial_dir"] == job]
        history = [json.loads(x) for x in (exp / job / "history.jsonl").read_text().splitlines()]
        tuned = any(h["phase"] == "finetune" for h in history)
        if rung["status"] == "stopped":  # never fine-tuned, no model, no final screen
            assert {r["status"] for r in mine} == {"stopped"} and not tuned
            assert not (exp / job / "screen.json").exists()
            assert all(r["model_path"] is None for r in mine)
        else:
            assert {r["status"] for r in mine} == {"ok"} and tuned


def test_a_lambda_path_search_gives_each_step_an_ssl_model_rows_and_trials(
    ray_cluster: Any, tmp_path: Path
) -> None:
    """economy.lambda_path end to end: a job's steps are SSL models of their own (each from
    the last one's weights), each with its screened point at its own lambda, in the rows, the
    study and screens.parquet alike."""
    space = write_space(
        tmp_path,
        name="path",
        recipe={"epochs": 2, "finetune_epochs": 1, "batch_size": 64},
        budget={"num_samples": 4, "max_concurrent": 2},
        economy={"points_per_ssl": 1, "screen": 3, "lambda_path": 2, "path_epochs": 1},
    )
    out = run_search(SearchOptions(space=str(space)))
    exp = Path(out.exp_dir)
    rows = _rows(out.exp_dir)
    trials = {t.user_attrs["trial_id"]: t for t in _study(out.exp_dir).trials}
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    for job in {r["trial_dir"] for r in rows}:
        low, high = sorted(
            (r for r in rows if r["trial_dir"] == job), key=lambda r: r["ssl_lambda"]
        )
        assert high["ssl_lambda"] == pytest.approx(1.4 * low["ssl_lambda"])  # path_ratio
        assert high["ssl_model_id"] != low["ssl_model_id"]
        assert (low["path_step"], high["path_step"]) == (0, 1)
        start = json.loads(high["config"])["warm_start"]
        assert Path(start).name == f"{low['ssl_model_id']}.pt" and Path(start).is_file()
        assert high["cpu_seconds"] > low["cpu_seconds"]  # the job's CPU carries across steps
        assert (exp / job / "step1" / "screen.json").is_file()
    for r in rows:
        t = trials[r["trial_id"]]
        assert t.state.name == "COMPLETE" and t.params["ssl_lambda"] == r["ssl_lambda"]
    screens = pq.read_table(exp / "screens.parquet").to_pylist()
    assert {s["ssl_model_id"] for s in screens} == {r["ssl_model_id"] for r in rows}


def test_resources_per_trial_reach_the_trial(tiny: Any) -> None:
    rows = _rows(tiny.exp_dir)
    assert [r["threads"] for r in rows] == [2, 2, 2, 2]
    assert all(r["device"] == "cpu" and r["gpu_ids"] == "" for r in rows)


def test_export_of_a_real_experiment(tiny: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from sslsearch.cli import main
    from sslsearch.models import load_model

    exp = Path(tiny.exp_dir)
    (exp / "pareto.parquet").unlink()
    assert main(["export", str(exp)]) == 0
    table = pq.read_table(exp / "pareto.parquet")
    rows = [r for r in _rows(str(exp)) if r["status"] == "ok"]
    front = {r["trial_id"] for r in table.to_pylist() if r["front"] == "top1_vs_flops"}
    brute = {
        r["trial_id"]
        for r in rows
        if not any(
            o["top1"] >= r["top1"]
            and o["flops"] <= r["flops"]
            and (o["top1"] > r["top1"] or o["flops"] < r["flops"])
            for o in rows
        )
    }
    assert front == brute
    # every Pareto point's pruned model is kept and reproduces its reported top-1
    point = table.to_pylist()[0]
    model_file = exp / point["model_path"]
    assert model_file.is_file() and point["model_path"].startswith("pareto_models/")
    assert load_model(model_file) is not None
    capsys.readouterr()
    assert main(["evaluate", "--model", str(model_file), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["split"] == "val" and got["top1"] == pytest.approx(point["top1"])
    # --rescan rebuilds trials.parquet from the trial directories, with the search's metadata
    before = pq.read_table(exp / "trials.parquet")
    (exp / "trials.parquet").unlink()
    assert main(["export", str(exp), "--rescan", "--format", "md"]) == 0
    after = pq.read_table(exp / "trials.parquet")
    key = "trial_id"
    assert sorted(after.column(key).to_pylist()) == sorted(before.column(key).to_pylist())
    meta = {k.decode() for k in (after.schema.metadata or {})}
    assert meta == {k.decode() for k in (before.schema.metadata or {})}
    assert {"sslsearch.space", "sslsearch.objectives", "sslsearch.versions"} <= meta


def test_confirm_front_on_the_default_space_reruns_each_pareto_point_with_more_seeds(
    ray_cluster: Any, tmp_path: Path
) -> None:
    # The shipped default space (baseline and no-SSL reference on), a small budget, and
    # --confirm-front 2: every point on a front the export shows gets 2 more training seeds.
    from sslsearch.config import space_file
    from sslsearch.report import points_to_confirm

    opts = SearchOptions(
        space=space_file("default"),
        overrides=[
            f"storage_path={tmp_path / 'runs'}",
            "budget.num_samples=2",
            "economy.points_per_ssl=2",
            "recipe.epochs=2",
            "recipe.finetune_epochs=1",
        ],
        confirm_front=2,
    )
    out = run_search(opts)
    rows = _rows(out.exp_dir)
    firsts = [r for r in rows if not r["confirm_of"]]
    redo = [r for r in rows if r["confirm_of"]]
    assert {r["role"] for r in firsts} == {"search", "reference", "baseline"}
    wanted = points_to_confirm(firsts, [("top1", "max"), ("flops", "min"), ("size_mb", "min")])
    assert wanted and {r["confirm_of"] for r in redo} == set(wanted)
    by_id = {r["trial_id"]: r for r in firsts}
    for tid in wanted:
        mine = [r for r in redo if r["confirm_of"] == tid]
        assert sorted(r["seed"] for r in mine) == [1, 2]  # the space's seed 0, plus 1 and 2
        for r in mine:
            orig = by_id[tid]
            assert r["status"] == "ok" and r["role"] == orig["role"]
            assert (r["ssl_lambda"], r["flops_budget"], r["prune_way"]) == (
                orig["ssl_lambda"],
                orig["flops_budget"],
                orig["prune_way"],
            )
            # a fresh replicate: its own SSL model, trained with its own seed
            assert r["ssl_model_id"] != orig["ssl_model_id"]
    # points with the same SSL settings and seed share one SSL model
    keys = {(r["role"], r["ssl_lambda"], r["seed"]): r["ssl_model_id"] for r in redo}
    assert all(keys[(r["role"], r["ssl_lambda"], r["seed"])] == r["ssl_model_id"] for r in redo)
    # re-evaluations never enter the Optuna study, nor any front as points of their own
    study = _study(out.exp_dir)
    assert sorted(t.user_attrs["trial_id"] for t in study.trials) == sorted(
        r["trial_id"] for r in firsts if r["role"] == "search"
    )
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    pareto = pq.read_table(Path(out.exp_dir) / "pareto.parquet").to_pylist()
    confirm_ids = {r["trial_id"] for r in redo}
    assert pareto and not confirm_ids & {p["trial_id"] for p in pareto}
    for p in pareto:
        if p["trial_id"] in wanted:
            # the selected run apart: the means are over the 2 re-runs alone
            assert p["n_seeds"] == 2 and p["top1_mean"] is not None
            runs = [r for r in redo if r["confirm_of"] == p["trial_id"]]
            assert p["top1_mean"] == pytest.approx(sum(r["top1"] for r in runs) / 2)
    md = (Path(out.exp_dir) / "pareto.md").read_text()
    assert "Seeds:" in md
    assert out.counts == {"ok": 2}


# --- one search with references: the dense baseline, the lambda = 0 points, distillation ------
#
# Its budget range reaches below the model's layer floors, its points distil from the baseline;
# the tests below check its first run, then resume it unchanged (nothing re-runs), then with a
# larger budget (it extends): they run in this order.


@pytest.fixture(scope="module")
def referenced(ray_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    # a budget range that reaches below vgg_small's layer floors (about 0.03 at 8x8)
    params = {"ssl_lambda": {"low": 1e-3, "high": 1e-1, "log": True}}
    params["flops_budget"] = {"low": 0.001, "high": 0.8, "log": True}
    space = write_space(
        tmp_path_factory.mktemp("referenced"),
        name="referenced",
        params=params,
        recipe={"epochs": 2, "finetune_epochs": 1, "batch_size": 64, "distill_weight": 0.5},
        budget={"num_samples": 2, "max_concurrent": 2},
        economy={"points_per_ssl": 2},
        reference={"baseline": True, "lambda0": True},
    )
    out = run_search(SearchOptions(space=str(space)))
    return space, out, _rows(out.exp_dir)  # the rows as the first run left them


def test_existing_name_is_refused_and_resume_of_a_finished_search_reruns_nothing(
    referenced: Any,
) -> None:
    from sslsearch.errors import UserError

    space, out, rows = referenced
    # the range starts at the floors: as stated and as searched, kept with the experiment
    saved = yaml.safe_load((Path(out.exp_dir) / "space.yaml").read_text())
    low = saved["params"]["flops_budget"]["low"]
    assert 0.02 < low < 0.05 and saved["params"]["flops_budget"]["high"] == 0.8
    clamped = json.loads((Path(out.exp_dir) / "clamped_ranges.json").read_text())
    assert clamped["params.flops_budget"]["stated"]["low"] == 0.001
    meta = pq.read_table(Path(out.exp_dir) / "trials.parquet").schema.metadata
    assert json.loads(meta[b"sslsearch.clamped"]) == clamped
    assert all(r["flops_budget"] >= low for r in rows if r["role"] == "search")
    base = [r for r in rows if r["role"] == "baseline"]
    assert len(base) == 1 and base[0]["status"] == "ok" and base[0]["ssl_model_id"] is None
    assert base[0]["flops"] == base[0]["flops_before"] and base[0]["top1"] > 50
    # lambda = 0 reference points at the search's pruning choices, from one SSL model
    search = {r["trial_id"]: r for r in rows if r["role"] == "search"}
    refs = [r for r in rows if r["role"] == "reference"]
    choices = distinct_choices(list(search.values()))  # one reference per distinct choice
    assert sorted(r["trial_id"] for r in refs) == sorted(f"ref-{c['trial_id']}" for c in choices)
    assert len({r["ssl_model_id"] for r in refs}) == 1
    for r in refs:
        s = search[r["trial_id"][4:]]
        assert r["ssl_lambda"] == 0.0 and r["status"] == "ok"
        assert r["flops_budget"] == s["flops_budget"] and r["ratio"] is None
        assert r["ssl_model_id"] != s["ssl_model_id"]
    before = {p: p.stat().st_mtime_ns for p in Path(out.exp_dir).rglob("result.json")}
    with pytest.raises(UserError, match="already exists"):
        run_search(SearchOptions(space=str(space)))
    again = run_search(SearchOptions(space=str(space), resume=True))
    # the points, their references, the baseline: made once
    assert len(_rows(again.exp_dir)) == 3 + len(refs)
    after = {p: p.stat().st_mtime_ns for p in Path(out.exp_dir).rglob("result.json")}
    assert set(after) == set(before)  # no new trial and no new final checkpoint


def test_a_distilled_search_trains_its_baseline_first_and_says_so(referenced: Any) -> None:
    _, out, rows = referenced
    [base] = [r for r in rows if r["role"] == "baseline"]
    points = [r for r in rows if r["role"] != "baseline"]
    assert base["distilled_from"] is None and base["distill_weight"] == 0
    assert {r["role"] for r in points} == {"search", "reference"} and len(points) == 4
    for r in points:
        assert r["status"] == "ok" and r["distilled_from"] == "baseline", r
        assert r["distill_weight"] == 0.5 and r["distill_temperature"] == 4.0
        assert r["started_at"] >= base["finished_at"]  # the teacher existed before the points
    assert "distilled from a teacher's logits" in (Path(out.exp_dir) / "pareto.md").read_text()


def test_resume_with_a_larger_num_samples_extends_a_finished_search(
    referenced: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from sslsearch.errors import UserError

    space, first, _ = referenced
    # the search's own points (the baseline and the references are rows of their own)
    assert len([r for r in _rows(first.exp_dir) if r["role"] == "search"]) == 2
    before = {r["trial_id"]: r["finished_at"] for r in _rows(first.exp_dir)}
    # smaller budgets and other changes are refused, naming them, before anything starts
    for overrides, named in (
        (["budget.num_samples=1"], "budget.num_samples (was 2; --resume can only raise it)"),
        (["budget.num_samples=4", "recipe.lr=0.5"], "recipe.lr"),
    ):
        with pytest.raises(UserError, match=named.replace("(", r"\(").replace(")", r"\)")):
            run_search(SearchOptions(space=str(space), overrides=overrides, resume=True))
    with caplog.at_level("INFO", logger="sslsearch"):
        out = run_search(
            SearchOptions(space=str(space), overrides=["budget.num_samples=5"], resume=True)
        )
    assert "budget raised from 2 to 5 points" in caplog.text
    rows = _rows(out.exp_dir)
    search = [r for r in rows if r["role"] == "search"]
    assert len(search) == 5 and len({r["trial_id"] for r in search}) == 5
    assert all(r["status"] == "ok" for r in rows) and out.counts == {"ok": 5}
    old = {r["trial_id"]: r["finished_at"] for r in rows if r["trial_id"] in before}
    assert old == before  # the first points were kept, not re-run
    study = _study(out.exp_dir)
    assert len(study.trials) == 5 and all(t.state.name == "COMPLETE" for t in study.trials)
    by_id = {r["trial_id"]: r for r in search}
    assert {t.user_attrs["trial_id"] for t in study.trials} == set(by_id)
    for t in study.trials:
        assert t.values[0] == pytest.approx(by_id[t.user_attrs["trial_id"]]["top1"])
    assert "num_samples: 5" in (Path(out.exp_dir) / "space.yaml").read_text()
    # the same command again (budget 5 now) is accepted and runs nothing
    again = run_search(
        SearchOptions(space=str(space), overrides=["budget.num_samples=5"], resume=True)
    )
    assert {r["trial_id"]: r["finished_at"] for r in _rows(again.exp_dir)} == {
        r["trial_id"]: r["finished_at"] for r in rows
    }

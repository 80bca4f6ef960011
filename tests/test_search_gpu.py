"""Fake GPUs declared to Ray: trials share them by fraction and fall back to CPU cleanly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from sslsearch.search import SearchOptions, run_search

from .spaces import write_space

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_with_fake_gpus() -> Any:
    import ray

    # 2 real cores: 0.5 CPU + 0.5 GPU per trial packs 4 trials, as num_cpus=4 with 1 CPU would.
    ray.init(
        address="local",
        num_cpus=2,
        num_gpus=2,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
    )
    yield ray
    ray.shutdown()


def test_four_trials_share_two_gpus_and_run_on_cpu(ray_with_fake_gpus: Any, tmp_path: Path) -> None:
    space = write_space(
        tmp_path,
        name="gpus",
        recipe={"epochs": 6, "finetune_epochs": 2, "batch_size": 64},
        budget={"num_samples": 4, "max_concurrent": 4},
        resources={"cpus": 0.5, "gpu": 0.5},
        economy={"points_per_ssl": 1},  # four Tune trials, one point each: what is placed
    )
    out = run_search(SearchOptions(space=str(space)))
    rows = pq.read_table(Path(out.exp_dir) / "trials.parquet").to_pylist()
    assert [r["status"] for r in rows] == ["ok"] * 4
    assert out.max_running == 4  # all four were placed at once: 2 GPUs x 0.5
    # each trial got one fake GPU from Ray (two per GPU), and ran on the CPU since torch sees none
    assert sorted(r["gpu_ids"] for r in rows) == ["0", "0", "1", "1"]
    assert all(r["device"] == "cpu" for r in rows)
    assert all(r["threads"] == 1 for r in rows)

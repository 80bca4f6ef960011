from __future__ import annotations

import os

# Before torch loads OpenMP. Tests run beside each other on few cores (xdist workers, Ray
# trials, subprocesses): OpenMP threads that spin while they wait for a busy core made a
# 2-thread digits trial take 10.9 s with the other core busy, 3.8 s waiting passively (2-core
# VM; benchmarks/bench_omp_wait.py). Inherited by every process the tests start.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (pyproject's addopts): two test modules at a time on 2 cores, at most 4.
    Much of a search test is waiting (Ray starting, subprocesses, polls), so two overlap."""
    return max(2, min(4, _usable_cores() // 2))


# The modules that run Ray end to end, longest first (measured with --durations, 2 cores): each
# takes minutes in a few tests. xdist's default hands out modules by their number of tests, most
# first, which left these to the end, where one worker ran several of them while the other had
# finished; started first, the many short modules fill in around them.
LONGEST_FIRST = (
    "test_search.py",
    "test_faults.py",
    "test_cluster.py",
    "test_readme_example.py",
    "test_packaging.py",
    "test_search_gpu.py",
    "test_groups.py",
)


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep the order below
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest modules first, the others as collected (a stable sort keeps each module's
    tests in their order)."""

    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)


# Tests are small: keep torch from spreading over more threads than the CI machine has, shared
# among the worker processes.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, _usable_cores()) // _WORKERS))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def randomize_bn(model: torch.nn.Module) -> torch.nn.Module:
    """Give BatchNorm layers non-trivial statistics so eval-mode checks mean something."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()

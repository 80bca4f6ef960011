"""Shared helpers of the benchmark scripts: machine info, versions, statistics, interleaved
timing, tables and the results JSON.

Each script runs as ``python benchmarks/bench_<name>.py`` (this directory is then on sys.path)
and writes ``benchmarks/results/bench_<name>.json``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_DIR = Path(__file__).resolve().parents[1]


# ---- machine and versions --------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1e6, 2)
    except (OSError, ValueError, IndexError):
        pass
    return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, torch threads, OS, Python, GPU (if any) and the current load."""
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_cores_logical": os.cpu_count(),
        "cpu_cores_usable": usable,
        "memory_gb": _memory_gb(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_1_5_15min": load_average(),
    }
    return info


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git() -> dict[str, Any]:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_DIR, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "sslsearch"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return {"commit": head, "sslsearch_dirty": bool(dirty)}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "sslsearch_dirty": None}


def versions() -> dict[str, Any]:
    """Versions of the libraries that decide the numbers (read from metadata: no ray import)."""
    import torch

    import sslsearch

    return {
        "torch": torch.__version__,
        "ray": _version("ray"),
        "optuna": _version("optuna"),
        "sslsearch": sslsearch.__version__,
        "torchvision": _version("torchvision"),
        "torch_pruning": _version("torch-pruning"),
        "fvcore": _version("fvcore"),
        "numpy": _version("numpy"),
        "git": _git(),
    }


def command_line() -> str:
    return shlex.join([sys.executable, *sys.argv])


def set_threads(threads: int | None) -> int:
    """Use ``threads`` torch CPU threads (None: torch's default, one per usable core)."""
    import torch

    if threads is not None and threads >= 1:
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


# ---- statistics ------------------------------------------------------------------------------


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default method) of a non-empty sequence."""
    xs = sorted(float(v) for v in values)
    if not xs:
        return math.nan
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    if pos == lo:  # exact rank: no interpolation (inf stays inf instead of inf * 0 = nan)
        return xs[lo]
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return quantile(values, 0.5)


def summary(values: Sequence[float]) -> dict[str, float]:
    """n, median, p10, p25, p75, p90, min, max, mean of ``values``."""
    xs = [float(v) for v in values]
    if not xs:
        return {"n": 0}
    return {
        "n": len(xs),
        "median": median(xs),
        "p10": quantile(xs, 0.10),
        "p25": quantile(xs, 0.25),
        "p75": quantile(xs, 0.75),
        "p90": quantile(xs, 0.90),
        "min": min(xs),
        "max": max(xs),
        "mean": sum(xs) / len(xs),
    }


# ---- interleaved timing ----------------------------------------------------------------------


def interleaved(
    fns: Mapping[str, Callable[[], Any]],
    *,
    rounds: int,
    warmup: int = 1,
    sync: Callable[[], None] | None = None,
    on_round: Callable[[int], None] | None = None,
) -> dict[str, list[float]]:
    """Wall seconds of every call of each function, measured side by side.

    Each round calls every function once; the order rotates from round to round (AB, BA, ...
    for two) so that drifts of the machine's speed hit every variant alike. ``warmup`` untimed
    rounds come first. ``sync`` (e.g. ``torch.cuda.synchronize``) runs before each clock read.
    """
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            if sync is not None:
                sync()
            t0 = time.perf_counter()
            fns[name]()
            if sync is not None:
                sync()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
        if on_round is not None:
            on_round(r - warmup)
    return times


def paired(a: Sequence[float], b: Sequence[float], op: str = "ratio") -> list[float]:
    """Per-round ``b / a`` (op="ratio") or ``b - a`` (op="diff") of two interleaved series."""
    if op == "ratio":
        return [float(y) / float(x) for x, y in zip(a, b)]
    return [float(y) - float(x) for x, y in zip(a, b)]


# ---- output ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Col:
    key: str
    header: str
    fmt: str = ""  # format spec for numbers, e.g. ".2f"


def _cell(v: Any, fmt: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    if fmt and isinstance(v, (int, float)) and not isinstance(v, bool):
        return format(v, fmt)
    return str(v)


def format_table(rows: Sequence[Mapping[str, Any]], cols: Sequence[Col]) -> str:
    """A Markdown table (also readable as plain text)."""
    cells = [[_cell(r.get(c.key), c.fmt) for c in cols] for r in rows]
    widths = [max([len(c.header)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    out = ["| " + " | ".join(c.header.ljust(w) for c, w in zip(cols, widths)) + " |"]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        out.append(
            "| "
            + " | ".join((v.rjust(w) if _is_number(v) else v.ljust(w)) for v, w in zip(row, widths))
            + " |"
        )
    return "\n".join(out)


def _is_number(s: str) -> bool:
    try:
        float(s.rstrip("%x"))
    except ValueError:
        return False
    return True


def print_table(
    rows: Sequence[Mapping[str, Any]], cols: Sequence[Col], title: str | None = None
) -> None:
    if title:
        print(f"\n{title}")
    print(format_table(rows, cols), flush=True)


def print_header(title: str, machine: Mapping[str, Any], extra: str = "") -> None:
    print(f"== {title} ==")
    print(
        f"machine: {machine['cpu_model']}, {machine['cpu_cores_usable']} usable cores, "
        f"torch threads {machine['torch_threads']}, {machine['os']}, Python {machine['python']}"
        f", load average {machine['load_average_1_5_15min']}"
    )
    if extra:
        print(extra)
    print(flush=True)


def _jsonable(o: Any) -> Any:
    if hasattr(o, "item") and callable(o.item):  # numpy / torch scalars
        return o.item()
    if hasattr(o, "tolist") and callable(o.tolist):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _clean(o: Any) -> Any:
    """Non-finite floats become null (strict JSON), containers recursively."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def write_results(
    stem: str,
    *,
    machine: Mapping[str, Any],
    settings: Mapping[str, Any],
    results: Mapping[str, Any],
    started: float,
    notes: Sequence[str] = (),
    out: str | None = None,
) -> Path:
    """Write ``benchmarks/results/<stem>.json`` (or ``out``): machine, versions, command line,
    settings, notes and every raw figure."""
    path = Path(out) if out else RESULTS_DIR / f"{stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": stem,
        "command": command_line(),
        "cwd": os.getcwd(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_seconds": time.time() - started,
        "machine": dict(machine),
        "load_average_at_end": load_average(),
        "versions": versions(),
        "settings": dict(settings),
        "notes": list(notes),
        "results": dict(results),
    }
    text = json.dumps(_clean(json.loads(json.dumps(doc, default=_jsonable))), indent=1)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(text + "\n")
    tmp.replace(path)
    print(f"\nwrote {path} ({doc['wall_seconds']:.0f} s)", flush=True)
    return path


def pct(x: float) -> float:
    return 100.0 * x

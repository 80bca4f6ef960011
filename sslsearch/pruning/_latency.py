"""Latency as a pruning cost: a per-layer, per-width table measured once and cached (as HALP
does), and the measured latency of a whole model that the budget is judged by.

Each conv and Linear is timed alone at a grid of (input, output) widths on the device, batch size
and threads asked for; between grid points the table is interpolated bilinearly. The table only
has to rank moves and land near the target: the pruner then times the whole pruned model and
moves its goal by the miss (``_channel_removal``), because a model's latency is more than the sum
of its layers' (activations, pooling, memory traffic, launch overheads).

Tables are cached per layer signature, input size, batch size, device, threads and torch
version in ``LatencySpec.cache_dir`` (default ``$SSLSEARCH_CACHE`` or ``~/.cache/sslsearch``)
``/latency/``, so a search measures each layer once per machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sslsearch.metrics import measure_latency
from sslsearch.pruning._savings import CostModel, layer_shapes
from sslsearch.sparsity import COLS, CONV_IN, ROWS, Group
from sslsearch.storage import cache_root

log = logging.getLogger(__name__)

GRID = 5  # widths per dimension in a layer's table
TABLE_VERSION = 2  # how a table is made from its timings (part of the cache key)


@dataclass(frozen=True)
class LatencySpec:
    """How latency is measured: batch size, device, CPU threads, timed passes."""

    batch_size: int = 1
    device: str = "cpu"
    threads: int | None = None
    repeats: int = 30
    warmup: int = 5
    table_repeats: int = 7  # per grid point of a layer's table (median)
    cache_dir: str | None = None

    def cache_path(self) -> Path:
        return (Path(self.cache_dir) if self.cache_dir else cache_root()) / "latency"


def _signature(mod: nn.Module, in_shape: tuple[int, ...]) -> dict[str, Any]:
    if isinstance(mod, nn.Conv2d):
        return {
            "type": "conv",
            "in": mod.in_channels,
            "out": mod.out_channels,
            "k": list(mod.kernel_size),
            "stride": list(mod.stride),
            "padding": list(mod.padding) if isinstance(mod.padding, tuple) else mod.padding,
            "dilation": list(mod.dilation),
            "groups": mod.groups,
            "bias": mod.bias is not None,
            "input": list(in_shape),
        }
    assert isinstance(mod, nn.Linear)
    return {
        "type": "linear",
        "in": mod.in_features,
        "out": mod.out_features,
        "bias": mod.bias is not None,
        "input": list(in_shape),
    }


def _grid(width: int, step: int) -> list[int]:
    """GRID widths from the narrowest step to the full width, on multiples of ``step``."""
    lo = min(width, step)
    pts = np.linspace(lo, width, GRID)
    return sorted({min(width, max(lo, round(float(p) / step) * step)) for p in pts} | {width})


def _layer(sig: dict[str, Any], c_in: int, c_out: int) -> nn.Module:
    if sig["type"] == "linear":
        return nn.Linear(c_in, c_out, bias=sig["bias"])
    depthwise = sig["groups"] == sig["in"] == sig["out"] and sig["groups"] > 1
    groups = c_out if depthwise else sig["groups"]
    padding: Any = sig["padding"]
    padding = padding if isinstance(padding, str) else tuple(padding)
    return nn.Conv2d(
        c_in if not depthwise else c_out,
        c_out,
        tuple(sig["k"]),
        tuple(sig["stride"]),
        padding,
        tuple(sig["dilation"]),
        groups,
        bias=sig["bias"],
    )


class LatencyModel:
    """Measures whole models and builds (or loads) per-layer latency tables."""

    def __init__(self, spec: LatencySpec, input_shape: tuple[int, ...]) -> None:
        self.spec = spec
        self.input_shape = tuple(input_shape)
        self._cache: dict[str, Any] | None = None

    def measure(self, model: nn.Module) -> float:
        """Median milliseconds of one forward pass of ``model`` (moved to the spec's device)."""
        s = self.spec
        dev = torch.device(s.device)
        param = next(model.parameters())
        moved = param.device != dev
        if moved:
            model.to(dev)
        try:
            return measure_latency(
                model,
                self.input_shape,
                batch_size=s.batch_size,
                device=dev,
                warmup=s.warmup,
                repeats=s.repeats,
                threads=s.threads,
            ).median_ms
        finally:
            if moved:
                model.to(param.device)

    def relative(self, model: nn.Module, reference: nn.Module, rounds: int = 5) -> float:
        """``model``'s latency as a share of ``reference``'s, timed side by side: ``rounds``
        rounds, each timing both (in alternating order) with a share of the repeats; the ratio of
        their fastest round medians. Load on a shared machine only ever adds time, and a load
        that comes and goes can catch either model's round: the fastest rounds are the ones it
        touched least (a median of per-round ratios swung by 2x under a busy neighbour)."""
        s = self.spec
        per = max(3, s.repeats // rounds)
        mine, ref = [], []
        for i in range(rounds):
            pair = (model, reference) if i % 2 else (reference, model)
            times = [self._time(m, per) for m in pair]
            mine.append(times[0] if i % 2 else times[1])
            ref.append(times[1] if i % 2 else times[0])
        return float(min(mine) / max(min(ref), 1e-12))

    def _time(self, model: nn.Module, repeats: int) -> float:
        s = self.spec
        return measure_latency(
            model,
            self.input_shape,
            batch_size=s.batch_size,
            device=s.device,
            warmup=2,
            repeats=repeats,
            threads=s.threads,
        ).median_ms

    # ---- tables ------------------------------------------------------------------------

    def _key(self, sig: dict[str, Any]) -> str:
        s = self.spec
        ident = {
            "layer": sig,
            "batch": s.batch_size,
            "device": s.device,
            "threads": s.threads or torch.get_num_threads(),
            "torch": torch.__version__,
            "grid": GRID,
            "repeats": s.table_repeats,
            "table": TABLE_VERSION,
        }
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]

    def _load(self) -> dict[str, Any]:
        if self._cache is None:
            path = self.spec.cache_path() / "tables.json"
            try:
                self._cache = json.loads(path.read_text())
            except (OSError, ValueError):
                self._cache = {}
        return self._cache

    def _save(self) -> None:
        path = self.spec.cache_path() / "tables.json"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tables-")
            with os.fdopen(fd, "w") as f:
                json.dump(self._cache, f)
            os.replace(tmp, path)
        except OSError as e:  # a read-only home: tables are measured again next time
            log.warning("latency tables not cached at %s: %s", path, e)

    def table(self, mod: nn.Module, in_shape: tuple[int, ...], step: int) -> dict[str, Any]:
        """{"in": widths, "out": widths, "ms": [[...]]} for one layer (measured or cached)."""
        sig = _signature(mod, in_shape)
        key = self._key(sig)
        cache = self._load()
        if key in cache:
            return dict(cache[key])
        depthwise = sig["type"] == "conv" and sig["groups"] == sig["in"] == sig["out"] > 1
        g = 1 if sig["type"] == "linear" or depthwise else int(sig["groups"])
        st = math.lcm(step, g)
        ins = [sig["out"]] if depthwise else _grid(int(sig["in"]), st)
        outs = _grid(int(sig["out"]), st)
        ms = []
        s = self.spec
        for ci in ins:
            row = []
            for co in outs:
                layer = _layer(sig, ci if not depthwise else co, co).eval()
                shape = (ci if not depthwise else co, *in_shape[1:])
                layer.to(torch.device(s.device))
                lat = measure_latency(
                    layer,
                    shape,
                    batch_size=s.batch_size,
                    device=s.device,
                    warmup=2,
                    repeats=s.table_repeats,
                    threads=s.threads,
                )
                row.append(lat.p10_ms)
            ms.append(row)
        # A narrower layer is never slower. Load on a shared machine only adds time, so each
        # grid point is its fast end (p10 of the repeats), and a point slower than a wider one
        # takes the wider one's time: a spike is cut down, never spread to every wider width
        # (a running maximum from the narrow end flattened whole tables under load).
        a = np.asarray(ms)
        mono = np.minimum.accumulate(a[::-1, ::-1], axis=0)
        mono = np.minimum.accumulate(mono, axis=1)[::-1, ::-1]
        entry = {"in": ins, "out": outs, "ms": mono.tolist(), "depthwise": depthwise}
        cache[key] = entry
        self._save()
        return entry

    def cost_model(
        self, model: nn.Module, groups: list[Group], example: torch.Tensor
    ) -> TableCostModel:
        return TableCostModel.build_tables(self, model, groups, example)


def _interp(xs: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bracketing indices and weights of ``x`` in ``xs`` (linear extrapolation at the ends)."""
    if len(xs) == 1:
        z = np.zeros_like(x, dtype=np.int64)
        return z, z, np.zeros_like(x, dtype=np.float64)
    i = np.clip(np.searchsorted(xs, x) - 1, 0, len(xs) - 2)
    w = (x - xs[i]) / (xs[i + 1] - xs[i])
    return i, i + 1, w


@dataclass
class TableCostModel(CostModel):
    """Latency (ms) of a model as a function of the units each group removes: one table per
    conv/Linear, indexed by its kept input and output widths; the rest of the model constant."""

    tables: list[dict[str, Any]] | None = None
    widths: list[tuple[int, int]] | None = None  # dense (in, out) per term
    scale: float = 1.0  # measured ms per table ms (``calibrate``)

    @classmethod
    def build_tables(
        cls, lat: LatencyModel, model: nn.Module, groups: list[Group], example: torch.Tensor
    ) -> TableCostModel:
        base_model = CostModel.build(model, groups, example, "params", 0.0)
        index = base_model.axis_index
        shapes = {m: ins for m, (ins, _) in layer_shapes(model, example).items()}
        tables, widths, ax0, ax1, names, coef = [], [], [], [], [], []
        for name, mod in model.named_modules():
            if not isinstance(mod, (nn.Conv2d, nn.Linear)) or mod not in shapes:
                continue
            out_ax = in_ax = -1
            for g in groups:
                for sl in g.slices:
                    if sl.axis.param is mod.weight:
                        if sl.axis.kind == ROWS:
                            out_ax = index[id(sl.axis)]
                        elif sl.axis.kind in (CONV_IN, COLS):
                            in_ax = index[id(sl.axis)]
            step = 8
            t = lat.table(mod, shapes[mod], step)
            c_in = mod.in_channels if isinstance(mod, nn.Conv2d) else mod.in_features
            c_out = mod.out_channels if isinstance(mod, nn.Conv2d) else mod.out_features
            tables.append(t)
            widths.append((int(c_in), int(c_out)))
            ax0.append(out_ax)
            ax1.append(in_ax)
            names.append(name)
            coef.append(float(t["ms"][-1][-1]))
        tcm = cls(
            "latency",
            groups,
            0.0,
            np.asarray(coef),
            np.asarray(ax0, dtype=np.int64),
            np.asarray(ax1, dtype=np.int64),
            base_model.share,
            names,
            index,
            tables,
            widths,
        )
        tcm.base = lat.measure(model) - float(tcm._sum(np.ones(len(coef)), np.ones(len(coef))))
        return tcm

    def calibrate(self, dense_ms: float, floor_removed: np.ndarray, floor_ms: float) -> None:
        """Fit ``measured = base + scale * sum of tables`` through two measured models: the
        dense one and the one cut to every floor. The rest of a model (BatchNorm, activations,
        pooling, launch overheads) is partly constant and partly grows with the widths; two
        points capture both, and the floor model's latency is what no pruning can go below."""
        full = float(self._sum(np.ones(len(self.coef)), np.ones(len(self.coef))))
        f = self._kept(np.asarray(floor_removed, dtype=np.float64))
        low = float(self._sum(f[self.ax0], f[self.ax1]))
        if full - low > 1e-12 and dense_ms > floor_ms:
            self.scale = (dense_ms - floor_ms) / (full - low)
        else:
            self.scale = dense_ms / max(full, 1e-12)
        self.base = dense_ms - self.scale * full

    def _sum(self, f_out: np.ndarray, f_in: np.ndarray) -> np.ndarray:
        """Total of the tables at kept shares ``f_out``, ``f_in`` (shape (terms, ...))."""
        assert self.tables is not None and self.widths is not None
        total = np.zeros(f_out.shape[1:]) if f_out.ndim > 1 else np.zeros(())
        for t, tab in enumerate(self.tables):
            c_in, c_out = self.widths[t]
            ms = np.asarray(tab["ms"])
            xo = np.asarray(tab["out"], dtype=np.float64)
            wo = f_out[t] * c_out
            o0, o1, a = _interp(xo, wo)
            if tab["depthwise"]:
                v = ms[0, o0] * (1 - a) + ms[0, o1] * a
            else:
                xi = np.asarray(tab["in"], dtype=np.float64)
                wi = f_in[t] * c_in
                i0, i1, b = _interp(xi, wi)
                v = (ms[i0, o0] * (1 - a) + ms[i0, o1] * a) * (1 - b) + (
                    ms[i1, o0] * (1 - a) + ms[i1, o1] * a
                ) * b
            total = total + np.maximum(v, 0.0)
        return total

    def total(self, removed: np.ndarray) -> float:
        f = self._kept(np.asarray(removed, dtype=np.float64))
        return self.base + self.scale * float(self._sum(f[self.ax0], f[self.ax1]))

    def after_each(self, removed: np.ndarray, k: np.ndarray) -> np.ndarray:
        f = self._kept(np.asarray(removed, dtype=np.float64))
        k = np.asarray(k, dtype=np.float64)
        f0 = f[self.ax0][:, None] - self.share[self.ax0] * k[None, :]
        f1 = f[self.ax1][:, None] - self.share[self.ax1] * k[None, :]
        return self.base + self.scale * self._sum(f0, f1)

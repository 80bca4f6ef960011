from __future__ import annotations

import logging
import statistics
import time
import warnings
from dataclasses import asdict, dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass at batch size 1, counted by fvcore.

    fvcore counts one fused multiply-add as one flop (the convention of the seed's tables and of
    most CNN papers' "FLOPs"). Convolutions, linear layers, batch norm and adaptive pooling are
    counted; element-wise ops (ReLU, residual adds) and max pooling are not.
    """
    with warnings.catch_warnings():  # importing fvcore.nn runs torch.jit.script (deprecated)
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    was_training = model.training
    model.eval()
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.zeros((1, *input_shape), device=device)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # fvcore's tracer is chatty about jit deprecations
            analysis = FlopCountAnalysis(model, x)
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            return int(analysis.total())
    finally:
        model.train(was_training)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def size_mb(model: nn.Module) -> float:
    """Megabytes (10^6 bytes) of the saved state with floating tensors stored as fp32.

    Note: the seed's "model size/MB" column holds parameter counts in millions (vgg16_bn: 134.68),
    not bytes; sslsearch reports both ``params`` and true ``size_mb``.
    """
    total = 0
    for t in model.state_dict().values():
        itemsize = 4 if t.is_floating_point() else t.element_size()
        total += t.numel() * itemsize
    return total / 1e6


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p10_ms: float
    p90_ms: float
    batch_size: int
    device: str
    threads: int
    repeats: int


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    warmup: int = 5,
    repeats: int = 20,
    threads: int | None = None,
) -> Latency:
    """Median wall time of one eval-mode forward pass, after ``warmup`` untimed passes."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:  # "cuda" means the current device
        dev = torch.device("cuda", torch.cuda.current_device())
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    was_training = model.training
    model.eval()
    try:
        x = torch.randn((batch_size, *input_shape), device=dev)
        model_dev = next(model.parameters()).device
        if model_dev != dev:
            raise ValueError(f"model is on {model_dev}, latency asked on {dev}")
        times = []
        with torch.inference_mode():
            for i in range(warmup + repeats):
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                t0 = time.perf_counter()
                model(x)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                if i >= warmup:
                    times.append((time.perf_counter() - t0) * 1e3)
        qs = statistics.quantiles(times, n=10) if len(times) >= 2 else [times[0]] * 9
        return Latency(
            median_ms=statistics.median(times),
            p10_ms=qs[0],
            p90_ms=qs[-1],
            batch_size=batch_size,
            device=str(dev),
            threads=torch.get_num_threads(),
            repeats=repeats,
        )
    finally:
        model.train(was_training)
        torch.set_num_threads(old_threads)


@dataclass(frozen=True)
class Cost:
    flops: int
    params: int
    size_mb: float
    latency_ms: float | None = None
    latency_batch_size: int | None = None
    latency_device: str | None = None
    latency_threads: int | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def measure_cost(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    latency: bool = True,
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    repeats: int = 20,
    threads: int | None = None,
) -> Cost:
    lat = (
        measure_latency(
            model,
            input_shape,
            batch_size=batch_size,
            device=device,
            repeats=repeats,
            threads=threads,
        )
        if latency
        else None
    )
    return Cost(
        flops=count_flops(model, input_shape),
        params=count_params(model),
        size_mb=size_mb(model),
        latency_ms=lat.median_ms if lat else None,
        latency_batch_size=lat.batch_size if lat else None,
        latency_device=lat.device if lat else None,
        latency_threads=lat.threads if lat else None,
    )

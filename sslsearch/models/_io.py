"""Saving and loading (pruned) models without pickled code.

A file holds two things that ``torch.load(weights_only=True)`` accepts: the architecture as
data (registry name, constructor arguments, the kept width of every layer, the residual blocks
that became shortcuts) and the state dict. Loading rebuilds the dense model from the registry,
reshapes its layers to the stored widths and loads the weights. A model of the user's own
factory (``arch`` an import path, ``my_models:small_cnn``) stores that path, never the code:
it loads where the module can be imported, and says so in one line where it cannot.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sslsearch import storage
from sslsearch.errors import ModelFileError, UserError
from sslsearch.imports import is_import_path
from sslsearch.models._blocks import ResidualShortcut
from sslsearch.models._registry import create_model, get_model_spec

FORMAT = "sslsearch.model/1"


def architecture_of(model: nn.Module) -> dict[str, Any]:
    """The layer widths and replaced blocks of ``model`` as plain data."""
    layers: dict[str, dict[str, int]] = {}
    shortcuts: list[str] = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            layers[name] = {"in": m.in_channels, "out": m.out_channels, "groups": m.groups}
        elif isinstance(m, nn.BatchNorm2d):
            layers[name] = {"features": m.num_features}
        elif isinstance(m, nn.Linear):
            layers[name] = {"in": m.in_features, "out": m.out_features}
        elif isinstance(m, ResidualShortcut):
            shortcuts.append(name)
    return {"layers": layers, "shortcuts": shortcuts}


def _resize(m: nn.Module, spec: Mapping[str, int]) -> None:
    def fresh(t: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor | None:
        return None if t is None else torch.empty(shape, dtype=t.dtype)

    if isinstance(m, nn.Conv2d):
        cin, cout, g = int(spec["in"]), int(spec["out"]), int(spec["groups"])
        m.in_channels, m.out_channels, m.groups = cin, cout, g
        m.weight = nn.Parameter(fresh(m.weight, (cout, cin // g, *m.kernel_size)))  # type: ignore[arg-type]
        if m.bias is not None:
            m.bias = nn.Parameter(fresh(m.bias, (cout,)))  # type: ignore[arg-type]
    elif isinstance(m, nn.BatchNorm2d):
        n = int(spec["features"])
        m.num_features = n
        if m.affine:
            m.weight = nn.Parameter(torch.empty(n))
            m.bias = nn.Parameter(torch.empty(n))
        if m.track_running_stats:
            m.running_mean = torch.zeros(n)
            m.running_var = torch.ones(n)
    elif isinstance(m, nn.Linear):
        cin, cout = int(spec["in"]), int(spec["out"])
        m.in_features, m.out_features = cin, cout
        m.weight = nn.Parameter(torch.empty(cout, cin))
        if m.bias is not None:
            m.bias = nn.Parameter(torch.empty(cout))


def build_from_architecture(info: Mapping[str, Any]) -> nn.Module:
    """The (pruned) architecture described by ``info``, with uninitialised weights."""
    model = create_model(
        str(info["arch"]),
        num_classes=int(info["num_classes"]),
        in_channels=int(info["in_channels"]),
    )
    arch = info["architecture"]
    for name in arch.get("shortcuts", []):
        parent_name, _, child = str(name).rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        block = parent.get_submodule(child)
        setattr(parent, child, ResidualShortcut(getattr(block, "downsample", None)))
    modules = dict(model.named_modules())
    for name, spec in arch["layers"].items():
        if name not in modules:
            raise ModelFileError(f"layer {name!r} does not exist in {info['arch']}")
        _resize(modules[name], spec)
    return model


def model_payload(
    model: nn.Module,
    *,
    arch: str,
    num_classes: int,
    in_channels: int = 3,
    input_shape: tuple[int, ...] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Architecture as data plus weights: everything ``torch.load(weights_only=True)`` accepts."""
    get_model_spec(arch)
    return {
        "format": FORMAT,
        "arch": arch,
        "num_classes": int(num_classes),
        "in_channels": int(in_channels),
        "input_shape": list(input_shape) if input_shape is not None else None,
        "architecture": architecture_of(model),
        "meta": dict(meta or {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def model_from_payload(payload: Any, source: str = "model file") -> nn.Module:
    """Rebuild the model a payload describes and load its weights (eval mode, CPU)."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{source} is not a sslsearch model file (format {FORMAT})")
    try:
        model = build_from_architecture(payload)
        model.load_state_dict(payload["state_dict"], strict=True)
    except UserError as e:
        if is_import_path(payload.get("arch")):
            # the file holds the architecture as data, but its layers come from the user's
            # factory: loading needs that module (it is never stored: no code in a model file)
            raise ModelFileError(
                f"{source} holds a model of your factory {payload['arch']}, which is needed to "
                f"load it: {e}"
            ) from None
        raise
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFileError(
            f"{source}: stored architecture and weights disagree ({first})"
        ) from None
    return model.eval()


def save_model(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    arch: str,
    num_classes: int,
    in_channels: int = 3,
    input_shape: tuple[int, ...] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Write ``model`` (pruned or not) atomically: a crash mid-write leaves any old file intact."""
    payload = model_payload(
        model,
        arch=arch,
        num_classes=num_classes,
        in_channels=in_channels,
        input_shape=input_shape,
        meta=meta,
    )
    atomic_torch_save(payload, path)


def atomic_torch_save(obj: object, path: str | os.PathLike[str]) -> None:
    """torch.save to a temporary name, then rename: a crash mid-write keeps any old file."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    storage.write_bytes_atomic(str(path), buf.getvalue())


def safe_torch_load(path: str | os.PathLike[str], what: str = "file") -> Any:
    """``torch.load`` that never unpickles code and turns damage into one clear error.

    ``path``: a local file or a storage URI (``s3://...``, read whole)."""
    import pickle
    import re

    source: Path | io.BytesIO
    if storage.is_uri(str(path)):
        p: Any = str(path)
        try:
            source = io.BytesIO(storage.read_bytes(p))
        except (OSError, ValueError) as e:
            raise ModelFileError(f"{what} not readable: {p} ({e})") from None
    else:
        p = Path(path)
        if not p.is_file():
            raise ModelFileError(f"{what} not found: {p}")
        source = p
    if not zipfile.is_zipfile(source):
        raise ModelFileError(
            f"{p} is corrupted, truncated or not a sslsearch file (not a torch zip)"
        )
    if isinstance(source, io.BytesIO):
        source.seek(0)
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        why = f"it pickles {found.group(1)}" if found else "it is not plain weights and data"
        raise ModelFileError(f"{p} was refused: {why} (loading it could run code)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFileError(
            f"{p} is corrupted, truncated or not a sslsearch file ({first})"
        ) from None


def read_model_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    payload = safe_torch_load(path, "model file")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a sslsearch model file (format {FORMAT})")
    return payload


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> nn.Module:
    """Load a model saved by :func:`save_model`, in eval mode, ready for inference."""
    return model_from_payload(read_model_file(path), str(path)).to(device)


def model_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Everything in a model file except the weights."""
    payload = read_model_file(path)
    return {k: v for k, v in payload.items() if k != "state_dict"}


def state_dict_misfit(state: Mapping[str, Any], model: nn.Module) -> str:
    """Why ``state`` does not load into ``model``, as one line (torch's own message spans many).

    Example: "12 tensors have other shapes (features.0.weight: 11x3x3x3 in the file, 16x3x3x3
    in the model), as a pruned model's do".
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]

    def shape(t: Any) -> str:
        return "x".join(map(str, getattr(t, "shape", ()))) or "scalar"

    reshaped = [
        k
        for k in own
        if k in state and getattr(state[k], "shape", None) != getattr(own[k], "shape", None)
    ]
    parts = []
    if reshaped:
        k = reshaped[0]
        parts.append(
            f"{len(reshaped)} tensors have other shapes ({k}: {shape(state[k])} in the file, "
            f"{shape(own[k])} in the model)"
        )
    if missing:
        parts.append(f"{len(missing)} tensors are missing (first: {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} tensors are not in the model (first: {unexpected[0]})")
    return "; ".join(parts) or "the weights do not load"

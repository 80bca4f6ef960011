"""Starting weights: what SSL training starts from (``TrialConfig.warm_start``, the space's
``weights``, ``sslsearch trial --weights``), instead of a fresh initialisation.

A weights file is a model file written by sslsearch (dense, of the same architecture) or a
plain state_dict of the model (also ``{"state_dict": ...}``), local or at a storage URI, read
with ``torch.load(weights_only=True)``. What it holds, not where it lies, is part of the SSL
model's identity (``weights_digest``: sha256 of its bytes): a copy of the file elsewhere (the
experiment's own copy) gives the same SSL model id, new weights under the same name a new one.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from sslsearch import storage
from sslsearch.errors import ModelFileError
from sslsearch.models import safe_torch_load
from sslsearch.models._io import FORMAT, architecture_of, state_dict_misfit


@dataclass(frozen=True)
class Weights:
    state: Mapping[str, Any]
    arch: str | None  # the architecture a sslsearch model file names (None: a plain state_dict)
    architecture: Mapping[str, Any] | None  # its layer widths (a pruned file's differ)


def read_weights(path: str) -> Weights:
    """The tensors of a weights file, and the architecture it names if it is a model file."""
    payload = safe_torch_load(path, "weights file")
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        return Weights(payload["state_dict"], str(payload["arch"]), payload.get("architecture"))
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not payload:
        raise ModelFileError(
            f"weights {path} hold no state_dict (a {type(payload).__name__}); give a model file "
            "written by sslsearch or torch.save(model.state_dict(), path)"
        )
    return Weights(payload, None, None)


def load_weights(model: nn.Module, path: str, arch: str) -> None:
    """Load the weights at ``path`` into ``model`` (a fresh, dense ``arch``), or one
    ModelFileError naming the first tensors that do not fit and what the file holds."""
    w = read_weights(path)
    try:
        model.load_state_dict(w.state)
        return
    except (RuntimeError, TypeError, KeyError):
        why = state_dict_misfit(w.state, model)
    if w.arch is not None and w.arch != arch:
        raise ModelFileError(
            f"weights {path} hold a {w.arch} (a sslsearch model file), not a {arch}: {why}"
        )
    pruned = w.architecture is not None and dict(w.architecture) != architecture_of(model)
    if w.arch is not None and pruned:
        raise ModelFileError(
            f"warm start {path} does not fit a dense {arch}: {why}; to train a pruned "
            f"model further use `sslsearch finetune --model {path}`"
        )
    raise ModelFileError(f"weights {path} do not fit {arch}: {why}")


def weights_digest(path: str) -> str:
    """sha256 of the file's bytes (cached per path, size and modification time: a worker that
    runs many trials reads the file once)."""
    fs, inner = storage.resolve(path)
    info = fs.get_file_info(inner)
    if info.size is None:
        raise ModelFileError(f"weights file not found: {path}")
    mtime = info.mtime_ns if info.mtime_ns is not None else -1
    return _digest(path, int(info.size), int(mtime))


@functools.lru_cache(maxsize=16)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    fs, inner = storage.resolve(path)
    with fs.open_input_stream(inner) as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()

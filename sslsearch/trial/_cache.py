"""Cache of SSL-trained dense models, keyed by everything that determines them.

The expensive part of a trial is SSL training; pruning and fine-tuning are cheap. Trials that
share (arch, data, recipe, ssl type, lambda, seed) but differ in ratio or criterion start from
the cached model. Files are written to a temporary name and renamed, so concurrent trials with
the same key never expose a half-written file (the last writer wins; both wrote the same model).
"""

from __future__ import annotations

import io
import logging
from typing import Any

import torch
from torch import nn

from sslsearch import storage
from sslsearch.models import model_from_payload, model_payload

log = logging.getLogger(__name__)


class SSLCache:
    def __init__(self, root: str) -> None:
        self.root = root

    def path(self, key: str) -> str:
        return storage.join(self.root, f"{key}.pt")

    def get(self, key: str) -> tuple[nn.Module, dict[str, Any]] | None:
        path = self.path(key)
        if not storage.exists(path):
            return None
        try:
            raw = storage.read_bytes(path)
            payload = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
            model = model_from_payload(payload, path)
        except Exception as e:  # a damaged entry is a miss, never a failed trial
            log.warning("ignoring damaged SSL cache entry %s: %s", path, e)
            return None
        return model, dict(payload.get("meta", {}))

    def put(self, key: str, model: nn.Module, **payload_args: Any) -> None:
        buf = io.BytesIO()
        torch.save(model_payload(model, **payload_args), buf)
        storage.write_bytes_atomic(self.path(key), buf.getvalue())

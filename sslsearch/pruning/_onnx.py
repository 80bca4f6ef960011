"""ONNX export of an (often pruned) model."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from sslsearch.errors import UserError


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str) -> None:
    """Export an (often pruned) model to ONNX with a dynamic batch dimension.

    Needs the ``onnx`` extra (``pip install 'sslsearch[onnx]'``: onnx and onnxscript). Weights
    are written beside ``path`` as ``<path>.data`` (ONNX external data); keep both files.
    """
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"ONNX export needs {' and '.join(missing)}: pip install 'sslsearch[onnx]'")
    model = model.eval()
    x = torch.zeros((1, *input_shape), device=next(model.parameters()).device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            path,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            verbose=False,
        )

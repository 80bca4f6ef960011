"""A user's own model factory and dataset function, written as files outside the package.

Each test writes them under its own module names (``write_user_code``): a module imported once
stays in ``sys.modules``, so two tests must never share a name.
"""

from __future__ import annotations

import uuid
from pathlib import Path

MODELS_PY = """
from torch import nn


def block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())


def small_cnn(num_classes, in_channels):
    return nn.Sequential(block(in_channels, 16), block(16, 16), nn.MaxPool2d(2),
                         block(16, 32), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(32, num_classes))


def raises(num_classes, in_channels):
    raise ValueError("my factory is broken")


def not_a_model(num_classes, in_channels):
    return 42


def flat_head(num_classes, in_channels):  # a Linear sized for 32x32 inputs only
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.Flatten(),
                         nn.Linear(8 * 32 * 32, num_classes))
"""

DATA_PY = """
from pathlib import Path

import torch
from torch.utils.data import TensorDataset


def _tensors(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = torch.randn(n, 1, 8, 8, generator=g) * 0.3
    for c in range(4):  # a class is a bright quadrant: easy to learn in one epoch
        r, k = divmod(c, 2)
        x[y == c, :, 4 * r:4 * r + 4, 4 * k:4 * k + 4] += 1.0
    return x, y


def load(root):
    log = Path(root) / "loaded_from.txt"
    if Path(root).is_dir():  # where this module was imported from, one line per call
        with log.open("a") as f:
            f.write(__file__ + "\\n")
    x, y = _tensors(240, 0)
    tx, ty = _tensors(80, 1)
    return TensorDataset(x, y), TensorDataset(tx, ty)


def with_eval_view(root):
    train, test = load(root)
    return train, test, train


def broken(root):
    raise OSError(f"no data under {root}")


def one_item(root):
    return [(torch.zeros(1, 8, 8), 0)], [(torch.zeros(1, 8, 8), 0)]


def not_datasets(root):
    return "train.csv"
"""


METRICS_PY = """
def weight_bytes_int8(model, inputs):
    # the parameters stored at 8 bits: one byte each
    return float(sum(p.numel() for p in model.parameters()))


def needs_batch(model, inputs):
    raise RuntimeError("no energy meter on this machine")


def not_a_number(model, inputs):
    return "fast"
"""


def write_user_objectives(directory: Path) -> str:
    """Write a module of objectives of the user's own into ``directory``; returns its name."""
    name = f"user_metrics_{uuid.uuid4().hex[:8]}"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.py").write_text(METRICS_PY)
    return name


def write_user_code(directory: Path) -> tuple[str, str]:
    """Write the model and data modules into ``directory`` under fresh names; returns them."""
    tag = uuid.uuid4().hex[:8]
    models, data = f"user_models_{tag}", f"user_data_{tag}"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{models}.py").write_text(MODELS_PY)
    (directory / f"{data}.py").write_text(DATA_PY)
    return models, data

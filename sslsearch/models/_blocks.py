"""Residual blocks: what depth_wise penalties group and depth_wise pruning removes."""

from __future__ import annotations

import sys

import torch
from torch import nn

# torchvision's residual blocks (every built-in residual network is made of them). Read from
# torchvision's module only once something has imported it: before that no instance can exist,
# and a process that never builds a torchvision model never pays for importing it.
_TV_RESNET = "torchvision.models.resnet"


def residual_block_types() -> tuple[type[nn.Module], ...]:
    tv = sys.modules.get(_TV_RESNET)
    return (tv.BasicBlock, tv.Bottleneck) if tv is not None else ()


def is_residual_block(module: nn.Module) -> bool:
    return isinstance(module, residual_block_types())  # () before torchvision: False


def residual_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, block) of every residual block, in forward order."""
    return [(name, m) for name, m in model.named_modules() if is_residual_block(m)]


def residual_branch_parameters(block: nn.Module) -> list[nn.Parameter]:
    """The weights of the residual branch (everything but the shortcut ``downsample``)."""
    shortcut = getattr(block, "downsample", None)
    skip = {id(p) for p in shortcut.parameters()} if shortcut is not None else set()
    return [p for p in block.parameters() if id(p) not in skip]


class ResidualShortcut(nn.Module):
    """What a removed block becomes: relu(shortcut(x)), i.e. the block with a zero branch.

    With an identity shortcut this is just ``relu(x)``; the input of a block is already the
    output of a ReLU, so it equals ``x`` but is kept explicit for exactness.
    """

    def __init__(self, downsample: nn.Module | None) -> None:
        super().__init__()
        self.downsample = downsample if downsample is not None else nn.Identity()
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.downsample(x))

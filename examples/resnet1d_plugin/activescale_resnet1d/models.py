"""A 1-D ResNet ladder: five sizes from ~2 thousand to ~4 million parameters.

Residual basic blocks (He et al. 2016, "Deep residual learning", Sec. 3) over 1-D signals:
a stem convolution, stages of blocks (each stage after the first halves the length and
doubles the width), global average pooling, a linear head. Normalisation is GroupNorm (Wu &
He 2018), per example, so the ladder also runs data parallel (batch norm would work on one
process per run, scoring with its running statistics; see docs/plugins.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from activescale.plugins import ConfigError, ModelConfig, register_model


@dataclass(frozen=True)
class ResNetSize:
    width: int  # channels of the first stage
    blocks: tuple[int, ...]  # residual blocks per stage


SIZES: dict[str, ResNetSize] = {
    "xs": ResNetSize(8, (1, 1)),
    "s": ResNetSize(16, (1, 1)),
    "m": ResNetSize(32, (2, 2)),
    "l": ResNetSize(64, (2, 2, 2)),
    "xl": ResNetSize(128, (2, 2, 2)),
}


def norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class BasicBlock(nn.Module):
    """x + F(x), F = conv-norm-relu-conv-norm; a strided 1x1 projection when shapes change."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            norm(c_out),
            nn.ReLU(),
            nn.Conv1d(c_out, c_out, 3, padding=1, bias=False),
            norm(c_out),
        )
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.skip = nn.Sequential(
                nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False), norm(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class ResNet1d(nn.Module):
    def __init__(self, in_channels: int, num_outputs: int, size: ResNetSize) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv1d(in_channels, size.width, 5, padding=2, bias=False),
            norm(size.width),
            nn.ReLU(),
        ]
        c_in = size.width
        for stage, count in enumerate(size.blocks):
            c_out = size.width * 2**stage
            for i in range(count):
                layers.append(BasicBlock(c_in, c_out, stride=2 if stage and i == 0 else 1))
                c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # (batch, length): one channel
            x = x.unsqueeze(1)
        return self.head(self.features(x).mean(dim=-1))


def build(cfg: ModelConfig, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """One size of the ladder for examples shaped (length,) or (channels, length)."""
    if len(input_shape) not in (1, 2):
        raise ConfigError(
            f"arch 'resnet1d' needs signals shaped (length,) or (channels, length); the "
            f"dataset gives {input_shape}"
        )
    channels = 1 if len(input_shape) == 1 else input_shape[0]
    return ResNet1d(channels, num_outputs, SIZES[cfg.size])


register_model("resnet1d", SIZES, build, description="1-D ResNet (GroupNorm), 5 sizes")

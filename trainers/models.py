"""Model ladders: named sizes of one architecture, spanning orders of magnitude in parameters.

Learner, online scorer and reference model are each built from a :class:`ModelConfig`, so their
sizes are chosen independently. Each ladder has at least six sizes spanning more than 100x in
parameters (``tests/test_models.py`` checks it), which is what a scaling sweep needs.

- ``mlp``: a ReLU MLP over a flattened input (MNIST-1D signals, or any vector).
- ``cnn1d``: a 1-D CNN for signals shaped ``(length,)`` or ``(channels, length)``.
- ``vit``: a small Vision Transformer for images ``(channels, height, width)``: patch embedding,
  pre-norm blocks, mean pooling (Dosovitskiy et al. 2021, with the pre-norm layout of
  Xiong et al. 2020).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from torch import nn

from orchestrator.errors import ConfigError

Arch = Literal["mlp", "cnn1d", "vit"]


@dataclass(frozen=True)
class MLPSize:
    width: int
    depth: int  # number of hidden layers


@dataclass(frozen=True)
class CNNSize:
    channels: int
    blocks: int  # conv blocks; each halves the length after the first


@dataclass(frozen=True)
class ViTSize:
    dim: int
    depth: int
    heads: int


MLP_LADDER: dict[str, MLPSize] = {
    "xxs": MLPSize(8, 1),
    "xs": MLPSize(16, 2),
    "s": MLPSize(32, 2),
    "m": MLPSize(64, 2),
    "l": MLPSize(128, 2),
    "xl": MLPSize(256, 3),
    "xxl": MLPSize(512, 3),
}

CNN_LADDER: dict[str, CNNSize] = {
    "xxs": CNNSize(4, 2),
    "xs": CNNSize(8, 2),
    "s": CNNSize(16, 3),
    "m": CNNSize(32, 3),
    "l": CNNSize(64, 3),
    "xl": CNNSize(128, 4),
    "xxl": CNNSize(256, 4),
}

VIT_LADDER: dict[str, ViTSize] = {
    "xxs": ViTSize(16, 1, 2),
    "xs": ViTSize(32, 2, 2),
    "s": ViTSize(64, 2, 4),
    "m": ViTSize(96, 4, 4),
    "l": ViTSize(192, 4, 6),
    "xl": ViTSize(256, 6, 8),
    "xxl": ViTSize(384, 8, 8),
}

LADDERS: dict[str, dict[str, MLPSize] | dict[str, CNNSize] | dict[str, ViTSize]] = {
    "mlp": MLP_LADDER,
    "cnn1d": CNN_LADDER,
    "vit": VIT_LADDER,
}


class ModelConfig(BaseModel):
    """One model of a ladder: the learner, the online scorer or the reference model."""

    model_config = ConfigDict(extra="forbid")

    arch: Arch = Field("mlp", description="Architecture ladder: mlp, cnn1d or vit.")
    size: str = Field("s", description="Named size in the ladder (xxs, xs, s, m, l, xl, xxl).")
    lr: float | None = Field(
        None, gt=0, description="Peak learning rate for this model; null uses optimizer.lr."
    )
    patch: int = Field(4, ge=1, description="ViT patch size in pixels (vit only).")

    @field_validator("size")
    @classmethod
    def _known_size(cls, size: str, info: ValidationInfo) -> str:
        arch = info.data.get("arch", "mlp")
        ladder = LADDERS[arch]
        if size not in ladder:
            raise ValueError(
                f"size {size!r} is not in the {arch} ladder; allowed: {', '.join(ladder)}"
            )
        return size


class MLP(nn.Module):
    def __init__(self, in_features: int, num_classes: int, size: MLPSize) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width_in = in_features
        for _ in range(size.depth):
            layers += [nn.Linear(width_in, size.width), nn.ReLU()]
            width_in = size.width
        layers.append(nn.Linear(width_in, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN1d(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, size: CNNSize) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for i in range(size.blocks):
            c_out = size.channels * (2 ** min(i, 2))
            layers += [
                nn.Conv1d(c_in, c_out, kernel_size=5, padding=2, stride=1 if i == 0 else 2),
                nn.ReLU(),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # (batch, length) -> one channel
            x = x.unsqueeze(1)
        return self.head(self.features(x).mean(dim=-1))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(
        self, image_shape: tuple[int, ...], num_classes: int, size: ViTSize, patch: int
    ) -> None:
        super().__init__()
        channels, height, width = image_shape
        num_patches = (height // patch) * (width // patch)
        self.embed = nn.Conv2d(channels, size.dim, kernel_size=patch, stride=patch)
        self.pos = nn.Parameter(torch.randn(1, num_patches, size.dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(size.dim, size.heads) for _ in range(size.depth)])
        self.norm = nn.LayerNorm(size.dim)
        self.head = nn.Linear(size.dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        return self.head(self.norm(self.blocks(tokens)).mean(dim=1))


def build_model(
    cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int, seed: int
) -> nn.Module:
    """Build a model with weights drawn from ``seed`` alone, so runs are reproducible."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if cfg.arch == "mlp":
            return MLP(math.prod(input_shape), num_classes, MLP_LADDER[cfg.size])
        if cfg.arch == "cnn1d":
            if len(input_shape) > 2:
                raise ConfigError(
                    f"arch 'cnn1d' needs signals shaped (length,) or (channels, length); "
                    f"the dataset gives {input_shape}. Use arch 'mlp' or 'vit' for images."
                )
            channels = 1 if len(input_shape) == 1 else input_shape[0]
            return CNN1d(channels, num_classes, CNN_LADDER[cfg.size])
        if len(input_shape) != 3:
            raise ConfigError(
                f"arch 'vit' needs images shaped (channels, height, width); the dataset gives "
                f"{input_shape}. Use arch 'mlp' or 'cnn1d' for signals."
            )
        if input_shape[1] % cfg.patch or input_shape[2] % cfg.patch:
            raise ConfigError(
                f"vit patch {cfg.patch} does not divide the image size {input_shape[1:]}; "
                "choose a patch that divides both height and width."
            )
        return ViT(input_shape, num_classes, VIT_LADDER[cfg.size], cfg.patch)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

"""Model ladders: at least six sizes spanning at least 100x in parameters."""

from __future__ import annotations

import pytest
import torch

from orchestrator.errors import ConfigError
from trainers.models import LADDERS, ModelConfig, build_model, count_params

SHAPES = {"mlp": (40,), "cnn1d": (40,), "vit": (3, 32, 32)}


@pytest.mark.parametrize("arch", list(LADDERS))
def test_ladder_spans_two_orders_of_magnitude(arch: str) -> None:
    params = [
        count_params(build_model(ModelConfig(arch=arch, size=size), SHAPES[arch], 10, 0))  # type: ignore[arg-type]
        for size in LADDERS[arch]
    ]
    assert len(params) >= 6
    assert params == sorted(params) and len(set(params)) == len(params)
    assert params[-1] / params[0] >= 100


@pytest.mark.parametrize("arch", list(LADDERS))
def test_forward_shapes(arch: str) -> None:
    model = build_model(ModelConfig(arch=arch, size="xs"), SHAPES[arch], 7, 0)  # type: ignore[arg-type]
    assert model(torch.zeros(2, *SHAPES[arch])).shape == (2, 7)


def test_same_seed_same_weights() -> None:
    a = build_model(ModelConfig(size="s"), (40,), 10, seed=3)
    b = build_model(ModelConfig(size="s"), (40,), 10, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_vit_rejects_signals() -> None:
    with pytest.raises(ConfigError, match="vit"):
        build_model(ModelConfig(arch="vit", size="xs"), (40,), 10, 0)


def test_cnn_rejects_images() -> None:
    with pytest.raises(ConfigError, match="cnn1d"):
        build_model(ModelConfig(arch="cnn1d", size="xs"), (3, 32, 32), 10, 0)


def test_unknown_size() -> None:
    with pytest.raises(ValueError, match="allowed: xxs"):
        ModelConfig(arch="cnn1d", size="giant")

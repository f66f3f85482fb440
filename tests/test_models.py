"""Model ladders: at least six sizes spanning at least 100x in parameters."""

from __future__ import annotations

import pytest
import torch

from activescale.errors import ConfigError, PluginError
from trainers.models import LADDERS, ModelConfig, build_model, count_params, ladder, register_model

SHAPES = {"mlp": (40,), "cnn1d": (40,), "vit": (3, 32, 32)}


@pytest.mark.parametrize("arch", list(SHAPES))
def test_ladder_spans_two_orders_of_magnitude(arch: str) -> None:
    params = [
        count_params(build_model(ModelConfig(arch=arch, size=size), SHAPES[arch], 10, 0))
        for size in ladder(arch).sizes
    ]
    assert len(params) >= 6
    assert params == sorted(params) and len(set(params)) == len(params)
    assert params[-1] / params[0] >= 100


@pytest.mark.parametrize("arch", list(SHAPES))
def test_forward_shapes(arch: str) -> None:
    model = build_model(ModelConfig(arch=arch, size="xs"), SHAPES[arch], 7, 0)
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


def test_unknown_arch_lists_the_registered_ladders() -> None:
    with pytest.raises(
        ValueError, match=r"'resnet9' is not a registered model ladder; built-in: mlp, cnn1d, vit"
    ):
        ModelConfig(arch="resnet9", size="s")


def test_a_registered_ladder_validates_builds_and_cannot_be_registered_twice() -> None:
    def build(cfg: ModelConfig, input_shape: tuple[int, ...], num_outputs: int) -> torch.nn.Module:
        width = {"small": 4, "big": 64}[cfg.size]
        return torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(40, width), torch.nn.Linear(width, num_outputs)
        )

    register_model("tiny_test_mlp", ("small", "big"), build)
    try:
        assert ladder("tiny_test_mlp").source == __name__
        a = build_model(ModelConfig(arch="tiny_test_mlp", size="big"), (40,), 3, seed=1)
        b = build_model(ModelConfig(arch="tiny_test_mlp", size="big"), (40,), 3, seed=1)
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
        with pytest.raises(ValueError, match="allowed: small, big"):
            ModelConfig(arch="tiny_test_mlp", size="s")
        with pytest.raises(
            PluginError, match=rf"already registered \(by {__name__}\); other\.plugin registers"
        ):
            register_model("tiny_test_mlp", ("x",), build, source="other.plugin")
        # The same module again (imported twice, or reloaded): the entry is replaced.
        again = register_model("tiny_test_mlp", ["small", "big", "huge"], build)
        assert ladder("tiny_test_mlp") is again and again.sizes == ("small", "big", "huge")
    finally:
        LADDERS.pop("tiny_test_mlp")


def test_a_builder_that_returns_no_module_is_a_named_error() -> None:
    register_model("not_a_module", ("s",), lambda cfg, shape, n: "oops")  # type: ignore[arg-type,return-value]
    try:
        with pytest.raises(PluginError, match=r"returned str, not a torch\.nn\.Module"):
            build_model(ModelConfig(arch="not_a_module", size="s"), (40,), 3, seed=0)
    finally:
        LADDERS.pop("not_a_module")

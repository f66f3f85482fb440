"""FLOP ledger: measured counts against analytic ones, and the ledger's arithmetic."""

from __future__ import annotations

import pytest
import torch

from trainers.flops import FlopLedger, FlopMeter, measure_forward_flops, measure_train_flops
from trainers.models import ModelConfig, build_model
from trainers.tasks import Classification


def weight_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if name.endswith("weight"))


@pytest.mark.parametrize("size", ["xxs", "s", "l", "xxl"])
def test_mlp_forward_is_two_flops_per_weight_per_example(size: str) -> None:
    model = build_model(ModelConfig(arch="mlp", size=size), (40,), 10, seed=0)
    batch = 32
    assert measure_forward_flops(model, torch.zeros(batch, 40)) == 2 * weight_params(model) * batch


def test_mlp_train_step_is_three_forwards() -> None:
    """Forward 2N + backward 4N per example (Kaplan et al. 2020), minus the first layer's
    input gradient, which autograd skips because the input needs no grad."""
    model = build_model(ModelConfig(arch="mlp", size="m"), (40,), 10, seed=0)
    batch = 16
    first_layer = 40 * 64
    expected = 6 * weight_params(model) * batch - 2 * first_layer * batch
    flops = measure_train_flops(model, torch.zeros(batch, 40), torch.zeros(batch, dtype=torch.long))
    assert flops == expected


def test_measuring_a_train_step_leaves_the_model_untouched() -> None:
    model = build_model(ModelConfig(arch="mlp", size="s"), (40,), 10, seed=0)
    measure_train_flops(model, torch.randn(8, 40), torch.zeros(8, dtype=torch.long))
    assert all(p.grad is None for p in model.parameters())


def test_meter_caches_per_shape() -> None:
    model = build_model(ModelConfig(arch="mlp", size="s"), (40,), 10, seed=0)
    meter, task = FlopMeter(), Classification()

    def score(n: int) -> int:
        x, y = torch.zeros(n, 40), torch.zeros(n, dtype=torch.long)
        return meter.scoring("learner", model, x, y, task.per_example_loss)

    a = score(8)
    assert a == measure_forward_flops(model, torch.zeros(8, 40))
    assert score(8) == a and score(16) == 2 * a


@pytest.mark.parametrize(
    ("cost", "share", "total"), [("include", 4, 110.0), ("amortize", 4, 35.0), ("exclude", 4, 10.0)]
)
def test_reference_cost_settings(cost: str, share: int, total: float) -> None:
    ledger = FlopLedger(cost, share)  # type: ignore[arg-type]
    ledger.add("learner_train", 6.0)
    ledger.add("scorer_forward", 3.0)
    ledger.add("reference_forward", 1.0)
    ledger.add("reference_pretrain", 100.0)
    assert ledger.total == pytest.approx(total)
    assert ledger.scoring == pytest.approx(total - 6.0)
    metrics = ledger.metrics()
    assert metrics["flops"] == pytest.approx(total)
    assert metrics["flops/reference_pretrain"] == 100.0


def test_ledger_state_round_trip() -> None:
    ledger = FlopLedger()
    ledger.add("learner_train", 5.0)
    other = FlopLedger()
    other.load_state_dict(ledger.state_dict())
    assert other.counters == ledger.counters


def test_cnn_and_vit_are_counted() -> None:
    cnn = build_model(ModelConfig(arch="cnn1d", size="s"), (40,), 10, seed=0)
    vit = build_model(ModelConfig(arch="vit", size="xs"), (3, 16, 16), 10, seed=0)
    assert measure_forward_flops(cnn, torch.zeros(4, 40)) > 0
    assert measure_forward_flops(vit, torch.zeros(4, 3, 16, 16)) > 0

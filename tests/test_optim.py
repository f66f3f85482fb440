"""AdamW, its schedule, and Trainee: models updated together get the updates they get alone."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F

from trainers.models import ModelConfig, build_model
from trainers.optim import OptimConfig, Trainee, lr_factor


def loss_fn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def test_joint_update_equals_separate_updates_bitwise() -> None:
    """A learner and a scorer of other sizes and learning rates, trained on the same batches in
    one update and in two: same losses and same weights, bit for bit, step after step."""
    torch.manual_seed(0)
    learner = build_model(ModelConfig(arch="mlp", size="m"), (40,), 10, seed=1)
    scorer = build_model(ModelConfig(arch="mlp", size="xxs"), (40,), 10, seed=2)
    cfg, steps = OptimConfig(warmup=0.2), 12
    joint = Trainee.build(
        {"learner": (copy.deepcopy(learner), None), "scorer": (copy.deepcopy(scorer), 1e-2)},
        cfg,
        steps,
        loss_fn,
    )
    alone = {
        "learner": Trainee.build({"learner": (learner, None)}, cfg, steps, loss_fn),
        "scorer": Trainee.build({"scorer": (scorer, 1e-2)}, cfg, steps, loss_fn),
    }
    for _ in range(steps):
        x, y = torch.randn(32, 40), torch.randint(10, (32,))
        losses = joint.train_step(x, y, contextlib.nullcontext)
        for name, trainee in alone.items():
            assert torch.equal(losses[name], trainee.train_step(x, y, contextlib.nullcontext)[name])
            for a, b in zip(
                joint.models[name].parameters(), trainee.models[name].parameters(), strict=True
            ):
                assert torch.equal(a, b)
    rates = [group["lr"] for group in joint.optimizer.param_groups]
    factor = lr_factor(steps, steps, cfg.warmup, cfg.min_lr_ratio)
    assert rates == pytest.approx([cfg.lr * factor, 1e-2 * factor])


def test_trainee_state_round_trips() -> None:
    """A trainee restored from its state_dict takes the same next update as the original."""
    models = {
        name: (build_model(ModelConfig(arch="mlp", size="xs"), (40,), 10, seed=i), None)
        for i, name in enumerate(["learner", "scorer"])
    }
    first = Trainee.build(models, OptimConfig(), 10, loss_fn)
    x, y = torch.randn(16, 40), torch.randint(10, (16,))
    first.train_step(x, y, contextlib.nullcontext)
    copies = {name: (copy.deepcopy(m), None) for name, (m, _) in models.items()}
    second = Trainee.build(copies, OptimConfig(), 10, loss_fn)
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    for _ in range(2):  # the second step's losses show the first's update (Adam moments, lr)
        after_first = first.train_step(x, y, contextlib.nullcontext)
        after_second = second.train_step(x, y, contextlib.nullcontext)
        assert after_first.keys() == after_second.keys() == {"learner", "scorer"}
        for name, loss in after_first.items():
            assert torch.equal(loss, after_second[name])

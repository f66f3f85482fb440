"""AdamW with linear warmup and cosine decay, shared by learner, scorer and reference, and
the update step they take (:class:`Trainee`)."""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from trainers.flops import LossFn


class OptimConfig(BaseModel):
    """AdamW settings; ``lr`` is the learner's peak rate (scorer/reference may override it)."""

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(3e-3, gt=0, description="Peak learning rate after warmup.")
    weight_decay: float = Field(0.01, ge=0, description="Decoupled weight decay (AdamW).")
    beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1.")
    beta2: float = Field(0.999, ge=0, lt=1, description="AdamW beta2.")
    warmup: float = Field(0.05, ge=0, lt=1, description="Warmup length as a fraction of steps.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final lr as a fraction of peak.")


def lr_factor(step: int, total_steps: int, warmup: float, min_lr_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to ``min_lr_ratio`` (Loshchilov & Hutter 2017)."""
    warmup_steps = int(warmup * total_steps)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return min_lr_ratio + (1 - min_lr_ratio) * cosine


def build_optimizer(
    groups: Sequence[tuple[nn.Module, float | None]],
    cfg: OptimConfig,
    total_steps: int,
    *,
    fused: bool = True,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with one parameter group per ``(model, peak lr)`` pair (None: ``cfg.lr``), and the
    warmup + cosine schedule that scales every group's rate alike. ``fused`` runs the update as one
    kernel per group instead of a Python loop of per-tensor ops: a quarter off a small model's CPU
    step (benchmarks/bench_step.py measures both)."""
    optimizer = torch.optim.AdamW(
        [{"params": list(model.parameters()), "lr": lr or cfg.lr} for model, lr in groups],
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        weight_decay=cfg.weight_decay,
        fused=fused,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, cfg.warmup, cfg.min_lr_ratio)
    )
    return optimizer, scheduler


@dataclass
class Trainee:
    """Models that train together on the same batches, each on its own loss: the learner and
    its online scorer, or one model alone.

    An update is one backward pass over the sum of their losses and one AdamW step over all their
    parameters (a group per model, with its own learning rate). The models share no parameters,
    so each gets the update it would get alone (bitwise on CPU: tests/test_optim.py), and the
    pair pays one update's fixed overhead instead of two: about 50 us of the 0.5 ms learnability
    step of an l learner at B=64 on CPU (benchmarks/bench_step.py).
    """

    models: dict[str, nn.Module]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    loss_fn: LossFn

    @classmethod
    def build(
        cls,
        models: dict[str, tuple[nn.Module, float | None]],
        cfg: OptimConfig,
        total_steps: int,
        loss_fn: LossFn,
        *,
        fused: bool = True,
    ) -> Trainee:
        """A trainee of ``{name: (model, peak lr or None for cfg.lr)}``."""
        optimizer, scheduler = build_optimizer(list(models.values()), cfg, total_steps, fused=fused)
        return cls(
            {name: model for name, (model, _) in models.items()}, optimizer, scheduler, loss_fn
        )

    def __post_init__(self) -> None:
        first = next(iter(self.models.values()))
        self.device = next(first.parameters()).device

    def train_step(
        self, x: torch.Tensor, y: torch.Tensor, autocast: Any
    ) -> dict[str, torch.Tensor]:
        """One update of every model on (x, y); returns each model's loss, detached (tensors:
        reading one would sync a GPU)."""
        with autocast():
            losses = {name: self.loss_fn(model, x, y) for name, model in self.models.items()}
        self.optimizer.zero_grad(set_to_none=True)
        functools.reduce(operator.add, losses.values()).backward()
        self.optimizer.step()
        self.scheduler.step()
        return {name: loss.detach() for name, loss in losses.items()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "models": {name: model.state_dict() for name, model in self.models.items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, model in self.models.items():
            model.load_state_dict(state["models"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

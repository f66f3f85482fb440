"""AdamW with linear warmup and cosine decay, shared by learner, scorer and reference, and
the update step they all take (:class:`Trainee`)."""

from __future__ import annotations

import math
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
    model: nn.Module,
    cfg: OptimConfig,
    total_steps: int,
    lr: float | None = None,
    *,
    fused: bool = True,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW and its schedule. ``fused`` runs the update as one kernel over all parameters
    instead of a Python loop of per-tensor ops: a quarter off a small model's CPU step
    (benchmarks/bench_step.py measures both)."""
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=lr or cfg.lr,
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
    """A model with its optimizer and schedule."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    loss_fn: LossFn

    def __post_init__(self) -> None:
        self.device = next(self.model.parameters()).device

    def train_step(self, x: torch.Tensor, y: torch.Tensor, autocast: Any) -> torch.Tensor:
        """One update; returns the detached loss (a tensor: reading it would sync a GPU)."""
        with autocast():
            loss = self.loss_fn(self.model, x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach()

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

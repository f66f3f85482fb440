"""AdamW with linear warmup and a cosine or warmup-stable-decay (WSD) schedule, shared by
learner, scorer and reference, and the update step they take (:class:`Trainee`).

``schedule: cosine`` decays over the run's whole budget, so its intermediate evaluations are
of a model still at a high rate: they overstate the error a run sized for that budget reaches.
``schedule: wsd`` holds the peak rate after warmup and decays only in a cooldown at the end
(Hu et al. 2024, MiniCPM; Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training
Beyond Fixed Training Durations"); the loop branches a cooldown off the stable phase at every
evaluation point (``trainers/cooldown.py``), so one run gives every budget's honest point."""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer
from torch import nn

from trainers.flops import LossFn


class OptimConfig(BaseModel):
    """AdamW settings; ``lr`` is the learner's peak rate (scorer/reference may override it)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    lr: float = Field(3e-3, gt=0, description="Peak learning rate after warmup.")
    weight_decay: float = Field(0.01, ge=0, description="Decoupled weight decay (AdamW).")
    beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1.")
    beta2: float = Field(0.999, ge=0, lt=1, description="AdamW beta2.")
    warmup: float = Field(0.05, ge=0, lt=1, description="Warmup length as a fraction of steps.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final lr as a fraction of peak.")
    schedule: Literal["cosine", "wsd"] = Field(
        "cosine",
        description=(
            "cosine: decay over the whole budget; wsd: warmup, a stable peak rate, and a 1-sqrt "
            "cooldown over the last `cooldown` fraction, branched off at every evaluation point."
        ),
    )
    cooldown: float = Field(
        0.2, gt=0, lt=1, description="wsd: cooldown length as a fraction of a budget's steps."
    )

    @model_serializer(mode="wrap")
    def _omit_cosine_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Cosine configs dump (and hash: run ids, reference cache keys) exactly as before the
        # schedule option existed; the cooldown means nothing to them, so it goes too.
        data: dict[str, Any] = handler(self)
        if data.get("schedule") == "cosine":
            data.pop("schedule", None)
            data.pop("cooldown", None)
        return data


def cooldown_steps(budget_steps: int, cooldown: float) -> int:
    """Steps of the cooldown that ends a WSD run of ``budget_steps``: the ``cooldown`` fraction,
    rounded half up, leaving at least one step before it."""
    return min(budget_steps - 1, math.floor(cooldown * budget_steps + 0.5))


def wsd_factor(
    step: int, warmup_steps: int, decay_start: int, decay_steps: int, min_lr_ratio: float
) -> float:
    """Linear warmup to 1, constant, then from ``decay_start`` a 1-sqrt cooldown over
    ``decay_steps`` steps to ``min_lr_ratio`` of the rate it started from (the last step trains
    at exactly that). 1-sqrt rather than linear: Hägele et al. 2024 (Sec. 3, Fig. 5) find it
    beats the linear cooldown at the same length and matches a tuned cosine. A cooldown that
    starts inside the warmup (an early evaluation point) decays from the warmup's rate."""
    held = min(step, decay_start)
    start = (held + 1) / warmup_steps if held < warmup_steps else 1.0
    if step < decay_start:
        return start
    progress = min(1.0, (step - decay_start + 1) / max(1, decay_steps))
    return start * (min_lr_ratio + (1 - min_lr_ratio) * (1 - math.sqrt(progress)))


def schedule_factor(cfg: OptimConfig, total_steps: int) -> Callable[[int], float]:
    """The rate factor at each step of a run of ``total_steps`` under ``cfg.schedule``: for wsd
    the main branch, which ends in its own cooldown (its last point is a plain WSD run)."""
    if cfg.schedule == "cosine":
        return lambda step: lr_factor(step, total_steps, cfg.warmup, cfg.min_lr_ratio)
    warmup_steps, decay = int(cfg.warmup * total_steps), cooldown_steps(total_steps, cfg.cooldown)
    return lambda step: wsd_factor(step, warmup_steps, total_steps - decay, decay, cfg.min_lr_ratio)


def branch_factor(
    cfg: OptimConfig, total_steps: int, at_step: int, steps: int
) -> Callable[[int], float]:
    """The factor of a cooldown branch of ``steps`` steps off a WSD run of ``total_steps`` at
    ``at_step`` (the run's warmup; the decay starts at the branch)."""
    warmup_steps = int(cfg.warmup * total_steps)
    return lambda step: wsd_factor(step, warmup_steps, at_step, steps, cfg.min_lr_ratio)


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
    schedule (:func:`schedule_factor`) that scales every group's rate alike. ``fused`` runs the update as one
    kernel per group instead of a Python loop of per-tensor ops: a quarter off a small model's CPU
    step (benchmarks/bench_step.py measures both)."""
    optimizer = torch.optim.AdamW(
        [{"params": list(model.parameters()), "lr": lr or cfg.lr} for model, lr in groups],
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        weight_decay=cfg.weight_decay,
        fused=fused,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_factor(cfg, total_steps))
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
        # What takes the training steps: the models themselves, or their data-parallel wrappers
        # (:meth:`parallelize`); checkpoints always hold the models' own state.
        self.replicas: dict[str, nn.Module] = dict(self.models)

    def parallelize(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Train every model through ``wrap(model)`` (DDP: gradients averaged over ranks)."""
        self.replicas = {name: wrap(model) for name, model in self.models.items()}

    def train_step(
        self, x: torch.Tensor, y: torch.Tensor, autocast: Any
    ) -> dict[str, torch.Tensor]:
        """One update of every model on (x, y); returns each model's loss, detached (tensors:
        reading one would sync a GPU)."""
        with autocast():
            losses = {name: self.loss_fn(model, x, y) for name, model in self.replicas.items()}
        self.optimizer.zero_grad(set_to_none=True)
        functools.reduce(operator.add, losses.values()).backward()
        self.optimizer.step()
        self.scheduler.step()
        return {name: loss.detach() for name, loss in losses.items()}

    def follow(self, factor: Callable[[int], float]) -> list[Any]:
        """Scale every group's rate by ``factor(step)`` from this step on (a cooldown branch);
        returns the factors followed until now, to :meth:`follow` again afterwards."""
        followed = list(self.scheduler.lr_lambdas)
        self.scheduler.lr_lambdas = [factor] * len(followed)
        step = self.scheduler.last_epoch  # the next update's step: its rate is set now
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
            group["lr"] = base * factor(step)
        return followed

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

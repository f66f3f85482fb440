"""Tasks: what a model computes from a batch, its loss, its per-example score, its metrics.

The training loop, the selection policies and the FLOP ledger are task-agnostic; a task
supplies the four things that differ between, say, classification and contrastive
image-text learning (``trainers/contrastive.py``):

- ``build``: a model of the task's architecture from a ladder entry;
- ``loss``: the mean training loss of a batch ``(x, y)``;
- ``per_example_loss``: one loss per example of a super-batch, for scoring;
- ``evaluate``: metrics on the clean test split (``accuracy`` is what scaling curves use).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from trainers.contrastive import Contrastive
from trainers.data import Splits
from trainers.models import ModelConfig, build_model

if TYPE_CHECKING:
    from trainers.config import RunConfig


@dataclass(frozen=True)
class DataSpec:
    """The shapes a task needs to build models and dummy batches, known before any data."""

    input_shape: tuple[int, ...]
    num_classes: int
    target_shape: tuple[int, ...] = ()  # () for a class label; (length,) for a caption
    vocab_size: int = 0


def data_spec(splits: Splits) -> DataSpec:
    return DataSpec(
        input_shape=splits.input_shape,
        num_classes=splits.num_classes,
        target_shape=tuple(splits.test_y.shape[1:]),
        vocab_size=int(getattr(splits, "vocab_size", 0)),
    )


class Classification:
    """Cross-entropy of class logits; per-example score = the example's cross-entropy."""

    name = "classification"
    independent_rows = True  # an example's loss does not depend on the rest of its batch

    def build(self, cfg: ModelConfig, spec: DataSpec, seed: int) -> nn.Module:
        return build_model(cfg, spec.input_shape, spec.num_classes, seed)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x), y)

    def per_example_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x), y, reduction="none")

    def dummy_batch(
        self, n: int, spec: DataSpec, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.zeros((n, *spec.input_shape), device=device)
        return x, torch.zeros((n, *spec.target_shape), dtype=torch.long, device=device)

    def evaluate(
        self, model: nn.Module, splits: Splits, batch_size: int, autocast: Any
    ) -> dict[str, float]:
        device = next(model.parameters()).device
        x, y = splits.test_x, splits.test_y
        correct, loss_sum = 0, 0.0
        with torch.no_grad(), autocast():
            for i in range(0, len(y), batch_size):
                xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
                logits = model(xb).float()
                loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
                correct += int((logits.argmax(1) == yb).sum())
        accuracy = correct / len(y)
        return {"accuracy": accuracy, "error": 1 - accuracy, "loss": loss_sum / len(y)}


class Task(Protocol):
    """The interface every task implements (see the module docstring)."""

    name: str
    # True when an example's per-example loss does not depend on the other examples scored
    # with it; a frozen model may then score several super-batches in one pass.
    independent_rows: bool

    def build(self, cfg: ModelConfig, spec: DataSpec, seed: int) -> nn.Module: ...

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    def per_example_loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor: ...

    def dummy_batch(
        self, n: int, spec: DataSpec, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def evaluate(
        self, model: nn.Module, splits: Splits, batch_size: int, autocast: Any
    ) -> dict[str, float]: ...


TASKS: dict[str, Task] = {"classification": Classification(), "contrastive": Contrastive()}


def task_for(cfg: RunConfig) -> Task:
    """The run's task with its settings: the contrastive scoring chunk (default: batch size)."""
    if cfg.task == "contrastive":
        chunk = cfg.contrastive.chunk if cfg.contrastive else None
        return Contrastive(chunk=chunk or cfg.batch_size)
    return TASKS[cfg.task]

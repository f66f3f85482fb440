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

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from activescale.errors import ConfigError, PluginError
from trainers.contrastive import check_contrastive, contrastive_task
from trainers.data import Splits
from trainers.models import ModelConfig, build_model, caller_module, check_arity

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


@dataclass(frozen=True)
class TaskEntry:
    """One registered task. ``make(cfg)`` returns the task configured for a run (e.g. the
    contrastive scoring chunk); ``targets`` names what it learns from, matched against the
    dataset's (``trainers.data.registry``); ``check(cfg)`` makes the task's own cross-field
    checks of a run config and raises ``ValueError("dotted.key: message")``."""

    name: str
    make: Callable[[RunConfig], Task]
    targets: str = "class labels"
    check: Callable[[RunConfig], None] | None = None
    description: str = ""
    source: str = "built-in"


TASKS: dict[str, TaskEntry] = {}


def register_task(
    name: str,
    make: Callable[[RunConfig], Task],
    *,
    targets: str = "class labels",
    check: Callable[[RunConfig], None] | None = None,
    description: str = "",
    source: str | None = None,
) -> TaskEntry:
    """Register a task under ``name`` (docs/plugins.md); PluginError if another module took
    the name (the module that registered it may register it again: the entry is replaced)."""
    source = source or caller_module()
    if not isinstance(name, str) or not name.isidentifier():
        raise PluginError(f"task name {name!r} is not a plain name; use letters, digits and '_'")
    taken = TASKS.get(name)
    if taken is not None and taken.source != source:
        raise PluginError(
            f"task {name!r} is already registered (by {taken.source}); {source} registers it "
            "again: register it once, or choose another name"
        )
    if not callable(make) and all(hasattr(make, member) for member in TASK_MEMBERS):
        make = _same_task(make)  # a task object that needs no settings: one for every run
    if not callable(make):
        raise PluginError(f"task {name!r}: make must be a function of the run config")
    check_arity(make, 1, f"task {name!r}: make", "(run_config)")
    if check is not None:
        check_arity(check, 1, f"task {name!r}: check", "(run_config)")
    entry = TaskEntry(name, make, targets, check, description, source)
    TASKS[name] = entry
    return entry


def task_entry(name: str) -> TaskEntry:
    """The registered task ``name``; a named error listing every task otherwise."""
    entry = TASKS.get(name)
    if entry is None:
        builtin = [n for n, e in TASKS.items() if e.source == "built-in"]
        plugins = [n for n, e in TASKS.items() if e.source != "built-in"]
        raise ConfigError(
            f"task {name!r} is not a registered task; built-in: {', '.join(builtin)}; from "
            f"plugins: {', '.join(plugins) or '(none loaded)'}. Fix the name, or list the plugin "
            "that registers it under `plugins:` in the sweep (docs/plugins.md)"
        )
    return entry


def _same_task(task: Any) -> Callable[[RunConfig], Task]:
    return lambda cfg: task


TASK_MEMBERS = (
    "name",
    "independent_rows",
    "build",
    "loss",
    "per_example_loss",
    "dummy_batch",
    "evaluate",
)
_CHECKED: set[type] = set()  # task classes known to have every member of the protocol


def task_for(cfg: RunConfig) -> Task:
    """The run's task, configured for it (PluginError if it lacks a member of :class:`Task`)."""
    entry = task_entry(cfg.task)
    task = entry.make(cfg)
    if type(task) not in _CHECKED:
        missing = [member for member in TASK_MEMBERS if not hasattr(task, member)]
        if missing:
            raise PluginError(
                f"task {cfg.task!r} ({entry.source}): make(cfg) returned "
                f"{type(task).__name__}, which lacks {', '.join(missing)} of the Task protocol "
                "(docs/plugins.md); add them, or subclass activescale.plugins.Classification"
            )
        _CHECKED.add(type(task))
    return task


_CLASSIFICATION = Classification()

register_task(
    "classification",
    lambda cfg: _CLASSIFICATION,
    description="class logits, cross-entropy; accuracy on the test split",
    source="built-in",
)
register_task(
    "contrastive",
    contrastive_task,
    targets="signal-caption pairs",
    check=check_contrastive,
    description="two towers, symmetric InfoNCE; zero-shot accuracy through class prompts",
    source="built-in",
)

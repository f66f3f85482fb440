"""The FLOP ledger: every floating-point operation a run pays for, by where it was spent.

FLOPs are *measured*, not estimated: ``torch.utils.flop_counter.FlopCounterMode`` counts the
matmul/convolution/attention FLOPs of one real forward (or forward + backward) pass per model
and input shape, and the result is cached, so the ledger costs nothing per step. For an MLP the
forward count is exactly 2 x (weight parameters) per example (Kaplan et al. 2020, Sec. 2.1:
C_forward ~ 2N), and a train step is ~3x the forward (forward + backward = 6N per example);
``tests/test_flops.py`` cross-checks both.

Counters (cumulative over the run):

- ``learner_train``: forward + backward of the learner on the selected batch.
- ``learner_forward``: learner forward on the super-batch (hard_learner, rho_loss).
- ``scorer_forward`` / ``scorer_train``: the online scorer on the super-batch / selected batch.
- ``reference_forward``: reference model on the super-batch.
- ``reference_train``: a ``parallel`` reference trained alongside the learner.
- ``reference_pretrain``: a ``pretrained`` reference's own training, charged according to
  ``reference_cost``: ``include`` (all of it, the default), ``amortize`` (divided by the number
  of runs of the sweep that share the cached reference), or ``exclude``.

On several processes (``trainers/distributed.py``) every rank keeps a ledger of the passes it
makes (measured at its shapes; the pretraining on rank 0 only), and the run's FLOPs are the
sum over ranks: for the same global batch, the totals of a one-process run.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

ReferenceCost = Literal["include", "amortize", "exclude"]

COUNTERS = (
    "learner_train",
    "learner_forward",
    "scorer_forward",
    "scorer_train",
    "reference_forward",
    "reference_train",
    "reference_pretrain",
)


LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def _classification_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def measure_forward_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass of ``model`` on the batch ``x``."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def measure_scoring_flops(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, per_example_loss: LossFn
) -> int:
    """FLOPs of scoring a super-batch: the per-example loss without gradients."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        per_example_loss(model, x, y)
    return int(counter.get_total_flops())


def measure_train_flops(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: LossFn = _classification_loss
) -> int:
    """FLOPs of forward + backward of the training loss, on a copy (grads untouched)."""
    probe = copy.deepcopy(model)
    with FlopCounterMode(display=False) as counter:
        loss(probe, x, y).backward()
    return int(counter.get_total_flops())


class FlopMeter:
    """Measures each (role, kind, shape) once and replays the cached count afterwards."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str, tuple[int, ...]], int] = {}

    def scoring(
        self,
        role: str,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        per_example_loss: LossFn,
    ) -> int:
        key = (role, "scoring", tuple(x.shape))
        if key not in self._cache:
            self._cache[key] = measure_scoring_flops(model, x, y, per_example_loss)
        return self._cache[key]

    def train(
        self, role: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: LossFn
    ) -> int:
        key = (role, "train", tuple(x.shape))
        if key not in self._cache:
            self._cache[key] = measure_train_flops(model, x, y, loss)
        return self._cache[key]


@dataclass
class FlopLedger:
    """Cumulative FLOPs per counter, and the total that scaling curves are plotted against."""

    reference_cost: ReferenceCost = "include"
    reference_share: int = 1  # runs sharing one pretrained reference (for "amortize")
    counters: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0.0))

    def add(self, counter: str, flops: float) -> None:
        self.counters[counter] += flops

    @property
    def reference_pretrain_charged(self) -> float:
        pretrain = self.counters["reference_pretrain"]
        if self.reference_cost == "include":
            return pretrain
        if self.reference_cost == "amortize":
            return pretrain / max(1, self.reference_share)
        return 0.0

    @property
    def total(self) -> float:
        spent = sum(v for k, v in self.counters.items() if k != "reference_pretrain")
        return spent + self.reference_pretrain_charged

    @property
    def scoring(self) -> float:
        """FLOPs spent choosing data rather than training the learner."""
        return self.total - self.counters["learner_train"]

    def metrics(self) -> dict[str, float]:
        out = {f"flops/{k}": v for k, v in self.counters.items()}
        out["flops/scoring"] = self.scoring
        out["flops"] = self.total
        return out

    def state_dict(self) -> dict[str, float]:
        return dict(self.counters)

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.counters = dict.fromkeys(COUNTERS, 0.0) | state

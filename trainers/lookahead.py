"""Super-batches drawn a block of steps ahead, and scored by a frozen reference in one pass.

Every prioritized step needs the next super-batch and, for policies that use a *pretrained*
reference, that model's loss on each of its examples. Drawing, moving and scoring one
super-batch per step costs a few dozen microseconds of eager-op overhead, a tenth of a small
model's step on CPU (benchmarks/bench_step.py). :class:`Lookahead` draws the super-batches of a
block of steps with one call to the source and one copy to the device, and the frozen reference
scores the whole block in one forward pass; each step then takes views.

Nothing the run computes changes. The examples are those that step-by-step draws give, in the
same order, and on CPU a model's per-example losses do not depend on how many rows share its
forward pass (tests/test_lookahead.py checks both bitwise). A task whose per-example losses
depend on the other examples of the super-batch (contrastive: in-batch negatives) is scored one
super-batch at a time. The ledger charges the reference forward per step as before; a block
never reaches past the run's last step, so no pass goes uncharged, except that a resumed run
scores again the steps of its block that came before the checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from trainers.data import BatchSource
from trainers.models import evaluating
from trainers.selection import Losses
from trainers.tasks import Task

# Inputs drawn ahead, at most (a block is never under one step). A block should stay in the
# last-level cache while its steps read it: with 64 MiB, the xl and xxl steps of
# benchmarks/bench_step.py were 2-4 % slower than drawing one step at a time (32 MiB L3).
LOOKAHEAD_BYTES = 4 * 2**20
MAX_LOOKAHEAD_STEPS = 32  # beyond this the per-step saving is already below a microsecond

# Scores a block of super-batches: (x, y) -> the reference's loss on every row.
BlockScorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def lookahead_steps(super_batch: int, input_shape: tuple[int, ...], element_bytes: int = 4) -> int:
    """Steps per block: as many super-batches as fit in LOOKAHEAD_BYTES of inputs, 1 to 32."""
    step_bytes = super_batch * math.prod(input_shape) * element_bytes
    return max(1, min(MAX_LOOKAHEAD_STEPS, LOOKAHEAD_BYTES // max(1, step_bytes)))


@dataclass
class Draw:
    """One step's super-batch, with the losses already computed for it (by role)."""

    x: torch.Tensor
    y: torch.Tensor
    corrupted: torch.Tensor | None  # None: the data do not say which examples are corrupted
    losses: Losses = field(default_factory=dict)


class Lookahead:
    """The run's super-batches of ``size`` examples, one per step until ``total_steps``.

    Blocks start at steps 0, ``block``, 2 ``block``, ...; the state is the source's state at the
    start of the current block and the steps used from it, so a resumed run draws the same block
    again and goes on from the same example.
    """

    def __init__(
        self,
        source: BatchSource,
        size: int,
        total_steps: int,
        device: torch.device,
        *,
        block: int,
        reference: BlockScorer | None = None,
        share: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        """``share``: the rows of a super-batch this process scores, on several processes
        (``trainers.distributed.Ranks.share``); None: all of them."""
        if size < 1 or block < 1:
            raise ValueError(f"size={size} and block={block} must both be >= 1")
        self.source, self.size, self.total_steps = source, size, total_steps
        self.device, self.block, self.reference = device, block, reference
        self.share = share
        self._start = 0  # step at which the current block starts
        self._start_state = source.state_dict()
        self._steps = 0  # steps in the current block (0: not drawn yet)
        self._used = 0  # steps already taken from it
        self._draws: list[Draw] = []  # the current block's, one per step

    def source_metrics(self) -> dict[str, float]:
        """What the source reports about its data (skipped samples, epochs), if anything."""
        metrics = getattr(self.source, "metrics", None)
        return metrics() if callable(metrics) else {}

    @property
    def averaged_metrics(self) -> frozenset[str]:
        """Source metrics that are fractions of the source's own stream (epochs read): averaged,
        not summed, over ranks that each read their own (``StepShares.source_metrics``)."""
        return frozenset(getattr(self.source, "averaged_metrics", ()))

    def next(self) -> Draw:
        if not self._draws or self._used == self._steps:
            self._draw_block()
        self._used += 1
        return self._draws[self._used - 1]

    def _draw_block(self) -> None:
        if self._draws:  # the current block is used up: the next one starts where it ended
            self._start += self._steps
            self._start_state = self.source.state_dict()
            self._used = 0
        # Never past the last step (those passes would go uncharged); past it, one step at a time.
        self._steps = max(1, min(self.block, self.total_steps - self._start))
        x, y, mask = self.source.next(self._steps * self.size)
        x, y = x.to(self.device), y.to(self.device)
        # Views, one per step, made here at once (cheaper than slicing at every step).
        masks = [None] * self._steps if mask is None else mask.to(self.device).split(self.size)
        steps = zip(x.split(self.size), y.split(self.size), masks, strict=True)
        self._draws = [Draw(*step) for step in steps]
        if self.reference is not None:
            if self.share is not None:  # this process's share of every super-batch
                x = torch.cat([self.share(draw.x) for draw in self._draws])
                y = torch.cat([self.share(draw.y) for draw in self._draws])
            losses = self.reference(x, y).split(len(x) // len(self._draws))
            for draw, loss in zip(self._draws, losses, strict=True):
                draw.losses["reference"] = loss

    def state_dict(self) -> dict[str, Any]:
        if self._draws and self._used == self._steps:  # used up: the next block starts here
            return {
                "block_start": self._start + self._used,
                "source": self.source.state_dict(),
                "used": 0,
            }
        return {"block_start": self._start, "source": self._start_state, "used": self._used}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.source.load_state_dict(state["source"])
        self._start, self._start_state = state["block_start"], state["source"]
        self._used = state["used"]  # skipped when the block is drawn again, at the next step
        self._steps, self._draws = 0, []


def per_example_loss(
    task: Task, model: nn.Module, x: torch.Tensor, y: torch.Tensor, autocast: Any
) -> torch.Tensor:
    with torch.no_grad(), autocast(), evaluating(model):  # batch norm: running statistics
        return task.per_example_loss(model, x, y).float()


def block_scorer(task: Task, model: nn.Module, super_batch: int, autocast: Any) -> BlockScorer:
    """A frozen model's per-example losses on a block of super-batches: in one pass where an
    example's loss does not depend on the rest of its super-batch, else one super-batch at a time."""
    if task.independent_rows:
        return lambda x, y: per_example_loss(task, model, x, y, autocast)
    return lambda x, y: torch.cat(
        [
            per_example_loss(task, model, x[i : i + super_batch], y[i : i + super_batch], autocast)
            for i in range(0, len(x), super_batch)
        ]
    )

"""Where a learner's super-batches come from: the :class:`BatchSource` interface, and
:class:`FixedSource` (shuffled epochs over a fixed pool), which serves every dataset in the
``fixed`` regime. Streams are the datasets' own (``trainers.data.stream`` for MNIST-1D); every
source resumes exactly from its ``state_dict``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from activescale.errors import ConfigError
from trainers.data.mnist1d import check_count
from trainers.data.seeding import Purpose, check_seed, derived_rng

__all__ = ["BatchSource", "FixedSource", "check_state"]


@runtime_checkable
class BatchSource(Protocol):
    """Where a learner's super-batches come from. Resumable: after
    ``b.load_state_dict(a.state_dict())`` both return identical batches."""

    examples_seen: int

    def next(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The next `n` examples: inputs, int64 labels, bool corrupted mask (None when the
        data do not say which examples are corrupted)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def check_state(kind: str, state: dict[str, Any], expected: dict[str, Any]) -> None:
    """Refuse to resume a source of `kind` from a state saved by a different one: `expected`
    holds what identifies this source (seed, pool size or data config, ...)."""
    found = {key: state.get(key) for key in expected}
    if state.get("kind") != kind or found != expected:
        raise ConfigError(
            f"cannot resume a {kind} source from a state saved with "
            f"{ {'kind': state.get('kind'), **found} }; this source has "
            f"{ {'kind': kind, **expected} } (same data config and run seed required)"
        )


class FixedSource:
    """Shuffled epochs over a fixed pool. Epoch e's order is a permutation drawn from a
    generator keyed by (run seed, e), so the state is just (epoch, position)."""

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, corrupted: torch.Tensor | None, seed: int
    ) -> None:
        check_seed(seed)
        if len(y) == 0:
            raise ConfigError("the training pool is empty; a fixed source needs >= 1 example")
        self._x, self._y, self._corrupted = x, y, corrupted
        self._seed = seed
        self.examples_seen = 0
        self._epoch = 0
        self._position = 0
        self._order = self._permutation(0)

    @property
    def epoch(self) -> int:
        """Completed passes over the pool (fractional progress is `examples_seen / pool size`)."""
        return self.examples_seen // len(self._y)

    def _permutation(self, epoch: int) -> torch.Tensor:
        order = derived_rng(Purpose.EPOCH, 0, self._seed, epoch).permutation(len(self._y))
        return torch.from_numpy(order)

    def next(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        check_count(n)
        pieces = []
        remaining = n
        while remaining > 0:
            if self._position == len(self._order):
                self._epoch += 1
                self._position = 0
                self._order = self._permutation(self._epoch)
            take = min(remaining, len(self._order) - self._position)
            pieces.append(self._order[self._position : self._position + take])
            self._position += take
            remaining -= take
        index = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        self.examples_seen += n
        # index_select is ~3x faster than advanced indexing for a row gather on CPU.
        corrupted = self._corrupted
        return (
            torch.index_select(self._x, 0, index),
            torch.index_select(self._y, 0, index),
            None if corrupted is None else torch.index_select(corrupted, 0, index),
        )

    def _identity(self) -> dict[str, Any]:
        return {"seed": self._seed, "pool_size": len(self._y)}

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "fixed",
            **self._identity(),
            "epoch": self._epoch,
            "position": self._position,
            "examples_seen": self.examples_seen,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_state("fixed", state, self._identity())
        self._epoch = int(state["epoch"])
        self._position = int(state["position"])
        self.examples_seen = int(state["examples_seen"])
        self._order = self._permutation(self._epoch)

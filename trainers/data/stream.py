"""A never-ending stream of fresh MNIST-1D examples: the ``stream`` regime's training source
of the generated datasets (``trainers.data.pairs`` streams pairs the same way).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from activescale.errors import ConfigError
from trainers.data.config import DataConfig
from trainers.data.mnist1d import check_count
from trainers.data.pools import mnist1d_block, mnist1d_prototypes
from trainers.data.seeding import Purpose, check_seed, derived_rng
from trainers.data.sources import check_state

__all__ = ["StreamSource"]


class StreamSource:
    """A never-ending stream of fresh MNIST-1D examples (single-epoch regime).

    Chunk c (``chunk_size`` examples) is generated and corrupted with a generator keyed by
    (data seed, run seed, c), so the state is just (chunk, position) and a resumed source
    regenerates its current chunk. Duplicated easy examples (``duplicate_easy``) are copies of
    prototypes fixed by the data seed; everything else is freshly drawn and never repeats.
    """

    dataset_name = "mnist1d"  # what make_block generates (trainers/data/pairs.py: pairs)

    def __init__(self, cfg: DataConfig, seed: int, *, chunk_size: int = 16384) -> None:
        check_seed(seed)
        if cfg.name != self.dataset_name:
            raise ConfigError(f"a stream needs name={self.dataset_name!r}, got name={cfg.name!r}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size} is not allowed: must be >= 1")
        self.cfg = cfg
        self._seed = seed
        self._chunk_size = chunk_size
        self.prototypes = mnist1d_prototypes(cfg)  # what duplicate_easy copies
        self.examples_seen = 0
        self._chunk_index = 0
        self._position = 0
        self._chunk = self.chunk(0)

    def make_block(
        self, rng: np.random.Generator, n: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`n` fresh training examples from `rng`: (inputs, targets, corrupted mask). A
        subclass that streams other data overrides this (and ``dataset_name``)."""
        return mnist1d_block(self.cfg, rng, n, self.prototypes)

    def chunk(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Chunk `index` of the stream, regenerated (a pure function of the data seed, the
        run seed and `index`)."""
        rng = derived_rng(Purpose.STREAM, self.cfg.seed, self._seed, index)
        x, y, corrupted = self.make_block(rng, self._chunk_size)
        return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(corrupted)

    def next(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        check_count(n)
        pieces: list[tuple[torch.Tensor, ...]] = []
        remaining = n
        while remaining > 0:
            if self._position == self._chunk_size:
                self._chunk_index += 1
                self._position = 0
                self._chunk = self.chunk(self._chunk_index)
            take = min(remaining, self._chunk_size - self._position)
            s = slice(self._position, self._position + take)
            pieces.append(tuple(part[s] for part in self._chunk))
            self._position += take
            remaining -= take
        self.examples_seen += n
        if not pieces:
            pieces.append(tuple(part[:0] for part in self._chunk))
        # Copies, so callers may modify batches without touching the cached chunk.
        x, y, corrupted = (torch.cat(parts) for parts in zip(*pieces, strict=True))
        return x, y, corrupted

    def _identity(self) -> dict[str, Any]:
        return {
            "seed": self._seed,
            "data": self.cfg.model_dump(mode="json"),
            "chunk_size": self._chunk_size,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "stream",
            **self._identity(),
            "chunk": self._chunk_index,
            "position": self._position,
            "examples_seen": self.examples_seen,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_state("stream", state, self._identity())
        self._chunk_index = int(state["chunk"])
        self._position = int(state["position"])
        self.examples_seen = int(state["examples_seen"])
        self._chunk = self.chunk(self._chunk_index)

"""The order in which a rank reads a shard set: pure functions of seeds, epoch and rank.

One epoch of a rank's stream (Mosaic Streaming's and webdataset's ``wids`` block shuffles
work the same way):

1. the split's shards are permuted by (data seed, run seed, epoch), and rank r of W takes
   every W-th shard of that order (``shards[r::W]``), so ranks read disjoint shards whose
   union is the split;
2. the rank's shards, concatenated, give its samples positions 0..N-1; consecutive windows of
   ``window`` positions (the shuffle buffer) are each permuted by (data seed, run seed,
   epoch, rank, window);
3. the stream emits window 0's samples in its permuted order, then window 1's, ...

So the sample at emitted position q of epoch e is known without reading anything before it:
a resumed run restarts at (epoch, position) and reads exactly the samples an uninterrupted run
reads, and the number of DataLoader workers (who decode any slice of positions) does not change
which samples come when. A shuffle within windows of K samples mixes less than a reservoir
buffer of K (samples of different windows never swap), which is why ``data pack`` shuffles
the samples when it writes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from trainers.data.seeding import Purpose, keyed_rng

__all__ = ["RankEpoch", "StreamOrder"]


@dataclass(frozen=True)
class RankEpoch:
    """The shards one rank reads in one epoch, in order; ``starts[j]`` is the stream position
    of shard ``shards[j]``'s first sample (``starts[-1]``: the epoch's length)."""

    epoch: int
    shards: np.ndarray  # indices into the split's shard list
    starts: np.ndarray  # int64, len(shards) + 1

    @property
    def total(self) -> int:
        return int(self.starts[-1])

    def locate(self, stream_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard index in the split, sample index in that shard) of stream positions."""
        j = np.searchsorted(self.starts, stream_index, side="right") - 1
        return self.shards[j], stream_index - self.starts[j]


@dataclass(frozen=True)
class StreamOrder:
    """Everything that fixes a rank's stream: the shards' sample counts, the seeds, the rank
    and the window. Picklable: DataLoader workers get a copy."""

    counts: tuple[int, ...]  # samples per shard of the split, in manifest order
    data_seed: int
    run_seed: int
    rank: int = 0
    world_size: int = 1
    window: int = 10000
    # Memos of epochs and window permutations (a few recent ones; not part of the identity).
    _epochs: dict[int, RankEpoch] = field(default_factory=dict, compare=False, repr=False)
    _windows: dict[tuple[int, int], np.ndarray] = field(
        default_factory=dict, compare=False, repr=False
    )
    _draws: dict[tuple[int, ...], np.ndarray] = field(
        default_factory=dict, compare=False, repr=False
    )

    def epoch(self, epoch: int) -> RankEpoch:
        found = self._epochs.get(epoch)
        if found is None:
            permutation = keyed_rng(
                Purpose.SHARD_ORDER, self.data_seed, self.run_seed, epoch
            ).permutation(len(self.counts))
            mine = permutation[self.rank :: self.world_size]
            counts = np.asarray(self.counts, dtype=np.int64)[mine]
            found = RankEpoch(epoch, mine, np.concatenate([[0], np.cumsum(counts)]))
            _remember(self._epochs, epoch, found)
        return found

    def window_order(self, epoch: int, window: int) -> np.ndarray:
        """The permutation of one window: emitted slot -> offset in the window."""
        found = self._windows.get((epoch, window))
        if found is None:
            size = min(self.window, self.epoch(epoch).total - window * self.window)
            rng = keyed_rng(Purpose.WINDOW, self.data_seed, self.run_seed, epoch, self.rank, window)
            found = rng.permutation(size)
            _remember(self._windows, (epoch, window), found)
        return found

    def emitted(self, epoch: int, start: int, stop: int) -> np.ndarray:
        """Stream positions (in the rank's shard concatenation) of emitted positions
        start..stop-1 of `epoch`."""
        out = np.empty(stop - start, dtype=np.int64)
        q = start
        while q < stop:
            w = q // self.window
            end = min(stop, (w + 1) * self.window)
            order = self.window_order(epoch, w)
            out[q - start : end - start] = (
                w * self.window + order[q - w * self.window : end - w * self.window]
            )
            q = end
        return out

    def augment_draws(self, epoch: int, window: int, size: int, pad: int) -> np.ndarray:
        """(size, 3) int: crop offsets (dy, dx) in [0, 2 pad] and a flip bit for each slot of a
        window, keyed like the window: the same sample gets the same draw on any worker.
        Remembered (a unit is a slice of a window: its draws are not drawn again per unit)."""
        found = self._draws.get((epoch, window, size, pad))
        if found is None:
            rng = keyed_rng(
                Purpose.AUGMENT, self.data_seed, self.run_seed, epoch, self.rank, window
            )
            found = np.stack(
                [
                    rng.integers(0, 2 * pad + 1, size),
                    rng.integers(0, 2 * pad + 1, size),
                    rng.integers(0, 2, size),
                ],
                axis=1,
            )
            _remember(self._draws, (epoch, window, size, pad), found)
        return found


def _remember(memo: dict, key: object, value: object, keep: int = 8) -> None:
    if len(memo) >= keep:
        del memo[next(iter(memo))]  # the oldest
    memo[key] = value

"""How the data's randomness is keyed: a numpy generator per (purpose, data seed, run seed, index).

Everything derived from the data (pool, test, clean, corruption, stream prototypes) depends on
the data seed only, so all runs of a sweep see the same data; the order in which a source
serves it (epoch shuffles, stream contents) also depends on the run seed. Each use draws from
its own generator, keyed by a :class:`Purpose`, so adding a draw to one never shifts another.
A dataset registered from outside (``trainers.data.registry``) derives its generators here too.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Annotated

import numpy as np
from pydantic import AfterValidator

from activescale.errors import ConfigError

__all__ = ["SEED_LIMIT", "Purpose", "Seed", "check_seed", "derived_rng", "keyed_rng"]

SEED_LIMIT = 2**32  # seeds are single SeedSequence words (see derived_rng)


class Purpose(IntEnum):
    """What a derived generator is for. The values are part of every key: never renumber."""

    TRAIN = 0  # blocks of a generated training pool
    TEST = 1
    CLEAN = 2  # the curated clean split (generated, or carved out of a file's training set)
    PROTOTYPES = 3  # the sample whose most typical examples get duplicated
    CORRUPT = 4  # corruption of a file's training set
    STREAM = 5  # chunks of a stream
    EPOCH = 6  # the shuffle of one epoch of a fixed pool
    PACK = 7  # the order in which `activescale data pack` writes a split's samples
    SHARD_ORDER = 8  # the order of a shard set's shards in one epoch (trainers.data.shards)
    WINDOW = 9  # the shuffle of one window of a rank's shard stream
    AUGMENT = 10  # crops and flips of one window of a shard stream


def derived_rng(
    purpose: Purpose, data_seed: int, run_seed: int = 0, index: int = 0
) -> np.random.Generator:
    """The generator for one use of the data's randomness.

    The key always has four words because SeedSequence treats trailing zero words as absent
    (``default_rng([1, 2]) == default_rng([1, 2, 0])``); a fixed length keeps keys distinct.
    """
    return np.random.default_rng([int(purpose), data_seed, run_seed, index])


def keyed_rng(purpose: Purpose, *words: int) -> np.random.Generator:
    """A generator keyed by more words than :func:`derived_rng` has (e.g. data seed, run seed,
    epoch, rank, window). Every caller of one purpose passes the same number of words, so keys
    stay distinct despite SeedSequence ignoring trailing zeros."""
    return np.random.default_rng([int(purpose), *(int(word) for word in words)])


def check_seed(seed: int) -> None:
    """Refuse a run seed that is not one SeedSequence word."""
    if not 0 <= seed < SEED_LIMIT:
        raise ConfigError(f"seed={seed!r} is not allowed: the run seed must be in [0, 2**32)")


def _seed_in_range(value: int) -> int:
    if not 0 <= value < SEED_LIMIT:
        raise ValueError(f"seed={value!r} is not allowed: must be in [0, 2**32)")
    return value


Seed = Annotated[int, AfterValidator(_seed_in_range)]  # a config's seed: one SeedSequence word

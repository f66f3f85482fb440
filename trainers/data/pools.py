"""The generated MNIST-1D dataset (``dataset.name: mnist1d``): its training pool, clean and
test splits, and the noisy blocks its pool and its stream are made of.

The test and clean splits have exactly balanced classes and depend only on (data seed, size).
The training pool is built from independently seeded blocks of :data:`POOL_BLOCK` examples,
so a smaller ``train_size`` gives a prefix of a larger one and the clean pool is the same for
every corruption setting. ``trainers.data.pairs`` builds the paired dataset on the same pool.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from trainers.data.config import DataConfig
from trainers.data.corruptions import corrupt, easy_prototypes
from trainers.data.mnist1d import MNIST1D_LENGTH, MNIST1D_NUM_CLASSES, generate_mnist1d
from trainers.data.seeding import Purpose, derived_rng
from trainers.data.splits import DatasetFacts, Splits, splits_from_arrays

__all__ = [
    "POOL_BLOCK",
    "Block",
    "describe_mnist1d",
    "mnist1d_block",
    "mnist1d_prototypes",
    "mnist1d_splits",
    "train_pool",
]

POOL_BLOCK = 4096  # the pool is built from independently seeded blocks of this size
_PROTOTYPE_SAMPLE = 4096

# n noisy training examples from (config, generator, n, easy prototypes or None):
# (inputs, targets, corrupted mask). mnist1d_block for labels, pairs.pair_block for captions.
Block = Callable[
    [DataConfig, np.random.Generator, int, tuple[np.ndarray, np.ndarray] | None],
    tuple[np.ndarray, np.ndarray, np.ndarray],
]


def mnist1d_prototypes(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray] | None:
    """Easy examples for duplication: nearest to their class mean in a dedicated clean sample
    (None when nothing is duplicated). Fixed by the data seed: pool and stream share them."""
    if cfg.duplicate_easy == 0:
        return None
    x, y = generate_mnist1d(
        _PROTOTYPE_SAMPLE,
        derived_rng(Purpose.PROTOTYPES, cfg.seed),
        label_balance="balanced",
        noise=cfg.signal_noise,
    )
    return easy_prototypes(x, y)


def mnist1d_block(
    cfg: DataConfig,
    rng: np.random.Generator,
    n: int,
    prototypes: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n fresh examples corrupted as `cfg` says: (inputs, labels, corrupted mask)."""
    x, y = generate_mnist1d(n, rng, noise=cfg.signal_noise)
    return corrupt(x, y, cfg, rng, MNIST1D_NUM_CLASSES, prototypes)


def train_pool(
    cfg: DataConfig, block: Block, label_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fixed training pool (inputs, targets, corrupted mask); empty for a stream.

    Built from independently seeded blocks of ``POOL_BLOCK`` examples, so a smaller
    ``train_size`` gives a prefix of a larger one."""
    if cfg.regime == "stream":
        return (
            np.empty((0, MNIST1D_LENGTH), dtype=np.float32),
            np.empty((0, *label_shape), dtype=np.int64),
            np.empty(0, dtype=bool),
        )
    prototypes = mnist1d_prototypes(cfg)
    blocks = [
        block(cfg, derived_rng(Purpose.TRAIN, cfg.seed, 0, b), POOL_BLOCK, prototypes)
        for b in range(math.ceil(cfg.train_size / POOL_BLOCK))
    ]
    x, y, corrupted = (
        np.concatenate(parts)[: cfg.train_size] for parts in zip(*blocks, strict=True)
    )
    return x, y, corrupted


def mnist1d_splits(cfg: DataConfig) -> Splits:
    """The mnist1d dataset's splits (see the module docstring)."""
    test = generate_mnist1d(
        cfg.test_size,
        derived_rng(Purpose.TEST, cfg.seed),
        label_balance="balanced",
        noise=cfg.signal_noise,
    )
    clean = generate_mnist1d(
        cfg.clean_size,
        derived_rng(Purpose.CLEAN, cfg.seed),
        label_balance="balanced",
        noise=cfg.signal_noise,
    )
    train = train_pool(cfg, mnist1d_block, label_shape=())
    return splits_from_arrays(train, test, clean, num_classes=MNIST1D_NUM_CLASSES)


def describe_mnist1d(cfg: DataConfig) -> DatasetFacts:
    """The facts of :func:`mnist1d_splits` without generating anything."""
    return DatasetFacts(
        input_shape=(MNIST1D_LENGTH,), num_classes=MNIST1D_NUM_CLASSES, clean_size=cfg.clean_size
    )

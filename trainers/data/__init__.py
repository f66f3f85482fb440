"""Data for active-selection runs: datasets, corruptions, and the sources a learner draws from.

At each learner step the training loop draws a super-batch from a :class:`BatchSource`, the
scorers rank it and the top examples are kept. The package, one module per job:

- ``mnist1d``: :func:`generate_mnist1d`, a vectorised MNIST-1D generator (same transformation
  as ``mnist1d.transform.transform``, ~60x faster than ``mnist1d.data.make_dataset``), so that
  runs can use a fixed pool of any size or an unbounded stream of fresh examples;
- ``corruptions``: the corruptions studied (label noise, pure-noise inputs, duplicated easy
  examples) as pure functions that also return which examples they corrupted;
- ``config``: :class:`DataConfig`, which dataset a run uses and how it is corrupted;
- ``splits``: :class:`Splits` (train pool, clean split for the reference model, test split)
  and :class:`DatasetFacts` (their shapes, for planning);
- ``pools``, ``pairs``, ``files``, ``vision``: the datasets, MNIST-1D, MNIST-1D
  signal-caption pairs, an ``.npz`` file, CIFAR-10 and an image folder;
- ``sources`` and ``stream``: :class:`FixedSource` (shuffled epochs over the pool) and
  :class:`StreamSource` (fresh examples, single-epoch regime), both resumable exactly from
  ``state_dict``;
- ``registry``: name -> config model, splits, stream source, facts; :func:`load_splits`,
  :func:`make_source` and :func:`dataset_facts` dispatch through it. ``catalog`` registers
  the built-in datasets with :func:`register_dataset`, as a plugin registers its own;
- ``seeding``: how the data's randomness is keyed. Everything derived from the data (pool,
  test, clean, corruption, stream prototypes) depends on ``DataConfig.seed`` only, so all
  runs of a sweep see the same data; the order in which a source serves it (epoch shuffles,
  stream contents) also depends on the run seed.
"""

from __future__ import annotations

from trainers.data.catalog import BUILT_IN
from trainers.data.config import DataConfig
from trainers.data.corruptions import (
    corrupt,
    easy_prototypes,
    inject_duplicates,
    inject_label_noise,
    inject_noise_inputs,
)
from trainers.data.mnist1d import MNIST1D_LENGTH, MNIST1D_NUM_CLASSES, generate_mnist1d
from trainers.data.pairs import PairedSplits, PairStreamSource, load_pairs
from trainers.data.pools import train_pool
from trainers.data.registry import (
    DatasetConfig,
    DatasetEntry,
    DatasetField,
    check_dataset_settings,
    dataset_config,
    dataset_entry,
    dataset_facts,
    load_splits,
    make_source,
    reads_per_rank,
    register_dataset,
    registered_datasets,
)
from trainers.data.sources import BatchSource, FixedSource
from trainers.data.splits import DatasetFacts, Splits
from trainers.data.stream import StreamSource

__all__ = [
    "BUILT_IN",
    "MNIST1D_LENGTH",
    "MNIST1D_NUM_CLASSES",
    "BatchSource",
    "DataConfig",
    "DatasetConfig",
    "DatasetEntry",
    "DatasetFacts",
    "DatasetField",
    "FixedSource",
    "PairStreamSource",
    "PairedSplits",
    "Splits",
    "StreamSource",
    "check_dataset_settings",
    "corrupt",
    "dataset_config",
    "dataset_entry",
    "dataset_facts",
    "easy_prototypes",
    "generate_mnist1d",
    "inject_duplicates",
    "inject_label_noise",
    "inject_noise_inputs",
    "load_pairs",
    "load_splits",
    "make_source",
    "reads_per_rank",
    "register_dataset",
    "registered_datasets",
    "train_pool",
]

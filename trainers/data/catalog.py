"""The built-in datasets, registered through the same :func:`register_dataset` a plugin uses.

All of them share :class:`DataConfig`; the generated ones
can stream and describe themselves without generating data, the file-backed ones are loaded
to learn their shapes (which also checks the files).
"""

from __future__ import annotations

from typing import Any

from trainers.data.config import DataConfig
from trainers.data.files import npz_splits
from trainers.data.pairs import PairStreamSource, describe_pairs, load_pairs
from trainers.data.pools import describe_mnist1d, mnist1d_splits
from trainers.data.registry import DatasetEntry, register_dataset
from trainers.data.shards import ShardsConfig, ShardSource, describe_shards, shard_splits
from trainers.data.stream import StreamSource
from trainers.data.vision import cifar10_splits, imagefolder_splits

__all__ = ["BUILT_IN"]

_ROOT_FOLDER = "the dataset's root folder"

BUILT_IN: tuple[DatasetEntry[Any], ...] = (
    register_dataset(
        "mnist1d",
        config=DataConfig,
        splits=mnist1d_splits,
        stream=StreamSource,
        describe=describe_mnist1d,
        description="MNIST-1D, generated: a fixed pool of any size or a stream",
        source="built-in",
    ),
    register_dataset(
        "mnist1d_pairs",
        config=DataConfig,
        splits=load_pairs,
        stream=PairStreamSource,
        describe=describe_pairs,
        targets="signal-caption pairs",
        description="MNIST-1D signals with captions (task: contrastive), generated",
        source="built-in",
    ),
    register_dataset(
        "npz",
        config=DataConfig,
        splits=npz_splits,
        path="the .npz file",
        description="arrays x, y, x_test, y_test (optional x_clean, y_clean) of an .npz file",
        source="built-in",
    ),
    register_dataset(
        "cifar10",
        config=DataConfig,
        splits=cifar10_splits,
        path=_ROOT_FOLDER,
        description="CIFAR-10 from its extracted python batches",
        source="built-in",
    ),
    register_dataset(
        "imagefolder",
        config=DataConfig,
        splits=imagefolder_splits,
        path=_ROOT_FOLDER,
        description="images in train/<class>/, test/<class>/ (optional clean/<class>/)",
        source="built-in",
    ),
    register_dataset(
        "shards",
        config=ShardsConfig,
        splits=shard_splits,
        stream=ShardSource,
        describe=describe_shards,
        path="the folder written by `activescale data pack`",
        description="WebDataset shards written by `activescale data pack`, streamed",
        source="built-in",
        per_rank=True,
    ),
)

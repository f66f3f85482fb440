"""A shard source that records the keys of every draw, registered as the dataset
``traced_shards`` (read per rank), for the tests of what a resumed or data-parallel run trains
on (tests/test_shard_stream.py, tests/test_distributed_shards.py).

Register it with :func:`traced_dataset` in the test's process (it is removed again afterwards:
tests/test_data_registry.py lists the registry's contents, which live as long as the process)
and with :func:`register_traced` in a rank's own process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from pydantic import Field

from tests.conftest import datasets_restored
from trainers.data import register_dataset, registered_datasets
from trainers.data.shards import ShardsConfig, ShardSource, describe_shards, shard_splits

NAME = "traced_shards"
TRACE: list[tuple[int, list[str]]] = []  # (examples seen before a draw, the draw's keys)
SOURCES: list[ShardSource] = []  # this process's sources, latest last


class TracedSource:
    def __init__(self, cfg: ShardsConfig, seed: int, *, rank: int = 0, world_size: int = 1):
        self.inner = ShardSource(cfg, seed, rank=rank, world_size=world_size)
        self.averaged_metrics = self.inner.averaged_metrics
        SOURCES.append(self.inner)

    @property
    def examples_seen(self) -> int:
        return self.inner.examples_seen

    def next(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        start = self.inner.examples_seen
        x, y, corrupted, keys = self.inner.next_with_keys(n)
        TRACE.append((start, keys))
        return x, y, corrupted

    def metrics(self) -> dict[str, float]:
        return self.inner.metrics()

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)


class TracedShardsConfig(ShardsConfig):
    name: str = Field(NAME, description="Shards whose draws a test records.")


def register_traced() -> None:
    """Register the dataset in this process, once."""
    if NAME not in registered_datasets():
        register_dataset(
            NAME,
            config=TracedShardsConfig,
            splits=shard_splits,
            stream=TracedSource,
            describe=describe_shards,
            path="the shard folder",
            per_rank=True,
        )


@contextlib.contextmanager
def traced_dataset() -> Iterator[None]:
    """The dataset registered while the block runs, and the registry as it was afterwards."""
    with datasets_restored():
        register_traced()
        yield


def trained_keys() -> dict[int, str]:
    """Stream position -> key of every example this process drew; a position drawn twice (a
    block drawn again after a resume) must have the same key both times."""
    seen: dict[int, str] = {}
    for start, keys in TRACE:
        for i, key in enumerate(keys):
            assert seen.setdefault(start + i, key) == key, (start + i, seen[start + i], key)
    return seen

"""The ``shards`` dataset: a packed WebDataset shard set, streamed for the single-epoch regime.

``dataset: {name: shards, path: OUT}`` reads what ``activescale data pack SRC OUT`` wrote
(``trainers.data.pack``; the format in docs/data.md). The training split is never loaded
whole: :class:`ShardSource` streams it, decoding and transforming in DataLoader worker
processes while the step runs, in an order that is a pure function of (data seed, run seed,
epoch, rank) (``trainers.data.shard_order``), so its state is (epoch, position) and a resumed
run reads exactly the samples an uninterrupted one reads. The test and clean splits (the
evaluation set and the reference's training set) are read whole at the start.

Label noise (``label_noise``) is decided per sample by a hash of (data seed, key), so it is the
same in every epoch and on every rank; a sample's corrupted flag is known where activescale
injected noise or where every sample's .json carries a ``corrupted`` field, else unknown
(the source gives None, and the run logs no ``selected_corrupted``).
"""

from __future__ import annotations

import math
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from activescale.errors import ConfigError, DataError
from trainers.captions import check_fraction
from trainers.data.manifest import Manifest, read_manifest
from trainers.data.mnist1d import check_count
from trainers.data.registry import DatasetConfig
from trainers.data.seeding import Seed, check_seed
from trainers.data.shard_order import StreamOrder
from trainers.data.shard_reader import (
    ReadSettings,
    ShardReader,
    UnitDataset,
    images_to_tensor,
    normalise,
)
from trainers.data.sources import check_state
from trainers.data.splits import DatasetFacts, Splits

__all__ = ["ShardSource", "ShardsConfig", "describe_shards", "shard_splits"]

MAX_UNIT = 4096  # samples a worker decodes per request, at most
# Bytes of decoded images (uint8) a worker returns per request, about: each request costs the
# main process a round trip to the worker for the shared memory (a few ms while the step keeps
# the cores busy), so small images come in units of several draws (bench_shards.py: 2048
# 32x32 RGB images). Memory in flight: workers x prefetch x UNIT_BYTES.
UNIT_BYTES = 6 * 2**20
SKIP_MESSAGES = 10  # skipped samples whose error is printed; the rest are only counted


class ShardsConfig(DatasetConfig):
    """A shard set written by ``activescale data pack``, streamed (docs/data.md)."""

    name: str = Field("shards", description="The dataset's registered name: shards.")
    path: str | None = Field(
        None, description="The folder written by `activescale data pack` (holds manifest.json)."
    )
    regime: Literal["fixed", "stream"] = Field(
        "stream", description="stream only: the training split is read as a stream."
    )
    train: str = Field("train", description="The manifest's split to train on.")
    clean: str = Field("clean", description="The split a pretrained reference trains on.")
    test: str = Field("test", description="The split the learner is evaluated on.")
    shuffle_buffer: int = Field(
        10000, ge=1, description="Samples per shuffle window of a rank's stream."
    )
    augment: Literal["none", "crop", "crop_flip"] = Field(
        "none",
        description="Training augmentation: random crops (1/8 padding), and horizontal flips.",
    )
    image_size: int | None = Field(
        None, ge=1, description="Resize every image to this square size (null: as packed)."
    )
    label_noise: float = Field(
        0.0, description="Fraction of training labels replaced by a random different class."
    )
    seed: Seed = Field(0, description="Data seed: which samples label noise hits.")
    workers: int = Field(
        2, ge=0, description="DataLoader worker processes decoding ahead (0: in the step)."
    )
    prefetch: int = Field(2, ge=1, description="Units (super-batches) each worker decodes ahead.")
    skip_bad: bool = Field(
        False,
        description=(
            "Skip and count bad samples (truncated shard, missing field, undecodable image, "
            "label out of range; metric data/skipped) instead of stopping with their error."
        ),
    )

    @field_validator("label_noise")
    @classmethod
    def _fraction(cls, value: float) -> float:
        return check_fraction(value, "label_noise")

    @model_validator(mode="after")
    def _streams(self) -> ShardsConfig:
        if self.regime != "stream":
            raise ValueError(
                f"regime={self.regime!r} is not allowed with name='shards': shards are read as a "
                "stream; for an in-memory pool pack nothing and use name: npz or imagefolder"
            )
        return self


def _folder(cfg: ShardsConfig) -> Path:
    if cfg.path is None:  # the registry's check refuses this; guards later assignment
        raise ConfigError("path=None is not allowed with name='shards': set dataset.path")
    return Path(cfg.path)


def read_settings(
    cfg: ShardsConfig, manifest: Manifest, split: str, *, train: bool
) -> ReadSettings:
    """How to read one split of `manifest` (training transforms and noise only for train)."""
    folder = _folder(cfg)
    info = manifest.split(
        split, folder, {cfg.train: "train", cfg.clean: "clean"}.get(split, "test")
    )
    return ReadSettings(
        folder=folder,
        shard_names=tuple(s.name for s in info.shards),
        counts=tuple(s.count for s in info.shards),
        image_shape=(manifest.image.height, manifest.image.width, manifest.image.channels),
        size=(cfg.image_size, cfg.image_size) if cfg.image_size else None,
        mean=tuple(manifest.mean),
        std=tuple(manifest.std),
        num_classes=manifest.num_classes,
        label_noise=cfg.label_noise if train else 0.0,
        data_seed=cfg.seed,
        json_corrupted=train and info.corrupted is not None,
        augment=cfg.augment if train else "none",
        skip_bad=cfg.skip_bad,
    )


def _check_noise(cfg: ShardsConfig, manifest: Manifest) -> None:
    if cfg.label_noise > 0 and manifest.num_classes < 2:
        raise DataError(
            f"{_folder(cfg)}: label_noise needs at least 2 classes, the manifest has "
            f"{manifest.num_classes}"
        )


def describe_shards(cfg: ShardsConfig) -> DatasetFacts:
    """The dataset's facts from its manifest alone (no shard is opened)."""
    manifest = read_manifest(_folder(cfg))
    shape = manifest.input_shape
    if cfg.image_size:
        shape = (shape[0], cfg.image_size, cfg.image_size)
    clean = manifest.splits.get(cfg.clean)
    return DatasetFacts(
        input_shape=shape,
        num_classes=manifest.num_classes,
        clean_size=clean.count if clean is not None else 0,
    )


def shard_splits(cfg: ShardsConfig) -> Splits:
    """The test and clean splits read whole (decoded, normalised, no augmentation); the train
    pool is empty: training examples come from :class:`ShardSource`."""
    folder = _folder(cfg)
    manifest = read_manifest(folder)
    _check_noise(cfg, manifest)
    manifest.split(cfg.train, folder, "train")  # a named error now rather than at the first step

    def whole(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        settings = read_settings(cfg, manifest, split, train=False)
        reader = ShardReader(settings)
        try:
            samples = reader.read_all()
        finally:
            reader.close()
        return images_to_tensor(samples.pixels, settings), torch.from_numpy(samples.labels)

    test_x, test_y = whole(cfg.test)
    clean_x, clean_y = whole(cfg.clean)  # a pack without one: --clean-fraction was 0
    facts = describe_shards(cfg)
    return Splits(
        train_x=torch.zeros((0, *facts.input_shape)),
        train_y=torch.zeros(0, dtype=torch.int64),
        train_corrupted=torch.zeros(0, dtype=torch.bool),
        test_x=test_x,
        test_y=test_y,
        clean_x=clean_x,
        clean_y=clean_y,
        num_classes=manifest.num_classes,
        input_shape=facts.input_shape,
    )


class _Units:
    """The DataLoader's sampler: units of ``size`` emitted positions from (epoch, position)
    on, never across an epoch's end; endless."""

    def __init__(self, order: StreamOrder, epoch: int, position: int, size: int) -> None:
        self.order, self.epoch, self.position, self.size = order, epoch, position, size

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        epoch, position = self.epoch, self.position
        while True:
            total = self.order.epoch(epoch).total
            while position < total:
                stop = min(position + self.size, total)
                yield (epoch, position, stop)
                position = stop
            epoch, position = epoch + 1, 0


def _as_is(unit: Any) -> Any:  # the DataLoader's collate: none needed
    return unit


class ShardSource:
    """The training split of a shard set as an endless stream of epochs (a BatchSource).

    Rank `rank` of `world_size` reads only its shards (``trainers.data.shard_order``). With
    ``workers`` > 0, DataLoader worker processes decode units of the stream ahead of the step
    (``prefetch`` units each); with 0 the step decodes. The state is (epoch, position,
    examples seen, samples skipped); the workers' count is no part of it (any count gives the
    same stream).
    """

    # Over ranks, data/skipped adds up; data/epoch is each rank's share of its own epochs.
    averaged_metrics = frozenset({"data/epoch"})

    def __init__(self, cfg: ShardsConfig, seed: int, *, rank: int = 0, world_size: int = 1) -> None:
        check_seed(seed)
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank={rank} is not allowed with world_size={world_size}")
        self.cfg = cfg
        folder = _folder(cfg)
        manifest = read_manifest(folder)
        _check_noise(cfg, manifest)
        self.settings = read_settings(cfg, manifest, cfg.train, train=True)
        info = manifest.split(cfg.train, folder, "train")
        empty = [s.name for s in info.shards if s.count == 0]
        if empty or len(info.shards) < world_size:
            raise DataError(
                f"{folder}: split {cfg.train!r} has {len(info.shards)} shards "
                f"({len(empty)} empty) for {world_size} ranks; every rank needs a shard with "
                "samples: re-pack with a smaller --shard-size"
            )
        if not cfg.skip_bad:
            for shard in info.shards:  # a truncated or missing shard fails now, not hours in
                path = folder / shard.name
                if not path.is_file() or path.stat().st_size != shard.bytes:
                    found = path.stat().st_size if path.is_file() else "no"
                    raise DataError(
                        f"shard {shard.name} has {found} bytes, the manifest says "
                        f"{shard.bytes}: missing, truncated or rewritten; re-pack the dataset, or "
                        "set dataset.skip_bad: true to skip and count its unreadable samples"
                    )
        self.order = StreamOrder(
            counts=self.settings.counts,
            data_seed=cfg.seed,
            run_seed=seed,
            rank=rank,
            world_size=world_size,
            window=cfg.shuffle_buffer,
        )
        self._seed, self._rank, self._world = seed, rank, world_size
        self.examples_seen = 0
        self.skipped = 0
        self._epoch, self._position = 0, 0
        self._units: Iterator[dict[str, Any]] | None = None  # started at the first draw
        self._unit_size = 0
        self._buffer: deque[dict[str, Any]] = deque()
        self._taken = 0  # rows of the buffer's first unit already served
        self.skip_messages: list[str] = []  # the first few skipped samples' errors (printed)

    @property
    def corruption_known(self) -> bool:
        return self.settings.corruption_known

    @property
    def epoch(self) -> float:
        """Epochs of the rank's stream read, with the fraction of the current one."""
        return self._epoch + self._position / self.order.epoch(self._epoch).total

    def metrics(self) -> dict[str, float]:
        """What the run logs about its data at each evaluation."""
        return {"data/epoch": self.epoch, "data/skipped": float(self.skipped)}

    def next(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        x, y, corrupted, _ = self.next_with_keys(n)
        return x, y, corrupted

    def next_with_keys(
        self, n: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, list[str]]:
        """The next `n` examples and their sample keys (what tests compare across resumes)."""
        check_count(n)
        parts: list[tuple[torch.Tensor, ...]] = []
        corrupted_parts: list[torch.Tensor] = []
        keys: list[str] = []
        remaining = n
        while remaining > 0:
            if not self._buffer:
                self._buffer.append(self._next_unit(n))
                self._taken = 0
            unit = self._buffer[0]
            rows = slice(self._taken, min(len(unit["keys"]), self._taken + remaining))
            taken = rows.stop - rows.start
            if taken:
                self._advance(unit["epoch"], unit["positions"][rows], taken)
                parts.append((unit["x"][rows], unit["y"][rows]))
                if unit["corrupted"] is not None:
                    corrupted_parts.append(unit["corrupted"][rows])
                keys.extend(unit["keys"][rows])
                remaining -= taken
                self._taken += taken
            if self._taken == len(unit["keys"]):
                self._buffer.popleft()
                self._taken = 0
        self.examples_seen += n
        if len(parts) == 1:  # views of one unit (rows never served twice)
            images, y = parts[0]
        else:
            images, y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        x = normalise(images, self.settings)
        corrupted = torch.cat(corrupted_parts) if self.corruption_known else None
        return x, y, corrupted, keys

    def _advance(self, epoch: int, positions: np.ndarray, taken: int) -> None:
        """Move the state past the served rows; positions skipped between them are counted."""
        if epoch != self._epoch:
            self.skipped += self.order.epoch(self._epoch).total - self._position
            self._epoch, self._position = epoch, 0
        last = int(positions[-1])
        self.skipped += last + 1 - self._position - taken
        self._position = last + 1

    def _next_unit(self, n: int) -> dict[str, Any]:
        if self._units is None:
            sample_bytes = math.prod(self.settings.output_shape)  # uint8
            self._unit_size = min(MAX_UNIT, max(n, UNIT_BYTES // sample_bytes))
            self._units = self._start(self._unit_size)
        unit = next(self._units)
        if unit["error"] is not None:
            raise DataError(unit["error"])
        for name in ("y", "corrupted"):
            if unit[name] is not None:
                unit[name] = torch.from_numpy(unit[name])
        for message in unit["skipped"][: max(0, SKIP_MESSAGES - len(self.skip_messages))]:
            self.skip_messages.append(message)
            print(f"activescale: skip_bad: skipped {message}", file=sys.stderr, flush=True)
        return unit

    def _start(self, size: int) -> Iterator[dict[str, Any]]:
        epoch, position = self._epoch, self._position
        if position >= self.order.epoch(epoch).total:
            epoch, position = epoch + 1, 0
        units = _Units(self.order, epoch, position, size)
        dataset = UnitDataset(self.settings, self.order, unit=size)
        if self.cfg.workers == 0:
            return (dataset[unit] for unit in units)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=None,
            sampler=units,
            num_workers=self.cfg.workers,
            prefetch_factor=self.cfg.prefetch,
            collate_fn=_as_is,
        )
        return iter(loader)

    def close(self) -> None:
        """Stop the worker processes (they also stop when the source is garbage-collected)."""
        self._units = None
        self._buffer.clear()

    def _identity(self) -> dict[str, Any]:
        data = self.cfg.model_dump(mode="json", exclude={"workers", "prefetch"})
        return {"seed": self._seed, "data": data, "rank": self._rank, "world_size": self._world}

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "shards",
            **self._identity(),
            "epoch": self._epoch,
            "position": self._position,
            "examples_seen": self.examples_seen,
            "skipped": self.skipped,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_state("shards", state, self._identity())
        self.close()  # workers decoding ahead of the old position stop
        self._epoch, self._position = int(state["epoch"]), int(state["position"])
        self.examples_seen = int(state["examples_seen"])
        self.skipped = int(state["skipped"])

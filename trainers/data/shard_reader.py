"""Reading and decoding a shard set's samples, in DataLoader worker processes or in the main one.

A :class:`ShardReader` reads samples by (shard, index in shard): it indexes a shard's tar
headers once (``trainers.data.shardfile``), keeps a few shards open, reads each sample's
members in one ``pread``, checks every field (image, label, corruption flag, image size) and
applies the label noise activescale injects; then it decodes the images of all the samples
read together (``trainers.data.images``). :class:`UnitDataset` is what DataLoader workers run:
a "unit" is a slice of emitted positions of one epoch of a rank's stream
(``trainers.data.shard_order``), returned decoded and augmented (uint8; the main process
normalises).

A bad sample is a DataError naming the shard and the key; with ``skip_bad`` it is left out
and counted instead. Errors travel back from a worker as text in the unit, so the main
process raises the same one-line DataError as when it reads the shard itself.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from activescale.errors import DataError
from trainers.data.corruptions import hashed_label_noise
from trainers.data.images import decode_image, decode_pngs
from trainers.data.shard_order import StreamOrder
from trainers.data.shardfile import (
    IMAGE_FIELDS,
    IndexedShard,
    index_shard,
    read_members,
    sample_label,
)

__all__ = [
    "ReadSettings",
    "Samples",
    "ShardReader",
    "UnitDataset",
    "crop_images",
    "images_to_tensor",
    "normalise",
]

OPEN_SHARDS = 8  # shard files a reader keeps open (a window spans a few)
INDEXED_SHARDS = 4  # shard indexes a reader of whole splits remembers (~0.14 KB a sample)


@dataclass(frozen=True)
class ReadSettings:
    """How to read and decode one split's samples (picklable, for worker processes)."""

    folder: Path
    shard_names: tuple[str, ...]
    counts: tuple[int, ...]
    image_shape: tuple[int, int, int]  # (H, W, C) as stored
    size: tuple[int, int] | None  # resize to (H, W); None: images must have the stored size
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    label_noise: float = 0.0
    data_seed: int = 0
    json_corrupted: bool = False  # every sample's .json has a "corrupted" flag
    augment: str = "none"  # none, crop or crop_flip
    skip_bad: bool = False

    @property
    def corruption_known(self) -> bool:
        """Whether a sample's corrupted flag means anything: activescale injected the noise,
        or the samples carry the flag."""
        return self.label_noise > 0 or self.json_corrupted

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the tensors this reader gives."""
        height, width = self.size or self.image_shape[:2]
        return (self.image_shape[2], height, width)

    @property
    def pad(self) -> int:
        """Crop padding in pixels: an eighth of the side (4 for 32x32), as CIFAR training does."""
        return max(1, self.output_shape[1] // 8)


@dataclass(frozen=True)
class Samples:
    """Samples read together, in the order asked for: ``rows`` says which of those asked for
    they are (all of them, unless skip_bad left some out: their error texts are ``skipped``)."""

    rows: np.ndarray  # (N,) int64, ascending
    keys: list[str]
    pixels: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int64
    corrupted: np.ndarray  # (N,) bool
    skipped: list[str]

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True, slots=True)
class _Fetched:
    """One sample's bytes read and its fields checked; its image not decoded yet."""

    shard: str
    key: str
    image: bytes
    label: int
    corrupted: bool


class ShardReader:
    """Samples of one split by (shard, index in shard), with a few shards kept open."""

    def __init__(self, settings: ReadSettings, keep_indexes: int = INDEXED_SHARDS) -> None:
        self.settings = settings
        self.keep_indexes = keep_indexes
        self._indexes: OrderedDict[int, IndexedShard] = OrderedDict()
        self._files: OrderedDict[int, BinaryIO] = OrderedDict()

    def close(self) -> None:
        for file in self._files.values():
            file.close()
        self._files.clear()

    def __getstate__(self) -> dict[str, Any]:  # open files stay with their process
        return {"settings": self.settings, "keep_indexes": self.keep_indexes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["settings"], state["keep_indexes"])  # type: ignore[misc]

    def __del__(self) -> None:
        self.close()

    def shard(self, shard: int) -> IndexedShard:
        """The shard's index (read once, then remembered with the last `keep_indexes`)."""
        found = self._indexes.get(shard)
        if found is not None:
            self._indexes.move_to_end(shard)
            return found
        name = self.settings.shard_names[shard]
        found = index_shard(self.settings.folder / name)
        expected = self.settings.counts[shard]
        if len(found.keys) > expected:
            raise DataError(
                f"shard {name} has {len(found.keys)} samples but the manifest says "
                f"{expected}: the file was rewritten; re-pack the dataset"
            )
        _remember(self._indexes, shard, found, self.keep_indexes)
        return found

    def _file(self, shard: int) -> BinaryIO:
        found = self._files.get(shard)
        if found is None:
            path = self.settings.folder / self.settings.shard_names[shard]
            try:
                found = open(path, "rb")  # noqa: SIM115 (kept open; closed when evicted)
            except OSError as err:
                raise DataError(
                    f"shard {self.settings.shard_names[shard]} cannot be read ({err})"
                ) from err
            evicted = _remember(self._files, shard, found, OPEN_SHARDS)
            if evicted is not None:
                evicted.close()
        else:
            self._files.move_to_end(shard)
        return found

    def _fetch(self, shard: int, indexed: IndexedShard, fd: int, index: int) -> _Fetched:
        """One sample of `shard` (its index, its open file): its members read, its label and
        flag checked, label noise applied. A DataError names the shard and the key."""
        settings = self.settings
        name = settings.shard_names[shard]
        if index >= len(indexed.keys):
            why = "the file is truncated" if indexed.truncated else "the file has fewer samples"
            raise DataError(
                f"shard {name}: sample {index} of {settings.counts[shard]} is missing: {why} "
                f"(it ends after {len(indexed.keys)} samples); re-pack the dataset, or set "
                "dataset.skip_bad: true to skip and count such samples"
            )
        sample = indexed.sample(index)
        fields = sample.fields
        image_field = next((ext for ext in IMAGE_FIELDS if ext in fields), None)
        if image_field is None:
            raise DataError(
                f"shard {name}, sample {sample.key!r} has no image: it needs a "
                f"{sample.key}.png, .jpg or .npy member; it has {sorted(fields)}"
            )
        # The image, the label, and the .json only where it is needed (a parse).
        wanted = [image_field, "cls"]
        if settings.json_corrupted or "cls" not in fields:
            wanted.append("json")
        data = read_members(fd, {ext: fields[ext] for ext in wanted if ext in fields})
        label, meta = sample_label(sample, data, name, settings.num_classes)
        corrupted = False
        if settings.json_corrupted:
            flag = meta.get("corrupted")
            if not isinstance(flag, bool):
                raise DataError(
                    f"shard {name}, sample {sample.key!r}: its .json has no boolean "
                    "'corrupted' field, but the manifest says every sample of the split has one"
                )
            corrupted = flag
        label, flipped = hashed_label_noise(
            sample.key, label, settings.label_noise, settings.num_classes, settings.data_seed
        )
        return _Fetched(name, sample.key, data[image_field], label, corrupted or flipped)

    def _decode(self, fetched: _Fetched) -> np.ndarray:
        """One image that :func:`decode_pngs` left, decoded by Pillow and checked."""
        settings = self.settings
        pixels = decode_image(
            fetched.image, settings.image_shape[2], fetched.shard, fetched.key, settings.size
        )
        if settings.size is None and pixels.shape != settings.image_shape:
            raise DataError(
                f"shard {fetched.shard}, sample {fetched.key!r}: image of shape {pixels.shape} "
                f"(H, W, C), but the manifest says {settings.image_shape}; re-pack, or set "
                "dataset.image_size to resize every image"
            )
        return pixels

    def read_many(self, shards: np.ndarray, indices: np.ndarray) -> Samples:
        """Samples in the given order: read shard by shard in file order (for locality), then
        decoded together. A bad one is an error, or with skip_bad left out and its error text
        kept in ``skipped`` (in file order)."""
        settings = self.settings
        fetched: list[_Fetched | None] = [None] * len(shards)
        errors: dict[int, str] = {}  # row -> why it was skipped

        def bad(err: DataError, rows: list[int]) -> None:
            if not settings.skip_bad:
                raise err
            errors.update(dict.fromkeys(rows, str(err)))

        order = np.lexsort((indices, shards))
        ordered_shards = shards[order]
        starts = np.flatnonzero(np.r_[True, ordered_shards[1:] != ordered_shards[:-1]])
        for rows in np.split(order, starts[1:]) if len(order) else []:
            shard = int(shards[rows[0]])
            try:
                indexed, fd = self.shard(shard), self._file(shard).fileno()
            except DataError as err:
                bad(err, rows.tolist())
                continue
            for i, index in zip(rows.tolist(), indices[rows].tolist(), strict=True):
                try:
                    fetched[i] = self._fetch(shard, indexed, fd, index)
                except DataError as err:
                    bad(err, [i])
        kept = [i for i, f in enumerate(fetched) if f is not None]
        good = [f for f in fetched if f is not None]
        channels = settings.image_shape[2]
        height, width = settings.size or settings.image_shape[:2]
        pixels, rest = decode_pngs([f.image for f in good], channels, height, width)
        failed = []
        for j in rest:
            try:
                pixels[j] = self._decode(good[j])
            except DataError as err:
                bad(err, [kept[j]])
                failed.append(j)
        if failed:
            ok = np.setdiff1d(np.arange(len(good)), failed)
            pixels, kept, good = pixels[ok], [kept[j] for j in ok], [good[j] for j in ok]
        return Samples(
            rows=np.asarray(kept, dtype=np.int64),
            keys=[f.key for f in good],
            pixels=pixels,
            labels=np.fromiter((f.label for f in good), dtype=np.int64, count=len(good)),
            corrupted=np.fromiter((f.corrupted for f in good), dtype=np.bool_, count=len(good)),
            skipped=[errors[i] for i in order.tolist() if i in errors],
        )

    def read_all(self) -> Samples:
        """Every sample of the split in manifest order (the test and clean splits)."""
        shards = np.repeat(np.arange(len(self.settings.counts)), self.settings.counts)
        indices = np.concatenate(
            [np.arange(count, dtype=np.int64) for count in self.settings.counts]
        )
        return self.read_many(shards, indices)


def _remember(memo: OrderedDict[int, Any], key: int, value: Any, keep: int) -> Any:
    """Insert as the newest; returns the evicted oldest value, if any."""
    memo[key] = value
    if len(memo) > keep:
        return memo.popitem(last=False)[1]
    return None


def crop_images(
    pixels: np.ndarray,
    settings: ReadSettings,
    draws: np.ndarray | None = None,
    *,
    shared: bool = False,
) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, C, H, W) uint8. `draws` ((N, 3): dy, dx, flip): random
    crops of the zero-padded image (padding ``settings.pad``) and horizontal flips. `shared`:
    written straight into shared memory, as a DataLoader worker returns it (pickling it for
    the main process would copy it there). Workers return uint8 and the main process
    normalises (:func:`normalise`): a fresh page of shared memory costs its first writer a
    fault, ~10 us a 32x32 RGB image in float32 (4x the bytes), more than the normalising."""
    count, height, width, channels = pixels.shape
    shape = (count, channels, height, width)
    if shared:  # allocated there, as torch's default_collate does in a worker
        storage = torch.UntypedStorage._new_shared(math.prod(shape))  # bytes: uint8
        tensor = torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)
    else:
        tensor = torch.empty(shape, dtype=torch.uint8)
    out = tensor.numpy()
    if draws is None:
        out[...] = pixels.transpose(0, 3, 1, 2)
    else:
        pad = settings.pad
        padded = np.pad(pixels, ((0, 0), (pad, pad), (pad, pad), (0, 0))).transpose(0, 3, 1, 2)
        for i, (dy, dx, flip) in enumerate(draws.tolist()):
            window = padded[i, :, dy : dy + height, dx : dx + width]
            out[i] = window[:, :, ::-1] if flip else window
    return tensor


def normalise(images: torch.Tensor, settings: ReadSettings) -> torch.Tensor:
    """(N, C, H, W) uint8 -> float32, with the manifest's mean and std: in float32, in this
    order, (x / 255 - mean) / std. In numpy, not torch: on a busy machine torch's two-thread
    kernels on arrays this small took 250x longer than one thread (measured), and the main
    process has two."""
    out = images.numpy().astype(np.float32)
    out /= np.float32(255)
    out -= np.asarray(settings.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    out /= np.asarray(settings.std, dtype=np.float32).reshape(1, -1, 1, 1)
    return torch.from_numpy(out)


def images_to_tensor(
    pixels: np.ndarray, settings: ReadSettings, draws: np.ndarray | None = None
) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, C, H, W) float32: :func:`crop_images`, then :func:`normalise`."""
    return normalise(crop_images(pixels, settings, draws), settings)


class UnitDataset(torch.utils.data.Dataset[dict[str, Any]]):
    """What a DataLoader worker decodes: ``dataset[(epoch, start, stop)]`` is that slice of
    emitted positions of the rank's stream, as a dict: ``epoch``, ``positions`` (those
    returned: all of them unless skip_bad dropped some; numpy), ``x`` (a uint8 tensor, not
    normalised), ``y`` and ``corrupted`` (numpy; corrupted None: unknown), ``keys``,
    ``skipped`` (error texts) and ``error`` (text of the DataError that stopped the unit; None
    if it did not)."""

    def __init__(self, settings: ReadSettings, order: StreamOrder, unit: int) -> None:
        # Two consecutive units of at most `unit` positions read from the shards their windows
        # span: those indexes stay, so a worker indexes a shard once an epoch, and its memory
        # grows with the shuffle buffer and the unit, not with the dataset.
        smallest = min((count for count in settings.counts if count > 0), default=1)
        positions = 2 * unit + 2 * order.window  # stream positions two units' windows cover
        self.reader = ShardReader(settings, keep_indexes=-(-positions // smallest) + 1)
        self.order = order

    def __len__(self) -> int:  # units are addressed by (epoch, start, stop), never by 0..len-1
        raise TypeError("a UnitDataset is indexed by (epoch, start, stop)")

    @property
    def in_worker(self) -> bool:
        return torch.utils.data.get_worker_info() is not None

    def __getitem__(self, unit: tuple[int, int, int]) -> dict[str, Any]:
        try:
            return self._read(*unit)
        except DataError as err:
            return {"error": str(err)}

    def _read(self, epoch: int, start: int, stop: int) -> dict[str, Any]:
        settings, order = self.reader.settings, self.order
        stream = order.emitted(epoch, start, stop)
        shards, indices = order.epoch(epoch).locate(stream)
        samples = self.reader.read_many(shards, indices)
        positions = np.arange(start, stop, dtype=np.int64)[samples.rows]
        draws = None
        if settings.augment != "none" and len(samples):
            draws = np.concatenate(
                [
                    order.augment_draws(epoch, w, order.window, settings.pad)[
                        positions[positions // order.window == w] - w * order.window
                    ]
                    for w in np.unique(positions // order.window)
                ]
            )
            if settings.augment == "crop":
                draws[:, 2] = 0
        # Only x travels as a tensor (through shared memory); the small arrays go inside the
        # pickled unit: each tensor would cost the main process a socket round trip.
        return {
            "epoch": epoch,
            "positions": positions,
            "x": crop_images(samples.pixels, settings, draws, shared=self.in_worker),
            "y": samples.labels,
            "corrupted": samples.corrupted if settings.corruption_known else None,
            "keys": samples.keys,
            "skipped": samples.skipped,
            "error": None,
        }

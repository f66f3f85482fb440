"""``activescale data pack SRC OUT``: a dataset written as WebDataset shards with a manifest.

SRC is an image folder (``train/<class>/*``, ``test/<class>/*``, optional ``clean/<class>/*``),
an ``.npz`` file (``x, y, x_test, y_test``, optional ``x_clean, y_clean``, optional
``corrupted``: the training examples known to be corrupted) or CIFAR-10's python batches.
OUT gets one folder per split (``train/shards-00000.tar``, ...) and ``manifest.json``
(``trainers.data.manifest``).

The train and clean splits are shuffled when packed (seeded), because the reader shuffles
only within a window of samples: an image folder sorted by class would otherwise stream one
class at a time. Without a clean split in SRC, ``clean_fraction`` of the training samples
(seeded, never one known to be corrupted) become the clean split. Each sample is
``{key}.png|jpg`` + ``{key}.cls`` + ``{key}.json`` (label, class name, origin, and
``corrupted`` where SRC says). Images are read one at a time, so an image folder of any size
packs in bounded memory. Everything goes to a temporary folder renamed to OUT at the end: a
failed pack leaves nothing.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from activescale.errors import DataError
from trainers.data.files import read_npz
from trainers.data.images import IMAGE_FORMATS, encode_image
from trainers.data.manifest import (
    ImageInfo,
    Manifest,
    ShardInfo,
    SourceInfo,
    SplitInfo,
    write_manifest,
)
from trainers.data.seeding import Purpose, derived_rng
from trainers.data.shardfile import ShardWriter
from trainers.data.vision import (
    CIFAR10_TEST,
    cifar10_folder,
    image_folder_files,
    load_image,
    read_cifar10,
)

__all__ = ["PackSource", "SplitSource", "pack", "read_pack_source"]

SPLITS = ("train", "clean", "test")


@dataclass
class SplitSource:
    """One split of a source: labels, the known-corrupted mask (None: unknown), and how to
    get an image ((H, W, C) uint8) and its origin (a file or an index) by index."""

    labels: np.ndarray
    corrupted: np.ndarray | None
    image: Callable[[int], np.ndarray]
    origin: Callable[[int], str]

    def subset(self, index: np.ndarray) -> SplitSource:
        return SplitSource(
            labels=self.labels[index],
            corrupted=None if self.corrupted is None else self.corrupted[index],
            image=lambda i: self.image(int(index[i])),
            origin=lambda i: self.origin(int(index[i])),
        )


@dataclass
class PackSource:
    kind: str  # imagefolder, npz or cifar10
    path: Path
    classes: list[str]
    splits: dict[str, SplitSource]


def read_pack_source(src: Path) -> PackSource:
    """The source at `src`, by what it is: an .npz file, CIFAR-10's batches or an image folder."""
    if src.is_file() and src.suffix == ".npz":
        return _npz_source(src)
    if src.is_dir() and (cifar10_folder(src) / CIFAR10_TEST).is_file():
        x, y, x_test, y_test, classes = read_cifar10(src)
        return PackSource(
            "cifar10",
            src,
            classes,
            {
                "train": _arrays(x, y, None, "data_batch"),
                "test": _arrays(x_test, y_test, None, CIFAR10_TEST),
            },
        )
    if src.is_dir() and (src / "train").is_dir():
        return _folder_source(src)
    raise DataError(
        f"SRC {str(src)!r} is not a dataset this command packs: give an .npz file, a folder "
        "with CIFAR-10's python batches (cifar-10-batches-py), or an image folder with "
        "train/<class>/ and test/<class>/ (optionally clean/<class>/)"
    )


def _arrays(
    images: np.ndarray, labels: np.ndarray, corrupted: np.ndarray | None, name: str
) -> SplitSource:
    return SplitSource(
        labels=labels.astype(np.int64),
        corrupted=corrupted,
        image=lambda i: images[i],
        origin=lambda i: f"{name}[{i}]",
    )


def _folder_source(root: Path) -> PackSource:
    files, labels, classes = image_folder_files(root / "train")
    splits = {"train": _files(root, files, labels)}
    for name in ("clean", "test"):
        if name == "test" or (root / name).is_dir():
            found, found_labels, _ = image_folder_files(root / name, classes)
            splits[name] = _files(root, found, found_labels)
    return PackSource("imagefolder", root, classes, splits)


def _files(root: Path, files: list[Path], labels: np.ndarray) -> SplitSource:
    return SplitSource(
        labels=labels,
        corrupted=None,
        image=lambda i: load_image(files[i]),
        origin=lambda i: files[i].relative_to(root).as_posix(),
    )


def _npz_source(path: Path) -> PackSource:
    arrays = read_npz(path)
    corrupted = arrays.get("corrupted")
    if corrupted is not None and (corrupted.dtype != bool or corrupted.shape != arrays["y"].shape):
        raise DataError(
            f"{path}: 'corrupted' has dtype {corrupted.dtype} and shape {corrupted.shape}; it "
            f"must be a bool array of shape {arrays['y'].shape} (one flag per training example)"
        )
    pairs = {"train": ("x", "y"), "test": ("x_test", "y_test")}
    if "x_clean" in arrays or "y_clean" in arrays:
        pairs["clean"] = ("x_clean", "y_clean")
    splits = {}
    for split, (x_key, y_key) in pairs.items():
        if x_key not in arrays or y_key not in arrays:
            raise DataError(f"{path}: give both {x_key!r} and {y_key!r}, or neither")
        images, labels = _npz_images(path, x_key, arrays[x_key]), arrays[y_key]
        if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (len(images),):
            raise DataError(
                f"{path}: {y_key!r} has dtype {labels.dtype} and shape {labels.shape}; it must "
                f"hold one integer label per image of {x_key!r} ({len(images)})"
            )
        if len(labels) and labels.min() < 0:
            raise DataError(f"{path}: {y_key!r} has label {labels.min()}; labels must be >= 0")
        splits[split] = _arrays(images, labels, corrupted if split == "train" else None, x_key)
    top = max(int(s.labels.max(initial=0)) for s in splits.values())
    return PackSource("npz", path, [str(i) for i in range(top + 1)], splits)


def _npz_images(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    """Images as (N, H, W, C) uint8 from (N, H, W), (N, H, W, C) or (N, C, H, W), uint8 or
    floats in [0, 1]."""
    if x.ndim == 3:
        x = x[..., None]
    elif x.ndim == 4 and x.shape[-1] not in (1, 3) and x.shape[1] in (1, 3):
        x = x.transpose(0, 2, 3, 1)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DataError(
            f"{path}: {key!r} has shape {x.shape}; images must be (N, H, W), (N, H, W, C) or "
            "(N, C, H, W) with 1 or 3 channels"
        )
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating) and len(x) and x.min() >= 0.0 and x.max() <= 1.0:
        return np.round(x * 255).astype(np.uint8)
    raise DataError(
        f"{path}: {key!r} has dtype {x.dtype}; images must be uint8 pixels or floats in [0, 1]"
    )


def pack(
    src: Path,
    out: Path,
    *,
    shard_size: int = 1000,
    image_format: str = "png",
    clean_fraction: float = 0.1,
    seed: int = 0,
    quality: int = 95,
) -> Manifest:
    """Pack `src` into shards under `out` (which must not exist, or be empty); returns the
    manifest written. See the module docstring."""
    if shard_size < 1:
        raise DataError(f"--shard-size {shard_size} is not allowed: must be >= 1")
    if image_format not in IMAGE_FORMATS:
        raise DataError(
            f"--format {image_format!r} is not allowed: {', '.join(IMAGE_FORMATS)} (npy: raw "
            "pixels, nothing to decode)"
        )
    if not 0 <= clean_fraction < 1:
        raise DataError(f"--clean-fraction {clean_fraction} is not allowed: must be in [0, 1)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"OUT {str(out)!r} exists and is not an empty folder; choose a new one")
    out = out.absolute()
    source = read_pack_source(src)
    splits = _with_clean(source, clean_fraction, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        shape = tuple(splits["train"].image(0).shape) if len(splits["train"].labels) else None
        if shape is None:
            raise DataError(f"{src}: the train split has no samples")
        stats = _PixelStats(shape[2])
        infos = {}
        for name, split in splits.items():
            order = np.arange(len(split.labels))
            if name != "test":  # the reader shuffles within a window: mix classes first
                order = derived_rng(Purpose.PACK, seed, 0, SPLITS.index(name)).permutation(order)
            infos[name] = _write_split(
                staging,
                name,
                split.subset(order),
                source.classes,
                shape,
                image_format,
                quality,
                shard_size,
                stats if name == "train" else None,
            )
        mean, std = stats.result()
        manifest = Manifest(
            source=SourceInfo(kind=source.kind, path=str(src.resolve())),
            image=ImageInfo(
                channels=shape[2], height=shape[0], width=shape[1], format=image_format
            ),
            classes=source.classes,
            mean=mean,
            std=std,
            shard_size=shard_size,
            seed=seed,
            clean_fraction=clean_fraction if "clean" not in source.splits else 0.0,
            splits=infos,
        )
        write_manifest(staging, manifest)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _with_clean(source: PackSource, fraction: float, seed: int) -> dict[str, SplitSource]:
    """The source's splits, with a clean split carved out of train if it has none."""
    splits = dict(source.splits)
    if "clean" in splits or fraction == 0:
        return {name: splits[name] for name in SPLITS if name in splits}
    train = splits["train"]
    candidates = np.arange(len(train.labels))
    if train.corrupted is not None:  # a clean split holds no example known to be corrupted
        candidates = candidates[~train.corrupted]
    count = round(fraction * len(train.labels))
    if not 0 < count < len(candidates):
        raise DataError(
            f"--clean-fraction {fraction} carves {count} clean samples out of "
            f"{len(candidates)} candidates in train; it must leave at least one of each"
        )
    rng = derived_rng(Purpose.CLEAN, seed)
    chosen = np.sort(rng.choice(candidates, count, replace=False))
    rest = np.setdiff1d(np.arange(len(train.labels)), chosen)
    clean = train.subset(chosen)
    return {"train": train.subset(rest), "clean": clean, "test": splits["test"]}


class _PixelStats:
    """Per-channel mean and std of pixels in [0, 1], accumulated image by image."""

    def __init__(self, channels: int) -> None:
        self.sums = np.zeros(channels)
        self.squares = np.zeros(channels)
        self.count = 0

    def add(self, pixels: np.ndarray) -> None:
        values = pixels.reshape(-1, pixels.shape[2]).astype(np.float64) / 255.0
        self.sums += values.sum(axis=0)
        self.squares += np.square(values).sum(axis=0)
        self.count += len(values)

    def result(self) -> tuple[list[float], list[float]]:
        mean = self.sums / self.count
        std = np.sqrt(np.maximum(self.squares / self.count - np.square(mean), 0.0))
        std[std == 0] = 1.0
        return [float(m) for m in mean], [float(s) for s in std]


def _write_split(
    out: Path,
    name: str,
    split: SplitSource,
    classes: list[str],
    shape: tuple[int, ...],
    image_format: str,
    quality: int,
    shard_size: int,
    stats: _PixelStats | None,
) -> SplitInfo:
    writer = ShardWriter(out / name, shard_size, relative_to=out)
    per_class = np.zeros(len(classes), dtype=np.int64)
    for i, label in enumerate(split.labels):
        pixels = split.image(i)
        if pixels.shape != shape:
            raise DataError(
                f"{split.origin(i)}: image of shape {pixels.shape} (H, W, C), but the first "
                f"training image has {shape}; all images must have the same size"
            )
        if stats is not None:
            stats.add(pixels)
        meta: dict[str, object] = {
            "label": int(label),
            "class": classes[label],
            "origin": split.origin(i),
        }
        if split.corrupted is not None:
            meta["corrupted"] = bool(split.corrupted[i])
        writer.add(
            f"{i:08d}",
            {
                image_format: encode_image(pixels, image_format, quality),
                "cls": str(int(label)).encode(),
                "json": json.dumps(meta).encode(),
            },
        )
        per_class[label] += 1
    shards = writer.close()
    return SplitInfo(
        count=len(split.labels),
        per_class=[int(c) for c in per_class],
        corrupted=None if split.corrupted is None else int(split.corrupted.sum()),
        shards=[
            ShardInfo(name=s.name, count=s.count, bytes=s.bytes, sha256=s.sha256) for s in shards
        ],
    )

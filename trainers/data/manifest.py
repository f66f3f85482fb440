"""The manifest of a packed shard dataset: ``manifest.json`` next to its split folders.

``activescale data pack`` writes it; the ``shards`` dataset reads it (and only it, to describe
a dataset for planning); ``activescale data inspect`` prints it and ``--verify`` checks every
shard against it. Per split: the sample count, the count per class, how many samples are
known to be corrupted (None: unknown), and every shard's name, sample count, size and sha256.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from activescale.errors import DataError
from trainers.data.shardfile import file_sha256

__all__ = [
    "MANIFEST",
    "ImageInfo",
    "Manifest",
    "ShardInfo",
    "SplitInfo",
    "describe_manifest",
    "read_manifest",
    "verify_shards",
]

MANIFEST = "manifest.json"
FORMAT = "activescale-shards"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ShardInfo(_Strict):
    name: str = Field(description="Path of the shard relative to the dataset folder.")
    count: int = Field(ge=0, description="Samples in the shard.")
    bytes: int = Field(ge=0, description="File size.")
    sha256: str = Field(description="Checksum of the file.")


class SplitInfo(_Strict):
    count: int = Field(ge=0, description="Samples in the split.")
    per_class: list[int] = Field(description="Samples of each class, by class index.")
    corrupted: int | None = Field(
        None,
        description=(
            "Samples whose .json says corrupted: true (every sample has the field); "
            "null: the split's corruption is unknown."
        ),
    )
    shards: list[ShardInfo]


class ImageInfo(_Strict):
    channels: Literal[1, 3]
    height: int = Field(ge=1)
    width: int = Field(ge=1)
    format: Literal["png", "jpg", "npy"]


class SourceInfo(_Strict):
    kind: str = Field(description="imagefolder, npz or cifar10.")
    path: str


class Manifest(_Strict):
    format: Literal["activescale-shards"] = "activescale-shards"
    version: Literal[1] = 1
    source: SourceInfo
    image: ImageInfo
    classes: list[str] = Field(description="Class names by class index.")
    mean: list[float] = Field(description="Per-channel mean of the train split's pixels in [0, 1].")
    std: list[float] = Field(description="Per-channel standard deviation, likewise.")
    shard_size: int = Field(ge=1)
    seed: int = Field(description="Seed of the pack-time shuffle and clean carving.")
    clean_fraction: float = Field(description="Fraction of train carved as clean (0: none).")
    splits: dict[str, SplitInfo]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.image.channels, self.image.height, self.image.width)

    def split(self, name: str, folder: Path, role: str) -> SplitInfo:
        """The split called `name`, for `role` (the config key that named it)."""
        if name not in self.splits:
            raise DataError(
                f"{folder / MANIFEST}: no split {name!r} (dataset.{role}); it has "
                f"{sorted(self.splits)}. Name one of those, or re-pack with that split"
            )
        return self.splits[name]


def read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST
    if not path.is_file():
        raise DataError(
            f"{path} does not exist: dataset.path must be a folder written by "
            "`activescale data pack SRC OUT` (docs/data.md)"
        )
    try:
        return Manifest.model_validate(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not JSON ({err}); re-pack the dataset") from err
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise DataError(
            f"{path}: {where}: {first['msg']}; it is not a manifest of this version of "
            "activescale: re-pack the dataset"
        ) from err


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest.model_dump(mode="json"), indent=1) + "\n")
    return path


def verify_shards(folder: Path, manifest: Manifest, *, checksums: bool) -> list[str]:
    """Problems found in the shards against the manifest: a missing file, another size, and
    (with `checksums`) another sha256. Empty: every shard is as packed."""
    problems = []
    for split, info in manifest.splits.items():
        for shard in info.shards:
            path = folder / shard.name
            if not path.is_file():
                problems.append(f"{split}: {shard.name} is missing")
            elif path.stat().st_size != shard.bytes:
                problems.append(
                    f"{split}: {shard.name} has {path.stat().st_size} bytes, the manifest "
                    f"says {shard.bytes} (truncated or rewritten)"
                )
            elif checksums and file_sha256(path) != shard.sha256:
                problems.append(f"{split}: {shard.name} has another sha256 than the manifest's")
    return problems


def describe_manifest(folder: Path, manifest: Manifest) -> str:
    """The manifest as text, for ``activescale data inspect``."""
    image = manifest.image
    lines = [
        f"{folder}: {FORMAT} v{manifest.version}, packed from {manifest.source.kind} "
        f"{manifest.source.path}",
        f"images: {image.channels}x{image.height}x{image.width} {image.format}; "
        f"{manifest.num_classes} classes; shard size {manifest.shard_size}; seed {manifest.seed}",
        "mean "
        + " ".join(f"{m:.4f}" for m in manifest.mean)
        + ", std "
        + " ".join(f"{s:.4f}" for s in manifest.std),
    ]
    for name, split in manifest.splits.items():
        corrupted = "unknown" if split.corrupted is None else str(split.corrupted)
        total = sum(shard.bytes for shard in split.shards)
        lines.append(
            f"{name}: {split.count} samples in {len(split.shards)} shards "
            f"({total / 2**20:.1f} MiB); corrupted: {corrupted}"
        )
        per_class = ", ".join(
            f"{label}={count}"
            for label, count in zip(manifest.classes, split.per_class, strict=True)
        )
        lines.append(f"  per class: {per_class}")
        for shard in split.shards:
            lines.append(
                f"  {shard.name}  {shard.count} samples  {shard.bytes} bytes  {shard.sha256[:16]}"
            )
    return "\n".join(lines)

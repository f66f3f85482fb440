"""Image datasets read whole into memory, without torchvision: CIFAR-10 from its python batch
files (``dataset.name: cifar10``) and a folder of class folders (``imagefolder``).

CIFAR's batches are pickled dicts of numpy arrays: they are unpickled by an unpickler that
builds numpy arrays and nothing else. Images open with Pillow. Images become float32
(N, C, H, W), normalised per channel with the training set's mean and std. Nothing is ever
downloaded. Without a clean folder (always for cifar10) ``clean_size`` training examples are
carved out as the clean split (``trainers.data.files.labelled_splits``). ``activescale data
pack`` reads the same formats (:func:`read_cifar10`, :func:`image_folder_files`) into shards.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from activescale.errors import DataError
from trainers.data.config import DataConfig
from trainers.data.files import FileArrays, labelled_splits, required_path
from trainers.data.splits import Splits

__all__ = [
    "IMAGE_EXTENSIONS",
    "cifar10_splits",
    "image_folder_files",
    "imagefolder_splits",
    "load_cifar10",
    "load_image",
    "load_imagefolder",
    "read_cifar10",
]

# The file endings an image folder's images may have (torchvision's ImageFolder's list).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = "test_batch"


class _ArraysOnly(pickle.Unpickler):
    """Unpickles what CIFAR's batch files hold (dicts, lists, numpy arrays), refusing any
    other class, so that a crafted file cannot run code."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),  # bytes, in a protocol-2 pickle written by Python 3
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch file")
        return super().find_class(module, name)


def _cifar_batch(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            batch = _ArraysOnly(file, encoding="latin1").load()
    except FileNotFoundError:
        raise DataError(
            f"CIFAR-10 batch {str(path)!r} does not exist. Data are never downloaded: place "
            f"the extracted {CIFAR10_FOLDER!r} folder (python version from "
            "https://www.cs.toronto.edu/~kriz/cifar.html) inside dataset.path"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise DataError(f"{path}: not a CIFAR-10 python batch file ({err})") from err
    if not isinstance(batch, dict) or "data" not in batch:
        raise DataError(f"{path}: not a CIFAR-10 python batch file (no 'data' array)")
    return batch


def cifar10_folder(root: Path) -> Path:
    """The folder holding CIFAR-10's batch files: ``root/cifar-10-batches-py`` or ``root``."""
    return root / CIFAR10_FOLDER if (root / CIFAR10_FOLDER).is_dir() else root


def read_cifar10(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """CIFAR-10's python batches under `root`: (train images (N, 32, 32, 3) uint8, train
    labels, test images, test labels, class names)."""
    folder = cifar10_folder(root)

    def read(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        images, labels = [], []
        for name in names:
            batch = _cifar_batch(folder / name)
            data = np.asarray(batch["data"], dtype=np.uint8)
            found = batch.get("labels", batch.get("fine_labels"))
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or found is None:
                raise DataError(
                    f"{folder / name}: 'data' has shape {data.shape} (must be (N, 3072)) or "
                    "'labels' is missing: not a CIFAR-10 python batch"
                )
            if len(found) != len(data):
                raise DataError(f"{folder / name}: {len(data)} images but {len(found)} labels")
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(np.asarray(found, dtype=np.int64))
        return np.concatenate(images), np.concatenate(labels)

    x, y = read(CIFAR10_TRAIN)
    x_test, y_test = read((CIFAR10_TEST,))
    classes = [str(i) for i in range(10)]
    if (folder / "batches.meta").is_file():
        meta = _cifar_batch_meta(folder / "batches.meta")
        classes = [str(name) for name in meta.get("label_names", classes)]
    for labels, name in ((y, "train"), (y_test, "test")):
        if len(labels) and not 0 <= labels.min() <= labels.max() < len(classes):
            raise DataError(
                f"{folder}: {name} labels span {labels.min()}..{labels.max()}, "
                f"outside the {len(classes)} classes of batches.meta"
            )
    return x, y, x_test, y_test, classes


def _cifar_batch_meta(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            meta = _ArraysOnly(file, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise DataError(f"{path}: not CIFAR-10's batches.meta ({err})") from err
    if not isinstance(meta, dict):
        raise DataError(f"{path}: not CIFAR-10's batches.meta (not a dict)")
    return meta


def load_cifar10(cfg: DataConfig) -> FileArrays:
    """CIFAR-10 from ``path``, which holds the extracted ``cifar-10-batches-py`` folder
    (torchvision's layout) or is that folder."""
    root = required_path(cfg)
    x, y, x_test, y_test, _ = read_cifar10(root)
    return _normalised(x, y, x_test, y_test, None, None, str(root))


def load_imagefolder(cfg: DataConfig) -> FileArrays:
    """``path/train/<class>/*`` and ``path/test/<class>/*`` with the same class folders, and
    optionally ``path/clean/<class>/*``; all images must have the same size."""
    root = required_path(cfg)
    x_clean: np.ndarray | None = None
    y_clean: np.ndarray | None = None
    x, y, classes = _read_image_folder(root / "train", None)
    x_test, y_test, _ = _read_image_folder(root / "test", classes)
    if (root / "clean").is_dir():
        x_clean, y_clean, _ = _read_image_folder(root / "clean", classes)
    return _normalised(x, y, x_test, y_test, x_clean, y_clean, str(root))


def cifar10_splits(cfg: DataConfig) -> Splits:
    return labelled_splits(cfg, load_cifar10(cfg))


def imagefolder_splits(cfg: DataConfig) -> Splits:
    return labelled_splits(cfg, load_imagefolder(cfg))


def _normalised(
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    x_clean: np.ndarray | None,
    y_clean: np.ndarray | None,
    source: str,
) -> FileArrays:
    """(N, H, W, C) uint8 -> (N, C, H, W) float32, normalised per channel with the training
    images' mean and std."""
    mean = x.mean(axis=(0, 1, 2), dtype=np.float64)
    std = x.std(axis=(0, 1, 2), dtype=np.float64)
    std[std == 0] = 1.0

    def normalise(images: np.ndarray) -> np.ndarray:
        out = (images.astype(np.float32) - mean.astype(np.float32)) / std.astype(np.float32)
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))

    return FileArrays(
        x=normalise(x),
        y=y,
        x_test=normalise(x_test),
        y_test=y_test,
        x_clean=None if x_clean is None else normalise(x_clean),
        y_clean=y_clean,
        source=source,
        # Curated benchmark sets are taken as clean: what activescale corrupts is what is known.
        corrupted=np.zeros(len(y), dtype=bool),
    )


def image_folder_files(
    root: Path, classes: list[str] | None = None
) -> tuple[list[Path], np.ndarray, list[str]]:
    """The images of an image folder (``root/<class>/**/*.png`` ...), in torchvision's
    ImageFolder order (classes sorted, files sorted within a class): (files, labels, classes).
    `classes`: those the folder must have (the training folder's)."""
    if not root.is_dir():
        raise DataError(
            f"image folder {str(root)!r} does not exist; imagefolder data need "
            "path/train/<class>/* and path/test/<class>/* (optionally path/clean/<class>/*)"
        )
    found = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not found:
        raise DataError(f"image folder {str(root)!r} has no class folders")
    if classes is not None and found != classes:
        raise DataError(
            f"image folder {str(root)!r} has classes {found} but the training folder "
            f"has {classes}; they must match"
        )
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(found):
        count = len(files)
        for folder, _, names in sorted(os.walk(root / name, followlinks=True)):
            for file in sorted(names):
                if file.lower().endswith(IMAGE_EXTENSIONS):
                    files.append(Path(folder) / file)
                    labels.append(label)
        if len(files) == count:
            raise DataError(
                f"image folder {str(root / name)!r} has no images (allowed endings: "
                f"{', '.join(IMAGE_EXTENSIONS)})"
            )
    return files, np.asarray(labels, dtype=np.int64), found


def load_image(path: Path) -> np.ndarray:
    """One image file as (H, W, 3) uint8 RGB (Pillow); an unreadable file is a DataError."""
    from PIL import Image  # Pillow comes with matplotlib

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: image cannot be read ({err})") from err


def _read_image_folder(
    root: Path, classes: list[str] | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    files, labels, found = image_folder_files(root, classes)
    images: list[np.ndarray] = []
    for file in files:
        image = load_image(file)
        if images and image.shape != images[0].shape:
            raise DataError(
                f"{file}: image of shape {image.shape} (H, W, C) but {files[0]} has "
                f"{images[0].shape}; all images must have the same size"
            )
        images.append(image)
    return np.stack(images), labels, found

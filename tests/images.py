"""Small image datasets written in their real formats, for tests: arrays of learnable images,
an .npz, CIFAR-10's pickled python batches, a folder of PNG and JPEG files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def image_arrays(
    n: int, shape: tuple[int, int, int] = (8, 8, 3), classes: int = 4, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """`n` uint8 images (N, H, W, C) whose class sets their mean colour, plus noise; labels
    cycle through the classes."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    colours = np.linspace(30, 220, classes)[labels]
    noise = rng.normal(0, 20, (n, *shape))
    pixels = np.clip(colours[:, None, None, None] + noise, 0, 255).astype(np.uint8)
    return pixels, labels.astype(np.int64)


def write_npz(
    path: Path,
    train: int = 300,
    test: int = 40,
    shape: tuple[int, int, int] = (8, 8, 3),
    classes: int = 4,
    corrupted: np.ndarray | None = None,
) -> Path:
    x, y = image_arrays(train, shape, classes, seed=1)
    x_test, y_test = image_arrays(test, shape, classes, seed=2)
    arrays = {"x": x, "y": y, "x_test": x_test, "y_test": y_test}
    if corrupted is not None:
        arrays["corrupted"] = corrupted
    np.savez(path, **arrays)
    return path


def write_cifar10(root: Path, per_batch: int = 12, test: int = 10) -> Path:
    """CIFAR-10's python version, as the real files are: pickled dicts with a (N, 3072) uint8
    ``data`` array (channel-major rows) and a ``labels`` list, in ``cifar-10-batches-py``."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        count = test if name == "test_batch" else per_batch
        batch = {
            "batch_label": name,
            "labels": [int(v) for v in rng.integers(0, 10, count)],
            "data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
            "filenames": [f"{name}_{i}.png" for i in range(count)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root


def write_image_folder(
    root: Path,
    counts: dict[str, int] | None = None,
    classes: tuple[str, ...] = ("cat", "dog"),
    shape: tuple[int, int, int] = (8, 6, 3),
) -> Path:
    """root/<split>/<class>/<i>.png and .jpg (every third image is a JPEG)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (counts or {"train": 30, "test": 6}).items():
        for label in classes:
            (root / split / label).mkdir(parents=True)
            for i in range(count // len(classes)):
                pixels = rng.integers(0, 256, shape, dtype=np.uint8)
                suffix = ".jpg" if i % 3 == 2 else ".png"
                Image.fromarray(pixels).save(root / split / label / f"{i:03d}{suffix}")
    return root

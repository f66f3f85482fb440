"""What the data of a run must be, checked when the data are read, before any model is built.

Files can hold anything: a NaN among a million inputs, a label of 2e9 (a model with two
billion outputs), test labels the training set never has (a model with classes it never
learns), arrays too large for the machine. Every dataset of labelled arrays (``.npz``, the
image loaders) goes through :func:`check_labelled`, and every dataset, built in or from a
plugin, through :func:`check_facts` (shapes and class count, before models are built from
them). Each problem is a :class:`DataError` that names the source, the array, the offending
value and its index, and what to do.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from activescale.errors import DataError

__all__ = [
    "MAX_CLASSES",
    "MAX_INPUT_ELEMENTS",
    "check_facts",
    "check_finite",
    "check_label_range",
    "check_labelled",
    "check_loadable",
    "physical_memory",
]

MAX_CLASSES = 100_000  # outputs of a classifier (ImageNet-21k has 21,843 classes)
MAX_INPUT_ELEMENTS = 2**24  # numbers per example (a 4096 x 4096 single-channel image)


def physical_memory() -> int:
    """Bytes of RAM on this machine (0 if the system cannot say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (OSError, ValueError):
        return 0


def check_loadable(source: str, sizes: dict[str, int]) -> None:
    """The arrays (bytes once loaded, by name) fit in half of this machine's memory: loading
    more would swap the machine or be killed, usually after minutes."""
    total, memory = sum(sizes.values()), physical_memory()
    if memory and total > memory // 2:
        largest = max(sizes, key=lambda k: sizes[k])
        raise DataError(
            f"{source}: the arrays need {total / 1e9:.3g} GB in memory once loaded ({largest!r}: "
            f"{sizes[largest] / 1e9:.3g} GB), more than half of this machine's "
            f"{memory / 1e9:.3g} GB; use a smaller file (fewer or smaller examples)"
        )


def check_finite(x: np.ndarray, key: str, source: str) -> None:
    """Every input is a finite number (NaN or inf poison every loss that touches them)."""
    if not np.issubdtype(x.dtype, np.floating):
        return
    bad = ~np.isfinite(x)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{source}: array {key!r} holds {float(x[index])} at index {index} ({int(bad.sum()):,} "
            "values are NaN or infinite, counting values too large for float32); inputs must be "
            "finite: fix or drop those examples"
        )


def check_label_range(y: np.ndarray, key: str, source: str) -> None:
    """Labels are class indices in [0, MAX_CLASSES)."""
    if not len(y):
        return
    low, high = int(y.min()), int(y.max())
    if low < 0:
        raise DataError(
            f"{source}: array {key!r} has label {low} at index {int(np.argmin(y))}; labels "
            "must be class indices >= 0"
        )
    if high >= MAX_CLASSES:
        raise DataError(
            f"{source}: array {key!r} has label {high} at index {int(np.argmax(y))}, which would "
            f"make a classifier with {high + 1:,} outputs; labels are class indices 0..K-1 with "
            f"K <= {MAX_CLASSES:,}: renumber the classes"
        )


def check_labelled(
    source: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    clean: tuple[np.ndarray, np.ndarray] | None,
) -> None:
    """Inputs finite, labels in range, per-example shapes non-empty, and every test (and
    clean) label a class the training set has: a class the learner never sees cannot be
    learned, and it silently adds outputs to every model."""
    parts = [("x", "y", *train), ("x_test", "y_test", *test)]
    parts += [("x_clean", "y_clean", *clean)] if clean is not None else []
    for x_key, y_key, x, y in parts:
        check_finite(x, x_key, source)
        check_label_range(y, y_key, source)
    shape = tuple(train[0].shape[1:])
    check_shape(shape, f"{source}: array 'x'")
    classes = np.unique(train[1])
    for _, y_key, _, y in parts[1:]:
        unseen = ~np.isin(y, classes)
        if unseen.any():
            index = int(np.argmax(unseen))
            missing = np.unique(y[unseen])
            raise DataError(
                f"{source}: array {y_key!r} has label {int(y[index])} at index {index}, a class "
                f"the training labels 'y' never have ({len(missing)} such classes: "
                f"{_few(missing)}); the training set has {len(classes)} classes: "
                f"{_few(classes)}. Keep only examples of trained classes, or add training "
                "examples of them"
            )


def check_shape(shape: Sequence[int], what: str) -> None:
    """A per-example input shape a model can take: non-empty, of bounded size."""
    if not shape or any(d < 1 for d in shape):
        raise DataError(
            f"{what} has per-example shape {tuple(shape)}; every example needs at least one "
            "number (shape (examples, features...), each dimension >= 1)"
        )
    elements = math.prod(shape)
    if elements > MAX_INPUT_ELEMENTS:
        raise DataError(
            f"{what} has per-example shape {tuple(shape)} = {elements:,} numbers per example, "
            f"more than {MAX_INPUT_ELEMENTS:,}; downsample the inputs"
        )


def check_facts(name: str, input_shape: Sequence[int], num_classes: int) -> None:
    """What any dataset says about itself, checked before a model is built from it."""
    check_shape(input_shape, f"dataset {name!r}")
    if not 1 <= num_classes <= MAX_CLASSES:
        raise DataError(
            f"dataset {name!r} has {num_classes:,} classes; a classifier needs 1 to "
            f"{MAX_CLASSES:,} (labels 0..K-1): renumber the classes"
        )


def _few(values: np.ndarray, shown: int = 5) -> str:
    listed = ", ".join(str(int(v)) for v in values[:shown])
    return listed + (", ..." if len(values) > shown else "")

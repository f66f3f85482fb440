"""``csv_signals``: labelled signals read from a CSV file, split into train / clean / test.

The file has a header row and one example per row: a label column (integers, or class names)
and one column per time step. The rows are shuffled with ``seed`` and split: a test split and
a clean split (for the reference model) are held out untouched; the rest is the training
pool, where ``label_noise`` replaces that fraction of labels by a different class (the
corrupted mask lets runs report how many corrupted examples their policy selected).
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from activescale.plugins import (
    DataError,
    DatasetConfig,
    Splits,
    inject_label_noise,
    register_dataset,
    splits_from_arrays,
)


class CsvSignalsConfig(DatasetConfig):
    """The settings of ``dataset: {name: csv_signals, ...}`` (``name``, ``path``, ``regime``
    come from DatasetConfig)."""

    label_column: str = Field("label", description="The column holding each row's class.")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="Rows held out for testing.")
    clean_fraction: float = Field(
        0.1, gt=0, lt=1, description="Rows held out, uncorrupted, for the reference model."
    )
    label_noise: float = Field(
        0.0, ge=0, lt=1, description="Fraction of training labels replaced by another class."
    )
    seed: int = Field(0, ge=0, description="Shuffle and label-noise seed (the data's own).")

    @field_validator("clean_fraction")
    @classmethod
    def _room_for_training(cls, clean: float, info: ValidationInfo) -> float:
        test = info.data.get("test_fraction")
        if test is not None and test + clean >= 0.9:
            raise ValueError(
                f"test_fraction + clean_fraction = {test + clean:.3g} leaves under 10% of the "
                "rows for training; lower one of them"
            )
        return clean


@functools.lru_cache(maxsize=8)
def read_csv(path: str, label_column: str, mtime_ns: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(inputs float32 (n, length), labels int64, number of classes); cached per file version
    (``mtime_ns``), so validating a sweep reads each file once."""
    with open(path, newline="") as f:
        header = next(csv.reader(f), [])
    if label_column not in header:
        raise DataError(
            f"dataset.label_column {label_column!r} is not a column of {path}; its columns: "
            f"{', '.join(header[:8])}{', ...' if len(header) > 8 else ''}"
        )
    index = header.index(label_column)
    signal = [j for j in range(len(header)) if j != index]
    try:  # numpy's C reader: ~5x faster than the csv module and float() per value
        x = np.loadtxt(path, delimiter=",", skiprows=1, usecols=signal, dtype=np.float32, ndmin=2)
        names = np.loadtxt(path, delimiter=",", skiprows=1, usecols=[index], dtype=str, ndmin=1)
    except ValueError as err:
        raise DataError(f"dataset.path {path!r}: a row cannot be read ({err})") from None
    if len(names) < 10:
        raise DataError(f"dataset.path {path!r} has {len(names)} rows; a dataset needs more")
    numbered = all(n.lstrip("-").isdigit() for n in names)  # 0..K-1, or class names
    classes = sorted(set(names), key=int) if numbered else sorted(set(names))
    lookup = {name: i for i, name in enumerate(classes)}
    y = np.array([lookup[n] for n in names], dtype=np.int64)
    return x, y, len(classes)


def csv_splits(cfg: CsvSignalsConfig) -> Splits:
    assert cfg.path is not None  # the registry requires dataset.path (register_dataset path=)
    file = Path(cfg.path)
    if not file.is_file():
        raise DataError(f"dataset.path {cfg.path!r} does not exist; give the CSV file's path")
    x, y, num_classes = read_csv(str(file.resolve()), cfg.label_column, file.stat().st_mtime_ns)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(y))
    n_test = max(1, round(cfg.test_fraction * len(y)))
    n_clean = max(1, round(cfg.clean_fraction * len(y)))
    test, clean, train = np.split(order, [n_test, n_test + n_clean])
    train_y, corrupted = inject_label_noise(y[train], cfg.label_noise, rng, num_classes)
    return splits_from_arrays(
        (x[train], train_y, corrupted),
        test=(x[test], y[test]),
        clean=(x[clean], y[clean]),
        num_classes=num_classes,
    )


register_dataset(
    "csv_signals",
    config=CsvSignalsConfig,
    splits=csv_splits,
    path="the CSV file",
    description="labelled signals from a CSV file (a label column, one column per time step)",
)

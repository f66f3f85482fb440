"""Datasets read from files: an ``.npz`` archive (``dataset.name: npz``), and what every
dataset of labelled arrays shares (``trainers.data.vision`` reads images into the same form):
carving the clean split out of the training set when none is given, and corrupting the rest.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from activescale.errors import ConfigError, DataError
from trainers.data.checks import check_finite, check_label_range, check_labelled, check_loadable
from trainers.data.config import DataConfig
from trainers.data.corruptions import corrupt, easy_prototypes
from trainers.data.seeding import Purpose, derived_rng
from trainers.data.splits import Splits, splits_from_arrays

__all__ = ["FileArrays", "labelled_splits", "load_npz", "npz_splits", "required_path"]


class FileArrays(NamedTuple):
    """A labelled dataset as read: inputs float32 (N, ...), labels int64 (N,); the clean split
    is None when the files have none (then :func:`labelled_splits` carves one). ``corrupted``:
    which training examples the files say are corrupted (bool (N,)); None when they cannot
    say, and then no run reports a corrupted fraction."""

    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_clean: np.ndarray | None
    y_clean: np.ndarray | None
    source: str  # where the arrays came from, for error messages
    corrupted: np.ndarray | None = None


def labelled_splits(cfg: DataConfig, arrays: FileArrays) -> Splits:
    """Carve the clean split if needed, corrupt the training set, convert to tensors.

    The number of classes is the largest label + 1 over all splits. The carved clean split is
    ``clean_size`` training examples drawn by the data seed and removed from the training set.
    The corruption mask is the files' own (where they give one) combined with what this
    function injects; where the files cannot say, it stays unknown (None).
    """
    x, y, x_test, y_test, x_clean, y_clean, source, known = arrays
    clean = (x_clean, y_clean) if x_clean is not None and y_clean is not None else None
    check_labelled(source, (x, y), (x_test, y_test), clean)
    num_classes = int(max(y.max(initial=0), y_test.max(initial=0)) + 1)
    if y_clean is not None:
        num_classes = max(num_classes, int(y_clean.max(initial=0)) + 1)
    if x_clean is None or y_clean is None:
        if cfg.clean_size >= len(y):
            raise DataError(
                f"{source}: cannot carve clean_size={cfg.clean_size} clean examples out of "
                f"{len(y)} training examples; lower data.clean_size or provide x_clean/y_clean"
            )
        order = derived_rng(Purpose.CLEAN, cfg.seed).permutation(len(y))
        clean_idx, train_idx = np.sort(order[: cfg.clean_size]), np.sort(order[cfg.clean_size :])
        x_clean, y_clean = x[clean_idx], y[clean_idx]
        x, y = x[train_idx], y[train_idx]
        known = None if known is None else known[train_idx]
    if cfg.label_noise > 0 and num_classes < 2:
        raise DataError(f"{source}: label_noise needs at least 2 classes, found {num_classes}")
    prototypes = easy_prototypes(x, y) if cfg.duplicate_easy > 0 else None
    rng = derived_rng(Purpose.CORRUPT, cfg.seed)
    x, y, injected = corrupt(x, y, cfg, rng, num_classes, prototypes)
    mask = None if known is None else known | injected
    return splits_from_arrays((x, y, mask), (x_test, y_test), (x_clean, y_clean), num_classes)


def npz_splits(cfg: DataConfig) -> Splits:
    """The splits of the ``npz`` dataset (see :func:`load_npz`)."""
    return labelled_splits(cfg, load_npz(cfg))


def required_path(cfg: DataConfig) -> Path:
    """``dataset.path`` of a dataset that needs one."""
    if cfg.path is None:  # DataConfig rejects this; guards against later assignment
        raise ConfigError(f"path=None is not allowed with name={cfg.name!r}: set dataset.path")
    return Path(cfg.path)


def load_npz(cfg: DataConfig) -> FileArrays:
    """Arrays of an .npz file: required ``x, y, x_test, y_test``; optional ``x_clean, y_clean``
    and ``corrupted``.

    ``corrupted`` (bool, one per training example, ``len(y)``) says which training examples
    are corrupted (a wrong label, a junk input). Without it the file cannot say, and runs
    log no ``selected_corrupted`` (absent, not 0), even where activescale injects noise on
    top: store ``corrupted = np.zeros(len(y), bool)`` for a file known to be clean, and the
    injected corruption is counted. With it, the injected corruption combines with it.

    Without ``x_clean/y_clean`` the clean split is ``clean_size`` training examples chosen at
    random (data seed) and removed from the training set. Inputs become float32, labels int64
    (labels must be integers >= 0; the number of classes is the largest label + 1). Inputs are
    used as stored (no normalisation). ``train_size`` and ``test_size`` are ignored.
    """
    path = required_path(cfg)
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist; set dataset.path to an .npz file")
    arrays = read_npz(path)
    if ("x_clean" in arrays) != ("y_clean" in arrays):
        present, absent = ("x_clean", "y_clean") if "x_clean" in arrays else ("y_clean", "x_clean")
        raise DataError(
            f"{path}: array {present!r} is present but {absent!r} is missing; give both"
        )
    pairs = [("x", "y"), ("x_test", "y_test")] + (
        [("x_clean", "y_clean")] if "x_clean" in arrays else []
    )
    for x_key, y_key in pairs:
        x_arr, y_arr = arrays[x_key], arrays[y_key]
        if not (np.issubdtype(x_arr.dtype, np.floating) or np.issubdtype(x_arr.dtype, np.integer)):
            raise DataError(f"{path}: array {x_key!r} has dtype {x_arr.dtype}; must be numeric")
        if x_arr.ndim < 2:
            raise DataError(
                f"{path}: array {x_key!r} has shape {x_arr.shape}; must be (examples, features...)"
            )
        if not np.issubdtype(y_arr.dtype, np.integer):
            raise DataError(
                f"{path}: array {y_key!r} has dtype {y_arr.dtype}; labels must be integers"
            )
        if y_arr.ndim != 1:
            raise DataError(f"{path}: array {y_key!r} has shape {y_arr.shape}; must be 1-D")
        if len(x_arr) != len(y_arr):
            raise DataError(
                f"{path}: {x_key!r} has {len(x_arr)} examples but {y_key!r} has {len(y_arr)}; "
                "they must have the same length"
            )
        check_label_range(y_arr, y_key, str(path))  # before int64 (uint64 labels could wrap)
        if x_key != "x" and x_arr.shape[1:] != arrays["x"].shape[1:]:
            raise DataError(
                f"{path}: array {x_key!r} has per-example shape {x_arr.shape[1:]} but 'x' has "
                f"{arrays['x'].shape[1:]}; they must match"
            )
    if len(arrays["y"]) == 0 or len(arrays["y_test"]) == 0:
        raise DataError(f"{path}: 'x' and 'x_test' must each hold at least one example")
    mask = arrays.get("corrupted")
    if mask is not None and (mask.dtype != np.bool_ or mask.shape != arrays["y"].shape):
        raise DataError(
            f"{path}: array 'corrupted' has dtype {mask.dtype} and shape {mask.shape}; it "
            f"must be bool with one entry per training example, shape {arrays['y'].shape} "
            "(True: corrupted); or leave it out if the file cannot say"
        )

    def inputs(key: str) -> np.ndarray | None:
        if key not in arrays:
            return None
        with np.errstate(over="ignore"):  # float64 beyond float32's range: inf, reported below
            converted = arrays[key].astype(np.float32)
        check_finite(converted, key, str(path))
        return converted

    def labels(key: str) -> np.ndarray | None:
        return arrays[key].astype(np.int64) if key in arrays else None

    x, y, x_test, y_test = inputs("x"), labels("y"), inputs("x_test"), labels("y_test")
    assert x is not None and y is not None and x_test is not None and y_test is not None
    return FileArrays(
        x=x,
        y=y,
        x_test=x_test,
        y_test=y_test,
        x_clean=inputs("x_clean"),
        y_clean=labels("y_clean"),
        source=str(path),
        corrupted=mask,
    )


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz file (refused before reading if they would not fit in memory),
    with the required ``x, y, x_test, y_test`` present: a DataError otherwise."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            check_loadable(str(path), _loaded_sizes(npz))  # before reading any array
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: cannot read as an .npz archive of plain arrays ({err})") from err
    for key in ("x", "y", "x_test", "y_test"):
        if key not in arrays:
            raise DataError(
                f"{path}: array {key!r} is missing; found {sorted(arrays)}, required "
                "x, y, x_test, y_test (optional x_clean, y_clean, corrupted)"
            )
    return arrays


def _loaded_sizes(npz: np.lib.npyio.NpzFile) -> dict[str, int]:
    """Bytes each array takes once loaded and converted (inputs float32, labels int64), read
    from the .npy headers without reading the data."""
    sizes: dict[str, int] = {}
    archive = npz.zip
    if archive is None:
        return sizes
    for key in npz.files:
        try:
            with archive.open(f"{key}.npy") as member:
                version = np.lib.format.read_magic(member)
                read = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read(member)
        except (KeyError, ValueError):  # not an .npy member: np.load reports it when read
            continue
        count = math.prod(int(d) for d in shape)
        sizes[key] = count * (dtype.itemsize + 8)  # as stored, plus the converted copy
    return sizes

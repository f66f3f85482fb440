"""The corruptions studied: label noise, pure-noise inputs and duplicated easy examples.

Each is a pure function of arrays and a numpy generator that returns the corrupted copy and
which examples it corrupted (the ``corrupted`` mask every split and source carries, so metrics
can count how many corrupted examples a policy selects). :func:`corrupt` applies the rates of a
dataset config in the order all datasets share.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import numpy as np

from trainers.captions import check_fraction

__all__ = [
    "CorruptionRates",
    "corrupt",
    "easy_prototypes",
    "hashed_label_noise",
    "inject_duplicates",
    "inject_label_noise",
    "inject_noise_inputs",
]


class CorruptionRates(Protocol):
    """The settings :func:`corrupt` reads (``DataConfig`` has them; a dataset's own config may)."""

    @property
    def label_noise(self) -> float: ...

    @property
    def noise_inputs(self) -> float: ...

    @property
    def duplicate_easy(self) -> float: ...


def inject_label_noise(
    y: np.ndarray, rate: float, rng: np.random.Generator, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Replace each label, independently with probability `rate`, by a uniformly random
    *different* class. Returns (new labels, mask of changed examples); `y` is not modified."""
    check_fraction(rate, "rate")
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes} is not allowed: label noise needs >= 2")
    mask = rng.random(len(y)) < rate
    noisy = y.copy()
    offsets = rng.integers(1, num_classes, int(mask.sum()))
    noisy[mask] = (y[mask] + offsets) % num_classes
    return noisy, mask


def inject_noise_inputs(
    x: np.ndarray, y: np.ndarray, rate: float, rng: np.random.Generator, num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Replace each example, independently with probability `rate`, by pure noise with a
    uniformly random label. The noise is Gaussian with the per-feature mean and std of `x`, so
    it matches the data's scale but carries no signal. Returns (x, y, mask); inputs untouched."""
    check_fraction(rate, "rate")
    mask = rng.random(len(x)) < rate
    count = int(mask.sum())
    mean = x.mean(axis=0, dtype=np.float64)
    std = x.std(axis=0, dtype=np.float64)
    noise = rng.standard_normal((count, *x.shape[1:])) * std + mean
    x_new, y_new = x.copy(), y.copy()
    x_new[mask] = noise.astype(x.dtype)
    y_new[mask] = rng.integers(0, num_classes, count)
    return x_new, y_new, mask


def easy_prototypes(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One "easy" example per class present in `y`: the one nearest (Euclidean) to its class
    mean, i.e. the most typical example. Returns (inputs, labels) sorted by class."""
    flat = x.reshape(len(x), -1)
    chosen = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        centre = flat[members].mean(axis=0, dtype=np.float64)
        dist = np.square(flat[members] - centre).sum(axis=1)
        chosen.append(members[np.argmin(dist)])
    index = np.asarray(chosen, dtype=np.intp)
    return x[index], y[index]


def inject_duplicates(
    x: np.ndarray,
    y: np.ndarray,
    rate: float,
    rng: np.random.Generator,
    *,
    prototypes: tuple[np.ndarray, np.ndarray] | None = None,
    where: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Replace each example, independently with probability `rate`, by a copy of one of a few
    easy examples (uniformly chosen), making the set redundant.

    prototypes: the easy examples (inputs, labels); default ``easy_prototypes(x, y)``, one per
    class. where: optional boolean mask of the examples that may be replaced. Returns
    (x, y, mask of replaced examples); inputs untouched.
    """
    check_fraction(rate, "rate")
    proto_x, proto_y = easy_prototypes(x, y) if prototypes is None else prototypes
    mask = rng.random(len(x)) < rate
    if where is not None:
        mask &= where
    pick = rng.integers(0, len(proto_y), int(mask.sum()))
    x_new, y_new = x.copy(), y.copy()
    x_new[mask] = proto_x[pick]
    y_new[mask] = proto_y[pick]
    return x_new, y_new, mask


def corrupt(
    x: np.ndarray,
    y: np.ndarray,
    cfg: CorruptionRates,
    rng: np.random.Generator,
    num_classes: int,
    prototypes: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply the corruptions of `cfg` to a training set; returns (x, y, corrupted mask).

    Noise inputs and duplicates replace disjoint examples, each a fraction `noise_inputs`
    resp. `duplicate_easy` of the set (in expectation). Label noise is drawn first over all
    examples, so among the examples not replaced a fraction `label_noise` carry a wrong label.
    """
    corrupted = np.zeros(len(y), dtype=bool)
    if cfg.label_noise > 0:
        y, flipped = inject_label_noise(y, cfg.label_noise, rng, num_classes)
        corrupted |= flipped
    replaced = np.zeros(len(y), dtype=bool)
    if cfg.noise_inputs > 0:
        x, y, replaced = inject_noise_inputs(x, y, cfg.noise_inputs, rng, num_classes)
        corrupted |= replaced
    if cfg.duplicate_easy > 0:
        # Conditional rate among the examples not already noise, so the overall rate is right.
        rate = cfg.duplicate_easy / (1.0 - cfg.noise_inputs)
        x, y, duplicated = inject_duplicates(
            x, y, rate, rng, prototypes=prototypes, where=~replaced
        )
        corrupted |= duplicated
    return x, y, corrupted


def hashed_label_noise(
    key: str, label: int, rate: float, num_classes: int, seed: int
) -> tuple[int, bool]:
    """Label noise decided by the sample itself: with probability `rate` (over keys) the label
    becomes a uniformly random *different* class. A hash of (data seed, key) decides, so the
    same sample gets the same label in every epoch, on every rank, after any resume, without
    a mask of the whole stream. Returns (label, flipped)."""
    if rate == 0:
        return label, False
    digest = hashlib.blake2b(f"{seed}/{key}".encode(), digest_size=16).digest()
    if int.from_bytes(digest[:8], "little") >= rate * 2**64:
        return label, False
    offset = 1 + int.from_bytes(digest[8:], "little") % (num_classes - 1)
    return (label + offset) % num_classes, True

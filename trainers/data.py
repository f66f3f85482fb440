"""Data for active-selection runs: datasets, corruptions, and the sources a learner draws from.

At each learner step the training loop draws a super-batch from a :class:`BatchSource`, the
scorers rank it and the top examples are kept. This module provides

* :func:`generate_mnist1d`, a vectorised MNIST-1D generator (same transformation as
  ``mnist1d.transform.transform``, ~60x faster than ``mnist1d.data.make_dataset``), so that
  runs can use a fixed pool of any size or an unbounded stream of fresh examples;
* :class:`DataConfig` and :func:`load_splits`: the train pool, test split and curated clean
  split (for the reference model) of MNIST-1D, an ``.npz`` file, CIFAR-10 or an image folder;
* the corruptions studied (label noise, pure-noise inputs, duplicated easy examples) as pure
  functions that also return which examples they corrupted;
* :class:`FixedSource` (shuffled epochs over the pool) and :class:`StreamSource` (fresh
  MNIST-1D examples, single-epoch regime), both resumable exactly from ``state_dict``.

Seeding: everything derived from the data (pool, test, clean, corruption, stream prototypes)
depends on ``DataConfig.seed`` only, so all runs of a sweep see the same data; the order in
which a source serves it (epoch shuffles, stream contents) also depends on the run seed.
"""

from __future__ import annotations

import functools
import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)
from scipy.ndimage import gaussian_filter1d

from orchestrator.errors import ConfigError, DataError
from trainers.captions import CaptionConfig, check_fraction

__all__ = [
    "MNIST1D_LENGTH",
    "MNIST1D_NUM_CLASSES",
    "BatchSource",
    "DataConfig",
    "FixedSource",
    "Splits",
    "StreamSource",
    "corrupt",
    "easy_prototypes",
    "generate_mnist1d",
    "inject_duplicates",
    "inject_label_noise",
    "inject_noise_inputs",
    "load_splits",
    "make_source",
]

# ---------------------------------------------------------------------------------------------
# MNIST-1D generator
# ---------------------------------------------------------------------------------------------

MNIST1D_NUM_CLASSES = 10
MNIST1D_LENGTH = 40

# The defaults of mnist1d.data.get_dataset_args() (tests check they still agree).
_TEMPLATE_LEN = 12
_PADDING = (36, 60)
_SCALE_COEFF = 0.4
_MAX_TRANSLATION = 48
_CORR_NOISE_SCALE = 0.25
_CORR_NOISE_SIGMA = 2.0  # transform.corr_noise_like: gaussian_filter(noise, 2)
_IID_NOISE_SCALE = 2e-2
_SHEAR_SCALE = 0.75
_DILATED_LEN = _TEMPLATE_LEN + _PADDING[1]  # 72: every padded template is stretched to this
_EPS = 1e-8  # transform(): added to the template so that only the padding is exactly zero
_NUM_PADS = _PADDING[1] - _PADDING[0] + 1

# Global mean and std of the raw (unstandardised) generator output, the counterpart of the
# dataset-wide standardisation in make_dataset. Measured once with
#     _measure_raw_moments(n=2**22, seed=0)   # uniform labels, float64 accumulation
# (tests re-measure on a smaller sample and check agreement).
_RAW_MEAN = -0.006056842704777469
_RAW_STD = 0.15467844468046676

# Rows rendered per internal slice: keeps the (slice, 72) temporaries cache-resident.
_SLICE = 8192


@dataclass(frozen=True)
class _Operators:
    """Precomputed, data-independent pieces of the transform (built once, see `_operators`)."""

    # signals[(label * _NUM_PADS + pad - 36) * _MAX_TRANSLATION + shift]: the template padded by
    # `pad` zeros, linearly stretched to 72 points and rolled by `shift` (12000 x 72).
    signals: np.ndarray
    # Linear interpolation from 72 to 40 points (transform.interpolate): output i is
    # x[left[i]] * (1 - frac[i]) + x[left[i] + 1] * frac[i].
    subsample_left: np.ndarray
    subsample_frac: np.ndarray
    # The shear ramp linspace(-0.5, 0.5, 72), already interpolated to 40 points.
    shear_ramp: np.ndarray


def _interpolation_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Left neighbours and weights of interp1d(linspace(0,1,n_in), x)(linspace(0,1,n_out))."""
    source = np.linspace(0.0, 1.0, n_out) * (n_in - 1)
    left = np.minimum(np.floor(source).astype(np.intp), n_in - 2)
    return left, source - left


@functools.cache
def _operators() -> _Operators:
    # Imported here: mnist1d pulls in matplotlib and requests (~0.6 s).
    from mnist1d.data import get_templates

    templates = np.asarray(get_templates()["x"], dtype=np.float64) + _EPS  # (10, 12)
    num_labels = templates.shape[0]
    padded = np.zeros((num_labels, _DILATED_LEN + 1))  # one spare zero for the right neighbour
    padded[:, :_TEMPLATE_LEN] = templates

    labels, pads, shifts = (
        grid.reshape(-1, 1)
        for grid in np.meshgrid(
            np.arange(num_labels),
            np.arange(_PADDING[0], _PADDING[1] + 1),
            np.arange(_MAX_TRANSLATION),
            indexing="ij",
        )
    )
    # Output position i of the rolled signal holds stretched position j = (i - shift) mod 72,
    # which reads the padded template (length 12 + pad) at fractional index j * (len-1) / 71.
    stretched_pos = (np.arange(_DILATED_LEN)[None, :] - shifts) % _DILATED_LEN
    source = stretched_pos * ((_TEMPLATE_LEN + pads - 1) / (_DILATED_LEN - 1))
    left = np.floor(source).astype(np.intp)
    frac = source - left
    a = padded[labels, left]
    b = padded[labels, left + 1]
    signals = a + (b - a) * frac

    sub_left, sub_frac = _interpolation_weights(_DILATED_LEN, MNIST1D_LENGTH)
    ramp = np.linspace(-0.5, 0.5, _DILATED_LEN)
    shear_ramp = ramp[sub_left] * (1 - sub_frac) + ramp[sub_left + 1] * sub_frac
    return _Operators(
        signals=signals.astype(np.float32),
        subsample_left=sub_left,
        subsample_frac=sub_frac.astype(np.float32),
        shear_ramp=shear_ramp.astype(np.float32),
    )


def _render_mnist1d(
    labels: np.ndarray,
    pad: np.ndarray,
    scale: np.ndarray,
    shift: np.ndarray,
    corr_noise: np.ndarray,
    iid_noise: np.ndarray,
    shear: np.ndarray,
    noise: float = 1.0,
) -> np.ndarray:
    """Raw MNIST-1D signals (n, 40) float32 from the random draws of `transform`, batched.

    Per example, `mnist1d.transform.transform(template[label], t, args)` draws: pad (zeros
    appended, in [36, 60]), scale factor, shift (np.roll amount, in [0, 48)), 72 unit normals for
    the correlated noise, 72 unit normals for the iid noise and the shear coefficient. Given
    the same draws this returns the same signal (up to float32 rounding; tests check this).
    """
    ops = _operators()
    rows = (labels * _NUM_PADS + (pad - _PADDING[0])) * _MAX_TRANSLATION + shift
    x = np.take(ops.signals, rows, axis=0)
    x *= scale.astype(np.float32)[:, None]
    # transform() only puts correlated noise where the signal is exactly zero (the padding).
    # Same filter as its gaussian_filter(noise, 2) on a 1-D signal (mode "reflect", truncate 4).
    # scipy's filter rather than a matrix product: BLAS threads slow this down on busy CPUs.
    corr = gaussian_filter1d(corr_noise, _CORR_NOISE_SIGMA, axis=-1, mode="reflect")
    corr *= np.float32(_CORR_NOISE_SCALE * noise)
    x = np.where(x != 0, x, corr)
    x += np.float32(_IID_NOISE_SCALE * noise) * iid_noise
    frac = ops.subsample_frac
    out = x[:, ops.subsample_left] * (1 - frac) + x[:, ops.subsample_left + 1] * frac
    # shear and interpolation are both linear, so shearing after subsampling is the same.
    out -= shear.astype(np.float32)[:, None] * ops.shear_ramp
    return out


def _generate_raw(
    n: int,
    rng: np.random.Generator,
    label_balance: Literal["uniform", "balanced"],
    noise: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    _check_count(n)
    if label_balance == "uniform":
        labels = rng.integers(0, MNIST1D_NUM_CLASSES, n)
    elif label_balance == "balanced":
        labels = rng.permutation(np.arange(n) % MNIST1D_NUM_CLASSES)
    else:
        raise ValueError(
            f"label_balance={label_balance!r} is not allowed: use 'uniform' or 'balanced'"
        )
    pad = rng.integers(_PADDING[0], _PADDING[1] + 1, n)
    scale = 1.0 + _SCALE_COEFF * (rng.random(n) - 0.5)
    shift = rng.integers(0, _MAX_TRANSLATION, n)
    shear = _SHEAR_SCALE * (rng.random(n) - 0.5)
    out = np.empty((n, MNIST1D_LENGTH), dtype=np.float32)
    for start in range(0, n, _SLICE):
        s = slice(start, min(start + _SLICE, n))
        normals = rng.standard_normal((s.stop - s.start, 2 * _DILATED_LEN), dtype=np.float32)
        out[s] = _render_mnist1d(
            labels[s],
            pad[s],
            scale[s],
            shift[s],
            normals[:, :_DILATED_LEN],
            normals[:, _DILATED_LEN:],
            shear[s],
            noise,
        )
    return out, labels.astype(np.int64)


def generate_mnist1d(
    n: int,
    rng: np.random.Generator,
    *,
    label_balance: Literal["uniform", "balanced"] = "uniform",
    noise: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw `n` MNIST-1D examples: inputs (n, 40) float32 and labels (n,) int64.

    Same transformation as ``mnist1d.transform.transform`` with the default
    ``get_dataset_args()`` (pad, stretch to 72 points, scale, roll, correlated noise in the
    padding, iid noise, shear, subsample to 40), vectorised over examples and driven by `rng`
    instead of the global numpy state. Inputs are standardised with fixed constants (the
    global mean/std of this generator's output), the counterpart of make_dataset's
    dataset-wide standardisation, so chunks generated separately share one scale.

    label_balance: "uniform" draws each label independently and uniformly (use for pools
    built from independent blocks and for streams); "balanced" gives every class
    ``n // 10`` or ``n // 10 + 1`` examples in random order, like make_dataset.
    noise multiplies the correlated and iid noise scales (1: the standard task).
    """
    raw, labels = _generate_raw(n, rng, label_balance, noise)
    raw -= np.float32(_RAW_MEAN)
    raw *= np.float32(1.0 / _RAW_STD)
    return raw, labels


def _measure_raw_moments(n: int = 2**22, seed: int = 0) -> tuple[float, float]:
    """Global mean and std of `n` raw generator outputs (how `_RAW_MEAN/_RAW_STD` were set)."""
    rng = np.random.default_rng(seed)
    total, total_sq, count = 0.0, 0.0, 0
    for start in range(0, n, 2**16):
        raw, _ = _generate_raw(min(2**16, n - start), rng, "uniform")
        raw64 = raw.astype(np.float64)
        total += float(raw64.sum())
        total_sq += float(np.square(raw64).sum())
        count += raw64.size
    mean = total / count
    return mean, math.sqrt(total_sq / count - mean**2)


# ---------------------------------------------------------------------------------------------
# Corruptions
# ---------------------------------------------------------------------------------------------


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
    cfg: DataConfig,
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


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------

_SEED_LIMIT = 2**32  # seeds are single SeedSequence words (see _rng)


class DataConfig(BaseModel):
    """Which data a run trains and evaluates on, and how the training data are corrupted."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["mnist1d", "mnist1d_pairs", "npz", "cifar10", "imagefolder"] = Field(
        default="mnist1d",
        description=(
            "Dataset: generated MNIST-1D, MNIST-1D signal-caption pairs (task: contrastive), "
            "an .npz file, CIFAR-10 or a folder."
        ),
    )
    path: str | None = Field(
        default=None, description="The .npz file, or the root folder for cifar10/imagefolder."
    )
    regime: Literal["fixed", "stream"] = Field(
        default="fixed",
        description="fixed: one pool reused over epochs; stream: fresh examples (mnist1d*).",
    )
    train_size: int = Field(
        default=4000, description="Training-pool size (mnist1d fixed regime only)."
    )
    test_size: int = Field(default=1000, description="Test-split size (mnist1d only).")
    clean_size: int = Field(
        default=500,
        description="Curated clean split for the reference model (carved if not given).",
    )
    label_noise: float = Field(
        default=0.0, description="Fraction of training labels replaced by a random different class."
    )
    noise_inputs: float = Field(
        default=0.0,
        description="Fraction of training examples replaced by pure noise, random labels.",
    )
    duplicate_easy: float = Field(
        default=0.0,
        description="Fraction of training examples replaced by copies of a few easy ones.",
    )
    seed: int = Field(
        default=0, description="Data seed: runs with the same data config see the same data."
    )
    captions: CaptionConfig | None = Field(
        default=None,
        description="Caption wording and noise (mnist1d_pairs only; null there: the defaults).",
    )
    signal_noise: float = Field(
        default=1.0,
        ge=0.0,
        description=(
            "Multiplier of MNIST-1D's correlated and iid signal noise (1: the standard task); "
            "another value makes a related task, e.g. to pretrain a transferred reference."
        ),
    )

    @field_validator("train_size", "test_size", "clean_size")
    @classmethod
    def _positive_size(cls, value: int, info: Any) -> int:
        if value < 1:
            raise ValueError(f"{info.field_name}={value!r} is not allowed: must be an integer >= 1")
        return value

    @field_validator("label_noise", "noise_inputs", "duplicate_easy")
    @classmethod
    def _fraction(cls, value: float, info: Any) -> float:
        return check_fraction(value, info.field_name)

    @field_validator("seed")
    @classmethod
    def _seed_range(cls, value: int) -> int:
        if not 0 <= value < _SEED_LIMIT:
            raise ValueError(f"seed={value!r} is not allowed: must be in [0, 2**32)")
        return value

    @model_serializer(mode="wrap")
    def _omit_absent_captions(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Datasets without captions dump (and hash) exactly as before captions existed.
        data: dict[str, Any] = handler(self)
        if self.captions is None:
            data.pop("captions", None)
        if self.signal_noise == 1.0:  # likewise for the standard signal noise
            data.pop("signal_noise", None)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> DataConfig:
        paired = self.name == "mnist1d_pairs"
        if self.captions is not None and not paired:
            raise ValueError(
                f"captions is not allowed with name={self.name!r}: only mnist1d_pairs has "
                "captions; remove dataset.captions or set dataset.name: mnist1d_pairs"
            )
        if paired and self.label_noise > 0:
            raise ValueError(
                f"label_noise={self.label_noise!r} is not allowed with name='mnist1d_pairs': "
                "a pair's target is its caption; use dataset.captions.mismatch"
            )
        if paired and self.captions is None:
            self.captions = CaptionConfig()  # explicit defaults hash like omitted ones
        if self.noise_inputs + self.duplicate_easy >= 1.0:
            raise ValueError(
                f"noise_inputs + duplicate_easy = {self.noise_inputs!r} + {self.duplicate_easy!r}"
                " is not allowed: they replace disjoint examples, so the sum must be < 1"
            )
        if self.name not in ("mnist1d", "mnist1d_pairs") and self.path is None:
            raise ValueError(
                f"path=None is not allowed with name={self.name!r}: set dataset.path to "
                + ("the .npz file" if self.name == "npz" else "the dataset's root folder")
            )
        if self.regime == "stream" and self.name not in ("mnist1d", "mnist1d_pairs"):
            raise ValueError(
                f"regime='stream' is not allowed with name={self.name!r}: only mnist1d(_pairs) can "
                "generate fresh examples; use regime='fixed'"
            )
        return self


# ---------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------

# Purposes of derived random streams; keys have a fixed length because SeedSequence treats
# trailing zero words as absent (default_rng([1, 2]) == default_rng([1, 2, 0])).
_TRAIN, _TEST, _CLEAN, _PROTOTYPES, _CORRUPT, _STREAM, _EPOCH = range(7)
_POOL_BLOCK = 4096  # the mnist1d pool is built from independently seeded blocks of this size
_PROTOTYPE_SAMPLE = 4096


def _rng(purpose: int, data_seed: int, run_seed: int = 0, index: int = 0) -> np.random.Generator:
    return np.random.default_rng([purpose, data_seed, run_seed, index])


@dataclass
class Splits:
    """All data a run needs besides the training stream. In the stream regime the train_*
    tensors are empty (0 examples) and training examples come from :class:`StreamSource`."""

    train_x: torch.Tensor
    train_y: torch.Tensor  # int64
    train_corrupted: torch.Tensor  # bool: example was corrupted by label noise/noise/duplicate
    test_x: torch.Tensor
    test_y: torch.Tensor
    clean_x: torch.Tensor
    clean_y: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]  # per example, e.g. (40,) for mnist1d, (3, 32, 32) for images


def load_splits(cfg: DataConfig) -> Splits:
    """Build or load the train pool, test split and clean split described by `cfg`.

    The test and clean splits are never corrupted. For mnist1d, test and clean splits have
    exactly balanced classes and depend only on (seed, size); the training pool is built from
    independently seeded blocks, so a smaller ``train_size`` gives a prefix of a larger one and
    the clean pool is the same for every corruption setting.
    """
    if cfg.name == "mnist1d":
        return _mnist1d_splits(cfg)
    if cfg.name == "mnist1d_pairs":
        from trainers.pairs import load_pairs  # pairs builds on this module

        return load_pairs(cfg)
    arrays = _load_npz(cfg) if cfg.name == "npz" else _load_vision(cfg)
    return _finish_file_splits(cfg, *arrays)


def _mnist1d_prototypes(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray] | None:
    """Easy examples for duplication: nearest to their class mean in a dedicated clean sample."""
    if cfg.duplicate_easy == 0:
        return None
    x, y = generate_mnist1d(
        _PROTOTYPE_SAMPLE,
        _rng(_PROTOTYPES, cfg.seed),
        label_balance="balanced",
        noise=cfg.signal_noise,
    )
    return easy_prototypes(x, y)


def _mnist1d_block(
    cfg: DataConfig,
    rng: np.random.Generator,
    n: int,
    prototypes: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = generate_mnist1d(n, rng, noise=cfg.signal_noise)
    return corrupt(x, y, cfg, rng, MNIST1D_NUM_CLASSES, prototypes)


Block = Callable[
    [DataConfig, np.random.Generator, int, tuple[np.ndarray, np.ndarray] | None],
    tuple[np.ndarray, np.ndarray, np.ndarray],
]


def train_pool(
    cfg: DataConfig, block: Block, label_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fixed training pool (inputs, targets, corrupted mask); empty for a stream.

    Built from independently seeded blocks of ``_POOL_BLOCK`` examples, so a smaller
    ``train_size`` gives a prefix of a larger one."""
    if cfg.regime == "stream":
        return (
            np.empty((0, MNIST1D_LENGTH), dtype=np.float32),
            np.empty((0, *label_shape), dtype=np.int64),
            np.empty(0, dtype=bool),
        )
    prototypes = _mnist1d_prototypes(cfg)
    blocks = [
        block(cfg, _rng(_TRAIN, cfg.seed, 0, b), _POOL_BLOCK, prototypes)
        for b in range(math.ceil(cfg.train_size / _POOL_BLOCK))
    ]
    x, y, corrupted = (
        np.concatenate(parts)[: cfg.train_size] for parts in zip(*blocks, strict=True)
    )
    return x, y, corrupted


def _mnist1d_splits(cfg: DataConfig) -> Splits:
    test_x, test_y = generate_mnist1d(
        cfg.test_size, _rng(_TEST, cfg.seed), label_balance="balanced", noise=cfg.signal_noise
    )
    clean_x, clean_y = generate_mnist1d(
        cfg.clean_size, _rng(_CLEAN, cfg.seed), label_balance="balanced", noise=cfg.signal_noise
    )
    train_x, train_y, train_corrupted = train_pool(cfg, _mnist1d_block, label_shape=())
    return _to_splits(
        (train_x, train_y, train_corrupted, test_x, test_y, clean_x, clean_y),
        num_classes=MNIST1D_NUM_CLASSES,
    )


def _to_splits(arrays: tuple[np.ndarray, ...], num_classes: int) -> Splits:
    """Splits from numpy (train_x, train_y, train_corrupted, test_x, test_y, clean_x, clean_y)."""
    train_x, train_y, train_corrupted, test_x, test_y, clean_x, clean_y = (
        torch.from_numpy(np.ascontiguousarray(a)) for a in arrays
    )
    return Splits(
        train_x=train_x,
        train_y=train_y,
        train_corrupted=train_corrupted,
        test_x=test_x,
        test_y=test_y,
        clean_x=clean_x,
        clean_y=clean_y,
        num_classes=num_classes,
        input_shape=tuple(arrays[0].shape[1:]),
    )


_FileArrays = tuple[
    np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, str
]


def _finish_file_splits(
    cfg: DataConfig,
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    x_clean: np.ndarray | None,
    y_clean: np.ndarray | None,
    source: str,
) -> Splits:
    """Carve the clean split if needed, corrupt the training set, convert to tensors."""
    num_classes = int(max(y.max(initial=0), y_test.max(initial=0)) + 1)
    if y_clean is not None:
        num_classes = max(num_classes, int(y_clean.max(initial=0)) + 1)
    if x_clean is None or y_clean is None:
        if cfg.clean_size >= len(y):
            raise DataError(
                f"{source}: cannot carve clean_size={cfg.clean_size} clean examples out of "
                f"{len(y)} training examples; lower data.clean_size or provide x_clean/y_clean"
            )
        order = _rng(_CLEAN, cfg.seed).permutation(len(y))
        clean_idx, train_idx = np.sort(order[: cfg.clean_size]), np.sort(order[cfg.clean_size :])
        x_clean, y_clean = x[clean_idx], y[clean_idx]
        x, y = x[train_idx], y[train_idx]
    if cfg.label_noise > 0 and num_classes < 2:
        raise DataError(f"{source}: label_noise needs at least 2 classes, found {num_classes}")
    prototypes = easy_prototypes(x, y) if cfg.duplicate_easy > 0 else None
    x, y, corrupted = corrupt(x, y, cfg, _rng(_CORRUPT, cfg.seed), num_classes, prototypes)
    return _to_splits((x, y, corrupted, x_test, y_test, x_clean, y_clean), num_classes)


def _required_path(cfg: DataConfig) -> Path:
    if cfg.path is None:  # DataConfig rejects this; guards against later assignment
        raise ConfigError(f"path=None is not allowed with name={cfg.name!r}: set dataset.path")
    return Path(cfg.path)


def _load_npz(cfg: DataConfig) -> _FileArrays:
    """Arrays of an .npz file: required ``x, y, x_test, y_test``; optional ``x_clean, y_clean``.

    Without ``x_clean/y_clean`` the clean split is ``clean_size`` training examples chosen at
    random (data seed) and removed from the training set. Inputs become float32, labels int64
    (labels must be integers >= 0; the number of classes is the largest label + 1). Inputs are
    used as stored (no normalisation). ``train_size`` and ``test_size`` are ignored.
    """
    path = _required_path(cfg)
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist; set dataset.path to an .npz file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: cannot read as an .npz archive of plain arrays ({err})") from err

    for key in ("x", "y", "x_test", "y_test"):
        if key not in arrays:
            raise DataError(
                f"{path}: array {key!r} is missing; found {sorted(arrays)}, required "
                "x, y, x_test, y_test (optional x_clean, y_clean)"
            )
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
        if len(y_arr) and y_arr.min() < 0:
            raise DataError(f"{path}: array {y_key!r} has label {y_arr.min()}; labels must be >= 0")
        if x_key != "x" and x_arr.shape[1:] != arrays["x"].shape[1:]:
            raise DataError(
                f"{path}: array {x_key!r} has per-example shape {x_arr.shape[1:]} but 'x' has "
                f"{arrays['x'].shape[1:]}; they must match"
            )
    if len(arrays["y"]) == 0 or len(arrays["y_test"]) == 0:
        raise DataError(f"{path}: 'x' and 'x_test' must each hold at least one example")

    def inputs(key: str) -> np.ndarray | None:
        return arrays[key].astype(np.float32) if key in arrays else None

    def labels(key: str) -> np.ndarray | None:
        return arrays[key].astype(np.int64) if key in arrays else None

    return (
        arrays["x"].astype(np.float32),
        arrays["y"].astype(np.int64),
        arrays["x_test"].astype(np.float32),
        arrays["y_test"].astype(np.int64),
        inputs("x_clean"),
        labels("y_clean"),
        str(path),
    )


def _torchvision_datasets(name: str) -> Any:
    try:
        from torchvision import datasets  # optional extra
    except ImportError as err:
        raise DataError(
            f"name={name!r} needs torchvision, which is not installed: "
            "pip install 'activescale[vision]'"
        ) from err
    return datasets


def _load_vision(cfg: DataConfig) -> _FileArrays:
    """CIFAR-10 or an image folder, whole in memory, as float32 (N, C, H, W) normalised per
    channel with the training set's mean and std. Never downloads.

    cifar10: ``path`` holds the extracted ``cifar-10-batches-py`` folder (torchvision layout).
    imagefolder: ``path/train/<class>/*`` and ``path/test/<class>/*`` with the same class
    folders, and optionally ``path/clean/<class>/*``; all images must have the same size.
    Without a clean folder (always for cifar10) ``clean_size`` training examples are carved
    out as the clean split.
    """
    root = _required_path(cfg)
    datasets = _torchvision_datasets(cfg.name)
    x_clean: np.ndarray | None = None
    y_clean: np.ndarray | None = None
    if cfg.name == "cifar10":
        try:
            train = datasets.CIFAR10(root=str(root), train=True, download=False)
            test = datasets.CIFAR10(root=str(root), train=False, download=False)
        except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
            raise DataError(
                f"CIFAR-10 not found under path={str(root)!r} ({err}). Data are never "
                "downloaded: place the extracted 'cifar-10-batches-py' folder (python version "
                f"from https://www.cs.toronto.edu/~kriz/cifar.html) inside {str(root)!r}"
            ) from err
        x, y = np.asarray(train.data), np.asarray(train.targets, dtype=np.int64)
        x_test, y_test = np.asarray(test.data), np.asarray(test.targets, dtype=np.int64)
    else:
        x, y, classes = _read_image_folder(datasets, root / "train", None)
        x_test, y_test, _ = _read_image_folder(datasets, root / "test", classes)
        if (root / "clean").is_dir():
            x_clean, y_clean, _ = _read_image_folder(datasets, root / "clean", classes)
    # (N, H, W, C) uint8 -> (N, C, H, W) float32, normalised per channel.
    mean = x.mean(axis=(0, 1, 2), dtype=np.float64)
    std = x.std(axis=(0, 1, 2), dtype=np.float64)
    std[std == 0] = 1.0

    def normalise(images: np.ndarray) -> np.ndarray:
        out = (images.astype(np.float32) - mean.astype(np.float32)) / std.astype(np.float32)
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))

    return (
        normalise(x),
        y,
        normalise(x_test),
        y_test,
        None if x_clean is None else normalise(x_clean),
        y_clean,
        str(root),
    )


def _read_image_folder(
    datasets: Any, root: Path, classes: list[str] | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if not root.is_dir():
        raise DataError(
            f"image folder {str(root)!r} does not exist; imagefolder data need "
            "path/train/<class>/* and path/test/<class>/* (optionally path/clean/<class>/*)"
        )
    try:
        folder = datasets.ImageFolder(str(root))
    except (FileNotFoundError, RuntimeError) as err:
        raise DataError(f"image folder {str(root)!r} cannot be read: {err}") from err
    if classes is not None and folder.classes != classes:
        raise DataError(
            f"image folder {str(root)!r} has classes {folder.classes} but the training folder "
            f"has {classes}; they must match"
        )
    images: list[np.ndarray] = []
    for file, _ in folder.samples:
        image = np.asarray(folder.loader(file).convert("RGB"), dtype=np.uint8)
        if images and image.shape != images[0].shape:
            raise DataError(
                f"{file}: image of shape {image.shape} (H, W, C) but {folder.samples[0][0]} has "
                f"{images[0].shape}; all images must have the same size"
            )
        images.append(image)
    labels = np.asarray([label for _, label in folder.samples], dtype=np.int64)
    return np.stack(images), labels, list(folder.classes)


# ---------------------------------------------------------------------------------------------
# Batch sources
# ---------------------------------------------------------------------------------------------


@runtime_checkable
class BatchSource(Protocol):
    """Where a learner's super-batches come from. Resumable: after
    ``b.load_state_dict(a.state_dict())`` both return identical batches."""

    examples_seen: int

    def next(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The next `n` examples: inputs, int64 labels, bool corrupted mask."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _check_seed(seed: int) -> None:
    if not 0 <= seed < _SEED_LIMIT:
        raise ConfigError(f"seed={seed!r} is not allowed: the run seed must be in [0, 2**32)")


def _check_count(n: int) -> None:
    if n < 0:
        raise ValueError(f"n={n} is not allowed: the number of examples must be >= 0")


def _check_state(kind: str, state: dict[str, Any], expected: dict[str, Any]) -> None:
    found = {key: state.get(key) for key in expected}
    if state.get("kind") != kind or found != expected:
        raise ConfigError(
            f"cannot resume a {kind} source from a state saved with "
            f"{ {'kind': state.get('kind'), **found} }; this source has "
            f"{ {'kind': kind, **expected} } (same data config and run seed required)"
        )


class FixedSource:
    """Shuffled epochs over a fixed pool. Epoch e's order is a permutation drawn from a
    generator keyed by (run seed, e), so the state is just (epoch, position)."""

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, corrupted: torch.Tensor, seed: int
    ) -> None:
        _check_seed(seed)
        if len(y) == 0:
            raise ConfigError("the training pool is empty; a fixed source needs >= 1 example")
        self._x, self._y, self._corrupted = x, y, corrupted
        self._seed = seed
        self.examples_seen = 0
        self._epoch = 0
        self._position = 0
        self._order = self._permutation(0)

    @property
    def epoch(self) -> int:
        """Completed passes over the pool (fractional progress is `examples_seen / pool size`)."""
        return self.examples_seen // len(self._y)

    def _permutation(self, epoch: int) -> torch.Tensor:
        order = _rng(_EPOCH, 0, self._seed, epoch).permutation(len(self._y))
        return torch.from_numpy(order)

    def next(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        _check_count(n)
        pieces = []
        remaining = n
        while remaining > 0:
            if self._position == len(self._order):
                self._epoch += 1
                self._position = 0
                self._order = self._permutation(self._epoch)
            take = min(remaining, len(self._order) - self._position)
            pieces.append(self._order[self._position : self._position + take])
            self._position += take
            remaining -= take
        index = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        self.examples_seen += n
        # index_select is ~3x faster than advanced indexing for a row gather on CPU.
        return tuple(torch.index_select(t, 0, index) for t in (self._x, self._y, self._corrupted))  # type: ignore[return-value]

    def _identity(self) -> dict[str, Any]:
        return {"seed": self._seed, "pool_size": len(self._y)}

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "fixed",
            **self._identity(),
            "epoch": self._epoch,
            "position": self._position,
            "examples_seen": self.examples_seen,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_state("fixed", state, self._identity())
        self._epoch = int(state["epoch"])
        self._position = int(state["position"])
        self.examples_seen = int(state["examples_seen"])
        self._order = self._permutation(self._epoch)


class StreamSource:
    """A never-ending stream of fresh MNIST-1D examples (single-epoch regime).

    Chunk c (``chunk_size`` examples) is generated and corrupted with a generator keyed by
    (data seed, run seed, c), so the state is just (chunk, position) and a resumed source
    regenerates its current chunk. Duplicated easy examples (``duplicate_easy``) are copies of
    prototypes fixed by the data seed; everything else is freshly drawn and never repeats.
    """

    dataset_name = "mnist1d"  # what _make_chunk generates (trainers/pairs.py: pairs)

    def __init__(self, cfg: DataConfig, seed: int, *, chunk_size: int = 16384) -> None:
        _check_seed(seed)
        if cfg.name != self.dataset_name:
            raise ConfigError(f"a stream needs name={self.dataset_name!r}, got name={cfg.name!r}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size} is not allowed: must be >= 1")
        self._cfg = cfg
        self._seed = seed
        self._chunk_size = chunk_size
        self._prototypes = _mnist1d_prototypes(cfg)
        self.examples_seen = 0
        self._chunk_index = 0
        self._position = 0
        self._chunk = self._make_chunk(0)

    def _make_chunk(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = _rng(_STREAM, self._cfg.seed, self._seed, index)
        x, y, corrupted = _mnist1d_block(self._cfg, rng, self._chunk_size, self._prototypes)
        return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(corrupted)

    def next(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        _check_count(n)
        pieces: list[tuple[torch.Tensor, ...]] = []
        remaining = n
        while remaining > 0:
            if self._position == self._chunk_size:
                self._chunk_index += 1
                self._position = 0
                self._chunk = self._make_chunk(self._chunk_index)
            take = min(remaining, self._chunk_size - self._position)
            s = slice(self._position, self._position + take)
            pieces.append(tuple(part[s] for part in self._chunk))
            self._position += take
            remaining -= take
        self.examples_seen += n
        if not pieces:
            pieces.append(tuple(part[:0] for part in self._chunk))
        # Copies, so callers may modify batches without touching the cached chunk.
        x, y, corrupted = (torch.cat(parts) for parts in zip(*pieces, strict=True))
        return x, y, corrupted

    def _identity(self) -> dict[str, Any]:
        return {
            "seed": self._seed,
            "data": self._cfg.model_dump(mode="json"),
            "chunk_size": self._chunk_size,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "stream",
            **self._identity(),
            "chunk": self._chunk_index,
            "position": self._position,
            "examples_seen": self.examples_seen,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_state("stream", state, self._identity())
        self._chunk_index = int(state["chunk"])
        self._position = int(state["position"])
        self.examples_seen = int(state["examples_seen"])
        self._chunk = self._make_chunk(self._chunk_index)


def make_source(cfg: DataConfig, splits: Splits, seed: int) -> BatchSource:
    """The training source for `cfg`: a stream (regime="stream") or shuffled epochs over
    ``splits``' training pool, ordered by the run `seed`."""
    if cfg.regime == "stream" and cfg.name == "mnist1d_pairs":
        from trainers.pairs import PairStreamSource  # pairs builds on this module

        return PairStreamSource(cfg, seed)
    if cfg.regime == "stream":
        return StreamSource(cfg, seed)
    return FixedSource(splits.train_x, splits.train_y, splits.train_corrupted, seed)

"""The MNIST-1D generator: same transformation as ``mnist1d.transform.transform``, vectorised.

:func:`generate_mnist1d` draws any number of examples from a numpy generator, ~60x faster than
``mnist1d.data.make_dataset`` (``benchmarks/bench_data.py``), so that runs can use a fixed pool
of any size or an unbounded stream of fresh examples. This module knows nothing of configs,
splits or corruptions: it turns random draws into signals.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.ndimage import gaussian_filter1d

__all__ = [
    "MNIST1D_LENGTH",
    "MNIST1D_NUM_CLASSES",
    "check_count",
    "generate_mnist1d",
    "operators",
]

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
    """Precomputed, data-independent pieces of the transform (built once, see `operators`)."""

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
def operators() -> _Operators:
    """The transform's data-independent tables, built once (~10 ms) and cached; call it early
    to keep that one-off cost out of a timing."""
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
    ops = operators()
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


def check_count(n: int) -> None:
    """Refuse a negative number of examples (generators and sources alike)."""
    if n < 0:
        raise ValueError(f"n={n} is not allowed: the number of examples must be >= 0")


def _generate_raw(
    n: int,
    rng: np.random.Generator,
    label_balance: Literal["uniform", "balanced"],
    noise: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    check_count(n)
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

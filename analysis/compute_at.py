"""The compute at which an error curve reaches a target error.

From the data, a frontier's compute at a target is the least compute at which any of its
learning curves (one per learner size, seeds averaged) reaches the target: each curve's
running minimum is interpolated linearly in (log C, log error) between its own evaluation
points, never beyond them, and the least crossing over the curves is taken. Interpolating
each learning curve and not the frontier's envelope matters: a chord between points of two
learner sizes follows no run, and on a pure compute shift the envelope's chords read the
multiplier a few percent off, the curves' own well under 1%
(``tests/test_compute_at.py``).

Where a target is not crossed inside the points the compute is *censored*, and
:func:`crossing_bounds` says so with bounds (low, high) instead of a value:

* crossed: low = high = the interpolated compute;
* already at or below the target at the curve's first (least-compute) point:
  (C_start, C_first), the crossing lies at less compute than was measured but not below what
  the run spent before its first step (``LearningCurve.start``: a pretrained reference's
  charged FLOPs; 0 without one). A learner size whose first point comes later counts that
  point as its crossing (as the envelope of the points does);
* never reached: (C_max, inf), beyond the largest compute measured.

From a fitted curve: the curve inverted numerically within :data:`MAX_EXTRAPOLATION` of its
data (:func:`fit_compute_at`), or, for many targets at once, read off the curve on a grid
(:func:`fit_crossing_bounds`, censored at the ends of the window in the same way). Compute
multipliers (:mod:`analysis.multiplier`) are ratios of these; ratios of bounds bound the
ratio (:func:`ratio_bounds`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize

from activescale.errors import FitError
from analysis.fit import CurveFit, positive_arrays
from analysis.frontier import envelope_indices

FloatArray = NDArray[np.float64]


class LearningCurve(NamedTuple):
    """One learning curve's (compute, error) points, and the compute it starts from: what
    the run spent before its first step (a pretrained reference's charged FLOPs), below
    which it cannot have reached any error."""

    compute: FloatArray
    error: FloatArray
    start: float = 0.0


LearningCurves = Sequence[LearningCurve | tuple[FloatArray, FloatArray]]
"""The learning curves of a frontier (one per learner size)."""

MAX_EXTRAPOLATION = 10.0
"""A fitted curve is inverted within [min C / 10, max C * 10] of its data, never further."""


def _one_curve(
    compute: FloatArray, error: FloatArray, start: float, log_targets: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Bounds on where one curve first reaches each target: (c, c) crossed,
    (start, C_first) reached at the first point, (inf, inf) never reached."""
    keep = envelope_indices(compute, error)  # strictly decreasing running minimum
    log_c, log_e = np.log(compute[keep]), np.log(error[keep])
    low = np.full(log_targets.shape, np.inf)
    high = np.full(log_targets.shape, np.inf)
    before = log_targets >= log_e[0]
    low[before], high[before] = start, float(compute[keep][0])
    inside = ~before & (log_targets >= log_e[-1])
    if inside.any():
        crossed = np.exp(np.interp(-log_targets[inside], -log_e, log_c))
        low[inside], high[inside] = crossed, crossed
    return low, high


def crossing_bounds(curves: LearningCurves, targets: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Bounds (low, high) on the least compute at which any curve reaches each target.

    ``curves``: each learning curve (NaN errors are left out); ``low == high`` where the
    target is crossed (module docstring for the censored cases). A curve that first
    reaches a target at its first point contributes that point as its crossing, except the
    curve that starts at the least compute: before its first point nothing was measured,
    so there the crossing is bounded only (below by that curve's start).
    """
    log_targets = np.log(np.asarray(targets, dtype=np.float64))
    parts = []
    for curve in curves:
        compute, error, start = LearningCurve(*curve)
        finite = np.isfinite(error)
        if finite.any():
            parts.append((np.asarray(compute)[finite], np.asarray(error)[finite], start))
    if not parts:
        return np.full(log_targets.shape, np.nan), np.full(log_targets.shape, np.nan)
    earliest = int(np.argmin([c.min() for c, _, _ in parts]))
    lows, highs = [], []
    for index, (compute, error, start) in enumerate(parts):
        low, high = _one_curve(compute, error, start, log_targets)
        if index != earliest:
            low = np.where(low < high, high, low)  # its first point counts as its crossing
        lows.append(low)
        highs.append(high)
    low, high = np.min(lows, axis=0), np.min(highs, axis=0)
    # No curve reaches the target: it lies beyond the largest compute measured.
    return np.where(np.isinf(low), max(float(c.max()) for c, _, _ in parts), low), high


def crossed(bounds: tuple[FloatArray, FloatArray]) -> FloatArray:
    """The compute where the bounds meet (a crossing), NaN where it is censored."""
    low, high = bounds
    return np.where(low == high, low, np.nan)


def ratio_bounds(
    numerator: tuple[FloatArray, FloatArray], denominator: tuple[FloatArray, FloatArray]
) -> tuple[FloatArray, FloatArray]:
    """Bounds on numerator / denominator from bounds on each (0 and inf where open)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        low = numerator[0] / denominator[1]
        high = numerator[1] / denominator[0]
    low = np.where(np.isnan(low), 0.0, low)  # 0 / inf: nothing known below
    high = np.where(np.isnan(high), np.inf, high)  # inf / inf or 0 / 0: nothing known above
    return low, high


def interpolate_compute_at(compute: ArrayLike, error: ArrayLike, target: float) -> float | None:
    """Compute at which one curve first reaches ``target`` error (log-log interpolation of
    its running minimum); None when the crossing is not inside the points (never reached,
    or already reached at the first point). One target of :func:`crossing_bounds`."""
    compute_arr, error_arr = positive_arrays(("compute", "error"), (compute, error))
    if not (math.isfinite(target) and target > 0):
        raise FitError(f"target error = {target} must be a finite positive number")
    value = crossed(crossing_bounds([(compute_arr, error_arr)], np.array([target])))[0]
    return None if math.isnan(value) else float(value)


def compute_at_targets(compute: FloatArray, error: FloatArray, targets: FloatArray) -> FloatArray:
    """Vectorised :func:`interpolate_compute_at` of one curve: NaN where not crossed."""
    if compute.size == 0:
        return np.full(targets.shape, np.nan)
    return crossed(crossing_bounds([(compute, error)], targets))


def fit_compute_at(
    fit: CurveFit, target: float, max_extrapolation: float = MAX_EXTRAPOLATION
) -> tuple[float | None, str | None]:
    """Compute at which a fitted (decreasing) curve reaches ``target`` error.

    Inverts the curve with brentq on log C within [min C / max_extrapolation,
    max C * max_extrapolation] of the fitted data. Returns (compute, None), or
    (None, why) when the crossing is outside that range or the target is at or below
    the asymptote E.
    """
    if max_extrapolation < 1:
        raise FitError(f"max_extrapolation = {max_extrapolation} must be >= 1")
    if target <= fit.asymptote:
        return None, (
            f"target {target:.4g} is at or below the fitted asymptote "
            f"E = {fit.asymptote:.4g} of {fit.family}: never reached"
        )
    low, high = fit.compute_range[0] / max_extrapolation, fit.compute_range[1] * max_extrapolation

    def gap(log_compute: float) -> float:
        return float(np.log(fit.predict(np.exp(log_compute)))[0] - math.log(target))

    if gap(math.log(low)) <= 0:
        return None, (
            f"{fit.family} fit is already below {target:.4g} at C = {low:.4g}, "
            f"the smallest compute considered (data minimum / {max_extrapolation:g})"
        )
    if gap(math.log(high)) > 0:
        return None, (
            f"{fit.family} fit does not reach {target:.4g} by C = {high:.4g}, "
            f"the largest compute considered (data maximum x {max_extrapolation:g})"
        )
    return float(math.exp(optimize.brentq(gap, math.log(low), math.log(high), xtol=1e-10))), None


def fit_crossing_bounds(
    predicted: FloatArray, grid: FloatArray, window: tuple[float, float], targets: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Bounds on the compute at which a fitted curve (its error ``predicted`` on ``grid``)
    reaches each target, searched within MAX_EXTRAPOLATION of the fitted data range
    ``window``: censored at the ends of that range as :func:`crossing_bounds` is at the
    ends of the data. One pass over the grid per resample, no root finding."""
    inside = (grid >= window[0] / MAX_EXTRAPOLATION) & (grid <= window[1] * MAX_EXTRAPOLATION)
    inside &= np.isfinite(predicted)
    if not inside.any():
        return np.full(targets.shape, np.nan), np.full(targets.shape, np.nan)
    return crossing_bounds([(grid[inside], predicted[inside])], targets)


def fit_compute_at_targets(
    predicted: FloatArray, grid: FloatArray, window: tuple[float, float], targets: FloatArray
) -> FloatArray:
    """The crossings of :func:`fit_crossing_bounds` (NaN where censored)."""
    return crossed(fit_crossing_bounds(predicted, grid, window, targets))

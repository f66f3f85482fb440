"""Bootstrap over runs: resample the seeds of each cell, rebuild every frontier, refit.

The report's intervals and bands come from here. Each resample draws, for every curve and
learner size, that size's seeds with replacement (the independent unit is a training run,
not an evaluation point: points of one run share its noise), rebuilds the frontiers
(:func:`analysis.curves.resample_frontier`), refits each curve's AIC-best family
warm-started at the full-data optimum (:func:`analysis.fit.refit_curve`) and records, on a
shared compute grid, the fitted error and the compute at which each curve (points and fit)
reaches each target error (:mod:`analysis.compute_at`: the learning curves for the data,
the refitted curve for the fit). Intervals are percentile intervals (Efron & Tibshirani 1993,
Ch. 13). The family is held fixed, so the intervals leave out the uncertainty of choosing it.

A resample in which a curve does not cross a target is kept, as bounds: never reached means
more compute than the largest measured, reached at the first point means less than the
first (:func:`analysis.compute_at.crossing_bounds`). Intervals of quantities built from
such bounds take the lower percentile of the lower bounds and the upper percentile of the
upper bounds (:func:`censored_interval`), so a side that too many resamples leave open is
open in the interval too (0 or inf) instead of the open resamples being dropped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from activescale.errors import FitError
from analysis.compute_at import MAX_EXTRAPOLATION, crossing_bounds, fit_crossing_bounds
from analysis.curves import SeedRuns, resample_frontier
from analysis.fit import CurveFit, refit_curve

FloatArray = NDArray[np.float64]

GRID_POINTS = 600
CONFIDENCE = 0.95
"""Level of the report's intervals and bands."""


def interval(samples: FloatArray, confidence: float) -> tuple[float, float] | None:
    """Percentile interval of the finite samples, None when there are none."""
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return None
    tail = 50.0 * (1.0 - confidence)
    return float(np.percentile(finite, tail)), float(np.percentile(finite, 100.0 - tail))


_HUGE = 1e300  # stands in for inf while percentiles interpolate (inf - inf would be NaN)


def censored_interval(
    low: FloatArray, high: FloatArray, confidence: float, axis: int = 0
) -> tuple[FloatArray, FloatArray]:
    """Percentile interval of a quantity known per resample only within [low, high].

    The lower end is the lower percentile of ``low``, the upper end the upper percentile of
    ``high`` (NaN rows, failed refits, are left out); an end is 0 or inf where more than
    (1 - confidence) / 2 of the resamples are open on that side.
    """
    tail = 50.0 * (1.0 - confidence)
    with np.errstate(invalid="ignore"):
        lower = np.nanpercentile(np.minimum(low, _HUGE), tail, axis=axis)
        upper = np.nanpercentile(np.minimum(high, _HUGE), 100.0 - tail, axis=axis)
    return np.asarray(lower), np.where(upper >= _HUGE / 10, np.inf, upper)


@dataclass(frozen=True)
class CurveResamples:
    """One curve's resamples: fitted parameters, fitted error on the grid, and bounds on the
    compute at each target (equal where the target is crossed; see the module docstring).

    Rows are resamples; a failed refit (too few frontier points, optimum on a bound) leaves
    NaN in its row and is counted in ``failures`` by reason.
    """

    label: str
    family: str | None
    params: dict[str, FloatArray]
    predicted: FloatArray  # (n_resamples, grid), NaN: failed refit or outside the window
    data_low: FloatArray  # (n_resamples, targets)
    data_high: FloatArray
    fit_low: FloatArray  # NaN: failed refit
    fit_high: FloatArray
    failures: dict[str, int]

    def bounds(self, kind: str) -> tuple[FloatArray, FloatArray]:
        """(low, high) of the compute at each target, from the ``data`` or the ``fit``."""
        return (self.data_low, self.data_high) if kind == "data" else (self.fit_low, self.fit_high)

    def param_intervals(self, confidence: float) -> dict[str, tuple[float, float] | None]:
        return {name: interval(values, confidence) for name, values in self.params.items()}


@dataclass(frozen=True)
class RunBootstrap:
    """Every curve's resamples (by label), on one compute grid and one set of targets."""

    n_resamples: int
    confidence: float
    grid: FloatArray
    targets: FloatArray
    curves: dict[str, CurveResamples]
    resampled: bool  # False: every cell has one seed, so every resample is the data itself

    def band(self, label: str) -> tuple[FloatArray, FloatArray] | None:
        """Pointwise percentile band of the fitted error on ``grid`` (NaN where undefined)."""
        curve = self.curves.get(label)
        if curve is None or curve.family is None or not self.resampled:
            return None
        tail = 50.0 * (1.0 - self.confidence)
        ok = np.isfinite(curve.predicted).all(axis=1)
        if ok.sum() < 10:
            return None
        low, high = np.percentile(curve.predicted[ok], [tail, 100.0 - tail], axis=0)
        return low, high


def compute_grid(runs: list[SeedRuns]) -> FloatArray:
    """A log-spaced compute grid spanning every curve's data, widened by MAX_EXTRAPOLATION."""
    values = np.concatenate([s.compute for r in runs for s in r.sizes]) if runs else np.ones(1)
    low, high = float(values.min()), float(values.max())
    return np.geomspace(low / MAX_EXTRAPOLATION, high * MAX_EXTRAPOLATION, GRID_POINTS)


def bootstrap_runs(
    runs: list[SeedRuns],
    fits: dict[str, CurveFit],
    targets: FloatArray,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> RunBootstrap:
    """Resample the runs (seeds) of every curve ``n_resamples`` times (module docstring).

    When no cell of any curve has two seeds every resample equals the data: one pass is
    made and ``resampled`` is False (intervals are then not available).
    """
    if n_resamples < 1:
        raise FitError(f"n_resamples = {n_resamples} must be at least 1")
    resampled = any(r.resamplable for r in runs)
    draws = n_resamples if resampled else 1
    rng = np.random.default_rng(seed)
    grid = compute_grid(runs)
    out: dict[str, CurveResamples] = {}
    for curve in runs:
        fit = fits.get(curve.label)
        names = list(fit.params) if fit is not None else []
        params = {name: np.full(draws, np.nan) for name in names}
        predicted = np.full((draws, grid.size), np.nan)
        data_low, data_high = (np.full((draws, targets.size), np.nan) for _ in range(2))
        fit_low, fit_high = (np.full((draws, targets.size), np.nan) for _ in range(2))
        failures: Counter[str] = Counter()
        for i in range(draws):
            resample = resample_frontier(curve, rng)
            data_low[i], data_high[i] = crossing_bounds(resample.learning_curves, targets)
            if fit is None:
                continue
            try:
                refit = refit_curve(fit, resample.compute, resample.error)
            except FitError as failure:
                failures[str(failure).split(" (")[0]] += 1
                continue
            for name in names:
                params[name][i] = refit.params[name]
            predicted[i] = refit.predict(grid)
            window = (float(resample.compute.min()), float(resample.compute.max()))
            fit_low[i], fit_high[i] = fit_crossing_bounds(predicted[i], grid, window, targets)
        out[curve.label] = CurveResamples(
            label=curve.label,
            family=fit.family if fit is not None else None,
            params=params,
            predicted=predicted,
            data_low=data_low,
            data_high=data_high,
            fit_low=fit_low,
            fit_high=fit_high,
            failures=dict(failures),
        )
    return RunBootstrap(draws, confidence, grid, targets, out, resampled)

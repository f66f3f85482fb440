"""Bootstrap over runs: resample seeds, rebuild every frontier, refit, recompute.

Each resample draws, for every curve and learner size, that size's seeds with replacement
(the independent unit is a training run, not an evaluation point: points of one run share
its noise), rebuilds the frontiers (:func:`analysis.curves.resample_frontier`), refits each
curve's AIC-best family warm-started at the full-data optimum
(:func:`analysis.fit.refit_curve`) and records, on a shared compute grid, the fitted error
and the compute at which each curve (points and fit) reaches each target error. Intervals
are percentile intervals (Efron & Tibshirani 1993, Ch. 13). The family is held fixed, so
the intervals leave out the uncertainty of choosing it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from analysis.curves import SeedRuns, resample_frontier
from analysis.fit import MAX_EXTRAPOLATION, CurveFit, refit_curve
from analysis.frontier import envelope_indices
from orchestrator.errors import FitError

FloatArray = NDArray[np.float64]

GRID_POINTS = 600


def compute_at_targets(compute: FloatArray, error: FloatArray, targets: FloatArray) -> FloatArray:
    """Compute at which a curve first reaches each target, by log-log interpolation.

    Vectorised :func:`analysis.fit.interpolate_compute_at`: NaN where the target is not
    crossed inside the points (never reached, or already passed at the first point).
    """
    out = np.full(targets.shape, np.nan)
    if compute.size == 0:
        return out
    keep = envelope_indices(compute, error)
    log_c, log_e = np.log(compute[keep]), np.log(error[keep])
    log_t = np.log(targets)
    inside = (log_t <= log_e[0]) & (log_t >= log_e[-1])
    if log_e.size == 1:
        out[inside] = math.exp(log_c[0])
        return out
    out[inside] = np.exp(np.interp(log_t[inside], log_e[::-1], log_c[::-1]))
    return out


def interval(samples: FloatArray, confidence: float) -> tuple[float, float] | None:
    """Percentile interval of the finite samples, None when there are none."""
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return None
    tail = 50.0 * (1.0 - confidence)
    return float(np.percentile(finite, tail)), float(np.percentile(finite, 100.0 - tail))


@dataclass(frozen=True)
class CurveBootstrap:
    """One curve's resamples: fitted parameters, fitted error on the grid, compute at targets.

    Rows are resamples; a failed refit (too few frontier points, optimum on a bound) leaves
    NaN in its row and is counted in ``failures`` by reason.
    """

    label: str
    family: str | None
    params: dict[str, FloatArray]
    predicted: FloatArray  # (n_resamples, grid), NaN: failed refit or outside the window
    data_compute: FloatArray  # (n_resamples, targets)
    fit_compute: FloatArray  # (n_resamples, targets)
    failures: dict[str, int]

    def param_intervals(self, confidence: float) -> dict[str, tuple[float, float] | None]:
        return {name: interval(values, confidence) for name, values in self.params.items()}


@dataclass(frozen=True)
class SeedBootstrap:
    n_resamples: int
    confidence: float
    grid: FloatArray
    targets: FloatArray
    curves: dict[str, CurveBootstrap]
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


def fit_compute_at_targets(
    predicted: FloatArray, grid: FloatArray, window: tuple[float, float], targets: FloatArray
) -> FloatArray:
    """Compute at which a fitted curve (its error ``predicted`` on ``grid``) reaches each
    target, searched within MAX_EXTRAPOLATION of the fitted data range ``window``."""
    inside = (grid >= window[0] / MAX_EXTRAPOLATION) & (grid <= window[1] * MAX_EXTRAPOLATION)
    return compute_at_targets(grid[inside], predicted[inside], targets)


def bootstrap_seeds(
    runs: list[SeedRuns],
    fits: dict[str, CurveFit],
    targets: FloatArray,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> SeedBootstrap:
    """Resample seeds ``n_resamples`` times (see the module docstring).

    When no cell of any curve has two seeds every resample equals the data: one pass is
    made and ``resampled`` is False (intervals are then not available).
    """
    if n_resamples < 1:
        raise FitError(f"n_resamples = {n_resamples} must be at least 1")
    resampled = any(r.resamplable for r in runs)
    draws = n_resamples if resampled else 1
    rng = np.random.default_rng(seed)
    grid = compute_grid(runs)
    out: dict[str, CurveBootstrap] = {}
    for curve in runs:
        fit = fits.get(curve.label)
        names = list(fit.params) if fit is not None else []
        params = {name: np.full(draws, np.nan) for name in names}
        predicted = np.full((draws, grid.size), np.nan)
        data_compute = np.full((draws, targets.size), np.nan)
        fit_compute = np.full((draws, targets.size), np.nan)
        failures: Counter[str] = Counter()
        for i in range(draws):
            compute, error = resample_frontier(curve, rng)
            data_compute[i] = compute_at_targets(compute, error, targets)
            if fit is None:
                continue
            try:
                refit = refit_curve(fit, compute, error)
            except FitError as failure:
                failures[str(failure).split(" (")[0]] += 1
                continue
            for name in names:
                params[name][i] = refit.params[name]
            predicted[i] = refit.predict(grid)
            fit_compute[i] = fit_compute_at_targets(
                predicted[i], grid, (float(compute.min()), float(compute.max())), targets
            )
        out[curve.label] = CurveBootstrap(
            label=curve.label,
            family=fit.family if fit is not None else None,
            params=params,
            predicted=predicted,
            data_compute=data_compute,
            fit_compute=fit_compute,
            failures=dict(failures),
        )
    return SeedBootstrap(draws, confidence, grid, targets, out, resampled)

"""Bootstrap over the points of one fit: the points (or groups of them) drawn with
replacement, the fit warm-started again on each resample.

Test and benchmark helper, not the report's bootstrap: the report resamples *runs* and
rebuilds their frontiers (``analysis.run_bootstrap``). This one checks the warm-started
refits of ``analysis.fit`` on points with known parameters (``tests/test_fit.py``), gives
the Chinchilla fit its intervals (``tests/chinchilla.py``) and times warm against cold
refits (``benchmarks/bench_fit.py``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from activescale.errors import FitError
from analysis.fit import CurveFamily, CurveFit, fit_curve, refit_curve, single_threaded_blas

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]


class Fitted(Protocol):
    """A full-data fit: a CurveFit, or a tests.chinchilla.ChinchillaFit."""

    @property
    def params(self) -> dict[str, float]: ...


@dataclass(frozen=True)
class PointBootstrap:
    """Percentile bootstrap of a fit's parameters (Efron & Tibshirani 1993, Ch. 13).

    ``samples`` holds the natural-scale parameters of the successful resamples;
    ``intervals`` the percentile intervals at level ``confidence``. Resamples whose
    fit failed (optimum on a bound, degenerate resample) are counted in ``n_failed``,
    grouped by reason in ``failures``, and left out of the intervals.
    """

    fit: Fitted
    samples: dict[str, FloatArray]
    intervals: dict[str, tuple[float, float]]
    confidence: float
    n_resamples: int
    n_failed: int
    failures: dict[str, int]


def _draw_indices(
    n_points: int, groups: ArrayLike | None, rng: np.random.Generator
) -> Callable[[], IntArray]:
    """A sampler of resamples, each the indices of the points drawn (whole groups when
    ``groups`` labels the points, e.g. by run)."""
    if groups is None:
        return lambda: rng.integers(0, n_points, n_points)
    group_arr = np.asarray(groups)
    if group_arr.shape != (n_points,):
        raise FitError(
            f"groups must give one label per point ({n_points}), got shape {group_arr.shape}"
        )
    _, membership = np.unique(group_arr, return_inverse=True)
    n_groups = int(membership.max()) + 1
    if n_groups < 2:
        raise FitError("groups has a single label; give one label per independent run")
    members = [np.flatnonzero(membership == g) for g in range(n_groups)]

    def draw_groups() -> IntArray:
        return np.concatenate([members[g] for g in rng.integers(0, n_groups, n_groups)])

    return draw_groups


def resample_points(
    fit: Fitted,
    n_points: int,
    refit: Callable[[IntArray], dict[str, float]],
    n_resamples: int = 1000,
    seed: int = 0,
    groups: ArrayLike | None = None,
    confidence: float = 0.95,
) -> PointBootstrap:
    """Call ``refit`` on ``n_resamples`` resamples of the point indices; a FitError there
    counts the resample as failed (by the message up to its first " (")."""
    if n_resamples < 1:
        raise FitError(f"n_resamples = {n_resamples} must be at least 1")
    if not 0 < confidence < 1:
        raise FitError(f"confidence = {confidence} must lie strictly between 0 and 1")
    draw = _draw_indices(n_points, groups, np.random.default_rng(seed))
    rows: list[dict[str, float]] = []
    failures: Counter[str] = Counter()
    with single_threaded_blas():
        for _ in range(n_resamples):
            try:
                rows.append(refit(draw()))
            except FitError as failure:
                # Bound messages differ only in the value; group by parameter and side.
                failures[str(failure).split(" (")[0]] += 1
    samples = {name: np.array([row[name] for row in rows]) for name in fit.params}
    tail = 50.0 * (1.0 - confidence)
    intervals = {
        name: (
            (float(np.percentile(values, tail)), float(np.percentile(values, 100.0 - tail)))
            if values.size
            else (math.nan, math.nan)
        )
        for name, values in samples.items()
    }
    return PointBootstrap(
        fit=fit,
        samples=samples,
        intervals=intervals,
        confidence=confidence,
        n_resamples=n_resamples,
        n_failed=sum(failures.values()),
        failures=dict(failures),
    )


def bootstrap_points(
    compute: ArrayLike,
    error: ArrayLike,
    family: str | CurveFamily,
    n_resamples: int = 1000,
    seed: int = 0,
    groups: ArrayLike | None = None,
    confidence: float = 0.95,
) -> PointBootstrap:
    """Percentile-bootstrap intervals for the parameters of one family fitted to points.

    Each resample draws points (or, with ``groups``, whole groups such as the points of
    one run) with replacement and refits them with :func:`analysis.fit.refit_curve`,
    warm-started at the full-data optimum, with no start grid.
    """
    compute_arr = np.asarray(compute, dtype=np.float64)
    error_arr = np.asarray(error, dtype=np.float64)
    full: CurveFit = fit_curve(compute_arr, error_arr, family)

    def refit(index: IntArray) -> dict[str, float]:
        return refit_curve(full, compute_arr[index], error_arr[index]).params

    return resample_points(full, compute_arr.size, refit, n_resamples, seed, groups, confidence)

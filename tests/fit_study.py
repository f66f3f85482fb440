"""The fitter measured on synthetic curves with known parameters, against
``scipy.optimize.curve_fit`` on the same data in the same run (tests/test_fit.py asserts the
goals, benchmarks/bench_fit.py prints the table with timings).

Each replicate dataset: ``N_POINTS`` points of one family with known parameters, times
lognormal noise ``exp(N(0, NOISE^2))`` (5%). Per family and replicate:

* ``analysis.fit.fit_curve`` (least squares on log error, Levenberg-Marquardt from its own
  start grid) and its Gauss-Newton 95% intervals (:meth:`CurveFit.param_intervals`);
* the baseline: ``curve_fit`` of the same model in natural parameters to log error (least
  squares on log error, MINPACK LM, numerical Jacobian), **started at the true
  parameters**, with its ``pcov`` intervals (estimate ± t quantile × standard error, the
  same quantile as ours);
* model selection: ``select_family`` over the four families (AIC) vs the same four fitted
  by ``curve_fit`` and ranked by the same AIC; for the baseline the true family starts at
  the true parameters and the others at log-linear least-squares starts (a power law or an
  exponential fitted exactly in log space, E at half the smallest error).

Reported: median |relative error| per parameter, the fraction of 95% intervals that contain
the true value (coverage), the fraction of datasets where AIC picks the true family, fits
that failed, and (benchmark) the median time of one fit.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, stats

from activescale.errors import FitError
from analysis.fit import FAMILIES, fit_curve, information_criteria
from analysis.model_selection import select_family

FloatArray = NDArray[np.float64]

N_POINTS = 30
NOISE = 0.05
CONFIDENCE = 0.95

Model = Callable[..., FloatArray]

TRUTH: dict[str, tuple[FloatArray, dict[str, float]]] = {
    "power_law": (np.logspace(0, 4, N_POINTS), {"A": 3.0, "alpha": 0.3}),
    "power_law_offset": (np.logspace(0, 4, N_POINTS), {"A": 2.0, "alpha": 0.5, "E": 0.2}),
    "exponential": (np.linspace(100, 5000, N_POINTS), {"A": 2.0, "tau": 1000.0}),
    "exponential_offset": (
        np.linspace(100, 6000, N_POINTS),
        {"A": 1.0, "tau": 1000.0, "E": 0.1},
    ),
}
"""Compute points and true parameters of each family (as in tests/test_fit.py)."""


def log_model(family: str) -> Model:
    """The family in natural parameters, as log error (what the baseline fits)."""
    if family == "power_law":
        return lambda c, a, alpha: np.log(a) - alpha * np.log(c)
    if family == "power_law_offset":
        return lambda c, a, alpha, e: np.log(e + a * c**-alpha)
    if family == "exponential":
        return lambda c, a, tau: np.log(a) - c / tau
    return lambda c, a, tau, e: np.log(e + a * np.exp(-c / tau))


def natural(family: str, params: dict[str, float]) -> FloatArray:
    return np.array([params[name] for name in FAMILIES[family].param_names])


def replicate(family: str, rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
    compute, params = TRUTH[family]
    clean = np.exp(log_model(family)(compute, *natural(family, params)))
    return compute, clean * np.exp(rng.normal(0.0, NOISE, compute.size))


def log_linear_start(family: str, compute: FloatArray, error: FloatArray) -> FloatArray:
    """A standard start without knowing the truth: the no-offset family fitted exactly in
    log space (a straight line), E at half the smallest error."""
    x = np.log(compute) if FAMILIES[family].decay == "power" else compute
    slope, intercept = np.polyfit(x, np.log(error), 1)
    rate = -slope if FAMILIES[family].decay == "power" else -1.0 / slope
    start = [float(np.exp(intercept)), float(rate)]
    if FAMILIES[family].has_offset:
        start.append(0.5 * float(error.min()))
    return np.array(start)


@dataclass
class CurveFitResult:
    params: FloatArray
    intervals: FloatArray  # (P, 2)
    aic: float
    seconds: float  # the curve_fit call alone


def curve_fit_baseline(
    family: str, compute: FloatArray, error: FloatArray, start: FloatArray
) -> CurveFitResult | None:
    """curve_fit on log error from ``start``; None when it fails or gives no covariance."""
    model = log_model(family)
    log_error = np.log(error)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overflow, invalid values, OptimizeWarning
        started = time.perf_counter()
        try:
            params, pcov = optimize.curve_fit(model, compute, log_error, p0=start, maxfev=10000)
        except (RuntimeError, ValueError):
            return None
        seconds = time.perf_counter() - started
        residual = model(compute, *params) - log_error
    if not (np.all(np.isfinite(params)) and np.all(np.isfinite(pcov))):
        return None
    dof = compute.size - params.size
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, dof) * np.sqrt(np.diag(pcov))
    aic, _ = information_criteria(residual, params.size)
    return CurveFitResult(params, np.stack([params - half, params + half], axis=1), aic, seconds)


@dataclass
class FamilyStudy:
    """One family's replicates: errors and interval hits per parameter, for both fitters."""

    family: str
    replicates: int
    errors: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # fitter -> name
    hits: dict[str, dict[str, int]] = field(default_factory=dict)
    fitted: dict[str, int] = field(default_factory=dict)
    selected: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, list[float]] = field(default_factory=dict)

    def median_error(self, fitter: str, name: str) -> float:
        return float(np.median(self.errors[fitter][name]))

    def coverage(self, fitter: str, name: str) -> float:
        return self.hits[fitter][name] / max(1, self.fitted[fitter])

    def selection_rate(self, fitter: str) -> float:
        return self.selected[fitter] / self.replicates

    def median_seconds(self, fitter: str) -> float:
        return float(np.median(self.seconds[fitter]))


FITTERS = ("activescale", "curve_fit")


def study_family(
    family: str, replicates: int, seed: int = 0, selection: bool = True
) -> FamilyStudy:
    """Fit ``replicates`` noisy datasets of ``family`` with both fitters (module docstring)."""
    rng = np.random.default_rng(seed)
    names = FAMILIES[family].param_names
    truth = TRUTH[family][1]
    study = FamilyStudy(family, replicates)
    for fitter in FITTERS:
        study.errors[fitter] = {name: [] for name in names}
        study.hits[fitter] = dict.fromkeys(names, 0)
        study.fitted[fitter] = 0
        study.selected[fitter] = 0
        study.seconds[fitter] = []
    for _ in range(replicates):
        compute, error = replicate(family, rng)
        start = time.perf_counter()
        try:
            fit = fit_curve(compute, error, family)
        except FitError:
            fit = None
        study.seconds["activescale"].append(time.perf_counter() - start)
        intervals = fit.param_intervals(CONFIDENCE) if fit is not None else None
        if fit is not None and intervals is not None:
            _record(study, "activescale", truth, fit.params, intervals)
        base = curve_fit_baseline(family, compute, error, natural(family, truth))
        if base is not None:
            study.seconds["curve_fit"].append(base.seconds)
            estimate = dict(zip(names, base.params, strict=True))
            bounds = {
                n: (float(lo), float(hi)) for n, (lo, hi) in zip(names, base.intervals, strict=True)
            }
            _record(study, "curve_fit", truth, estimate, bounds)
        if selection:
            study.selected["activescale"] += select_family(compute, error).best.family == family
            study.selected["curve_fit"] += _curve_fit_selection(compute, error, family) == family
    return study


def _record(
    study: FamilyStudy,
    fitter: str,
    truth: dict[str, float],
    estimate: dict[str, float],
    intervals: dict[str, tuple[float, float]],
) -> None:
    study.fitted[fitter] += 1
    for name, value in truth.items():
        study.errors[fitter][name].append(abs(estimate[name] / value - 1.0))
        low, high = intervals[name]
        study.hits[fitter][name] += low <= value <= high


def _curve_fit_selection(compute: FloatArray, error: FloatArray, true_family: str) -> str | None:
    best, best_aic = None, np.inf
    for family in FAMILIES:
        start = (
            natural(family, TRUTH[family][1])
            if family == true_family
            else log_linear_start(family, compute, error)
        )
        result = curve_fit_baseline(family, compute, error, start)
        if result is not None and result.aic < best_aic:
            best, best_aic = family, result.aic
    return best

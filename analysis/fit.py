"""Scaling-law fits: error against compute, and the Chinchilla loss surface L(N, D).

All fits here are pure functions of arrays that return frozen dataclasses.

Fitting recipe (Hoffmann et al. 2022, App. D.2; Besiroglu et al. 2024, "Chinchilla
Scaling: A replication attempt", Sec. 2):

* the model is written in log space, ``log err = logsumexp(terms)`` with every
  amplitude stored as its logarithm, so the optimiser never sees numbers like 1e20;
* the loss is the Huber loss (delta = 1e-3) of the residual on log error, *summed*
  over points. Besiroglu et al. found that averaging instead makes L-BFGS-B stop at
  once and return the starting point;
* L-BFGS-B with analytic gradients from a grid of starting points; the best optimum is
  kept and rejected (:class:`FitError`) when it sits on a bound, because a parameter on
  a bound is one the data do not determine.

One-variable families (error as a function of compute C), with the internal log-space
parameters the optimiser sees (bootstrap warm starts and bound messages use them):

* ``power_law``:          A * C^-alpha             -> (a, alpha)
* ``power_law_offset``:   E + A * C^-alpha         -> (a, alpha, e)
* ``exponential``:        A * exp(-C / tau)        -> (a, t)
* ``exponential_offset``: E + A * exp(-C / tau)    -> (a, t, e)

In every family the decaying term is ``a - k * z`` in log space. Power laws use
``z = log C - mean(log C)`` and ``k = alpha``; exponentials use
``z = (C - mean C) / span`` with ``span = max C - min C`` and ``k = exp(-t)``,
``t = log(tau / span)``. Centring the compute coordinate decorrelates the amplitude
from the rate and makes the bounds independent of the units of compute. The offset
families add ``e = log E`` through ``logaddexp``. Natural parameters follow as
``A = exp(a + alpha * mean(log C))`` (power laws), ``A = exp(a + mean(C) / tau)`` and
``tau = span * exp(t)`` (exponentials), ``E = exp(e)``.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, special

from orchestrator.errors import FitError

FloatArray = NDArray[np.float64]

HUBER_DELTA = 1e-3
"""Huber threshold on log-error residuals (Hoffmann et al. 2022; Besiroglu et al. 2024)."""

_LBFGSB_OPTIONS: dict[str, float | int] = {"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-10}
_GRID_OPTIONS: dict[str, float | int] = {"maxiter": 1000}
"""Scipy's default tolerances, for the many starts of the Chinchilla grid."""
_BOUND_TOLERANCE = 1e-6
"""A parameter closer to a bound than this fraction of its allowed range is on it."""
_STARTS_REFINED = 3
"""One-variable fits: L-BFGS-B runs from this many best points of the start grid."""
_MIN_MEAN_SQUARE = float(np.finfo(np.float64).eps) ** 2
"""Floor on the mean squared residual so exact (noise-free) data give a finite AIC."""


@functools.cache
def _blas_controller() -> Any:
    """threadpoolctl's view of the loaded BLAS libraries, or None when it is missing."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


def _single_threaded_blas() -> contextlib.AbstractContextManager[object]:
    """Hold BLAS to one thread while optimising.

    scipy's L-BFGS-B calls BLAS on tiny matrices; with OpenBLAS's default thread pool
    its idle threads spin, and on a busy machine each iteration then costs about 1 ms
    instead of about 35 us (measured on 2 cores). threadpoolctl is optional: without
    it the fits are unchanged, only slower under load.
    """
    controller = _blas_controller()
    if controller is None:
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")


# --- input validation --------------------------------------------------------------------


def _positive_array(name: str, values: ArrayLike) -> FloatArray:
    """Convert to a 1-D float array whose entries are all finite and > 0."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise FitError(f"{name} must be a 1-D array, got shape {array.shape}")
    not_finite = np.flatnonzero(~np.isfinite(array))
    if not_finite.size:
        i = not_finite[0]
        raise FitError(
            f"{name}[{i}] = {array[i]} is not finite; drop unfinished or diverged runs "
            "before fitting"
        )
    not_positive = np.flatnonzero(array <= 0)
    if not_positive.size:
        i = not_positive[0]
        raise FitError(
            f"{name}[{i}] = {array[i]} is not positive; scaling laws are fitted in log "
            f"space, so every {name} value must be > 0 (drop the point or fix its units)"
        )
    return array


def _paired_arrays(names: Sequence[str], values: Sequence[ArrayLike]) -> tuple[FloatArray, ...]:
    arrays = tuple(_positive_array(n, v) for n, v in zip(names, values, strict=True))
    lengths = {a.shape[0] for a in arrays}
    if len(lengths) != 1:
        shapes = ", ".join(f"{n}: {a.shape[0]}" for n, a in zip(names, arrays, strict=True))
        raise FitError(f"inputs must have one value per point, got lengths {shapes}")
    return arrays


def _check_enough_points(label: str, n_points: int, n_params: int) -> None:
    if n_points < n_params + 1:
        raise FitError(
            f"{label} has {n_params} parameters and needs at least {n_params + 1} points, "
            f"got {n_points}; add runs or choose a family with fewer parameters"
        )


def _check_distinct_compute(label: str, compute: FloatArray, n_params: int) -> None:
    distinct = np.unique(compute).size
    if distinct < n_params:
        raise FitError(
            f"{label} has {n_params} parameters and needs at least {n_params} distinct "
            f"compute values, got {distinct}; add runs at other budgets"
        )


# --- families ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CurveFamily:
    """One functional form of error against compute (see the module docstring)."""

    name: str
    formula: str
    decay: Literal["power", "exponential"]
    has_offset: bool

    @property
    def param_names(self) -> tuple[str, ...]:
        """Natural-scale parameter names, in the order of the internal vector."""
        rate = "alpha" if self.decay == "power" else "tau"
        return ("A", rate, "E") if self.has_offset else ("A", rate)

    @property
    def n_params(self) -> int:
        return len(self.param_names)


FAMILIES: dict[str, CurveFamily] = {
    family.name: family
    for family in (
        CurveFamily("power_law", "A * C^-alpha", "power", has_offset=False),
        CurveFamily("power_law_offset", "E + A * C^-alpha", "power", has_offset=True),
        CurveFamily("exponential", "A * exp(-C / tau)", "exponential", has_offset=False),
        CurveFamily("exponential_offset", "E + A * exp(-C / tau)", "exponential", has_offset=True),
    )
}
"""The one-variable families, by name."""


def _family(family: str | CurveFamily) -> CurveFamily:
    if isinstance(family, CurveFamily):
        return family
    if family not in FAMILIES:
        raise FitError(f"unknown curve family {family!r}; choose one of {sorted(FAMILIES)}")
    return FAMILIES[family]


@dataclass(frozen=True)
class ComputeCoordinate:
    """Maps compute to the centred internal coordinate z of a family (module docstring)."""

    decay: Literal["power", "exponential"]
    shift: float
    span: float

    @classmethod
    def for_data(cls, family: CurveFamily, compute: FloatArray) -> ComputeCoordinate:
        """Centre on the data (needs two distinct compute values for exponentials)."""
        if family.decay == "power":
            return cls("power", float(np.mean(np.log(compute))), 1.0)
        return cls("exponential", float(np.mean(compute)), float(compute.max() - compute.min()))

    def __call__(self, compute: FloatArray) -> FloatArray:
        if self.decay == "power":
            return np.log(compute) - self.shift
        return (compute - self.shift) / self.span


def _decay_term(
    family: CurveFamily, theta: FloatArray, z: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """The decaying term ``a - k z`` and its derivative in the rate parameter.

    Works for one parameter vector (P,) or a batch of them (G, P).
    """
    a = theta[..., 0, None]
    if family.decay == "power":
        rate = theta[..., 1, None]
        return a - rate * z, -z
    rate = np.exp(-theta[..., 1, None])
    return a - rate * z, rate * z


def _log_curve(family: CurveFamily, theta: FloatArray, z: FloatArray) -> FloatArray:
    """Model log error at z for one parameter vector (P,) or a batch (G, P)."""
    core, _ = _decay_term(family, theta, z)
    return np.logaddexp(core, theta[..., 2, None]) if family.has_offset else core


def _log_curve_and_jacobian(
    family: CurveFamily, theta: FloatArray, z: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Model log error at z for one parameter vector, with its Jacobian (P, n)."""
    core, d_core_d_rate = _decay_term(family, theta, z)
    if not family.has_offset:
        return core, np.stack([np.ones_like(z), d_core_d_rate])
    log_pred = np.logaddexp(core, theta[2])
    weight = np.exp(core - log_pred)
    return log_pred, np.stack([weight, weight * d_core_d_rate, 1.0 - weight])


def _huber_objective(residual: FloatArray, weights: FloatArray | None) -> FloatArray:
    """Summed Huber loss along the last axis (Besiroglu et al. 2024, Sec. 2)."""
    losses = special.huber(HUBER_DELTA, residual)
    if weights is None:
        return np.asarray(losses.sum(axis=-1))
    return np.asarray(losses @ weights)


def _objective_and_gradient(
    predict: Callable[[FloatArray], tuple[FloatArray, FloatArray]],
    target: FloatArray,
    weights: FloatArray | None,
) -> Callable[[FloatArray], tuple[float, FloatArray]]:
    """Summed Huber loss of ``predict(theta) - target`` and its analytic gradient."""

    def evaluate(theta: FloatArray) -> tuple[float, FloatArray]:
        log_pred, jacobian = predict(theta)
        residual = log_pred - target
        # d huber / d r = clip(r, -delta, delta)
        slope = np.clip(residual, -HUBER_DELTA, HUBER_DELTA)
        if weights is not None:
            slope = slope * weights
        return float(_huber_objective(residual, weights)), jacobian @ slope

    return evaluate


def _curve_bounds(family: CurveFamily, log_error: FloatArray) -> list[tuple[float, float]]:
    """Box for L-BFGS-B in internal coordinates, wide enough to hold any sensible fit.

    a: within e^25 of the observed errors; alpha in [0, 10]; tau / span in
    [e^-5, e^7] (beyond those the curve is a step or a flat line over the data);
    E between 1e-6 x the smallest error and the largest error.
    """
    low, high = float(log_error.min()), float(log_error.max())
    bounds = [(low - 25.0, high + 25.0)]
    bounds.append((0.0, 10.0) if family.decay == "power" else (-5.0, 7.0))
    if family.has_offset:
        bounds.append((low + math.log(1e-6), high))
    return bounds


def _curve_starts(family: CurveFamily, z: FloatArray, error: FloatArray) -> FloatArray:
    """Grid of starting points: rates x offset fractions, amplitude matched to the data."""
    if family.decay == "power":
        rates = np.array([0.03, 0.1, 0.3, 1.0, 3.0])
        rate_params = rates
    else:
        tau_over_span = np.array([0.03, 0.1, 0.3, 1.0, 3.0, 10.0])
        rates, rate_params = 1.0 / tau_over_span, np.log(tau_over_span)
    offsets = np.array([1e-3, 0.3, 0.6, 0.9]) * error.min() if family.has_offset else [0.0]
    starts = []
    for rate, rate_param in zip(rates, rate_params, strict=True):
        for offset in offsets:
            a = float(np.median(np.log(error - offset) + rate * z))
            starts.append(
                [a, rate_param, math.log(offset)] if family.has_offset else [a, rate_param]
            )
    return np.array(starts)


def _to_natural(
    family: CurveFamily, theta: FloatArray, coordinate: ComputeCoordinate
) -> dict[str, float]:
    with np.errstate(over="ignore"):
        if family.decay == "power":
            alpha = float(theta[1])
            params = {"A": float(np.exp(theta[0] + alpha * coordinate.shift)), "alpha": alpha}
        else:
            tau = coordinate.span * float(np.exp(theta[1]))
            params = {"A": float(np.exp(theta[0] + coordinate.shift / tau)), "tau": tau}
        if family.has_offset:
            params["E"] = float(np.exp(theta[2]))
    return params


_BOUND_ADVICE: dict[tuple[str, str, str], str] = {
    ("power", "A", "lower"): (
        "the decaying term vanishes; use a family without it or check the data"
    ),
    ("power", "A", "upper"): "the amplitude diverges; check the compute units and outliers",
    ("power", "alpha", "lower"): (
        "the error does not decrease with compute here; check the data or widen the compute range"
    ),
    ("power", "alpha", "upper"): (
        "the error falls faster than any plausible power law; try an exponential family"
    ),
    ("exponential", "A", "lower"): "the decaying term vanishes; check the data",
    ("exponential", "A", "upper"): "the amplitude diverges; try a power-law family",
    ("exponential", "tau", "lower"): (
        "the decay is faster than the points resolve; try a power-law family"
    ),
    ("exponential", "tau", "upper"): (
        "the curve is flat over this range; add larger budgets or use a power law"
    ),
}
"""What to do when a one-variable fit ends on a bound, by (decay, parameter, side)."""


def _raise_if_on_bound(
    label: str,
    names: Sequence[str],
    theta: FloatArray,
    bounds: Sequence[tuple[float, float]],
    advice: Callable[[str, str], str],
    describe: Callable[[int, float], str],
) -> None:
    """Raise FitError naming the first parameter that sits on its bound."""
    for i, (name, (low, high)) in enumerate(zip(names, bounds, strict=True)):
        tolerance = _BOUND_TOLERANCE * (high - low)
        for side, bound in (("lower", low), ("upper", high)):
            if abs(theta[i] - bound) <= tolerance:
                raise FitError(
                    f"{label}: parameter {name} sits on its {side} bound "
                    f"({describe(i, bound)}), so the data do not determine it; "
                    f"{advice(name, side)}"
                )


def _curve_bound_check(
    family: CurveFamily,
    theta: FloatArray,
    bounds: Sequence[tuple[float, float]],
    coordinate: ComputeCoordinate,
) -> None:
    def advice(name: str, side: str) -> str:
        if name == "E":
            if side == "lower":
                plain = "power_law" if family.decay == "power" else "exponential"
                return f"no irreducible error is visible; use {plain}"
            return "the curve is flat at its highest error; check the data"
        return _BOUND_ADVICE[(family.decay, name, side)]

    def describe(i: int, bound: float) -> str:
        name = family.param_names[i]
        if name == "A":
            return f"log A at the reference compute = {bound:.4g}"
        if name == "tau":
            return f"tau = {coordinate.span * math.exp(bound):.4g}"
        if name == "E":
            return f"E = {math.exp(bound):.4g}"
        return f"{name} = {bound:.4g}"

    _raise_if_on_bound(family.name, family.param_names, theta, bounds, advice, describe)


def _information_criteria(residual: FloatArray, n_params: int) -> tuple[float, float]:
    """AIC and BIC from the Gaussian likelihood of the log-error residuals.

    With the variance at its maximum-likelihood value RSS / n, ``-2 log L =
    n (log(2 pi RSS / n) + 1)``; the variance counts as one more parameter. The fit
    itself minimises the Huber loss, so these are the usual least-squares criteria
    evaluated at the robust optimum (Burnham & Anderson 2002, Sec. 2.2).
    """
    n = residual.size
    mean_square = max(float(np.mean(residual**2)), _MIN_MEAN_SQUARE)
    minus_two_log_likelihood = n * (math.log(2 * math.pi * mean_square) + 1.0)
    k = n_params + 1
    return minus_two_log_likelihood + 2 * k, minus_two_log_likelihood + k * math.log(n)


# --- one-variable fits --------------------------------------------------------------------


@dataclass(frozen=True)
class CurveFit:
    """A fitted one-variable scaling curve, error = f(compute).

    ``params`` holds natural-scale values (A, alpha or tau, E); ``objective`` is the
    summed Huber loss on log error; ``aic``/``bic`` come from the Gaussian likelihood
    of the log-error residuals (see :func:`_information_criteria`). ``theta`` and
    ``coordinate`` are the internal log-space parameters and compute coordinate
    (module docstring), kept so predictions never pass through overflowing amplitudes.
    """

    family: str
    params: dict[str, float]
    objective: float
    n_points: int
    aic: float
    bic: float
    compute_range: tuple[float, float]
    theta: tuple[float, ...] = field(repr=False)
    coordinate: ComputeCoordinate = field(repr=False)

    def predict(self, compute: ArrayLike) -> FloatArray:
        """Predicted error at the given compute values (all > 0)."""
        compute_arr = _positive_array("compute", np.atleast_1d(compute))
        log_pred = _log_curve(
            FAMILIES[self.family], np.array(self.theta), self.coordinate(compute_arr)
        )
        return np.exp(log_pred)

    @property
    def asymptote(self) -> float:
        """The error the curve tends to at infinite compute (E, or 0 without offset)."""
        return self.params.get("E", 0.0)


def _minimise(
    evaluate: Callable[[FloatArray], tuple[float, FloatArray]],
    start: FloatArray,
    bounds: Sequence[tuple[float, float]],
    options: Mapping[str, float | int] = _LBFGSB_OPTIONS,
) -> optimize.OptimizeResult:
    lows, highs = np.array(bounds).T
    return optimize.minimize(
        evaluate,
        np.clip(start, lows, highs),
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options=dict(options),
    )


def _curve_evaluator(
    family: CurveFamily, z: FloatArray, log_error: FloatArray, weights: FloatArray | None
) -> Callable[[FloatArray], tuple[float, FloatArray]]:
    def predict(theta: FloatArray) -> tuple[FloatArray, FloatArray]:
        return _log_curve_and_jacobian(family, theta, z)

    return _objective_and_gradient(predict, log_error, weights)


def fit_curve(compute: ArrayLike, error: ArrayLike, family: str | CurveFamily) -> CurveFit:
    """Fit one family to (compute, error) points by robust regression on log error.

    The start grid (rates x offset fractions, amplitude set from the data) is scored
    in one vectorised pass and L-BFGS-B refines the best few starts (Besiroglu et al.
    2024 refine every start; with two or three parameters the best few suffice).

    Raises:
        FitError: inputs are not finite and positive, there are fewer points than
            parameters + 1 or fewer distinct compute values than parameters, or the
            best fit sits on a bound.
    """
    spec = _family(family)
    compute_arr, error_arr = _paired_arrays(("compute", "error"), (compute, error))
    _check_enough_points(spec.name, compute_arr.size, spec.n_params)
    _check_distinct_compute(spec.name, compute_arr, spec.n_params)
    coordinate = ComputeCoordinate.for_data(spec, compute_arr)
    z, log_error = coordinate(compute_arr), np.log(error_arr)
    bounds = _curve_bounds(spec, log_error)

    starts = _curve_starts(spec, z, error_arr)
    grid_log_pred = _log_curve(spec, starts, z)
    grid_objective = _huber_objective(grid_log_pred - log_error, None)
    evaluate = _curve_evaluator(spec, z, log_error, None)
    best: optimize.OptimizeResult | None = None
    with _single_threaded_blas():
        for index in np.argsort(grid_objective)[:_STARTS_REFINED]:
            result = _minimise(evaluate, starts[index], bounds)
            if np.isfinite(result.fun) and (best is None or result.fun < best.fun):
                best = result
    if best is None:
        raise FitError(f"{spec.name}: no start converged to a finite loss; check the data")
    _curve_bound_check(spec, best.x, bounds, coordinate)
    return _curve_fit_result(spec, best.x, float(best.fun), coordinate, compute_arr, log_error)


def _curve_fit_result(
    family: CurveFamily,
    theta: FloatArray,
    objective: float,
    coordinate: ComputeCoordinate,
    compute: FloatArray,
    log_error: FloatArray,
) -> CurveFit:
    log_pred = _log_curve(family, theta, coordinate(compute))
    aic, bic = _information_criteria(log_pred - log_error, family.n_params)
    return CurveFit(
        family=family.name,
        params=_to_natural(family, theta, coordinate),
        objective=objective,
        n_points=int(compute.size),
        aic=aic,
        bic=bic,
        compute_range=(float(compute.min()), float(compute.max())),
        theta=tuple(float(t) for t in theta),
        coordinate=coordinate,
    )


@dataclass(frozen=True)
class FamilyComparison:
    """Fits of several families to the same points, best (lowest AIC) first.

    ``skipped`` maps each family that could not be fitted to the reason.
    """

    fits: list[CurveFit]
    skipped: dict[str, str]

    @property
    def best(self) -> CurveFit:
        if not self.fits:
            raise FitError(f"no family could be fitted: {self.skipped}")
        return self.fits[0]


def select_family(
    compute: ArrayLike,
    error: ArrayLike,
    families: Sequence[str | CurveFamily] = tuple(FAMILIES),
) -> FamilyComparison:
    """Fit each family and rank the successful fits by AIC (Akaike 1974).

    Invalid inputs raise FitError for all families at once; a family that fails on
    its own (too few points for it, optimum on a bound) is reported in ``skipped``.
    """
    compute_arr, error_arr = _paired_arrays(("compute", "error"), (compute, error))
    fits: list[CurveFit] = []
    skipped: dict[str, str] = {}
    for family in families:
        spec = _family(family)
        try:
            fits.append(fit_curve(compute_arr, error_arr, spec))
        except FitError as failure:
            skipped[spec.name] = str(failure)
    return FamilyComparison(sorted(fits, key=lambda fit: fit.aic), skipped)


@dataclass(frozen=True)
class HoldoutResult:
    """Extrapolation check: a fit without the largest budgets, scored on them.

    ``relative_error`` is (predicted - observed) / observed for each held-out point.
    """

    fit: CurveFit
    compute: FloatArray
    observed: FloatArray
    predicted: FloatArray
    relative_error: FloatArray

    @property
    def max_abs_relative_error(self) -> float:
        return float(np.max(np.abs(self.relative_error)))


def holdout_extrapolation(
    compute: ArrayLike, error: ArrayLike, family: str | CurveFamily, holdout: int = 3
) -> HoldoutResult:
    """Fit on all but the ``holdout`` largest-compute points and predict those."""
    compute_arr, error_arr = _paired_arrays(("compute", "error"), (compute, error))
    if not 1 <= holdout < compute_arr.size:
        raise FitError(
            f"holdout = {holdout} must be between 1 and the number of points minus one "
            f"({compute_arr.size - 1}); hold out fewer points"
        )
    order = np.argsort(compute_arr, kind="stable")
    train, test = order[:-holdout], order[-holdout:]
    fit = fit_curve(compute_arr[train], error_arr[train], family)
    predicted = fit.predict(compute_arr[test])
    observed = error_arr[test]
    return HoldoutResult(
        fit=fit,
        compute=compute_arr[test],
        observed=observed,
        predicted=predicted,
        relative_error=(predicted - observed) / observed,
    )


# --- bootstrap ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapResult:
    """Percentile bootstrap of a fit (Efron & Tibshirani 1993, Ch. 13).

    ``samples`` holds the natural-scale parameters of the successful resamples;
    ``intervals`` the percentile intervals at level ``confidence``. Resamples whose
    fit failed (optimum on a bound, degenerate resample) are counted in ``n_failed``,
    grouped by reason in ``failures``, and left out of the intervals.
    """

    fit: CurveFit | ChinchillaFit
    samples: dict[str, FloatArray]
    intervals: dict[str, tuple[float, float]]
    confidence: float
    n_resamples: int
    n_failed: int
    failures: dict[str, int]


def _resample_weights(
    n_points: int, groups: ArrayLike | None, rng: np.random.Generator
) -> Callable[[], FloatArray]:
    """Return a sampler of bootstrap multiplicities per point (points or whole groups)."""
    if groups is None:

        def sample_points() -> FloatArray:
            draws = rng.integers(0, n_points, n_points)
            return np.bincount(draws, minlength=n_points).astype(np.float64)

        return sample_points
    group_arr = np.asarray(groups)
    if group_arr.shape != (n_points,):
        raise FitError(
            f"groups must give one label per point ({n_points}), got shape {group_arr.shape}"
        )
    _, membership = np.unique(group_arr, return_inverse=True)
    n_groups = int(membership.max()) + 1
    if n_groups < 2:
        raise FitError("groups has a single label; give one label per independent run")

    def sample_groups() -> FloatArray:
        counts = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
        return counts[membership].astype(np.float64)

    return sample_groups


def _check_finite_optimum(result: optimize.OptimizeResult) -> None:
    if not (np.isfinite(result.fun) and np.all(np.isfinite(result.x))):
        raise FitError("resample: the optimiser returned a non-finite loss or parameter")


def _bootstrap(
    fit: CurveFit | ChinchillaFit,
    n_points: int,
    groups: ArrayLike | None,
    n_resamples: int,
    seed: int,
    confidence: float,
    refit: Callable[[FloatArray], dict[str, float]],
) -> BootstrapResult:
    if n_resamples < 1:
        raise FitError(f"n_resamples = {n_resamples} must be at least 1")
    if not 0 < confidence < 1:
        raise FitError(f"confidence = {confidence} must lie strictly between 0 and 1")
    draw = _resample_weights(n_points, groups, np.random.default_rng(seed))
    rows: list[dict[str, float]] = []
    failures: Counter[str] = Counter()
    with _single_threaded_blas():
        for _ in range(n_resamples):
            try:
                rows.append(refit(draw()))
            except FitError as failure:
                # Bound messages differ only in the value; group by parameter and side.
                failures[str(failure).split(" (")[0]] += 1
    names = list(fit.params)
    samples = {name: np.array([row[name] for row in rows]) for name in names}
    tail = 50.0 * (1.0 - confidence)
    intervals = {
        name: (
            (float(np.percentile(values, tail)), float(np.percentile(values, 100.0 - tail)))
            if values.size
            else (math.nan, math.nan)
        )
        for name, values in samples.items()
    }
    return BootstrapResult(
        fit=fit,
        samples=samples,
        intervals=intervals,
        confidence=confidence,
        n_resamples=n_resamples,
        n_failed=sum(failures.values()),
        failures=dict(failures),
    )


def bootstrap_fit(
    compute: ArrayLike,
    error: ArrayLike,
    family: str | CurveFamily,
    n_resamples: int = 1000,
    seed: int = 0,
    groups: ArrayLike | None = None,
    confidence: float = 0.95,
) -> BootstrapResult:
    """Percentile-bootstrap confidence intervals for the parameters of one family.

    Each resample draws points (or, with ``groups``, whole groups such as the points
    of one run) with replacement, then refits by L-BFGS-B started at the full-data
    optimum with no grid; resampling is expressed as integer weights on the summed
    Huber loss, so every refit shares the full data's compute coordinate.
    """
    spec = _family(family)
    compute_arr, error_arr = _paired_arrays(("compute", "error"), (compute, error))
    fit = fit_curve(compute_arr, error_arr, spec)
    z, log_error = fit.coordinate(compute_arr), np.log(error_arr)
    bounds = _curve_bounds(spec, log_error)
    start = np.array(fit.theta)

    def refit(weights: FloatArray) -> dict[str, float]:
        _check_distinct_compute("resample", compute_arr[weights > 0], spec.n_params)
        result = _minimise(_curve_evaluator(spec, z, log_error, weights), start, bounds)
        _check_finite_optimum(result)
        _curve_bound_check(spec, result.x, bounds, fit.coordinate)
        return _to_natural(spec, result.x, fit.coordinate)

    return _bootstrap(fit, compute_arr.size, groups, n_resamples, seed, confidence, refit)


def refit_curve(fit: CurveFit, compute: ArrayLike, error: ArrayLike) -> CurveFit:
    """Refit ``fit``'s family to new points, warm-started at ``fit``'s optimum.

    For bootstraps that rebuild the points themselves (e.g. a frontier recomputed from
    resampled seeds): one L-BFGS-B run from ``fit.theta`` in ``fit``'s compute
    coordinate, no start grid, about 1 ms. Raises FitError like :func:`fit_curve`
    (invalid or too few points, optimum on a bound).
    """
    spec = _family(fit.family)
    compute_arr, error_arr = _paired_arrays(("compute", "error"), (compute, error))
    _check_enough_points(spec.name, compute_arr.size, spec.n_params)
    _check_distinct_compute(spec.name, compute_arr, spec.n_params)
    z, log_error = fit.coordinate(compute_arr), np.log(error_arr)
    bounds = _curve_bounds(spec, log_error)
    with _single_threaded_blas():
        result = _minimise(_curve_evaluator(spec, z, log_error, None), np.array(fit.theta), bounds)
    _check_finite_optimum(result)
    _curve_bound_check(spec, result.x, bounds, fit.coordinate)
    return _curve_fit_result(
        spec, result.x, float(result.fun), fit.coordinate, compute_arr, log_error
    )


# --- Chinchilla: L(N, D) = E + A / N^alpha + B / D^beta ---------------------------------

CHINCHILLA_GRID: dict[str, tuple[float, ...]] = {
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "e": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
}
"""Start grid as in Besiroglu et al. 2024: 6 x 6 x 5 x 5 x 5 = 4500 starts."""

_CHINCHILLA_NAMES = ("a", "b", "e", "alpha", "beta")
_CHINCHILLA_BOUNDS: list[tuple[float, float]] = [
    (-20.0, 100.0),
    (-20.0, 100.0),
    (-10.0, 10.0),
    (0.0, 5.0),
    (0.0, 5.0),
]
"""Wide box: a and b are log-amplitudes (A = e^a), e = log E; exponents in [0, 5]."""


@dataclass(frozen=True)
class ChinchillaFit:
    """Fitted L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, Eq. 2).

    ``params`` holds A, B, E, alpha, beta; ``theta`` the internal (a, b, e, alpha,
    beta) with A = e^a, B = e^b, E = e^e; ``aic``/``bic`` as for :class:`CurveFit`.
    """

    params: dict[str, float]
    objective: float
    n_points: int
    aic: float
    bic: float
    theta: tuple[float, ...] = field(repr=False)
    n_starts: int = 1

    def predict(self, n_params: ArrayLike, n_tokens: ArrayLike) -> FloatArray:
        """Predicted loss for models of ``n_params`` parameters trained on ``n_tokens``."""
        log_n, log_d = np.log(_paired_arrays(("N", "D"), (n_params, n_tokens)))
        return np.exp(_chinchilla_log_loss(np.array(self.theta), log_n, log_d)[0])


def _chinchilla_log_loss(
    theta: FloatArray, log_n: FloatArray, log_d: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """log L = logsumexp(a - alpha log N, b - beta log D, e) and its Jacobian (5, n)."""
    a, b, e, alpha, beta = theta
    # Written out instead of scipy.special.logsumexp, which costs ~40 us per call here
    # and dominates the 4500-start grid.
    model_term = a - alpha * log_n
    data_term = b - beta * log_d
    top = np.maximum(np.maximum(model_term, data_term), e)
    model_part, data_part, floor_part = (
        np.exp(model_term - top),
        np.exp(data_term - top),
        np.exp(e - top),
    )
    total = model_part + data_part + floor_part
    log_loss = top + np.log(total)
    model_share, data_share = model_part / total, data_part / total
    jacobian = np.stack(
        [model_share, data_share, floor_part / total, -model_share * log_n, -data_share * log_d]
    )
    return log_loss, jacobian


def _chinchilla_bound_check(theta: FloatArray) -> None:
    def advice(name: str, side: str) -> str:
        return (
            "the data do not constrain this term; check the data, drop outliers "
            "or widen the range of model sizes and token counts"
        )

    def describe(i: int, bound: float) -> str:
        return f"{_CHINCHILLA_NAMES[i]} = {bound:.4g}"

    _raise_if_on_bound("chinchilla", _CHINCHILLA_NAMES, theta, _CHINCHILLA_BOUNDS, advice, describe)


def _chinchilla_result(
    theta: FloatArray,
    objective: float,
    log_n: FloatArray,
    log_d: FloatArray,
    log_loss: FloatArray,
    n_starts: int,
) -> ChinchillaFit:
    residual = _chinchilla_log_loss(theta, log_n, log_d)[0] - log_loss
    aic, bic = _information_criteria(residual, len(theta))
    a, b, e, alpha, beta = (float(t) for t in theta)
    return ChinchillaFit(
        params={"A": math.exp(a), "B": math.exp(b), "E": math.exp(e), "alpha": alpha, "beta": beta},
        objective=objective,
        n_points=int(log_n.size),
        aic=aic,
        bic=bic,
        theta=tuple(float(t) for t in theta),
        n_starts=n_starts,
    )


def fit_chinchilla(
    n_params: ArrayLike,
    n_tokens: ArrayLike,
    loss: ArrayLike,
    grid: Mapping[str, Sequence[float]] | None = None,
) -> ChinchillaFit:
    """Fit L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, Approach 3).

    Follows Besiroglu et al. 2024: Huber loss (delta = 1e-3) between log L and
    ``logsumexp(a - alpha log N, b - beta log D, e)`` summed over points, L-BFGS-B
    (analytic gradient) from every point of ``grid`` (default :data:`CHINCHILLA_GRID`,
    4500 starts: about 7 s on one core of an idle machine, 14 s on a busy one), keeping
    the lowest loss.
    """
    n_arr, d_arr, loss_arr = _paired_arrays(("N", "D", "loss"), (n_params, n_tokens, loss))
    _check_enough_points("chinchilla", n_arr.size, len(_CHINCHILLA_NAMES))
    log_n, log_d, log_loss = np.log(n_arr), np.log(d_arr), np.log(loss_arr)
    chosen = CHINCHILLA_GRID if grid is None else grid
    missing = set(_CHINCHILLA_NAMES) - set(chosen)
    if missing or any(len(chosen[name]) == 0 for name in _CHINCHILLA_NAMES):
        raise FitError(
            f"grid must give at least one value for each of {_CHINCHILLA_NAMES}; "
            f"missing or empty: {sorted(missing) or 'an empty axis'}"
        )
    mesh = np.meshgrid(*(np.asarray(chosen[name], float) for name in _CHINCHILLA_NAMES))
    starts = np.stack([axis.ravel() for axis in mesh], axis=1)

    def predict(theta: FloatArray) -> tuple[FloatArray, FloatArray]:
        return _chinchilla_log_loss(theta, log_n, log_d)

    evaluate = _objective_and_gradient(predict, log_loss, None)
    # Every start runs with scipy's default tolerances; the best few optima are then
    # polished with tight ones: the same optimum in about 40% less time than tight runs.
    with np.errstate(over="ignore", under="ignore"), _single_threaded_blas():
        optima = [_minimise(evaluate, start, _CHINCHILLA_BOUNDS, _GRID_OPTIONS) for start in starts]
        finite = sorted((r for r in optima if np.isfinite(r.fun)), key=lambda r: float(r.fun))
        polished = [_minimise(evaluate, r.x, _CHINCHILLA_BOUNDS) for r in finite[:_STARTS_REFINED]]
    if not polished:
        raise FitError("chinchilla: no start converged to a finite loss; check the data")
    best = min(polished, key=lambda r: float(r.fun))
    _chinchilla_bound_check(best.x)
    return _chinchilla_result(best.x, float(best.fun), log_n, log_d, log_loss, len(starts))


def bootstrap_chinchilla(
    n_params: ArrayLike,
    n_tokens: ArrayLike,
    loss: ArrayLike,
    n_resamples: int = 1000,
    seed: int = 0,
    groups: ArrayLike | None = None,
    confidence: float = 0.95,
    fit: ChinchillaFit | None = None,
) -> BootstrapResult:
    """Percentile-bootstrap intervals for the Chinchilla parameters (Besiroglu et al. 2024).

    Every resample is refitted by L-BFGS-B from the full-data optimum (pass ``fit`` to
    reuse one already computed by :func:`fit_chinchilla`; otherwise the full grid runs
    once).
    """
    n_arr, d_arr, loss_arr = _paired_arrays(("N", "D", "loss"), (n_params, n_tokens, loss))
    full = fit if fit is not None else fit_chinchilla(n_arr, d_arr, loss_arr)
    log_n, log_d, log_loss = np.log(n_arr), np.log(d_arr), np.log(loss_arr)
    start = np.array(full.theta)

    def predict(theta: FloatArray) -> tuple[FloatArray, FloatArray]:
        return _chinchilla_log_loss(theta, log_n, log_d)

    def refit(weights: FloatArray) -> dict[str, float]:
        result = _minimise(
            _objective_and_gradient(predict, log_loss, weights), start, _CHINCHILLA_BOUNDS
        )
        _check_finite_optimum(result)
        _chinchilla_bound_check(result.x)
        a, b, e, alpha, beta = (float(t) for t in result.x)
        return {"A": math.exp(a), "B": math.exp(b), "E": math.exp(e), "alpha": alpha, "beta": beta}

    return _bootstrap(full, n_arr.size, groups, n_resamples, seed, confidence, refit)


# --- compute needed to reach a target error ---------------------------------------------


def interpolate_compute_at(compute: ArrayLike, error: ArrayLike, target: float) -> float | None:
    """Compute at which a curve first reaches ``target`` error, by log-log interpolation.

    The points are sorted by compute and replaced by their running minimum (the
    envelope), then the crossing is interpolated linearly in (log C, log error)
    between the last point above and the first point at or below the target.
    Returns None when the crossing is not inside the observed range: the target is
    never reached, or the first point is already below it (the crossing lies at
    smaller compute than was measured).
    """
    compute_arr, error_arr = _paired_arrays(("compute", "error"), (compute, error))
    if not (math.isfinite(target) and target > 0):
        raise FitError(f"target error = {target} must be a finite positive number")
    order = np.argsort(compute_arr, kind="stable")
    log_c = np.log(compute_arr[order])
    envelope = np.log(np.minimum.accumulate(error_arr[order]))
    log_target = math.log(target)
    reached = np.flatnonzero(envelope <= log_target)
    if reached.size == 0:
        return None
    i = int(reached[0])
    if i == 0:
        return float(math.exp(log_c[0])) if envelope[0] == log_target else None
    fraction = (log_target - envelope[i - 1]) / (envelope[i] - envelope[i - 1])
    return float(math.exp(log_c[i - 1] + fraction * (log_c[i] - log_c[i - 1])))


def _fit_compute_at(
    fit: CurveFit, target: float, max_extrapolation: float
) -> tuple[float | None, str | None]:
    """Invert a fitted curve with brentq on log C; (compute, None) or (None, reason)."""
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


MAX_EXTRAPOLATION = 10.0
"""A fitted curve is inverted within [min C / 10, max C * 10] of its data, never further."""


def fit_compute_at(
    fit: CurveFit, target: float, max_extrapolation: float = MAX_EXTRAPOLATION
) -> float | None:
    """Compute at which a fitted (decreasing) curve reaches ``target`` error.

    Searches [min C / max_extrapolation, max C * max_extrapolation] of the fitted
    data; returns None when the crossing is outside it or the target is at or below
    the asymptote E.
    """
    if max_extrapolation < 1:
        raise FitError(f"max_extrapolation = {max_extrapolation} must be >= 1")
    return _fit_compute_at(fit, target, max_extrapolation)[0]


@dataclass(frozen=True)
class ComputeMultiplier:
    """How much less compute the prioritised curve needs to reach ``target`` error.

    multiplier = C_iid(target) / C_prio(target); savings = 1 - 1 / multiplier (the
    fraction of the iid compute saved). Both are None when either compute is unknown,
    and ``reason`` says why. ``extrapolated`` is True when a compute came from a fit
    outside the range of its data.
    """

    target: float
    compute_iid: float | None
    compute_prio: float | None
    multiplier: float | None
    savings: float | None
    extrapolated: bool
    reason: str | None


def compute_multiplier(
    iid: CurveFit | tuple[ArrayLike, ArrayLike],
    prio: CurveFit | tuple[ArrayLike, ArrayLike],
    target: float,
    max_extrapolation: float = MAX_EXTRAPOLATION,
) -> ComputeMultiplier:
    """Compute multiplier of a prioritised over an iid curve at a target error.

    Each curve is either a :class:`CurveFit` (inverted numerically, see
    :func:`fit_compute_at`) or a ``(compute, error)`` pair of points (interpolated, see
    :func:`interpolate_compute_at`).
    """
    if not (math.isfinite(target) and target > 0):
        raise FitError(f"target error = {target} must be a finite positive number")
    if max_extrapolation < 1:
        raise FitError(f"max_extrapolation = {max_extrapolation} must be >= 1")
    found: dict[str, float | None] = {}
    reasons: list[str] = []
    extrapolated = False
    for label, curve in (("iid", iid), ("prio", prio)):
        if isinstance(curve, CurveFit):
            value, reason = _fit_compute_at(curve, target, max_extrapolation)
            if value is not None:
                low, high = curve.compute_range
                extrapolated = extrapolated or not low <= value <= high
        else:
            value = interpolate_compute_at(curve[0], curve[1], target)
            reason = None if value is not None else "the points do not cross the target"
        found[label] = value
        if reason is not None:
            reasons.append(f"{label}: {reason}")
    c_iid, c_prio = found["iid"], found["prio"]
    if c_iid is None or c_prio is None:
        return ComputeMultiplier(
            target, c_iid, c_prio, None, None, extrapolated, "; ".join(reasons)
        )
    multiplier = c_iid / c_prio
    return ComputeMultiplier(
        target, c_iid, c_prio, multiplier, 1.0 - 1.0 / multiplier, extrapolated, None
    )

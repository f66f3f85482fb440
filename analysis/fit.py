"""Scaling-law fits of error against compute, and the recipe they share.

All fits here are pure functions of arrays that return frozen dataclasses. The families
and their log-space parameters are :mod:`analysis.families`.

Fitting recipe:

* the model is written in log space, ``log err = logsumexp(terms)`` with every amplitude
  stored as its logarithm (Hoffmann et al. 2022, App. D.2; Besiroglu et al. 2024), so the
  optimiser never sees numbers like 1e20;
* the loss (:data:`CURVE_LOSS`, a :class:`Loss`) is **least squares on log error**
  (:data:`LEAST_SQUARES`): the maximum-likelihood fit under lognormal noise, which is how
  learning-curve errors scatter. It is minimised by Levenberg-Marquardt (MINPACK
  ``lmder``) with the analytic Jacobian, from the best point of a vectorised start grid.
  The Huber loss with delta = 1e-3 (:data:`HUBER`) is kept for the published recipe it
  belongs to (Chinchilla L(N, D), ``tests/chinchilla.py``, which reproduces Besiroglu et
  al.'s estimates) and as an option (``fit_curve(..., loss=HUBER)``: L-BFGS-B with
  analytic gradients from the best few starts). At the noise of learning curves (a few
  percent) delta = 1e-3 makes Huber act like absolute error: its estimates are noisier than
  least squares' (benchmarks/bench_fit.py measures both against ``scipy.optimize.curve_fit``);
* a best fit on (or beyond) a bound of the box of :func:`analysis.families.curve_bounds` is
  rejected (:class:`FitError`): a parameter on a bound is one the data do not determine.

Each fit carries the Gauss-Newton covariance of its internal parameters
(``s^2 (J^T J)^-1``, as ``curve_fit``'s ``pcov``) and :meth:`CurveFit.param_intervals`
turns it into intervals for the natural parameters (symmetric in log A, log tau, log E and
alpha). These describe one curve's points; the report's intervals come instead from the
bootstrap over runs (:mod:`analysis.run_bootstrap`), which also counts the noise that the
points of one run share.

The recipe's parts are public (:func:`objective_and_gradient`, :func:`minimise`,
:func:`raise_if_on_bound`, :func:`information_criteria`, ...): ``tests/chinchilla.py``
builds the Chinchilla L(N, D) fit from them.

Choosing a family and checking it on held-out budgets is :mod:`analysis.model_selection`;
the compute at which a fit reaches a target error is :mod:`analysis.compute_at`.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, special, stats

from activescale.errors import FitError
from analysis.families import (
    BOUND_ADVICE,
    FAMILIES,
    ComputeCoordinate,
    CurveFamily,
    curve_bounds,
    curve_family,
    curve_starts,
    log_curve,
    log_curve_and_jacobian,
    natural_in_log_space,
    to_natural,
)

__all__ = [
    "CURVE_LOSS",
    "FAMILIES",
    "HUBER",
    "LEAST_SQUARES",
    "CurveFamily",
    "CurveFit",
    "Loss",
    "check_enough_points",
    "check_finite_optimum",
    "curve_family",
    "fit_curve",
    "information_criteria",
    "minimise",
    "objective_and_gradient",
    "positive_arrays",
    "raise_if_on_bound",
    "refit_curve",
    "single_threaded_blas",
]

FloatArray = NDArray[np.float64]

HUBER_DELTA = 1e-3
"""Huber threshold on log-error residuals (Hoffmann et al. 2022; Besiroglu et al. 2024)."""

_LBFGSB_OPTIONS: dict[str, float | int] = {"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-10}
_LM_TOLERANCE = 1e-12
"""Levenberg-Marquardt's relative tolerance on the sum of squares and on the parameters."""
_BOUND_TOLERANCE = 1e-6
"""A parameter closer to a bound than this fraction of its allowed range is on it."""
_STARTS_REFINED = 3
"""Huber fits: L-BFGS-B runs from this many best points of the start grid."""
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


def single_threaded_blas() -> contextlib.AbstractContextManager[object]:
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
    if array.size and array.min() > 0 and array.max() < np.inf:  # the usual case, at once
        return array
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


def positive_arrays(names: Sequence[str], values: Sequence[ArrayLike]) -> tuple[FloatArray, ...]:
    """1-D float arrays of one length whose entries are finite and > 0 (else FitError)."""
    arrays = tuple(_positive_array(n, v) for n, v in zip(names, values, strict=True))
    lengths = {a.shape[0] for a in arrays}
    if len(lengths) != 1:
        shapes = ", ".join(f"{n}: {a.shape[0]}" for n, a in zip(names, arrays, strict=True))
        raise FitError(f"inputs must have one value per point, got lengths {shapes}")
    return arrays


def check_enough_points(label: str, n_points: int, n_params: int) -> None:
    """FitError unless there is at least one point more than parameters."""
    if n_points < n_params + 1:
        raise FitError(
            f"{label} has {n_params} parameters and needs at least {n_params + 1} points, "
            f"got {n_points}; add runs or choose a family with fewer parameters"
        )


def _check_distinct_compute(label: str, compute: FloatArray, n_params: int) -> None:
    distinct = len(set(compute.tolist()))
    if distinct < n_params:
        raise FitError(
            f"{label} has {n_params} parameters and needs at least {n_params} distinct "
            f"compute values, got {distinct}; add runs at other budgets"
        )


# --- loss and objective ------------------------------------------------------------------


@dataclass(frozen=True)
class Loss:
    """A loss of log-error residuals: its value per point and its derivative.

    ``description`` names it in the report. Fits sum ``value`` over points. A loss with
    ``squares`` set is a plain sum of squared residuals, which :func:`fit_curve` minimises
    by Levenberg-Marquardt; any other by L-BFGS-B with the gradient from ``slope``.
    """

    name: str
    description: str
    value: Callable[[FloatArray], FloatArray]
    slope: Callable[[FloatArray], FloatArray]
    squares: bool = False

    def total(self, residual: FloatArray) -> FloatArray:
        """The loss summed along the last axis (one residual vector, or a batch of them)."""
        return np.asarray(self.value(residual).sum(axis=-1))


def _huber(residual: FloatArray) -> FloatArray:
    return np.asarray(special.huber(HUBER_DELTA, residual))


def _huber_slope(residual: FloatArray) -> FloatArray:
    # d huber / d r = clip(r, -delta, delta)
    return np.clip(residual, -HUBER_DELTA, HUBER_DELTA)


def _square(residual: FloatArray) -> FloatArray:
    return np.asarray(residual * residual)


def _square_slope(residual: FloatArray) -> FloatArray:
    return np.asarray(2.0 * residual)


HUBER = Loss("huber", "Huber loss (δ = 1e-3)", _huber, _huber_slope)
"""Huber loss with delta = 1e-3 (Besiroglu et al. 2024, Sec. 2)."""

LEAST_SQUARES = Loss("least_squares", "Least squares", _square, _square_slope, squares=True)
"""Sum of squared log-error residuals: maximum likelihood under lognormal noise."""

CURVE_LOSS = LEAST_SQUARES
"""The loss :func:`fit_curve` and :func:`refit_curve` minimise unless told otherwise."""


def objective_and_gradient(
    predict: Callable[[FloatArray], tuple[FloatArray, FloatArray]],
    target: FloatArray,
    loss: Loss,
) -> Callable[[FloatArray], tuple[float, FloatArray]]:
    """Summed ``loss`` of ``predict(theta) - target`` and its analytic gradient.

    ``predict`` returns the model's log prediction at every point and its Jacobian
    (n_params, n_points).
    """

    def evaluate(theta: FloatArray) -> tuple[float, FloatArray]:
        log_pred, jacobian = predict(theta)
        residual = log_pred - target
        return float(loss.total(residual)), jacobian @ loss.slope(residual)

    return evaluate


def raise_if_on_bound(
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
        return BOUND_ADVICE[(family.decay, name, side)]

    def describe(i: int, bound: float) -> str:
        name = family.param_names[i]
        if name == "A":
            return f"log A at the reference compute = {bound:.4g}"
        if name == "tau":
            return f"tau = {coordinate.span * math.exp(bound):.4g}"
        if name == "E":
            return f"E = {math.exp(bound):.4g}"
        return f"{name} = {bound:.4g}"

    raise_if_on_bound(family.name, family.param_names, theta, bounds, advice, describe)


def information_criteria(residual: FloatArray, n_params: int) -> tuple[float, float]:
    """AIC and BIC from the Gaussian likelihood of the log-error residuals.

    With the variance at its maximum-likelihood value RSS / n, ``-2 log L =
    n (log(2 pi RSS / n) + 1)``; the variance counts as one more parameter (Burnham &
    Anderson 2002, Sec. 2.2). For least-squares fits this is the likelihood at its maximum;
    for Huber fits it is evaluated at the robust optimum.
    """
    n = residual.size
    mean_square = max(float(residual @ residual) / n, _MIN_MEAN_SQUARE)
    minus_two_log_likelihood = n * (math.log(2 * math.pi * mean_square) + 1.0)
    k = n_params + 1
    return minus_two_log_likelihood + 2 * k, minus_two_log_likelihood + k * math.log(n)


# --- one-variable fits --------------------------------------------------------------------


@dataclass(frozen=True)
class CurveFit:
    """A fitted one-variable scaling curve, error = f(compute).

    ``params`` holds natural-scale values (A, alpha or tau, E); ``objective`` is the
    summed loss (``loss``) on log error; ``aic``/``bic`` come from the Gaussian likelihood
    of the log-error residuals (see :func:`information_criteria`). ``theta`` and
    ``coordinate`` are the internal log-space parameters and compute coordinate
    (:mod:`analysis.families`), kept so predictions never pass through overflowing
    amplitudes; ``information`` is ``J^T J`` at the optimum, from which :attr:`covariance`
    follows.
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
    information: tuple[tuple[float, ...], ...] | None = field(default=None, repr=False)
    rss: float = math.nan  # sum of squared log-error residuals
    loss: str = CURVE_LOSS.name

    @property
    def covariance(self) -> FloatArray | None:
        """Gauss-Newton covariance of ``theta``, ``s^2 (J^T J)^-1`` with ``s^2 = RSS / (n -
        P)`` for least squares (as curve_fit's pcov); None when J^T J is singular."""
        p = len(self.theta)
        if self.information is None or self.n_points <= p:
            return None
        information = np.array(self.information)
        if not np.all(np.isfinite(information)) or np.linalg.cond(information) > 1e14:
            return None
        return np.asarray(np.linalg.inv(information) * self.rss / (self.n_points - p))

    def predict(self, compute: ArrayLike) -> FloatArray:
        """Predicted error at the given compute values (all > 0)."""
        compute_arr = _positive_array("compute", np.atleast_1d(compute))
        log_pred = log_curve(
            FAMILIES[self.family], np.array(self.theta), self.coordinate(compute_arr)
        )
        return np.exp(log_pred)

    @property
    def asymptote(self) -> float:
        """The error the curve tends to at infinite compute (E, or 0 without offset)."""
        return self.params.get("E", 0.0)

    def param_intervals(self, confidence: float = 0.95) -> dict[str, tuple[float, float]] | None:
        """Intervals of the natural parameters from ``covariance`` (None without it).

        Symmetric in log A, log tau, log E and alpha (the delta method in those
        coordinates), with Student-t quantiles on n - P degrees of freedom: the intervals
        of one curve's points, not those of the report (module docstring).
        """
        if self.covariance is None or self.n_points <= len(self.theta):
            return None
        family = FAMILIES[self.family]
        values, grads, logged = natural_in_log_space(family, np.array(self.theta), self.coordinate)
        variance = np.einsum("ij,jk,ik->i", grads, np.array(self.covariance), grads)
        quantile = float(stats.t.ppf(0.5 + confidence / 2, self.n_points - len(self.theta)))
        half = quantile * np.sqrt(np.maximum(variance, 0.0))
        out = {}
        for name, value, width, log in zip(family.param_names, values, half, logged, strict=True):
            low, high = value - width, value + width
            out[name] = (math.exp(low), math.exp(high)) if log else (float(low), float(high))
        return out


def minimise(
    evaluate: Callable[[FloatArray], tuple[float, FloatArray]],
    start: FloatArray,
    bounds: Sequence[tuple[float, float]],
    options: Mapping[str, float | int] = _LBFGSB_OPTIONS,
) -> optimize.OptimizeResult:
    """L-BFGS-B with the analytic gradient of ``evaluate``, started inside ``bounds``."""
    lows, highs = np.array(bounds).T
    return optimize.minimize(
        evaluate,
        np.clip(start, lows, highs),
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options=dict(options),
    )


def check_finite_optimum(result: optimize.OptimizeResult) -> None:
    """FitError when a warm-started refit ends on a non-finite loss or parameter."""
    if not (np.isfinite(result.fun) and np.all(np.isfinite(result.x))):
        raise FitError("resample: the optimiser returned a non-finite loss or parameter")


def _curve_evaluator(
    family: CurveFamily, z: FloatArray, log_error: FloatArray, loss: Loss
) -> Callable[[FloatArray], tuple[float, FloatArray]]:
    def predict(theta: FloatArray) -> tuple[FloatArray, FloatArray]:
        return log_curve_and_jacobian(family, theta, z)

    return objective_and_gradient(predict, log_error, loss)


def _levenberg_marquardt(
    family: CurveFamily,
    z: FloatArray,
    log_error: FloatArray,
    start: FloatArray,
    bounds: Sequence[tuple[float, float]],
) -> tuple[FloatArray, tuple[FloatArray, FloatArray] | None]:
    """The least-squares optimum from ``start``, unbounded; where it leaves the box, the
    optimum within it (trust-region reflective), which then sits on the bound it hit.
    Returns the optimum and, when it was the last point evaluated, (log prediction,
    Jacobian) there.

    MINPACK's ``lmder`` through ``scipy.optimize.leastsq``: a fit of two or three parameters
    converges in 3-12 evaluations, so the time goes to Python overhead, not linear algebra.
    """
    last: list[object] = [b"", None, None]  # theta's bytes, log prediction, Jacobian

    def residual(theta: FloatArray) -> FloatArray:
        log_pred, jacobian = log_curve_and_jacobian(family, theta, z)
        last[:] = theta.tobytes(), log_pred, jacobian
        return np.asarray(log_pred - log_error)

    def jacobian(theta: FloatArray) -> FloatArray:
        # MINPACK asks for the Jacobian at the point it evaluated last: reuse that pass.
        if theta.tobytes() != last[0]:
            residual(theta)
        return last[2]  # type: ignore[return-value]

    theta, _, _, _, status = optimize.leastsq(
        residual,
        start,
        Dfun=jacobian,
        col_deriv=True,  # the Jacobian comes as (P, n)
        full_output=True,
        ftol=_LM_TOLERANCE,
        xtol=_LM_TOLERANCE,
    )
    lows, highs = np.array(bounds).T
    if status in (1, 2, 3, 4) and np.all(np.isfinite(theta)):
        if np.all((theta > lows) & (theta < highs)):
            at = (last[1], last[2]) if theta.tobytes() == last[0] else None
            return np.asarray(theta), at  # type: ignore[return-value]
        start = theta
    boxed = optimize.least_squares(
        residual,
        np.clip(start, lows + 1e-9 * (highs - lows), highs - 1e-9 * (highs - lows)),
        jac=lambda theta: jacobian(theta).T,
        bounds=(lows, highs),
        method="trf",
        ftol=_LM_TOLERANCE,
        xtol=_LM_TOLERANCE,
    )
    return np.asarray(boxed.x), None


def _prepare(
    family: str | CurveFamily, compute: ArrayLike, error: ArrayLike
) -> tuple[CurveFamily, FloatArray, FloatArray]:
    spec = curve_family(family)
    compute_arr, error_arr = positive_arrays(("compute", "error"), (compute, error))
    check_enough_points(spec.name, compute_arr.size, spec.n_params)
    _check_distinct_compute(spec.name, compute_arr, spec.n_params)
    return spec, compute_arr, error_arr


def fit_curve(
    compute: ArrayLike, error: ArrayLike, family: str | CurveFamily, loss: Loss = CURVE_LOSS
) -> CurveFit:
    """Fit one family to (compute, error) points by regression on log error.

    The start grid (rates x offset fractions, amplitude set from the data) is scored in
    one vectorised pass. Least squares (the default) refines the best start by
    Levenberg-Marquardt; another ``loss`` (Huber) refines the best few by L-BFGS-B
    (Besiroglu et al. 2024 refine every start; with two or three parameters the best few
    suffice).

    Raises:
        FitError: inputs are not finite and positive, there are fewer points than
            parameters + 1 or fewer distinct compute values than parameters, or the
            best fit sits on a bound.
    """
    spec, compute_arr, error_arr = _prepare(family, compute, error)
    coordinate = ComputeCoordinate.for_data(spec, compute_arr)
    z, log_error = coordinate(compute_arr), np.log(error_arr)
    bounds = curve_bounds(spec, log_error)
    starts = curve_starts(spec, z, error_arr)
    grid_objective = loss.total(log_curve(spec, starts, z) - log_error)
    order = np.argsort(grid_objective)
    at: tuple[FloatArray, FloatArray] | None = None
    if loss.squares:
        theta, at = _levenberg_marquardt(spec, z, log_error, starts[order[0]], bounds)
    else:
        evaluate = _curve_evaluator(spec, z, log_error, loss)
        best: optimize.OptimizeResult | None = None
        with single_threaded_blas():
            for index in order[:_STARTS_REFINED]:
                result = minimise(evaluate, starts[index], bounds)
                if np.isfinite(result.fun) and (best is None or result.fun < best.fun):
                    best = result
        if best is None:
            raise FitError(f"{spec.name}: no start converged to a finite loss; check the data")
        theta = np.asarray(best.x)
    _curve_bound_check(spec, theta, bounds, coordinate)
    return _curve_fit_result(spec, theta, loss, coordinate, compute_arr, log_error, at)


def _curve_fit_result(
    family: CurveFamily,
    theta: FloatArray,
    loss: Loss,
    coordinate: ComputeCoordinate,
    compute: FloatArray,
    log_error: FloatArray,
    at: tuple[FloatArray, FloatArray] | None = None,
) -> CurveFit:
    """The fit's record; ``at``: the model's (log prediction, Jacobian) at ``theta``, when
    the optimiser already has them."""
    if not np.all(np.isfinite(theta)):
        raise FitError(f"{family.name}: the optimiser returned a non-finite parameter")
    log_pred, jacobian = at or log_curve_and_jacobian(family, theta, coordinate(compute))
    residual = log_pred - log_error
    aic, bic = information_criteria(residual, family.n_params)
    return CurveFit(
        family=family.name,
        params=to_natural(family, theta, coordinate),
        objective=float(loss.total(residual)),
        n_points=int(compute.size),
        aic=aic,
        bic=bic,
        compute_range=(float(compute.min()), float(compute.max())),
        theta=tuple(float(t) for t in theta),
        coordinate=coordinate,
        information=tuple(map(tuple, (jacobian @ jacobian.T).tolist())),
        rss=float(residual @ residual),
        loss=loss.name,
    )


def refit_curve(
    fit: CurveFit, compute: ArrayLike, error: ArrayLike, loss: Loss | None = None
) -> CurveFit:
    """Refit ``fit``'s family to new points, warm-started at ``fit``'s optimum.

    For bootstraps that rebuild the points themselves (e.g. a frontier recomputed from
    resampled seeds): one optimiser run from ``fit.theta`` in ``fit``'s compute
    coordinate, no start grid, with ``fit``'s loss unless ``loss`` is given. Raises
    FitError like :func:`fit_curve` (invalid or too few points, optimum on a bound).
    """
    spec, compute_arr, error_arr = _prepare(fit.family, compute, error)
    loss = loss or (HUBER if fit.loss == HUBER.name else LEAST_SQUARES)
    z, log_error = fit.coordinate(compute_arr), np.log(error_arr)
    bounds = curve_bounds(spec, log_error)
    start = np.array(fit.theta)
    at: tuple[FloatArray, FloatArray] | None = None
    if loss.squares:
        theta, at = _levenberg_marquardt(spec, z, log_error, start, bounds)
    else:
        with single_threaded_blas():
            result = minimise(_curve_evaluator(spec, z, log_error, loss), start, bounds)
        check_finite_optimum(result)
        theta = np.asarray(result.x)
    _curve_bound_check(spec, theta, bounds, fit.coordinate)
    return _curve_fit_result(spec, theta, loss, fit.coordinate, compute_arr, log_error, at)

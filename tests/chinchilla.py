"""The Chinchilla loss surface L(N, D) = E + A / N^alpha + B / D^beta, fitted to the
published Chinchilla runs to check the fitting recipe of ``analysis.fit``.

Test and benchmark helper (``tests/test_fit.py``, ``benchmarks/bench_fit.py``): the
product fits error against compute only. This fit is Hoffmann et al. 2022's Approach 3 as
replicated by Besiroglu et al. 2024, built from the recipe's public parts (Huber loss on log
loss summed over points, analytic gradient, L-BFGS-B, bound check, information criteria), so
reproducing their estimates and intervals on their data checks those parts on real results.
The data are in ``tests/data/scaling`` (see its README).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from activescale.errors import FitError
from analysis.fit import (
    HUBER,
    check_enough_points,
    check_finite_optimum,
    information_criteria,
    minimise,
    objective_and_gradient,
    positive_arrays,
    raise_if_on_bound,
    single_threaded_blas,
)
from tests.point_bootstrap import PointBootstrap, resample_points

FloatArray = NDArray[np.float64]

DATA = Path(__file__).resolve().parent / "data" / "scaling"

CHINCHILLA_GRID: dict[str, tuple[float, ...]] = {
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "e": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
}
"""Start grid as in Besiroglu et al. 2024: 6 x 6 x 5 x 5 x 5 = 4500 starts."""

GRID_OPTIONS: dict[str, float | int] = {"maxiter": 1000}
"""Scipy's default tolerances, for the many starts of the grid."""
POLISHED = 3
"""The best optima of the grid polished with analysis.fit's tight tolerances."""

NAMES = ("a", "b", "e", "alpha", "beta")
BOUNDS: list[tuple[float, float]] = [
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
    beta) with A = e^a, B = e^b, E = e^e; ``aic``/``bic`` as for
    :class:`analysis.fit.CurveFit`.
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
        log_n, log_d = np.log(positive_arrays(("N", "D"), (n_params, n_tokens)))
        return np.exp(_log_loss(np.array(self.theta), log_n, log_d)[0])


def _log_loss(
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


def _bound_check(theta: FloatArray) -> None:
    def advice(name: str, side: str) -> str:
        return (
            "the data do not constrain this term; check the data, drop outliers "
            "or widen the range of model sizes and token counts"
        )

    def describe(i: int, bound: float) -> str:
        return f"{NAMES[i]} = {bound:.4g}"

    raise_if_on_bound("chinchilla", NAMES, theta, BOUNDS, advice, describe)


def _result(
    theta: FloatArray,
    objective: float,
    log_n: FloatArray,
    log_d: FloatArray,
    log_loss: FloatArray,
    n_starts: int,
) -> ChinchillaFit:
    residual = _log_loss(theta, log_n, log_d)[0] - log_loss
    aic, bic = information_criteria(residual, len(theta))
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
    n_arr, d_arr, loss_arr = positive_arrays(("N", "D", "loss"), (n_params, n_tokens, loss))
    check_enough_points("chinchilla", n_arr.size, len(NAMES))
    log_n, log_d, log_loss = np.log(n_arr), np.log(d_arr), np.log(loss_arr)
    chosen = CHINCHILLA_GRID if grid is None else grid
    missing = set(NAMES) - set(chosen)
    if missing or any(len(chosen[name]) == 0 for name in NAMES):
        raise FitError(
            f"grid must give at least one value for each of {NAMES}; "
            f"missing or empty: {sorted(missing) or 'an empty axis'}"
        )
    mesh = np.meshgrid(*(np.asarray(chosen[name], float) for name in NAMES))
    starts = np.stack([axis.ravel() for axis in mesh], axis=1)

    def predict(theta: FloatArray) -> tuple[FloatArray, FloatArray]:
        return _log_loss(theta, log_n, log_d)

    evaluate = objective_and_gradient(predict, log_loss, HUBER)
    # Every start runs with scipy's default tolerances; the best few optima are then
    # polished with tight ones: the same optimum in about 40% less time than tight runs.
    with np.errstate(over="ignore", under="ignore"), single_threaded_blas():
        optima = [minimise(evaluate, start, BOUNDS, GRID_OPTIONS) for start in starts]
        finite = sorted((r for r in optima if np.isfinite(r.fun)), key=lambda r: float(r.fun))
        polished = [minimise(evaluate, r.x, BOUNDS) for r in finite[:POLISHED]]
    if not polished:
        raise FitError("chinchilla: no start converged to a finite loss; check the data")
    best = min(polished, key=lambda r: float(r.fun))
    _bound_check(best.x)
    return _result(best.x, float(best.fun), log_n, log_d, log_loss, len(starts))


def bootstrap_chinchilla_points(
    n_params: ArrayLike,
    n_tokens: ArrayLike,
    loss: ArrayLike,
    n_resamples: int = 1000,
    seed: int = 0,
    groups: ArrayLike | None = None,
    confidence: float = 0.95,
    fit: ChinchillaFit | None = None,
) -> PointBootstrap:
    """Percentile-bootstrap intervals for the Chinchilla parameters (Besiroglu et al. 2024).

    The points are drawn with replacement; every resample is refitted by L-BFGS-B from
    the full-data optimum (pass ``fit`` to reuse one already computed by
    :func:`fit_chinchilla`; otherwise the full grid runs once).
    """
    n_arr, d_arr, loss_arr = positive_arrays(("N", "D", "loss"), (n_params, n_tokens, loss))
    full = fit if fit is not None else fit_chinchilla(n_arr, d_arr, loss_arr)
    log_n, log_d, log_loss = np.log(n_arr), np.log(d_arr), np.log(loss_arr)
    start = np.array(full.theta)

    def refit(index: NDArray[np.intp]) -> dict[str, float]:
        drawn_n, drawn_d = log_n[index], log_d[index]

        def predict(theta: FloatArray) -> tuple[FloatArray, FloatArray]:
            return _log_loss(theta, drawn_n, drawn_d)

        result = minimise(objective_and_gradient(predict, log_loss[index], HUBER), start, BOUNDS)
        check_finite_optimum(result)
        _bound_check(result.x)
        a, b, e, alpha, beta = (float(t) for t in result.x)
        return {"A": math.exp(a), "B": math.exp(b), "E": math.exp(e), "alpha": alpha, "beta": beta}

    return resample_points(full, n_arr.size, refit, n_resamples, seed, groups, confidence)


# --- the published data ---------------------------------------------------------------------


def epoch_chinchilla_points() -> tuple[FloatArray, FloatArray, FloatArray]:
    """N, D, loss of Epoch's re-extracted Chinchilla runs, the 5 highest losses dropped
    (240 points, as in Besiroglu et al. 2024)."""
    with (DATA / "epoch_chinchilla_svg_extracted_data.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    n_params = np.array([float(row["Model Size"]) for row in rows])
    flops = np.array([float(row["Training FLOP"]) for row in rows])
    loss = np.array([float(row["loss"]) for row in rows])
    keep = np.argsort(loss, kind="stable")[:-5]
    return n_params[keep], flops[keep] / (6 * n_params[keep]), loss[keep]

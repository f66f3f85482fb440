"""Which family describes a frontier: every family fitted and ranked by AIC, each checked on
held-out larger budgets.

Model selection by information criteria (Akaike 1974; Burnham & Anderson 2002): the
families of :mod:`analysis.fit` are fitted to the same points and ranked by AIC, and each
is refitted without the largest budgets to see how well it extrapolates to them.
:func:`analyse_frontier` runs both on one frontier for the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from activescale.errors import FitError
from analysis.curves import Frontier
from analysis.fit import (
    FAMILIES,
    CurveFamily,
    CurveFit,
    curve_family,
    fit_curve,
    positive_arrays,
)

FloatArray = NDArray[np.float64]

REPORT_FAMILIES = ("power_law_offset", "exponential_offset", "power_law", "exponential")
"""The families the report fits to every frontier (in this order; ranked by AIC after)."""
MIN_FIT_POINTS = 3
"""A frontier with fewer points is not fitted at all."""
HOLDOUT_FRACTION = 0.2
"""The largest-compute fraction of a frontier held out to check a family's extrapolation."""


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
    compute_arr, error_arr = positive_arrays(("compute", "error"), (compute, error))
    fits: list[CurveFit] = []
    skipped: dict[str, str] = {}
    for family in families:
        spec = curve_family(family)
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
    compute_arr, error_arr = positive_arrays(("compute", "error"), (compute, error))
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


@dataclass(frozen=True)
class CurveAnalysis:
    """Everything fitted to one frontier: the family comparison and each family's holdout."""

    frontier: Frontier
    comparison: FamilyComparison | None
    holdouts: dict[str, HoldoutResult | str]  # family -> result, or why not

    @property
    def best(self) -> CurveFit | None:
        return self.comparison.fits[0] if self.comparison and self.comparison.fits else None


def analyse_frontier(curve: Frontier) -> tuple[CurveAnalysis, list[str]]:
    """Fit every family (AIC/BIC) and its held-out extrapolation; notes on what was skipped."""
    n = len(curve.compute)
    if n < MIN_FIT_POINTS:
        return CurveAnalysis(curve, None, {}), [
            f"{curve.label}: {n} frontier points, too few to fit any family "
            f"(need ≥ {MIN_FIT_POINTS}); add learner sizes or evaluation points"
        ]
    try:
        comparison = select_family(curve.compute, curve.error, REPORT_FAMILIES)
    except FitError as failure:
        return CurveAnalysis(curve, None, {}), [f"{curve.label}: not fitted ({failure})"]
    skipped = [
        f"{curve.label}: {fam} not fitted ({why})" for fam, why in comparison.skipped.items()
    ]
    holdouts: dict[str, HoldoutResult | str] = {}
    for fit in comparison.fits:
        k = max(1, round(HOLDOUT_FRACTION * n))
        if n - k < FAMILIES[fit.family].n_params + 1:
            holdouts[fit.family] = "too few points to hold any out"
            continue
        try:
            holdouts[fit.family] = holdout_extrapolation(curve.compute, curve.error, fit.family, k)
        except FitError as failure:
            holdouts[fit.family] = str(failure).split(";")[0]
    return CurveAnalysis(curve, comparison, holdouts), skipped

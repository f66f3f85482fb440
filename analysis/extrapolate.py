"""The compute multiplier beyond the largest budget, and how far such a number can be trusted.

At F times the largest compute a prioritized curve reached (F = 10 and 100), its fitted curve
gives an error; IID's fitted curve, inverted, the compute IID would need for that error; the
multiplier is that compute over F times the policy's (C_iid / C_policy, as everywhere in the
report). Intervals: the same arithmetic on every bootstrap refit (:mod:`analysis.run_bootstrap`).

Nothing in the data says whether such a number holds, so each factor comes with a held-out
check at the same factor: both curves are refitted (same family) on their frontier points at or
below 1/F of the policy's largest compute, the same F-fold extrapolation then predicts the
multiplier at the largest compute, and the full fits give it from inside the data. Their ratio,
predicted over measured, is how far off an F-fold extrapolation of these curves was the one
time it could be checked. Data that span less than F times the fewest points a family needs
give no check; the extrapolated number is then untested, and says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from activescale.errors import FitError
from analysis.curves import Frontier
from analysis.families import curve_family
from analysis.fit import CurveFit, fit_curve
from analysis.run_bootstrap import RunBootstrap, censored_interval

FloatArray = NDArray[np.float64]

FACTORS = (10.0, 100.0)
"""Multiples of the largest budget at which the report extrapolates the multiplier."""
CHECK_TOLERANCE = 0.25
"""A held-out check whose predicted multiplier is off by more than this factor (either way)
fails: the extrapolation at that factor is not to be trusted."""


def log_error_at(family: str, params: Mapping[str, ArrayLike], compute: ArrayLike) -> FloatArray:
    """log error of a family with natural parameters (scalars or one value per resample)."""
    spec = curve_family(family)
    c = np.asarray(compute, dtype=float)
    log_a = np.log(np.asarray(params["A"], dtype=float))
    if spec.decay == "power":
        core = log_a - np.asarray(params["alpha"], dtype=float) * np.log(c)
    else:
        core = log_a - c / np.asarray(params["tau"], dtype=float)
    if spec.has_offset:
        return np.asarray(np.logaddexp(core, np.log(np.asarray(params["E"], dtype=float))))
    return np.asarray(core)


def compute_at(family: str, params: Mapping[str, ArrayLike], target: ArrayLike) -> FloatArray:
    """The compute at which the curve reaches ``target`` (closed form): inf where the target is
    at or below the floor E, 0 where the curve starts below it."""
    spec = curve_family(family)
    e = np.asarray(target, dtype=float)
    floor = np.asarray(params.get("E", 0.0), dtype=float)
    a = np.asarray(params["A"], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        gap = np.log(a) - np.log(e - floor)  # log of A / (target - E)
        if spec.decay == "power":
            value = np.exp(gap / np.asarray(params["alpha"], dtype=float))
        else:
            value = np.asarray(params["tau"], dtype=float) * np.maximum(gap, 0.0)
    return np.asarray(np.where(e > floor, value, np.inf))


def fitted_multiplier(iid: CurveFit, policy: CurveFit, compute: float) -> tuple[float, float]:
    """(policy's fitted error at ``compute``, the multiplier there) from two fits."""
    error = float(np.exp(log_error_at(policy.family, policy.params, compute)))
    c_iid = float(compute_at(iid.family, iid.params, error))
    return error, c_iid / compute


@dataclass(frozen=True)
class HeldOutCheck:
    """Fits on compute <= ``cut`` extrapolated to the largest compute, against the full fits."""

    cut: float
    points: tuple[int, int]  # (IID, policy) frontier points at or below the cut
    predicted: float | None  # the multiplier at the largest compute from the cut fits
    measured: float  # the full fits' multiplier there (inside the policy's data)
    reason: str | None  # why there is no prediction

    @property
    def ratio(self) -> float | None:
        """predicted / measured (None without a prediction or a finite measurement)."""
        if self.predicted is None or not (0 < self.measured < math.inf):
            return None
        return self.predicted / self.measured

    @property
    def held(self) -> bool:
        ratio = self.ratio
        return ratio is not None and abs(math.log(ratio)) <= math.log1p(CHECK_TOLERANCE)


@dataclass(frozen=True)
class Extrapolation:
    """The multiplier of one prioritized curve at ``factor`` times its largest compute."""

    curve: str
    factor: float
    compute: float
    error: float  # the policy's fitted error there
    multiplier: float  # inf: IID's fitted floor is above that error
    interval: tuple[float, float] | None
    check: HeldOutCheck


def _cut_fit(curve: Frontier, fit: CurveFit, cut: float) -> CurveFit:
    keep = curve.compute <= cut
    return fit_curve(curve.compute[keep], curve.error[keep], fit.family)


def held_out_check(
    iid: Frontier, policy: Frontier, fits: Mapping[str, CurveFit], factor: float
) -> HeldOutCheck:
    """Refit both curves below 1/``factor`` of the policy's largest compute, extrapolate the
    multiplier ``factor``-fold to that compute and compare it with the full fits'."""
    top = float(policy.compute.max())
    cut = top / factor
    _, measured = fitted_multiplier(fits[iid.label], fits[policy.label], top)
    points = (int((iid.compute <= cut).sum()), int((policy.compute <= cut).sum()))
    try:
        iid_cut = _cut_fit(iid, fits[iid.label], cut)
        policy_cut = _cut_fit(policy, fits[policy.label], cut)
    except FitError as failure:
        why = str(failure).split(";")[0]
        return HeldOutCheck(cut, points, None, measured, f"refitted below {cut:.3g}: {why}")
    _, predicted = fitted_multiplier(iid_cut, policy_cut, top)
    return HeldOutCheck(cut, points, predicted, measured, None)


def _resampled(boot: RunBootstrap, label: str) -> dict[str, FloatArray] | None:
    curve = boot.curves.get(label)
    if curve is None or curve.family is None or not boot.resampled:
        return None
    return curve.params


def extrapolate(
    iid: Frontier,
    curves: list[Frontier],
    fits: Mapping[str, CurveFit],
    boot: RunBootstrap,
    factors: tuple[float, ...] = FACTORS,
) -> list[Extrapolation]:
    """Every prioritized curve with a fit, at every factor (module docstring)."""
    if iid.label not in fits:
        return []
    out = []
    for policy in curves:
        if policy.policy == "iid" or policy.label not in fits or not len(policy.compute):
            continue
        iid_fit, policy_fit = fits[iid.label], fits[policy.label]
        for factor in factors:
            compute = factor * float(policy.compute.max())
            error, multiplier = fitted_multiplier(iid_fit, policy_fit, compute)
            interval = None
            iid_params, policy_params = _resampled(boot, iid.label), _resampled(boot, policy.label)
            if iid_params is not None and policy_params is not None:
                with np.errstate(invalid="ignore", over="ignore"):
                    errors = np.exp(log_error_at(policy_fit.family, policy_params, compute))
                    ratios = compute_at(iid_fit.family, iid_params, errors) / compute
                low, high = censored_interval(ratios, ratios, boot.confidence)
                if np.isfinite(low) and np.isfinite(ratios).any():
                    interval = (float(low), float(high))
            out.append(
                Extrapolation(
                    policy.label,
                    factor,
                    compute,
                    error,
                    multiplier,
                    interval,
                    held_out_check(iid, policy, fits, factor),
                )
            )
    return out


def check_text(check: HeldOutCheck) -> str:
    """The held-out check in words, for tables and caveats."""
    where = f"fits on compute ≤ {check.cut:.3g} ({check.points[0]} IID, {check.points[1]} policy points)"
    if check.predicted is None:
        return f"no check: {check.reason}"
    ratio = check.ratio
    if ratio is None:
        return (
            f"{where} predict {_times(check.predicted)} at the largest compute; the full fits "
            f"give {_times(check.measured)}: not comparable"
        )
    verdict = "held" if check.held else "failed"
    return (
        f"{where} predict {_times(check.predicted)} at the largest compute, the full fits "
        f"{_times(check.measured)}: off by ×{max(ratio, 1 / ratio):.2f}, {verdict} "
        f"(tolerance ×{1 + CHECK_TOLERANCE:.2f})"
    )


def _times(value: float) -> str:
    return "∞ (IID never reaches it)" if math.isinf(value) else f"{value:.3g}×"


def summary_line(rows: list[Extrapolation]) -> str | None:
    """One line per curve: the extrapolated multipliers and whether their checks held."""
    if not rows:
        return None
    parts = []
    for row in rows:
        ci = (
            f" [{row.interval[0]:.3g}, {'∞' if math.isinf(row.interval[1]) else f'{row.interval[1]:.3g}'}]"
            if row.interval
            else ""
        )
        check = row.check
        trust = (
            "untested (no held-out check)"
            if check.predicted is None or check.ratio is None
            else ("its held-out check held" if check.held else "its held-out check failed")
        )
        parts.append(
            f"at {row.factor:g}× its largest compute ({row.compute:.3g} FLOPs, fitted error "
            f"{row.error:.3g}) {_times(row.multiplier)}{ci}, {trust}"
        )
    return f"{rows[0].curve} vs IID extrapolated from the fits: " + "; ".join(parts) + "."

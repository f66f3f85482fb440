"""Compute multipliers of prioritized policies over IID, with bootstrap intervals.

multiplier = C_iid(target) / C_policy(target): how many times more compute IID needs to
reach the same error; savings = 1 - 1 / multiplier, the fraction of IID's compute saved
(Evans et al. 2024, "Data curation via joint example selection", Sec. 4; Mindermann et
al. 2022). Both come from the data (log-log interpolation of the frontiers, never beyond
them) and from the fitted curves (which may extrapolate, flagged); the compute at a target
is :mod:`analysis.compute_at`. :func:`compute_multiplier` is one multiplier at one target;
the report's tables and curves add intervals from :mod:`analysis.run_bootstrap` (runs
resampled), so they are pure functions of its arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from activescale.errors import FitError
from analysis.compute_at import (
    MAX_EXTRAPOLATION,
    LearningCurves,
    compute_at_targets,
    crossed,
    crossing_bounds,
    fit_compute_at,
    fit_compute_at_targets,
    ratio_bounds,
)
from analysis.curves import Frontier, SeedRuns, SizeRuns
from analysis.fit import CurveFit, positive_arrays
from analysis.run_bootstrap import CONFIDENCE, RunBootstrap, censored_interval, interval

FloatArray = NDArray[np.float64]

KEEP_FRACTION = 0.9
"""A scorer is recommended when it keeps this fraction of the best savings."""


def report_targets(iid: Frontier) -> FloatArray:
    """IID's best frontier error and two easier ones (geometric quartiles of its range)."""
    hi, lo = float(iid.error.max()), float(iid.error.min())
    targets = {
        lo,
        math.exp(0.75 * math.log(lo) + 0.25 * math.log(hi)),
        math.exp(0.5 * (math.log(lo) + math.log(hi))),
    }
    return np.array(sorted(targets))


def target_sweep(iid: Frontier, n: int = 40) -> FloatArray:
    """Targets for the multiplier-vs-target curve: IID's error range, 20% beyond its best."""
    hi, lo = float(iid.error.max()), float(iid.error.min())
    return np.geomspace(hi, lo * 0.8, n)


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
    bounds: tuple[float, float] | None = None  # from the data: on the multiplier


def compute_multiplier(
    iid: CurveFit | Frontier | tuple[ArrayLike, ArrayLike],
    prio: CurveFit | Frontier | tuple[ArrayLike, ArrayLike],
    target: float,
    max_extrapolation: float = MAX_EXTRAPOLATION,
) -> ComputeMultiplier:
    """Compute multiplier of a prioritised over an iid curve at a target error.

    Each curve is a :class:`CurveFit` (inverted numerically, see :func:`fit_compute_at`),
    a :class:`Frontier` (its learning curves interpolated, see
    :func:`analysis.compute_at.crossing_bounds`) or a ``(compute, error)`` pair of points
    of one curve. From the data, ``bounds`` bound the multiplier where a curve does not
    cross the target (e.g. ``(0, 0.6)``: the policy never reaches it, and with the compute
    it had it would need more than IID).
    """
    if not (math.isfinite(target) and target > 0):
        raise FitError(f"target error = {target} must be a finite positive number")
    if max_extrapolation < 1:
        raise FitError(f"max_extrapolation = {max_extrapolation} must be >= 1")
    found: dict[str, float | None] = {}
    bounds: dict[str, tuple[FloatArray, FloatArray]] = {}
    reasons: list[str] = []
    extrapolated = False
    for label, curve in (("iid", iid), ("prio", prio)):
        if isinstance(curve, CurveFit):
            value, reason = fit_compute_at(curve, target, max_extrapolation)
            if value is not None:
                low, high = curve.compute_range
                extrapolated = extrapolated or not low <= value <= high
        else:
            bounds[label] = crossing_bounds(_learning_curves(curve), np.array([target]))
            crossed_at = float(crossed(bounds[label])[0])
            value = None if math.isnan(crossed_at) else crossed_at
            reason = None if value is not None else _censored_reason(bounds[label])
        found[label] = value
        if reason is not None:
            reasons.append(f"{label}: {reason}")
    ratio = None
    if len(bounds) == 2:
        ratio_low, ratio_high = ratio_bounds(bounds["iid"], bounds["prio"])
        ratio = (float(ratio_low[0]), float(ratio_high[0]))
    c_iid, c_prio = found["iid"], found["prio"]
    if c_iid is None or c_prio is None:
        return ComputeMultiplier(
            target, c_iid, c_prio, None, None, extrapolated, "; ".join(reasons), ratio
        )
    multiplier = c_iid / c_prio
    return ComputeMultiplier(
        target, c_iid, c_prio, multiplier, 1.0 - 1.0 / multiplier, extrapolated, None, ratio
    )


def _learning_curves(curve: Frontier | tuple[ArrayLike, ArrayLike]) -> LearningCurves:
    if isinstance(curve, Frontier):
        return curve.learning_curves or ((curve.compute, curve.error),)
    compute, error = positive_arrays(("compute", "error"), curve)
    return ((compute, error),)


def _censored_reason(bounds: tuple[FloatArray, FloatArray]) -> str:
    if bounds[0][0] == 0.0:
        return "the points are already below the target at the least compute measured"
    return "the points do not reach the target"


@dataclass(frozen=True)
class MultiplierRow:
    """One curve vs IID at one target. Intervals may be open: 0 below, inf above (a side
    that more than (1 - confidence) / 2 of the resamples leave open, see
    :func:`analysis.run_bootstrap.censored_interval`). ``data_bounds`` bound the data
    multiplier where a curve does not cross the target; ``data_open`` / ``fit_open`` are
    the fractions of resamples in which it is not crossed."""

    curve: str
    target: float
    data: float | None
    data_ci: tuple[float, float] | None
    fitted: float | None
    fitted_ci: tuple[float, float] | None
    extrapolated: bool
    note: str
    data_bounds: tuple[float, float] | None = None
    data_open: float = 0.0
    fit_open: float = 0.0

    @property
    def savings(self) -> float | None:
        value = self.data if self.data is not None else self.fitted
        return None if value is None else 1.0 - 1.0 / value


def ratio_resamples(
    boot: RunBootstrap, iid: str, prio: str, kind: str, columns: slice | list[int]
) -> tuple[FloatArray, FloatArray]:
    """Bounds (low, high) on the multiplier in every resample, (n_resamples, columns)."""
    a, b = boot.curves[iid].bounds(kind), boot.curves[prio].bounds(kind)
    low, high = ratio_bounds(
        (a[0][:, columns], a[1][:, columns]), (b[0][:, columns], b[1][:, columns])
    )
    failed = np.isnan(a[0][:, columns]) | np.isnan(b[0][:, columns])  # refit failed
    return np.where(failed, np.nan, low), np.where(failed, np.nan, high)


def open_fraction(low: FloatArray, high: FloatArray) -> FloatArray:
    """Per column, the fraction of (non-failed) resamples whose bounds do not meet."""
    ok = ~np.isnan(low)
    with np.errstate(invalid="ignore"):
        return np.asarray(((low != high) & ok).sum(axis=0) / np.maximum(ok.sum(axis=0), 1))


def _ci(low: FloatArray, high: FloatArray, boot: RunBootstrap) -> tuple[float, float] | None:
    """The interval of one column of multiplier bounds; None without resampling or when
    every refit failed."""
    if not boot.resampled or np.isnan(low).all():
        return None
    lower, upper = censored_interval(low, high, boot.confidence)
    return float(lower), float(upper)


def multiplier_rows(
    curves: list[Frontier],
    fits: dict[str, CurveFit],
    boot: RunBootstrap,
    n_report_targets: int,
) -> list[MultiplierRow]:
    """Each prioritized curve vs IID at the first ``n_report_targets`` of ``boot.targets``."""
    iid = next((c for c in curves if c.policy == "iid"), None)
    if iid is None:
        return []
    rows = []
    for curve in curves:
        if curve.policy == "iid":
            continue
        for j, target in enumerate(boot.targets[:n_report_targets]):
            data = compute_multiplier(iid, curve, float(target))
            notes = [] if data.reason is None else [f"data: {data.reason}"]
            fitted, extrapolated = None, False
            if iid.label in fits and curve.label in fits:
                result = compute_multiplier(fits[iid.label], fits[curve.label], float(target))
                fitted, extrapolated = result.multiplier, result.extrapolated
                if result.reason:
                    notes.append(f"fit: {result.reason}")
                elif extrapolated:
                    notes.append("fit extrapolated beyond the data")
            data_low, data_high = ratio_resamples(boot, iid.label, curve.label, "data", [j])
            fit_low, fit_high = ratio_resamples(boot, iid.label, curve.label, "fit", [j])
            data_open = float(open_fraction(data_low, data_high)[0]) if boot.resampled else 0.0
            fit_open = float(open_fraction(fit_low, fit_high)[0]) if boot.resampled else 0.0
            if data_open > 0.0:
                notes.append(f"data CI: target not crossed in {data_open:.0%} of resamples")
            rows.append(
                MultiplierRow(
                    curve=curve.label,
                    target=float(target),
                    data=data.multiplier,
                    data_ci=_ci(data_low[:, 0], data_high[:, 0], boot),
                    fitted=fitted,
                    fitted_ci=_ci(fit_low[:, 0], fit_high[:, 0], boot) if fits else None,
                    extrapolated=extrapolated,
                    note="; ".join(notes),
                    data_bounds=data.bounds if data.multiplier is None else None,
                    data_open=data_open,
                    fit_open=fit_open,
                )
            )
    return rows


@dataclass(frozen=True)
class MultiplierCurve:
    """Multiplier vs target error for one prioritized curve (NaN: undefined there); the
    band is the fitted multiplier's interval, NaN where it is open."""

    label: str
    policy: str
    targets: FloatArray
    data: FloatArray
    fitted: FloatArray
    fitted_band: tuple[FloatArray, FloatArray] | None
    extrapolated: NDArray[np.bool_] | None = None  # per target: a fitted curve extrapolates


def multiplier_curves(
    curves: list[Frontier], fits: dict[str, CurveFit], boot: RunBootstrap, first_target: int
) -> list[MultiplierCurve]:
    """Multiplier as a function of the target, for ``boot.targets[first_target:]``."""
    iid = next((c for c in curves if c.policy == "iid"), None)
    if iid is None:
        return []
    columns = slice(first_target, None)
    targets = boot.targets[columns]
    out = []
    for curve in curves:
        if curve.policy == "iid":
            continue
        data = crossed(crossing_bounds(iid.learning_curves, targets)) / crossed(
            crossing_bounds(curve.learning_curves, targets)
        )
        fitted = np.full(targets.shape, np.nan)
        band, extrapolated = None, None
        if iid.label in fits and curve.label in fits:
            c_iid = _fitted_compute(fits[iid.label], boot, targets)
            c_prio = _fitted_compute(fits[curve.label], boot, targets)
            fitted = c_iid / c_prio
            extrapolated = np.zeros(targets.shape, dtype=bool)
            for fit, value in ((fits[iid.label], c_iid), (fits[curve.label], c_prio)):
                with np.errstate(invalid="ignore"):
                    extrapolated |= (value < fit.compute_range[0]) | (value > fit.compute_range[1])
            if boot.resampled:
                low, high = ratio_resamples(boot, iid.label, curve.label, "fit", columns)
                lower, upper = censored_interval(low, high, boot.confidence)
                band = (
                    np.where(lower > 0, lower, np.nan),
                    np.where(np.isfinite(upper), upper, np.nan),
                )
        out.append(
            MultiplierCurve(curve.label, curve.policy, targets, data, fitted, band, extrapolated)
        )
    return out


def _fitted_compute(fit: CurveFit, boot: RunBootstrap, targets: FloatArray) -> FloatArray:
    return fit_compute_at_targets(fit.predict(boot.grid), boot.grid, fit.compute_range, targets)


@dataclass(frozen=True)
class SizeSavings:
    """Savings of one prioritized curve over IID at one learner size.

    The target is IID's final seed-averaged error at that size; the ratio is scorer
    parameters over learner parameters.
    """

    curve: str
    policy: str
    learner_size: str
    ratio: float
    target: float
    savings: float | None
    ci: tuple[float, float] | None


def size_savings(
    runs: list[SeedRuns],
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> list[SizeSavings]:
    """Per learner size: compute saved vs IID at IID's final error, with intervals from a
    bootstrap over runs (each size's seeds of both curves drawn with replacement)."""
    iid = next((r for r in runs if r.policy == "iid"), None)
    if iid is None:
        return []
    rng = np.random.default_rng(seed)
    iid_sizes = {s.learner_size: s for s in iid.sizes}
    out = []
    for curve in runs:
        if curve.policy == "iid" or curve.scorer_params <= 0:
            continue
        for size in curve.sizes:
            base = iid_sizes.get(size.learner_size)
            if base is None:
                continue
            base_error = base.mean_error()
            if not np.isfinite(base_error).any():
                continue
            target = np.array([float(np.nanmin(base_error))])

            point = _savings(base, size, target, None, None)
            ci = None
            if len(base.seeds) > 1 or len(size.seeds) > 1:
                samples = np.array(
                    [
                        _savings(
                            base,
                            size,
                            target,
                            rng.integers(0, len(base.seeds), len(base.seeds)),
                            rng.integers(0, len(size.seeds), len(size.seeds)),
                        )
                        for _ in range(n_resamples)
                    ]
                )
                ci = interval(samples, confidence) if np.isfinite(samples).mean() >= 0.5 else None
            out.append(
                SizeSavings(
                    curve=curve.label,
                    policy=curve.policy,
                    learner_size=size.learner_size,
                    ratio=curve.scorer_params / size.learner_params,
                    target=float(target[0]),
                    savings=point if math.isfinite(point) else None,
                    ci=ci,
                )
            )
    return out


def _savings(
    base: SizeRuns,
    size: SizeRuns,
    target: FloatArray,
    base_rows: NDArray[np.intp] | None,
    rows: NDArray[np.intp] | None,
) -> float:
    """1 - C_prio / C_iid at ``target`` for seed-averaged learning curves (NaN: not reached)."""
    base_mean, mean = base.mean_error(base_rows), size.mean_error(rows)
    ok_base, ok = np.isfinite(base_mean), np.isfinite(mean)
    c_iid = compute_at_targets(base.compute[ok_base], base_mean[ok_base], target)[0]
    c_prio = compute_at_targets(size.compute[ok], mean[ok], target)[0]
    return float(1.0 - c_prio / c_iid)


def recommend_scorer(runs: list[SeedRuns], rows: list[MultiplierRow]) -> list[str]:
    """Per policy, the smallest scorer keeping >= 90% of the best savings at the hardest
    report target (IID's best error); one sentence per policy, or why there is none."""
    if not rows:
        return []
    hardest = min(r.target for r in rows)
    params = {r.label: r.scorer_params for r in runs}
    out = []
    for policy in sorted({r.policy for r in runs if r.policy != "iid"}):
        options = [
            (params[row.curve], row.curve, row.savings)
            for row in rows
            if row.target == hardest
            and row.savings is not None
            and next(r.policy for r in runs if r.label == row.curve) == policy
        ]
        scorers = {p for p, _, _ in options}
        if len({r.scorer_params for r in runs if r.policy == policy}) < 2:
            out.append(
                f"{policy}: the sweep has one scorer size, so no scorer-size recommendation "
                "(vary scorer.size to get one)."
            )
            continue
        if not options:
            out.append(f"{policy}: no scorer size reaches IID's best error; no recommendation.")
            continue
        best = max(s for _, _, s in options if s is not None)
        if best <= 0:
            out.append(f"{policy}: no scorer size saves compute at IID's best error.")
            continue
        keep = min((o for o in options if o[2] >= KEEP_FRACTION * best), key=lambda o: o[0])
        out.append(
            f"{policy}: smallest scorer keeping ≥ {KEEP_FRACTION:.0%} of the best savings "
            f"({best:.0%}): {keep[1]} ({keep[0]:,} parameters, savings {keep[2]:.0%}; "
            f"{len(scorers)} scorer sizes compared)."
        )
    return out

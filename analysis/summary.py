"""The report's summary: where a policy saves compute over IID, where it costs, and where the
curves cross, over the whole range of targets (rules: docs/reading-reports.md).

For every prioritized curve the targets are errors spread over IID's frontier (log-spaced
from its worst to its best error, :func:`analysis.multiplier.target_sweep`; those IID itself
does not cross in the data are left out).
At each target the data multiplier (:mod:`analysis.multiplier`, learning curves
interpolated, never beyond the data) has a bootstrap interval over runs, censored where a
resample does not cross the target (:func:`analysis.run_bootstrap.censored_interval`):

* the interval is above 1: the policy **saves** compute there;
* below 1: it **costs** compute there;
* it includes 1, or the cells have one seed (no interval): **not distinguishable**.

Consecutive targets with the same verdict form a stretch, stated with its range of errors,
IID's compute there, and the multipliers and interval ends seen in it. The **crossover** is
where the multiplier passes 1: from the fitted curves when both curves are fitted, else from
the data; its interval comes from the same resamples (a resample that does not cross inside
the range bounds the crossover on one side). Nothing is picked: every stretch is stated.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from analysis.compute_at import crossed, crossing_bounds, fit_crossing_bounds, ratio_bounds
from analysis.curves import Frontier
from analysis.fit import CurveFit
from analysis.multiplier import open_fraction, ratio_resamples
from analysis.run_bootstrap import RunBootstrap, censored_interval

FloatArray = NDArray[np.float64]
Verdict = Literal["saves", "costs", "not distinguishable"]


@dataclass(frozen=True)
class Stretch:
    """Consecutive targets (easiest first) with one verdict."""

    verdict: Verdict
    errors: tuple[float, float]  # easiest and hardest target
    iid_compute: tuple[float, float]  # IID's compute at those targets (data)
    multipliers: tuple[float, float] | None  # least and largest where both curves cross
    interval: tuple[float, float] | None  # least lower and largest upper interval end
    n_targets: int
    n_bounded: int  # targets where a curve does not cross in the data: the multiplier is a bound


@dataclass(frozen=True)
class Crossover:
    """Where the multiplier passes 1: the error and IID's compute there, with intervals
    (ends 0 / inf where open); ``source`` is ``fit`` or ``data``."""

    error: float
    compute: float | None
    error_ci: tuple[float, float] | None
    compute_ci: tuple[float, float] | None
    source: str
    direction: str  # "saves below" (the policy saves at harder targets) or "costs below"
    uncrossed: float  # fraction of resamples without a crossing inside the range


@dataclass(frozen=True)
class CurveSummary:
    curve: str
    resampled: bool
    targets: FloatArray
    intervals: list[tuple[float, float] | None]  # per target (None: one seed)
    verdicts: list[Verdict]
    stretches: list[Stretch]
    crossovers: list[Crossover]
    open_fraction: FloatArray  # per target: resamples in which a curve does not cross


def verdict(interval: tuple[float, float] | None) -> Verdict:
    """saves: the interval is above 1; costs: below 1; otherwise (or without an interval)
    not distinguishable."""
    if interval is None:
        return "not distinguishable"
    if interval[0] > 1.0:
        return "saves"
    if interval[1] < 1.0:
        return "costs"
    return "not distinguishable"


def summarise_curve(
    iid: Frontier,
    curve: Frontier,
    fits: dict[str, CurveFit],
    boot: RunBootstrap,
) -> CurveSummary:
    """The verdicts of ``curve`` vs IID on the targets of ``boot`` within IID's error range,
    easiest first (module docstring)."""
    lowest, highest = float(iid.error.min()), float(iid.error.max())
    inside = np.flatnonzero((boot.targets >= lowest) & (boot.targets <= highest))
    _, unique = np.unique(boot.targets[inside], return_index=True)
    columns = inside[unique][::-1]  # descending error: easiest first
    targets = boot.targets[columns]
    iid_bounds = crossing_bounds(iid.learning_curves, targets)
    keep = iid_bounds[0] == iid_bounds[1]  # IID crosses them in the data (not at its start)
    index = columns[keep]
    targets, iid_compute = targets[keep], iid_bounds[0][keep]
    point_low, point_high = ratio_bounds(
        (iid_bounds[0][keep], iid_bounds[1][keep]), crossing_bounds(curve.learning_curves, targets)
    )
    low, high = ratio_resamples(boot, iid.label, curve.label, "data", list(index))
    intervals: list[tuple[float, float] | None] = [None] * targets.size
    if boot.resampled and targets.size:
        lower, upper = censored_interval(low, high, boot.confidence)
        intervals = [(float(a), float(b)) for a, b in zip(lower, upper, strict=True)]
    verdicts = [verdict(i) for i in intervals]
    stretches = []
    start = 0
    for j in range(1, targets.size + 1):
        if j == targets.size or verdicts[j] != verdicts[start]:
            part = slice(start, j)
            met = point_low[part] == point_high[part]
            points = point_low[part][met]
            shown = [i for i in intervals[part] if i is not None]
            stretches.append(
                Stretch(
                    verdict=verdicts[start],
                    errors=(float(targets[start]), float(targets[j - 1])),
                    iid_compute=(float(iid_compute[start]), float(iid_compute[j - 1])),
                    multipliers=(float(points.min()), float(points.max())) if points.size else None,
                    interval=(min(i[0] for i in shown), max(i[1] for i in shown))
                    if shown
                    else None,
                    n_targets=j - start,
                    n_bounded=int((~met).sum()),
                )
            )
            start = j
    return CurveSummary(
        curve=curve.label,
        resampled=boot.resampled,
        targets=targets,
        intervals=intervals,
        verdicts=verdicts,
        stretches=stretches,
        crossovers=_crossovers(iid, curve, fits, boot, index, targets, (point_low, point_high)),
        open_fraction=open_fraction(low, high) if boot.resampled else np.zeros(targets.size),
    )


def _sign_changes(log_m: FloatArray) -> list[int]:
    """Indices j where log_m changes sign between j and the next finite value."""
    finite = np.flatnonzero(np.isfinite(log_m))
    return [int(a) for a, b in itertools.pairwise(finite) if log_m[a] * log_m[b] < 0]


def _crossing_at(log_t: FloatArray, log_m: FloatArray, j: int) -> float:
    """log target at which log_m passes 0 between j and the next finite value."""
    k = j + 1 + int(np.flatnonzero(np.isfinite(log_m[j + 1 :]))[0])
    fraction = log_m[j] / (log_m[j] - log_m[k])
    return float(log_t[j] + fraction * (log_t[k] - log_t[j]))


def _crossovers(
    iid: Frontier,
    curve: Frontier,
    fits: dict[str, CurveFit],
    boot: RunBootstrap,
    index: NDArray[np.intp],
    targets: FloatArray,
    data_point: tuple[FloatArray, FloatArray],
) -> list[Crossover]:
    if targets.size < 2:
        return []
    log_t = np.log(targets)
    fitted = iid.label in fits and curve.label in fits
    if fitted:
        source = "fit"
        iid_fit, prio_fit = fits[iid.label], fits[curve.label]
        c_iid = crossed(
            fit_crossing_bounds(
                iid_fit.predict(boot.grid), boot.grid, iid_fit.compute_range, targets
            )
        )
        c_prio = crossed(
            fit_crossing_bounds(
                prio_fit.predict(boot.grid), boot.grid, prio_fit.compute_range, targets
            )
        )
        with np.errstate(invalid="ignore"):
            log_m = np.log(c_iid / c_prio)
    else:
        source = "data"
        c_iid = crossed(crossing_bounds(iid.learning_curves, targets))
        with np.errstate(divide="ignore", invalid="ignore"):
            log_m = np.log(crossed(data_point))
    kind = "fit" if fitted else "data"
    low, high = ratio_resamples(boot, iid.label, curve.label, kind, list(index))
    iid_low, iid_high = boot.curves[iid.label].bounds(kind)
    out = []
    for j in _sign_changes(log_m):
        at = _crossing_at(log_t, log_m, j)
        compute = float(np.exp(np.interp(-at, -log_t, np.log(c_iid))))
        direction = "saves below" if log_m[j] < 0 else "costs below"
        error_ci, compute_ci, uncrossed = None, None, 0.0
        if boot.resampled:
            error_ci, compute_ci, uncrossed = _crossover_interval(
                at, log_t, low, high, iid_low[:, index], iid_high[:, index], log_m[j] < 0, boot
            )
        out.append(
            Crossover(math.exp(at), compute, error_ci, compute_ci, source, direction, uncrossed)
        )
    return out


def _crossover_interval(
    at: float,
    log_t: FloatArray,
    low: FloatArray,
    high: FloatArray,
    iid_low: FloatArray,
    iid_high: FloatArray,
    saves_below: bool,
    boot: RunBootstrap,
) -> tuple[tuple[float, float], tuple[float, float], float]:
    """Per resample, the crossing nearest ``at``; one without a crossing in the range bounds
    it on the side its multipliers say (all on the easy side's sign: at harder targets)."""
    n = low.shape[0]
    error_low, error_high = np.full(n, np.nan), np.full(n, np.nan)
    compute_low, compute_high = np.full(n, np.nan), np.full(n, np.nan)
    easy_sign = -1.0 if saves_below else 1.0  # sign of log m at the easy end
    for i in range(n):
        if np.isnan(low[i]).all():
            continue  # failed refit
        value = np.where(low[i] == high[i], low[i], np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_m = np.log(value)
        changes = _sign_changes(log_m)
        iid_c = np.where(iid_low[i] == iid_high[i], iid_low[i], np.nan)
        if changes:
            found = min((_crossing_at(log_t, log_m, j) for j in changes), key=lambda x: abs(x - at))
            error_low[i] = error_high[i] = math.exp(found)
            ok = np.isfinite(iid_c)
            if ok.sum() >= 2:
                compute_low[i] = compute_high[i] = float(
                    np.exp(np.interp(-found, -log_t[ok], np.log(iid_c[ok])))
                )
            continue
        signs = np.sign(log_m[np.isfinite(log_m)])
        ok = np.flatnonzero(np.isfinite(iid_c))
        if signs.size and (signs == easy_sign).all():  # crosses at harder targets, if at all
            error_low[i], error_high[i] = 0.0, float(np.exp(log_t[-1]))
            compute_low[i] = iid_c[ok[-1]] if ok.size else 0.0
            compute_high[i] = np.inf
        elif signs.size and (signs == -easy_sign).all():  # crossed at easier targets
            error_low[i], error_high[i] = float(np.exp(log_t[0])), np.inf
            compute_low[i] = 0.0
            compute_high[i] = iid_c[ok[0]] if ok.size else np.inf
        else:
            error_low[i], error_high[i] = 0.0, np.inf
            compute_low[i], compute_high[i] = 0.0, np.inf
    uncrossed = float(np.mean(error_low[~np.isnan(error_low)] != error_high[~np.isnan(error_low)]))
    e = censored_interval(error_low, error_high, boot.confidence)
    c = censored_interval(compute_low, compute_high, boot.confidence)
    return (float(e[0]), float(e[1])), (float(c[0]), float(c[1])), uncrossed


# --- text ----------------------------------------------------------------------------------


def _times(value: float) -> str:
    return f"{value:.2f}×" if math.isfinite(value) else "∞"


def interval_text(interval: tuple[float, float], unit: str = "×") -> str:
    """[a, b], with open ends written as ≤ b, ≥ a or 'unbounded'."""
    low, high = interval
    fmt = (lambda v: f"{v:.2f}") if unit == "×" else (lambda v: f"{v:.3g}")
    if low <= 0 and not math.isfinite(high):
        return "unbounded"
    if low <= 0:
        return f"≤ {fmt(high)}{unit}"
    if not math.isfinite(high):
        return f"≥ {fmt(low)}{unit}"
    return f"{fmt(low)}–{fmt(high)}{unit}"


def _range(values: tuple[float, float], spec: str = ".3g") -> str:
    a, b = values
    return f"{a:{spec}}" if f"{a:{spec}}" == f"{b:{spec}}" else f"{a:{spec}}–{b:{spec}}"


def curve_lines(summary: CurveSummary, confidence: float) -> list[str]:
    """The summary's sentences for one curve."""
    name = summary.curve
    if not summary.stretches:
        return [f"{name}: no target in IID's error range is crossed by IID's data; no verdict."]
    lo, hi = float(summary.targets.min()), float(summary.targets.max())
    head = f"{name} vs IID over IID's error range {hi:.3g} to {lo:.3g} (data):"
    if not summary.resampled:
        head += " one seed per cell, so no intervals: not distinguishable at any target."
    parts = []
    for stretch in summary.stretches:
        where = f"at errors {_range(stretch.errors)} (IID compute {_range(stretch.iid_compute)})"
        values = (
            "a curve does not cross these targets (bounds only)"
            if stretch.multipliers is None
            else f"{_range(stretch.multipliers, '.2f')}×"
        )
        if stretch.multipliers is not None and stretch.n_bounded:
            values += f" ({stretch.n_bounded} of {stretch.n_targets} targets bounds only)"
        if not summary.resampled:
            parts.append(f"{values} {where}")
            continue
        ci = f"; {confidence:.0%} CI {interval_text(stretch.interval)}" if stretch.interval else ""
        parts.append(f"{stretch.verdict} {where}: {values}{ci}")
    lines = [head + " " + "; ".join(parts) + "."]
    for crossover in summary.crossovers:
        side = (
            "saves at harder targets, costs at easier ones"
            if crossover.direction == "saves below"
            else "costs at harder targets, saves at easier ones"
        )
        text = f"{name}: the {'fitted curves' if crossover.source == 'fit' else 'data'} cross at error {crossover.error:.3g}"
        if crossover.error_ci:
            text += f" ({confidence:.0%} CI {interval_text(crossover.error_ci, '')})"
        if crossover.compute is not None and math.isfinite(crossover.compute):
            text += f", IID compute {crossover.compute:.3g}"
            if crossover.compute_ci:
                text += f" ({interval_text(crossover.compute_ci, '')})"
        text += f" ({side})"
        if crossover.uncrossed > 0:
            text += f"; {crossover.uncrossed:.0%} of resamples do not cross inside the range"
        lines.append(text + ".")
    if not summary.crossovers and summary.resampled:
        verdicts = {s.verdict for s in summary.stretches}
        if verdicts == {"saves"} or verdicts == {"costs"}:
            lines.append(
                f"{name}: the multiplier stays on one side of 1 over the range (no crossover)."
            )
    return lines

"""Compute multipliers of prioritized policies over IID, with bootstrap intervals.

multiplier = C_iid(target) / C_policy(target): how many times more compute IID needs to
reach the same error; savings = 1 - 1 / multiplier, the fraction of IID's compute saved
(Evans et al. 2024, "Data curation via joint example selection", Sec. 4; Mindermann et
al. 2022). Both come from the data (log-log interpolation of the frontiers, never beyond
them) and from the fitted curves (which may extrapolate, flagged). Intervals come from
:mod:`analysis.bootstrap` (seeds resampled), so they are pure functions of its arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from analysis.bootstrap import (
    SeedBootstrap,
    compute_at_targets,
    fit_compute_at_targets,
    interval,
)
from analysis.curves import Frontier, SeedRuns, SizeRuns
from analysis.fit import CurveFit, compute_multiplier

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
class MultiplierRow:
    curve: str
    target: float
    data: float | None
    data_ci: tuple[float, float] | None
    fitted: float | None
    fitted_ci: tuple[float, float] | None
    extrapolated: bool
    note: str

    @property
    def savings(self) -> float | None:
        value = self.data if self.data is not None else self.fitted
        return None if value is None else 1.0 - 1.0 / value


def _ratio_samples(
    boot: SeedBootstrap, iid: str, prio: str, kind: str, columns: slice | list[int]
) -> FloatArray:
    a, b = boot.curves[iid], boot.curves[prio]
    num = (a.data_compute if kind == "data" else a.fit_compute)[:, columns]
    den = (b.data_compute if kind == "data" else b.fit_compute)[:, columns]
    return np.asarray(num / den)


def _ci(samples: FloatArray, boot: SeedBootstrap) -> tuple[float, float] | None:
    """The interval of multiplier samples; None without resampling or with most undefined."""
    if not boot.resampled or np.isfinite(samples).mean() < 0.5:
        return None
    return interval(samples, boot.confidence)


def multiplier_rows(
    curves: list[Frontier],
    fits: dict[str, CurveFit],
    boot: SeedBootstrap,
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
            data = compute_multiplier(
                (iid.compute, iid.error), (curve.compute, curve.error), float(target)
            )
            notes = [] if data.reason is None else [f"data: {data.reason}"]
            fitted, extrapolated = None, False
            if iid.label in fits and curve.label in fits:
                result = compute_multiplier(fits[iid.label], fits[curve.label], float(target))
                fitted, extrapolated = result.multiplier, result.extrapolated
                if result.reason:
                    notes.append(f"fit: {result.reason}")
                elif extrapolated:
                    notes.append("fit extrapolated beyond the data")
            data_samples = _ratio_samples(boot, iid.label, curve.label, "data", [j])[:, 0]
            fit_samples = _ratio_samples(boot, iid.label, curve.label, "fit", [j])[:, 0]
            undefined = 1.0 - np.isfinite(data_samples).mean()
            if boot.resampled and data.multiplier is not None and undefined > 0.05:
                notes.append(f"data CI: target not crossed in {undefined:.0%} of resamples")
            rows.append(
                MultiplierRow(
                    curve=curve.label,
                    target=float(target),
                    data=data.multiplier,
                    data_ci=_ci(data_samples, boot) if data.multiplier is not None else None,
                    fitted=fitted,
                    fitted_ci=_ci(fit_samples, boot) if fitted is not None else None,
                    extrapolated=extrapolated,
                    note="; ".join(notes),
                )
            )
    return rows


@dataclass(frozen=True)
class MultiplierCurve:
    """Multiplier vs target error for one prioritized curve (NaN: undefined there)."""

    label: str
    policy: str
    targets: FloatArray
    data: FloatArray
    fitted: FloatArray
    fitted_band: tuple[FloatArray, FloatArray] | None


def multiplier_curves(
    curves: list[Frontier], fits: dict[str, CurveFit], boot: SeedBootstrap, first_target: int
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
        data = compute_at_targets(iid.compute, iid.error, targets) / compute_at_targets(
            curve.compute, curve.error, targets
        )
        samples = _ratio_samples(boot, iid.label, curve.label, "fit", columns)
        fitted = np.full(targets.shape, np.nan)
        band = None
        if iid.label in fits and curve.label in fits:
            fitted = _fitted_compute(fits[iid.label], boot, targets) / _fitted_compute(
                fits[curve.label], boot, targets
            )
            if boot.resampled:
                tail = 50.0 * (1.0 - boot.confidence)
                band = (_nanpercentile(samples, tail), _nanpercentile(samples, 100.0 - tail))
        out.append(MultiplierCurve(curve.label, curve.policy, targets, data, fitted, band))
    return out


def _fitted_compute(fit: CurveFit, boot: SeedBootstrap, targets: FloatArray) -> FloatArray:
    return fit_compute_at_targets(fit.predict(boot.grid), boot.grid, fit.compute_range, targets)


def _nanpercentile(samples: FloatArray, q: float) -> FloatArray:
    """Percentile per column over finite samples; NaN where fewer than half are finite."""
    out = np.full(samples.shape[1], np.nan)
    for j in range(samples.shape[1]):
        column = samples[:, j]
        finite = column[np.isfinite(column)]
        if finite.size and finite.size >= 0.5 * column.size:
            out[j] = np.percentile(finite, q)
    return out


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
    runs: list[SeedRuns], n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> list[SizeSavings]:
    """Per learner size: compute saved vs IID at IID's final error, with seed-bootstrap CIs."""
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

"""Every curve against IID: the fits, the bootstrap over runs, the multipliers, the
summary's verdicts and the extrapolation beyond the largest budget, computed once for the
report (``analysis.report``) and for tests that build their own runs.

:func:`compare` is pure: runs in, a :class:`Comparison` out, with ``notes`` for what could
not be done (the report lists them under "Skipped").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.curves import Frontier, SeedRuns, frontier_of
from analysis.extrapolate import Extrapolation, extrapolate
from analysis.fit import CurveFit
from analysis.model_selection import CurveAnalysis, analyse_frontier
from analysis.multiplier import (
    MultiplierCurve,
    MultiplierRow,
    multiplier_curves,
    multiplier_rows,
    report_targets,
    target_sweep,
)
from analysis.run_bootstrap import RunBootstrap, bootstrap_runs
from analysis.summary import CurveSummary, summarise_curve


@dataclass(frozen=True)
class Comparison:
    """The analyses of every curve and their comparison with IID (``iid`` None: none)."""

    analyses: list[CurveAnalysis]
    best: dict[str, CurveFit]  # the AIC-best fit of each curve that has one
    iid: Frontier | None
    boot: RunBootstrap
    rows: list[MultiplierRow]  # the report targets: IID's best error and two easier ones
    multiplier_curves: list[MultiplierCurve]
    summaries: list[CurveSummary]  # one per prioritized curve
    notes: list[str]
    extrapolations: list[Extrapolation]  # each prioritized curve at 10x and 100x its budget

    @property
    def curves(self) -> list[Frontier]:
        return [a.frontier for a in self.analyses]


def compare(runs: list[SeedRuns], n_resamples: int = 1000, seed: int = 0) -> Comparison:
    """Fit every curve's frontier, resample the runs, compare each curve with IID."""
    analyses: list[CurveAnalysis] = []
    notes: list[str] = []
    for curve_runs in runs:
        analysis, skipped = analyse_frontier(frontier_of(curve_runs))
        analyses.append(analysis)
        notes += skipped
    curves = [a.frontier for a in analyses]
    best = {a.frontier.label: a.best for a in analyses if a.best is not None}
    iid = next((c for c in curves if c.policy == "iid"), None)
    if iid is None and curves:
        notes.append("no IID curve: compute multipliers and savings need one; add policy iid")
    if iid is not None and not any(c.policy != "iid" for c in curves):
        notes.append("no prioritized curve: nothing to compare with IID")
    report = report_targets(iid) if iid is not None else np.array([])
    sweep = target_sweep(iid) if iid is not None else np.array([])
    boot = bootstrap_runs(runs, best, np.concatenate([report, sweep]), n_resamples, seed)
    summaries = [
        summarise_curve(iid, c, best, boot) for c in curves if iid is not None and c.policy != "iid"
    ]
    return Comparison(
        analyses=analyses,
        best=best,
        iid=iid,
        boot=boot,
        rows=multiplier_rows(curves, best, boot, len(report)),
        multiplier_curves=multiplier_curves(curves, best, boot, len(report)),
        summaries=summaries,
        notes=notes,
        extrapolations=extrapolate(iid, curves, best, boot) if iid is not None else [],
    )

"""The report: loads sweeps, fits their frontiers, compares policies, writes HTML/Markdown/plots.

Composition only: loading (``analysis.load``), frontiers (``analysis.curves``), the
comparison with IID (``analysis.comparison``: the family fitted to each frontier, the
bootstrap over runs, multipliers and the summary's verdicts), figures
(``analysis.plots``) and the text of the tables and pages (``analysis.render``) are
separate; this module runs them, collects what could not be done (``skipped``) and what to
be careful about (``caveats``, and the summary's verdicts), writes the files and logs them
as artifacts of each sweep's MLflow parent run. Bad input never crashes it: a step that
cannot run is listed under "Skipped" instead.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from activescale import schema
from analysis.comparison import compare
from analysis.curves import Frontier, SeedRuns, seed_runs, usable_points
from analysis.extrapolate import Extrapolation, check_text, summary_line
from analysis.load import Coverage, SweepData, load_runs, load_tuned
from analysis.model_selection import MIN_FIT_POINTS, CurveAnalysis, HoldoutResult
from analysis.multiplier import MultiplierRow, recommend_scorer, size_savings
from analysis.plots import learning_curves_plot, multiplier_plot, savings_ratio_plot, scaling_plot
from analysis.render import (
    FigureText,
    html_page,
    learning_caption,
    markdown_page,
    multiplier_caption,
    savings_caption,
    scaling_caption,
    sections,
    tuned_rows,
)
from analysis.run_bootstrap import CONFIDENCE, RunBootstrap
from analysis.size_order import frontier_line, worse_larger_sizes
from analysis.summary import CurveSummary, curve_lines, interval_text
from analysis.summary import verdict as verdict_of

FEW_POINTS = 6
"""Below this many frontier points a three-parameter fit is barely constrained."""
HOLDOUT_TOLERANCE = 0.1
"""A best fit that misses a held-out budget by more than this (relative) fails the check."""


@dataclass
class ReportResult:
    html: Path
    markdown: Path
    plots: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)


def _png(fig: Figure, path: Path) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=130)
    path.write_bytes(buffer.getvalue())
    # Text stays text in the SVG (searchable, and checked in tests/test_report.py).
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(path.with_suffix(".svg"))
    return base64.b64encode(buffer.getvalue()).decode()


def write_report(
    sweeps: list[tuple[str, str]],
    out_dir: Path,
    log_artifacts: bool = True,
    n_resamples: int = 1000,
    seed: int = 0,
    grids: Mapping[str, frozenset[str] | None] | None = None,
) -> ReportResult:
    """Write report.html, report.md and the plots for (sweep name, tracking URI) pairs.

    ``grids``: per sweep name, the run ids of its grid as configured now; the report covers
    exactly those (finished runs under the name outside it are listed as excluded). Without
    it every finished run of the name is read, and the summary says so.

    Raises:
        LoadError: no sweep could be read or none has a finished run. Everything after
            loading renders what it can and lists the rest under "Skipped".
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    data: SweepData = load_runs(sweeps, grids)
    frame, skipped = data.frame, list(data.skipped)
    usable, dropped = usable_points(frame)
    skipped += dropped
    runs = seed_runs(usable)
    comparison = compare(runs, n_resamples, seed)
    skipped += comparison.notes
    analyses, curves, best = comparison.analyses, comparison.curves, comparison.best
    iid, boot, rows = comparison.iid, comparison.boot, comparison.rows
    mult_curves, summaries = comparison.multiplier_curves, comparison.summaries
    by_size = size_savings(runs, n_resamples, seed)
    recommendations = recommend_scorer(runs, rows)
    cosine = "schedule" not in usable or bool((usable["schedule"] != "wsd").any())
    extrapolations = comparison.extrapolations
    caveats = _caveats(analyses, runs, boot, rows, summaries, cosine)
    caveats += [line for curve in runs for line in worse_larger_sizes(curve)]
    caveats += _extrapolation_caveats(extrapolations)

    import matplotlib.pyplot as plt

    figures: dict[str, tuple[Figure, str, str]] = {}
    several_seeds = any(c.n_seeds > 1 for c in curves)
    if curves:
        figures["scaling"] = (
            scaling_plot(usable, curves, best, boot),
            "Error vs compute",
            scaling_caption(several_seeds, any(boot.band(c.label) is not None for c in curves)),
        )
    if any(np.isfinite(c.fitted).any() or np.isfinite(c.data).any() for c in mult_curves):
        figures["multiplier"] = (
            multiplier_plot(mult_curves, float(iid.error.min()) if iid is not None else None),
            "Compute multiplier vs target error",
            multiplier_caption(mult_curves),
        )
    if len({round(s.ratio, 12) for s in by_size}) >= 2:
        figures["savings_ratio"] = (
            savings_ratio_plot(by_size),
            "Savings vs scorer/learner parameter ratio",
            savings_caption(any(s.ci is not None for s in by_size)),
        )
    if runs:
        figures["learning_curves"] = (
            learning_curves_plot(runs),
            "Learning curves per learner size",
            learning_caption(any(r.max_seeds > 1 for r in runs)),
        )
    shown: dict[str, FigureText] = {}
    plots: list[Path] = []
    for name, (fig, heading, caption) in figures.items():
        shown[name] = FigureText(heading, caption, _png(fig, out_dir / f"{name}.png"))
        plots += [out_dir / f"{name}.png", out_dir / f"{name}.svg"]
        plt.close(fig)

    title = ", ".join(name for name, _ in sweeps)
    summary = [
        *_coverage_lines(data.coverage),
        *schedule_lines(frame),
        *_summary(frame, rows, boot, summaries),
        *_scaling_lines(comparison.iid, runs, extrapolations),
    ]
    tuned = tuned_rows(usable, load_tuned(sweeps, data.all_parents))
    tables = sections(
        analyses,
        rows,
        by_size,
        recommendations,
        boot,
        _ledger(usable),
        tuned,
        _corrupted(usable),
        extrapolations,
    )
    html_path = out_dir / "report.html"
    html_path.write_text(html_page(title, summary, caveats, shown, tables, skipped))
    md_path = out_dir / "report.md"
    md_path.write_text(markdown_page(title, summary, caveats, shown, tables, skipped))
    if log_artifacts:
        _log(sweeps, data.parent_run_ids, out_dir)
    return ReportResult(html_path, md_path, plots, skipped, caveats)


def _summary(
    frame: pd.DataFrame,
    rows: list[MultiplierRow],
    boot: RunBootstrap,
    summaries: list[CurveSummary],
) -> list[str]:
    sizes = frame.drop_duplicates("learner_size").sort_values("learner_params")["learner_size"]
    seeds = frame["seed"].nunique()
    lines = [
        f"{frame['run'].nunique()} finished runs; policies: "
        f"{', '.join(sorted(frame['policy'].unique()))}; learner sizes: "
        f"{', '.join(map(str, sizes))}; {seeds} seed{'s' if seeds != 1 else ''}."
    ]
    for summary in summaries:
        lines += curve_lines(summary, boot.confidence)
    hardest = [r for r in rows if r.target == min(r.target for r in rows)] if rows else []
    for row in hardest:
        lines.append(_at_best_line(row, boot))
    if boot.resampled:
        lines.append(
            f"Intervals: percentile bootstrap over runs ({boot.n_resamples} resamples): the "
            "seeds of each (policy, scorer, learner size) are drawn with replacement, the "
            "frontiers rebuilt and the AIC-best family refitted (warm start) each time; a "
            "resample that does not cross a target bounds it on one side instead of being "
            "dropped. How to read them: docs/reading-reports.md."
        )
    return lines


def _scaling_lines(
    iid: Frontier | None, runs: list[SeedRuns], extrapolations: list[Extrapolation]
) -> list[str]:
    """IID's frontier by size, and each curve's multiplier extrapolated beyond its budget."""
    lines = []
    iid_runs = next((r for r in runs if iid is not None and r.label == iid.label), None)
    if iid is not None and iid_runs is not None and len(iid.compute):
        lines.append(frontier_line(iid, iid_runs))
    for label in dict.fromkeys(e.curve for e in extrapolations):
        line = summary_line([e for e in extrapolations if e.curve == label])
        if line:
            lines.append(line)
    return lines


def _extrapolation_caveats(extrapolations: list[Extrapolation]) -> list[str]:
    """Every extrapolated multiplier whose held-out check failed or could not be made."""
    out = []
    for e in extrapolations:
        check = e.check
        if check.ratio is not None and check.held:
            continue
        state = "failed" if check.ratio is not None else "could not be made"
        out.append(
            f"{e.curve}: the multiplier extrapolated to {e.factor:g}× the largest compute is "
            f"not supported by the data: its held-out check {state} ({check_text(check)})."
        )
    return out


def schedule_lines(frame: pd.DataFrame) -> list[str]:
    """What the frontier points are: cooldown branches of WSD runs, each the end of a run sized
    for its budget, or intermediate evaluations of cosine runs decaying over the full budget."""
    if "schedule" not in frame:
        return []
    lines = []
    wsd = frame[frame["schedule"] == "wsd"]
    if not wsd.empty:
        cooldowns = ", ".join(f"{c:.0%}" for c in sorted(wsd["cooldown"].dropna().unique()))
        lines.append(
            f"Schedule: warmup-stable-decay ({wsd['run'].nunique()} runs, cooldown {cooldowns} "
            "of each budget): frontier points are cooldown branches of a WSD run, each the end "
            "of a run sized for its budget; compute is that sized run's (the runs spent more: "
            "every branch's cooldown, metric run_flops)."
        )
    cosine = frame[frame["schedule"] != "wsd"]
    if not cosine.empty:
        lines.append(
            f"Schedule: cosine ({cosine['run'].nunique()} runs): frontier points are "
            "intermediate evaluations of a cosine run decaying over its full budget (see "
            "Caveats)."
        )
    return lines


def _coverage_lines(coverage: Mapping[str, Coverage]) -> list[str]:
    """Which runs the report covers, per sweep: the grid as configured now, or all of them."""
    lines = []
    for name, seen in coverage.items():
        if seen.grid is None:
            lines.append(
                f"{name}: every finished run under this name ({seen.finished}); the grid it "
                "was registered with is not known (pass the sweep's YAML, or register it "
                "again, to cover exactly its grid)."
            )
            continue
        line = (
            f"{name}: the {seen.grid} runs of the grid as configured now, {seen.finished} of "
            "them finished."
        )
        if seen.excluded:
            line += (
                f" {len(seen.excluded)} finished runs under this name are not in this grid "
                "(other overrides) and are excluded (listed under Skipped)."
            )
        lines.append(line)
    return lines


def _at_best_line(row: MultiplierRow, boot: RunBootstrap) -> str:
    """The multiplier at IID's best error: one target of the range above, for reference."""
    where = f"At IID's best error {row.target:.4g}"
    verdict = {"saves": "saves compute", "costs": "costs compute"}.get(
        verdict_of(row.data_ci) if boot.resampled else "", "not distinguishable"
    )
    ci = f" ({CONFIDENCE:.0%} CI {interval_text(row.data_ci)})" if row.data_ci else ""
    if row.data is not None:
        value = f"{row.data:.2f}× from the data{ci}"
    elif row.data_bounds is not None:
        value = f"{interval_text(row.data_bounds)} from the data ({row.note.split(';')[0]}){ci}"
    else:
        value = "no data multiplier"
    fitted = f"; {row.fitted:.2f}× from the fits" if row.fitted is not None else ""
    return f"{where}: {row.curve} {value}{fitted}: {verdict}."


def _caveats(
    analyses: list[CurveAnalysis],
    runs: list[SeedRuns],
    boot: RunBootstrap,
    rows: list[MultiplierRow],
    summaries: list[CurveSummary],
    cosine: bool = True,
) -> list[str]:
    """Every check that failed, by name: seeds, fits (weak, undecided, on a bound, missing
    held-out budgets), refits that failed, targets crossed in only part of the resamples."""
    out: list[str] = []
    if not boot.resampled:
        out.append(
            "Every (policy, learner size) has a single seed: no confidence intervals "
            "(run more seeds for them)."
        )
    elif any(r.max_seeds < 3 for r in runs):
        out.append(
            "Some cells have fewer than 3 seeds: the bootstrap over seeds understates the spread."
        )
    elif runs:
        out.append(
            f"With {min(r.max_seeds for r in runs)} seeds per cell the bootstrap has few distinct "
            "resamples; read the intervals as rough."
        )
    for a in analyses:
        label, n = a.frontier.label, len(a.frontier.compute)
        if MIN_FIT_POINTS <= n < FEW_POINTS:
            out.append(f"{label}: only {n} frontier points; the fits are weakly constrained.")
        fits = a.comparison.fits if a.comparison else []
        if len(fits) >= 2 and fits[1].aic - fits[0].aic < 2:
            out.append(
                f"{label}: {fits[0].family} and {fits[1].family} are within ΔAIC < 2; "
                "the data do not decide the family."
            )
        for family, why in a.comparison.skipped.items() if a.comparison else []:
            reason = why.split(";")[0].removeprefix(f"{family}: ")
            out.append(f"{label}: {family} rejected ({reason}).")
        best = a.best
        holdout = a.holdouts.get(best.family) if best else None
        if best is not None and isinstance(holdout, HoldoutResult):
            if holdout.max_abs_relative_error > HOLDOUT_TOLERANCE:
                out.append(
                    f"{label}: the {best.family} fit (AIC-best) misses held-out larger budgets "
                    f"by up to {holdout.max_abs_relative_error:.0%}; extrapolations are "
                    "unreliable."
                )
        elif best is not None and isinstance(holdout, str):
            reason = holdout.removeprefix(f"{best.family}: ")
            out.append(
                f"{label}: the held-out check of the {best.family} fit (AIC-best) failed: "
                f"refitted without the largest budgets, {reason}; its extrapolation is "
                "untested."
            )
        failures = boot.curves[label].failures if label in boot.curves else {}
        if failures and boot.resampled:
            n_failed = sum(failures.values())
            out.append(
                f"{label}: {n_failed} of {boot.n_resamples} bootstrap refits failed "
                f"({'; '.join(failures)}) and are left out of the intervals."
            )
    for row in rows:
        if row.data_open > 0:
            out.append(
                f"{row.curve} at error {row.target:.4g}: a curve does not cross the target in "
                f"{row.data_open:.0%} of the resamples (data); the interval is "
                + (
                    "open on that side."
                    if row.data_ci and (row.data_ci[0] <= 0 or math.isinf(row.data_ci[1]))
                    else "built from their bounds."
                )
            )
    for summary in summaries:
        partial = summary.open_fraction[summary.open_fraction > 0]
        if partial.size:
            out.append(
                f"{summary.curve}: over IID's error range, {partial.size} of "
                f"{summary.targets.size} targets are not crossed in some resamples (up to "
                f"{partial.max():.0%}); their intervals use the bounds those resamples give."
            )
    if any(r.extrapolated for r in rows):
        out.append(
            "Some fitted multipliers invert a curve beyond its data (marked 'extrapolated'); "
            "prefer the data columns where they exist."
        )
    if runs and cosine:
        out.append(
            "Frontier points include intermediate evaluations of runs with a decaying learning "
            "rate, which overstate the error a run sized for that budget would reach "
            "(optimizer.schedule: wsd makes every point a run sized for it: docs/schedules.md)."
        )
    return out


def _ledger(frame: pd.DataFrame) -> pd.DataFrame:
    """Share of the final total FLOPs spent on each ledger counter, per policy (mean over runs);
    the reference's pretraining as charged to the run (reference_cost)."""
    if frame.empty:
        return pd.DataFrame()
    last = frame.sort_values("eval_step").groupby("run").tail(1)
    columns = [c for c in last.columns if c.startswith("flops/") and c != "flops/scoring"]
    counters = last[columns].copy()
    pretrain = "flops/reference_pretrain"
    if pretrain in counters:  # the part charged to the run: a share of it under amortize
        others = counters.drop(columns=pretrain).fillna(0.0).sum(axis=1)
        counters[pretrain] = (last["flops"] - others).clip(lower=0.0)
    shares = counters.div(last["flops"], axis=0)
    shares["policy"] = last["policy"]
    table = shares.groupby("policy").mean()
    table.columns = [c.removeprefix("flops/") for c in table.columns]
    return table.loc[:, (table > 0).any()]


def _corrupted(frame: pd.DataFrame) -> pd.Series:
    """Per policy, the mean over runs of the final fraction of selected examples that were
    corrupted; only runs whose data say which examples are corrupted log it."""
    if frame.empty or schema.METRIC_SELECTED_CORRUPTED not in frame.columns:
        return pd.Series(dtype=float)
    known = frame[frame[schema.METRIC_SELECTED_CORRUPTED].notna()]
    last = known.sort_values("eval_step").groupby("run").tail(1)
    return last.groupby("policy")[schema.METRIC_SELECTED_CORRUPTED].mean()


def _log(sweeps: list[tuple[str, str]], parents: dict[str, str], out_dir: Path) -> None:
    from mlflow.tracking import MlflowClient

    for name, uri in sweeps:
        if name in parents:
            MlflowClient(tracking_uri=uri).log_artifacts(
                parents[name], str(out_dir), artifact_path=schema.ARTIFACT_REPORT
            )

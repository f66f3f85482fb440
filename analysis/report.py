"""The report: loads sweeps, fits their frontiers, compares policies, writes HTML/Markdown/plots.

Composition only: loading (``analysis.load``), frontiers (``analysis.curves``), fits
(``analysis.fit``), the bootstrap over seeds (``analysis.bootstrap``), multipliers
(``analysis.multiplier``) and figures (``analysis.plots``) are separate; this module runs
them, collects what could not be done (``skipped``) and what to be careful about
(``caveats``), writes the files and logs them as artifacts of each sweep's MLflow parent run.
Bad input never crashes it: a step that cannot run is listed under "Skipped" instead.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.bootstrap import SeedBootstrap, bootstrap_seeds
from analysis.curves import Frontier, SeedRuns, frontier_of, seed_runs, usable_points
from analysis.fit import (
    FAMILIES,
    MAX_EXTRAPOLATION,
    CurveFit,
    FamilyComparison,
    HoldoutResult,
    holdout_extrapolation,
    select_family,
)
from analysis.load import SweepData, load_runs, load_tuned
from analysis.multiplier import (
    MultiplierRow,
    SizeSavings,
    multiplier_curves,
    multiplier_rows,
    recommend_scorer,
    report_targets,
    size_savings,
    target_sweep,
)
from analysis.plots import learning_curves_plot, multiplier_plot, savings_ratio_plot, scaling_plot
from orchestrator.errors import FitError

REPORT_FAMILIES = ("power_law_offset", "exponential_offset", "power_law", "exponential")
MIN_FIT_POINTS = 3
FEW_POINTS = 6
"""Below this many frontier points a three-parameter fit is barely constrained."""
HOLDOUT_FRACTION = 0.2
CONFIDENCE = 0.95


@dataclass
class ReportResult:
    html: Path
    markdown: Path
    plots: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)


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


def _png(fig: Figure, path: Path) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=130)
    path.write_bytes(buffer.getvalue())
    fig.savefig(path.with_suffix(".svg"))
    return base64.b64encode(buffer.getvalue()).decode()


def _fmt(value: float | None, spec: str = ".3g") -> str:
    return "–" if value is None or not math.isfinite(value) else format(value, spec)


def _with_ci(value: float | None, ci: tuple[float, float] | None, spec: str = ".3g") -> str:
    if value is None:
        return "–"
    if ci is None:
        return _fmt(value, spec)
    return f"{_fmt(value, spec)} [{_fmt(ci[0], spec)}, {_fmt(ci[1], spec)}]"


def _savings_ci(ci: tuple[float, float] | None) -> tuple[float, float] | None:
    return None if ci is None else (1 - 1 / ci[0], 1 - 1 / ci[1])


def write_report(
    sweeps: list[tuple[str, str]],
    out_dir: Path,
    log_artifacts: bool = True,
    n_resamples: int = 1000,
    seed: int = 0,
) -> ReportResult:
    """Write report.html, report.md and the plots for (sweep name, tracking URI) pairs.

    Raises:
        LoadError: no sweep could be read or none has a finished run. Everything after
            loading renders what it can and lists the rest under "Skipped".
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    data: SweepData = load_runs(sweeps)
    frame, skipped = data.frame, list(data.skipped)
    usable, dropped = usable_points(frame)
    skipped += dropped
    runs = seed_runs(usable)
    analyses: list[CurveAnalysis] = []
    for curve_runs in runs:
        analysis, notes = analyse_frontier(frontier_of(curve_runs))
        analyses.append(analysis)
        skipped += notes
    curves = [a.frontier for a in analyses]
    best = {a.frontier.label: a.best for a in analyses if a.best is not None}

    iid = next((c for c in curves if c.policy == "iid"), None)
    if iid is None and curves:
        skipped.append("no IID curve: compute multipliers and savings need one; add policy iid")
    if iid is not None and not any(c.policy != "iid" for c in curves):
        skipped.append("no prioritized curve: nothing to compare with IID")
    report = report_targets(iid) if iid is not None else np.array([])
    sweep_targets = target_sweep(iid) if iid is not None else np.array([])
    boot = bootstrap_seeds(runs, best, np.concatenate([report, sweep_targets]), n_resamples, seed)
    rows = multiplier_rows(curves, best, boot, len(report))
    mult_curves = multiplier_curves(curves, best, boot, len(report))
    by_size = size_savings(runs, n_resamples, seed)
    recommendations = recommend_scorer(runs, rows)
    caveats = _caveats(analyses, runs, boot, rows)

    import matplotlib.pyplot as plt

    figures: dict[str, tuple[Figure, str, str]] = {}
    if curves:
        figures["scaling"] = (
            scaling_plot(usable, curves, best, boot),
            "Error vs compute",
            "Faint dots: every evaluation of every run. Markers: the frontier (seeds averaged; "
            "bars: std over seeds). Lines: the AIC-best fit, solid over the data, dashed to 3× "
            f"the largest compute; shaded: its {CONFIDENCE:.0%} bootstrap band over seeds "
            "(lighter beyond the data).",
        )
    if any(np.isfinite(c.fitted).any() or np.isfinite(c.data).any() for c in mult_curves):
        figures["multiplier"] = (
            multiplier_plot(mult_curves, float(iid.error.min()) if iid is not None else None),
            "Compute multiplier vs target error",
            "Line: from the fitted curves (shaded: bootstrap band over seeds); open markers: "
            "from the frontiers, interpolated (defined only where both cross the target). "
            "Right of the dashed line the targets are beyond IID's data (the fit extrapolates).",
        )
    if len({round(s.ratio, 12) for s in by_size}) >= 2:
        figures["savings_ratio"] = (
            savings_ratio_plot(by_size),
            "Savings vs scorer/learner parameter ratio",
            "Each point: one learner size, target = IID's final error at that size "
            "(seed-averaged learning curves, log-log interpolation; bars: bootstrap over seeds).",
        )
    if runs:
        figures["learning_curves"] = (
            learning_curves_plot(runs),
            "Learning curves per learner size",
            "Error vs total FLOPs of each learner size, one panel per curve, mean over seeds; "
            "shaded: best to worst seed.",
        )
    images: dict[str, str] = {}
    plots: list[Path] = []
    for name, (fig, _, _) in figures.items():
        images[name] = _png(fig, out_dir / f"{name}.png")
        plots += [out_dir / f"{name}.png", out_dir / f"{name}.svg"]
        plt.close(fig)

    title = ", ".join(name for name, _ in sweeps)
    summary = _summary(frame, rows, boot)
    tuned = _tuned_rows(usable, load_tuned(sweeps, data.parent_run_ids))
    sections = _sections(analyses, rows, by_size, recommendations, boot, _ledger(usable), tuned)
    figure_html = {
        name: f"<h2>{html.escape(heading)}</h2>"
        f'<figure><img alt="{html.escape(heading)}" src="data:image/png;base64,{images[name]}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for name, (_, heading, caption) in figures.items()
    }
    body = [figure_html.get("scaling", "")]
    body += [h for h, _ in sections[:3]]
    body += [figure_html.get("multiplier", ""), figure_html.get("savings_ratio", "")]
    body += [h for h, _ in sections[3:]]
    body.append(figure_html.get("learning_curves", ""))
    page = _HTML.format(
        title=html.escape(title),
        summary="".join(f"<p>{html.escape(line)}</p>" for line in summary),
        caveats="".join(f"<li>{html.escape(c)}</li>" for c in caveats) or "<li>none</li>",
        body="\n".join(b for b in body if b),
        skipped=_skipped_html(skipped),
    )
    html_path = out_dir / "report.html"
    html_path.write_text(page)
    md_path = out_dir / "report.md"
    md_figures = "".join(
        f"![{heading}]({name}.png)\n\n" for name, (_, heading, _) in figures.items()
    )
    md_path.write_text(
        f"# activescale report: {title}\n\n"
        + "\n\n".join(summary)
        + "\n\n## Caveats\n\n"
        + ("\n".join(f"- {c}" for c in caveats) or "- none")
        + "\n\n"
        + md_figures
        + "\n\n".join(md for _, md in sections)
        + "\n\n## Skipped\n\n"
        + ("\n".join(f"- {s}" for s in skipped) or "- nothing")
        + "\n"
    )
    if log_artifacts:
        _log(sweeps, data.parent_run_ids, out_dir)
    return ReportResult(html_path, md_path, plots, skipped, caveats)


def _summary(frame: pd.DataFrame, rows: list[MultiplierRow], boot: SeedBootstrap) -> list[str]:
    sizes = frame.drop_duplicates("learner_size").sort_values("learner_params")["learner_size"]
    lines = [
        f"{frame['run'].nunique()} finished runs; policies: "
        f"{', '.join(sorted(frame['policy'].unique()))}; learner sizes: "
        f"{', '.join(map(str, sizes))}; seeds: {frame['seed'].nunique()}."
    ]
    hardest = [r for r in rows if r.target == min(r.target for r in rows)] if rows else []
    for row in hardest:
        value, ci, source = (
            (row.data, row.data_ci, "interpolated from the data")
            if row.data is not None
            else (row.fitted, row.fitted_ci, "from the fitted curves (extrapolated)")
        )
        if value is None:
            lines.append(f"{row.curve}: does not reach IID's best error {row.target:.4g}.")
            continue
        ci_text = f" ({CONFIDENCE:.0%} CI {ci[0]:.2f}–{ci[1]:.2f})" if ci else ""
        if ci is not None and ci[0] <= 1 <= ci[1]:
            verdict = "is not distinguishable from IID in compute"
        else:
            verdict = "saves compute" if value > 1 else "costs more compute than IID"
        lines.append(
            f"{row.curve} {verdict} at IID's best error {row.target:.4g}: multiplier "
            f"{value:.2f}×{ci_text}, savings {1 - 1 / value:+.0%}, {source}."
        )
    if boot.resampled:
        lines.append(
            f"Intervals: percentile bootstrap over runs ({boot.n_resamples} resamples): the "
            "seeds of each (policy, scorer, learner size) are drawn with replacement, the "
            "frontiers rebuilt and the AIC-best family refitted (warm start) each time."
        )
    return lines


def _caveats(
    analyses: list[CurveAnalysis],
    runs: list[SeedRuns],
    boot: SeedBootstrap,
    rows: list[MultiplierRow],
) -> list[str]:
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
        if a.comparison and a.comparison.skipped:
            out.append(
                f"{label}: {len(a.comparison.skipped)} famil"
                f"{'y' if len(a.comparison.skipped) == 1 else 'ies'} rejected (optimum on a bound "
                "or too few points), see Skipped."
            )
        best = a.best
        holdout = a.holdouts.get(best.family) if best else None
        if isinstance(holdout, HoldoutResult) and holdout.max_abs_relative_error > 0.1:
            out.append(
                f"{label}: the {best.family if best else ''} fit misses held-out larger budgets "
                f"by up to {holdout.max_abs_relative_error:.0%}; extrapolations are unreliable."
            )
        failures = boot.curves[label].failures if label in boot.curves else {}
        if failures and boot.resampled:
            n_failed = sum(failures.values())
            out.append(
                f"{label}: {n_failed} of {boot.n_resamples} bootstrap refits failed "
                f"({'; '.join(failures)}) and are left out of the intervals."
            )
    if any(r.extrapolated for r in rows):
        out.append(
            "Some fitted multipliers invert a curve beyond its data (marked 'extrapolated'); "
            "prefer the data columns where they exist."
        )
    if runs:
        out.append(
            "Frontier points include intermediate evaluations of runs with a decaying learning "
            "rate, which overstate the error a run sized for that budget would reach."
        )
    return out


def _ledger(frame: pd.DataFrame) -> pd.DataFrame:
    """Share of the final total FLOPs spent on each ledger counter, per policy (mean over runs)."""
    if frame.empty:
        return pd.DataFrame()
    last = frame.sort_values("eval_step").groupby("run").tail(1)
    columns = [c for c in last.columns if c.startswith("flops/") and c != "flops/scoring"]
    shares = last[columns].div(last["flops"], axis=0)
    shares["policy"] = last["policy"]
    table = shares.groupby("policy").mean()
    table.columns = [c.removeprefix("flops/") for c in table.columns]
    return table.loc[:, (table > 0).any()]


def _fit_rows(analyses: list[CurveAnalysis], boot: SeedBootstrap) -> list[list[str]]:
    rows = []
    for a in analyses:
        if a.comparison is None:
            continue
        fits = a.comparison.fits
        best_aic = fits[0].aic if fits else 0.0
        best_bic = min((f.bic for f in fits), default=0.0)
        for rank, fit in enumerate(fits):
            intervals = (
                boot.curves[a.frontier.label].param_intervals(boot.confidence)
                if rank == 0 and boot.resampled and a.frontier.label in boot.curves
                else {}
            )
            params = ", ".join(
                f"{k} = {_with_ci(v, intervals.get(k), '.4g')}" for k, v in fit.params.items()
            )
            holdout = a.holdouts.get(fit.family)
            held = (
                f"{np.mean(np.abs(holdout.relative_error)):.1%} (max "
                f"{holdout.max_abs_relative_error:.1%}, {holdout.compute.size} pts)"
                if isinstance(holdout, HoldoutResult)
                else (holdout or "–")
            )
            rows.append(
                [
                    a.frontier.label,
                    fit.family + (" ★" if rank == 0 else ""),
                    params,
                    f"{fit.aic:.1f}",
                    f"{fit.aic - best_aic:.1f}",
                    f"{fit.bic - best_bic:.1f}",
                    held,
                    str(fit.n_points),
                ]
            )
    return rows


def _winner_lines(analyses: list[CurveAnalysis]) -> list[str]:
    lines = []
    for a in analyses:
        fits = a.comparison.fits if a.comparison else []
        if not fits:
            continue
        if len(fits) == 1:
            lines.append(f"{a.frontier.label}: {fits[0].family} is the only family that fitted.")
            continue
        delta = fits[1].aic - fits[0].aic
        weight = 1.0 / sum(math.exp(-(f.aic - fits[0].aic) / 2) for f in fits)
        lines.append(
            f"{a.frontier.label}: {fits[0].family} wins by ΔAIC = {delta:.1f} over "
            f"{fits[1].family} (Akaike weight {weight:.2f})"
            + ("; not decisive (ΔAIC < 2)." if delta < 2 else ".")
        )
    return lines


def _sections(
    analyses: list[CurveAnalysis],
    rows: list[MultiplierRow],
    by_size: list[SizeSavings],
    recommendations: list[str],
    boot: SeedBootstrap,
    ledger: pd.DataFrame,
    tuned: list[list[str]],
) -> list[tuple[str, str]]:
    """(HTML, Markdown) pairs: frontiers, fits, multipliers, savings by size, ledger, tuning."""
    ci = f"{CONFIDENCE:.0%} CI" if boot.resampled else "no CI (one seed)"
    frontier_rows = [
        [
            a.frontier.label,
            str(len(a.frontier.compute)),
            _fmt(float(a.frontier.compute.max()) if len(a.frontier.compute) else None),
            _fmt(float(a.frontier.error.min()) if len(a.frontier.error) else None, ".4f"),
            a.frontier.learner_size[-1] if a.frontier.learner_size else "–",
            str(a.frontier.n_seeds),
        ]
        for a in analyses
    ]
    mult_rows = [
        [
            r.curve,
            f"{r.target:.4f}",
            _with_ci(r.data, r.data_ci),
            _with_ci(r.fitted, r.fitted_ci),
            _with_ci(None if r.data is None else 1 - 1 / r.data, _savings_ci(r.data_ci), ".0%"),
            _with_ci(
                None if r.fitted is None else 1 - 1 / r.fitted, _savings_ci(r.fitted_ci), ".0%"
            ),
            r.note,
        ]
        for r in rows
    ]
    size_rows = [
        [
            s.curve,
            s.learner_size,
            f"{s.ratio:.3g}",
            f"{s.target:.4f}",
            _with_ci(s.savings, s.ci, ".0%"),
        ]
        for s in by_size
    ]
    ledger_rows = [
        [str(policy), *(f"{v:.1%}" for v in values)] for policy, values in ledger.iterrows()
    ]
    tables = [
        (
            "Frontiers",
            ["curve", "points", "max FLOPs", "best error", "best size", "seeds"],
            frontier_rows,
            "Lower envelope of error vs total FLOPs over learner sizes and evaluation steps, "
            "each point averaged over its seeds (duplicated runs removed).",
            [],
        ),
        (
            "Fits and model comparison",
            [
                "curve",
                "family",
                f"parameters ({ci}, best family)",
                "AIC",
                "ΔAIC",
                "ΔBIC",
                "held-out |rel. error|",
                "points",
            ],
            _fit_rows(analyses, boot),
            "Huber loss (δ = 1e-3) on log error, L-BFGS-B from a grid of starts; ★ = lowest AIC. "
            f"Held out: each family refitted without the largest-compute {HOLDOUT_FRACTION:.0%} "
            "of the frontier and scored on it (mean and max |predicted − observed| / observed).",
            _winner_lines(analyses),
        ),
        (
            "Compute multiplier vs IID",
            [
                "curve",
                "target error",
                f"multiplier, data ({ci})",
                f"multiplier, fit ({ci})",
                "savings, data",
                "savings, fit",
                "note",
            ],
            mult_rows,
            "multiplier = C_iid(target) / C_policy(target) (> 1: the policy needs less compute); "
            "savings = 1 − 1/multiplier. Data: log-log interpolation of the frontiers (never "
            "beyond them). Fit: the AIC-best curves inverted (up to "
            f"{MAX_EXTRAPOLATION:g}× beyond the data). "
            "Targets: IID's best error and two easier ones.",
            [],
        ),
        (
            "Savings by learner size and scorer ratio",
            ["curve", "learner", "scorer/learner params", "target (IID final)", f"savings ({ci})"],
            size_rows,
            "Same learner size, seed-averaged learning curves; '–': the policy does not reach "
            "IID's final error within its run.",
            recommendations,
        ),
        (
            "FLOP ledger",
            ["policy", *map(str, ledger.columns)],
            ledger_rows,
            "Share of each run's final total FLOPs by counter (mean over runs).",
            [],
        ),
    ]
    if tuned:
        tables.append(
            (
                "Tuned hyperparameters",
                ["policy", "learner", "scorer", "tuned values (from_tuning)"],
                tuned,
                "Each run took its Optuna study's best values (activescale tune), so every "
                "size and policy is compared at its own tuned settings.",
                [],
            )
        )
    out = []
    for title, header, body, caption, notes in tables:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        cells = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body
        )
        extra = "".join(f"<p class=note>{html.escape(n)}</p>" for n in notes)
        table = f"<table><tr>{head}</tr>{cells}</table>" if body else "<p>nothing to show</p>"
        html_block = f"<h2>{title}</h2><p>{html.escape(caption)}</p>{table}{extra}"
        md = f"## {title}\n\n{caption}\n\n"
        if body:
            md += "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
            md += "\n".join("| " + " | ".join(row) + " |" for row in body)
        else:
            md += "nothing to show"
        md += "".join(f"\n\n{n}" for n in notes)
        out.append((html_block, md))
    return out


def _tuned_rows(frame: pd.DataFrame, tuned: dict[str, dict[str, Any]]) -> list[list[str]]:
    """One row per (policy, learner, scorer) with the tuned values its runs took."""
    if not tuned or frame.empty:
        return []
    cells = frame.drop_duplicates("config_id")[
        ["config_id", "policy", "learner_size", "scorer_size"]
    ]
    rows = {
        (str(c.policy), str(c.learner_size), str(c.scorer_size or "–")): ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in sorted(tuned[c.config_id].items())
        )
        for c in cells.itertuples()
        if c.config_id in tuned
    }
    return [[*key, values] for key, values in sorted(rows.items())]


def _skipped_html(skipped: list[str]) -> str:
    if not skipped:
        return "<ul><li>nothing</li></ul>"
    duplicates = [s for s in skipped if ": duplicate of run " in s]
    others = [s for s in skipped if s not in duplicates]
    items = "".join(f"<li>{html.escape(s)}</li>" for s in others)
    if duplicates:
        inner = "".join(f"<li>{html.escape(s)}</li>" for s in duplicates)
        items += (
            f"<li><details><summary>{len(duplicates)} duplicate runs of configs already "
            f"loaded (the latest finished run of each config is used)</summary><ul>{inner}"
            "</ul></details></li>"
        )
    return f"<ul>{items}</ul>"


def _log(sweeps: list[tuple[str, str]], parents: dict[str, str], out_dir: Path) -> None:
    from mlflow.tracking import MlflowClient

    for name, uri in sweeps:
        if name in parents:
            MlflowClient(tracking_uri=uri).log_artifacts(
                parents[name], str(out_dir), artifact_path="report"
            )


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>activescale report: {title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1050px; margin: 2em auto; color: #222;
       padding: 0 1em; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.85em; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }} img {{ max-width: 100%; }} p {{ color: #444; }}
figure {{ margin: 0.5em 0 1.5em; }} figcaption {{ color: #555; font-size: 0.9em; }}
.note {{ color: #222; }} .caveats li {{ color: #7a4a00; }}
</style></head><body>
<h1>activescale report: {title}</h1>
{summary}
<h2>Caveats</h2><ul class="caveats">{caveats}</ul>
{body}
<h2>Skipped</h2>{skipped}
</body></html>
"""

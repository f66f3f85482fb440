"""The report: loads a sweep, fits its frontiers, compares policies, writes HTML/Markdown/plots.

Composition only: loading (``analysis.load``), frontiers (``analysis.curves``), fits
(``analysis.fit``) and figures (``analysis.plots``) are separate and pure; this module turns
their results into files and logs them as artifacts of each sweep's MLflow parent run.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from analysis.curves import Frontier, frontiers
from analysis.fit import CurveFit, FamilyComparison, compute_multiplier, select_family
from analysis.load import SweepData, load_runs
from analysis.plots import learning_curves_plot, scaling_plot

REPORT_FAMILIES = ("power_law_offset", "exponential_offset", "power_law", "exponential")


@dataclass
class ReportResult:
    html: Path
    markdown: Path
    plots: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class MultiplierRow:
    curve: str
    target: float
    data: float | None
    fitted: float | None
    note: str


def fit_frontiers(curves: list[Frontier]) -> tuple[dict[str, FamilyComparison], list[str]]:
    comparisons: dict[str, FamilyComparison] = {}
    skipped: list[str] = []
    for curve in curves:
        if len(curve.compute) < 3:
            skipped.append(f"{curve.label}: {len(curve.compute)} frontier points, too few to fit")
            continue
        comparison = select_family(curve.compute, curve.error, REPORT_FAMILIES)
        comparisons[curve.label] = comparison
        skipped += [
            f"{curve.label}: {fam} not fitted ({why})" for fam, why in comparison.skipped.items()
        ]
    return comparisons, skipped


def multipliers(curves: list[Frontier], best: dict[str, CurveFit]) -> list[MultiplierRow]:
    """Compute multiplier of each prioritized curve vs IID at IID's final frontier error,
    and at two easier targets (the geometric quartiles of IID's frontier range)."""
    iid = next((c for c in curves if c.policy == "iid"), None)
    if iid is None:
        return []
    hi, lo = float(iid.error.max()), float(iid.error.min())
    targets = sorted(
        {
            lo,
            math.exp(0.75 * math.log(lo) + 0.25 * math.log(hi)),
            math.exp(0.5 * (math.log(lo) + math.log(hi))),
        }
    )
    rows = []
    for curve in curves:
        if curve.policy == "iid":
            continue
        for target in targets:
            data = compute_multiplier(
                (iid.compute, iid.error), (curve.compute, curve.error), target
            )
            note = data.reason or ""
            fitted = None
            if iid.label in best and curve.label in best:
                fit_result = compute_multiplier(best[iid.label], best[curve.label], target)
                fitted = fit_result.multiplier
                if fit_result.reason:
                    note = (note + "; " if note else "") + fit_result.reason
                elif fit_result.extrapolated:
                    note = (note + "; " if note else "") + "fit extrapolated"
            rows.append(MultiplierRow(curve.label, target, data.multiplier, fitted, note))
    return rows


def ledger_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Share of the final total FLOPs spent on each ledger counter, per policy (mean over runs)."""
    last = frame.sort_values("eval_step").groupby("run").tail(1)
    columns = [c for c in last.columns if c.startswith("flops/") and c != "flops/scoring"]
    shares = last[columns].div(last["flops"], axis=0)
    shares["policy"] = last["policy"]
    table = shares.groupby("policy").mean()
    table.columns = [c.removeprefix("flops/") for c in table.columns]
    return table.loc[:, (table > 0).any()]


def _png(fig: Figure, path: Path) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=130)
    path.write_bytes(buffer.getvalue())
    fig.savefig(path.with_suffix(".svg"))
    return base64.b64encode(buffer.getvalue()).decode()


def _fmt(value: float | None, spec: str = ".3g") -> str:
    return (
        "–"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else format(value, spec)
    )


def write_report(
    sweeps: list[tuple[str, str]], out_dir: Path, log_artifacts: bool = True
) -> ReportResult:
    """Write report.html, report.md and the plots for (sweep name, tracking URI) pairs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data: SweepData = load_runs(sweeps)
    frame = data.frame
    curves = frontiers(frame)
    comparisons, skipped = fit_frontiers(curves)
    skipped = data.skipped + skipped
    best = {label: c.best for label, c in comparisons.items() if c.fits}
    rows = multipliers(curves, best)

    import matplotlib.pyplot as plt

    figures = {
        "scaling": scaling_plot(frame, curves, best),
        "learning_curves": learning_curves_plot(frame),
    }
    images: dict[str, str] = {}
    plots: list[Path] = []
    for name, fig in figures.items():
        images[name] = _png(fig, out_dir / f"{name}.png")
        plots += [out_dir / f"{name}.png", out_dir / f"{name}.svg"]
        plt.close(fig)

    title = ", ".join(name for name, _ in sweeps)
    n_runs = frame["run"].nunique()
    sections = _sections(frame, curves, comparisons, rows, ledger_table(frame))
    page = _HTML.format(
        title=html.escape(title),
        summary=html.escape(
            f"{n_runs} finished runs; policies: {', '.join(sorted(frame['policy'].unique()))}; "
            f"learner sizes: {', '.join(map(str, sorted(frame['learner_size'].unique())))}; "
            f"seeds: {frame['seed'].nunique()}."
        ),
        scaling=images["scaling"],
        learning=images["learning_curves"],
        body="\n".join(html_block for html_block, _ in sections),
        skipped="".join(f"<li>{html.escape(s)}</li>" for s in skipped) or "<li>nothing</li>",
    )
    html_path = out_dir / "report.html"
    html_path.write_text(page)
    md_path = out_dir / "report.md"
    md_path.write_text(
        f"# activescale report: {title}\n\n{n_runs} finished runs.\n\n"
        "![scaling](scaling.png)\n\n"
        + "\n\n".join(md for _, md in sections)
        + "\n\n## Skipped\n\n"
        + ("\n".join(f"- {s}" for s in skipped) or "- nothing")
        + "\n"
    )
    if log_artifacts:
        _log(sweeps, data.parent_run_ids, out_dir)
    return ReportResult(html_path, md_path, plots, skipped)


def _sections(
    frame: pd.DataFrame,
    curves: list[Frontier],
    comparisons: dict[str, FamilyComparison],
    rows: list[MultiplierRow],
    ledger: pd.DataFrame,
) -> list[tuple[str, str]]:
    """(HTML, Markdown) pairs for each table of the report."""
    fit_rows = []
    for label, comparison in comparisons.items():
        best_aic = comparison.fits[0].aic if comparison.fits else 0.0
        for fit in comparison.fits:
            params = ", ".join(f"{k}={v:.4g}" for k, v in fit.params.items())
            fit_rows.append(
                [
                    label,
                    fit.family,
                    params,
                    f"{fit.aic:.2f}",
                    f"{fit.aic - best_aic:.2f}",
                    str(fit.n_points),
                ]
            )
    frontier_rows = [
        [
            c.label,
            str(len(c.compute)),
            f"{c.compute.max():.3g}",
            f"{c.error.min():.4f}",
            c.learner_size[-1],
            str(c.n_seeds),
        ]
        for c in curves
    ]
    mult_rows = [
        [
            r.curve,
            f"{r.target:.4f}",
            _fmt(r.data),
            _fmt(r.fitted),
            _fmt(None if r.data is None else 1 - 1 / r.data, ".1%"),
            r.note,
        ]
        for r in rows
    ]
    ledger_rows = [[policy, *(f"{v:.1%}" for v in values)] for policy, values in ledger.iterrows()]
    tables = [
        (
            "Frontiers",
            ["curve", "points", "max FLOPs", "best error", "best size", "seeds"],
            frontier_rows,
            "Lower envelope of error vs total FLOPs over learner sizes, seeds averaged.",
        ),
        (
            "Fits",
            ["curve", "family", "parameters", "AIC", "ΔAIC", "points"],
            fit_rows,
            "Huber loss on log error, L-BFGS-B from a grid of starts; lowest AIC first (ΔAIC > 2: clearly worse).",
        ),
        (
            "Compute multiplier vs IID",
            [
                "curve",
                "target error",
                "multiplier (data)",
                "multiplier (fit)",
                "savings (data)",
                "note",
            ],
            mult_rows,
            "multiplier = C_iid(target) / C_policy(target); savings = 1 − 1/multiplier. Data: log-log interpolation of the frontiers.",
        ),
        (
            "FLOP ledger",
            ["policy", *ledger.columns],
            ledger_rows,
            "Share of each run's final total FLOPs by counter (mean over runs).",
        ),
    ]
    out = []
    for title, header, body, caption in tables:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        cells = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body
        )
        html_block = (
            f"<h2>{title}</h2><p>{html.escape(caption)}</p><table><tr>{head}</tr>{cells}</table>"
        )
        md = (
            f"## {title}\n\n{caption}\n\n| "
            + " | ".join(header)
            + " |\n|"
            + "---|" * len(header)
            + "\n"
        )
        md += "\n".join("| " + " | ".join(row) + " |" for row in body)
        out.append((html_block, md))
    return out


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
body {{ font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
th {{ background: #f3f3f3; }} img {{ max-width: 100%; }} p {{ color: #555; }}
</style></head><body>
<h1>activescale report: {title}</h1>
<p>{summary}</p>
<h2>Error vs compute</h2>
<img alt="error vs FLOPs with fitted curves" src="data:image/png;base64,{scaling}">
<p>Faint dots: every evaluation of every run. Markers: the frontier (seeds averaged, bars: std over seeds).
Solid lines: the best fit by AIC; dotted: its extrapolation to 3× the largest compute.</p>
{body}
<h2>Learning curves per learner size</h2>
<img alt="learning curves" src="data:image/png;base64,{learning}">
<h2>Skipped</h2><ul>{skipped}</ul>
</body></html>
"""

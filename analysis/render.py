"""The report's text: its tables, the HTML page and the Markdown file.

Formatting only: the numbers come already computed (fits, multipliers, bootstrap
intervals) and become strings here. :func:`sections` renders the tables as (HTML,
Markdown) pairs; :func:`html_page` and :func:`markdown_page` assemble the two files.
"""

from __future__ import annotations

import html
import math
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from analysis.compute_at import MAX_EXTRAPOLATION
from analysis.extrapolate import Extrapolation, check_text
from analysis.fit import CURVE_LOSS
from analysis.load import EXCLUDED
from analysis.model_selection import HOLDOUT_FRACTION, CurveAnalysis, HoldoutResult
from analysis.multiplier import MultiplierCurve, MultiplierRow, SizeSavings
from analysis.run_bootstrap import CONFIDENCE, RunBootstrap

_METHOD = {
    "least_squares": "Levenberg-Marquardt from the best of a grid of starts",
    "huber": "L-BFGS-B from the best few of a grid of starts",
}


class FigureText(NamedTuple):
    """A figure as the pages show it: heading, caption and the PNG, base64-encoded."""

    heading: str
    caption: str
    png_base64: str


def scaling_caption(bars: bool, bands: bool) -> str:
    """What the scaling plot draws (bars and bands only where there are several seeds)."""
    markers = "the frontier (seeds averaged; bars: std over seeds)" if bars else "the frontier"
    band = (
        f"; shaded: its {CONFIDENCE:.0%} bootstrap band over seeds (lighter beyond the data)"
        if bands
        else ""
    )
    return (
        f"Faint dots: every evaluation of every run. Markers: {markers}. Lines: the AIC-best "
        f"fit, solid over the data, dashed (lighter) to 3× the largest compute{band}."
    )


def multiplier_caption(curves: list[MultiplierCurve]) -> str:
    """What the multiplier plot draws."""
    bands = any(c.fitted_band is not None for c in curves)
    dashed = any(c.extrapolated is not None and c.extrapolated.any() for c in curves)
    fitted = "Line: from the fitted curves" + (
        ", dashed where a fitted curve is inverted beyond its data" if dashed else ""
    )
    band = f" (shaded: {CONFIDENCE:.0%} bootstrap band over seeds)" if bands else ""
    return (
        f"{fitted}{band}; open markers: from the data (learning curves interpolated, defined "
        "only where both cross the target). The vertical dashed line marks IID's best error; "
        "right of it the targets are beyond IID's data."
    )


def savings_caption(bars: bool) -> str:
    bar = f"; bars: {CONFIDENCE:.0%} bootstrap interval over seeds" if bars else ""
    return (
        "Each point: one learner size, target = IID's final error at that size "
        f"(seed-averaged learning curves, log-log interpolation{bar}); ×: not reached."
    )


def learning_caption(spread: bool) -> str:
    shade = "; shaded: best to worst seed" if spread else " (one seed)"
    return (
        f"Error vs total FLOPs of each learner size, one panel per curve, mean over seeds{shade}."
    )


def html_page(
    title: str,
    summary: list[str],
    caveats: list[str],
    figures: dict[str, FigureText],
    tables: list[tuple[str, str]],
    skipped: list[str],
) -> str:
    """report.html: summary, caveats, figures between the tables (:func:`sections`), skipped
    steps."""
    figure_html = {
        name: f"<h2>{html.escape(figure.heading)}</h2>"
        f'<figure><img alt="{html.escape(figure.heading)}" '
        f'src="data:image/png;base64,{figure.png_base64}">'
        f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>"
        for name, figure in figures.items()
    }
    body = [figure_html.get("scaling", "")]
    body += [h for h, _ in tables[:3]]
    body += [figure_html.get("multiplier", ""), figure_html.get("savings_ratio", "")]
    body += [h for h, _ in tables[3:]]
    body.append(figure_html.get("learning_curves", ""))
    return _HTML.format(
        title=html.escape(title),
        summary="".join(f"<p>{html.escape(line)}</p>" for line in summary),
        caveats="".join(f"<li>{html.escape(c)}</li>" for c in caveats) or "<li>none</li>",
        body="\n".join(b for b in body if b),
        skipped=_skipped_html(skipped),
    )


def markdown_page(
    title: str,
    summary: list[str],
    caveats: list[str],
    figures: dict[str, FigureText],
    tables: list[tuple[str, str]],
    skipped: list[str],
) -> str:
    """report.md: the same content as :func:`html_page`, figures linked as PNG files."""
    md_figures = "".join(f"![{figure.heading}]({name}.png)\n\n" for name, figure in figures.items())
    return (
        f"# activescale report: {title}\n\n"
        + "\n\n".join(summary)
        + "\n\n## Caveats\n\n"
        + ("\n".join(f"- {c}" for c in caveats) or "- none")
        + "\n\n"
        + md_figures
        + "\n\n".join(md for _, md in tables)
        + "\n\n## Skipped\n\n"
        + ("\n".join(f"- {s}" for s in skipped) or "- nothing")
        + "\n"
    )


def _fmt(value: float | None, spec: str = ".3g") -> str:
    return "–" if value is None or not math.isfinite(value) else format(value, spec)


def _end(value: float, spec: str) -> str:
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return format(value, spec)


def _with_ci(
    value: float | None,
    ci: tuple[float, float] | None,
    spec: str = ".3g",
    open_low: float = 0.0,
    head: str | None = None,
) -> str:
    """value [low, high]; an open end (``open_low`` below, inf above) is shown as ( or )."""
    head = head or ("–" if value is None else _fmt(value, spec))
    if ci is None:
        return head
    left = "(" if ci[0] <= open_low else "["
    right = ")" if math.isinf(ci[1]) else "]"
    return f"{head} {left}{_end(ci[0], spec)}, {_end(ci[1], spec)}{right}"


def _bounded(value: float | None, bounds: tuple[float, float] | None, spec: str = ".3g") -> str:
    """The value, or where a curve does not cross the target the bound on it (≤, ≥)."""
    if value is not None or bounds is None:
        return _fmt(value, spec)
    low, high = bounds
    if low <= 0 and math.isinf(high):
        return "–"
    return f"≤ {_end(high, spec)}" if low <= 0 else f"≥ {_end(low, spec)}"


def _savings(multiplier: float) -> float:
    return -math.inf if multiplier <= 0 else 1 - 1 / multiplier


def _savings_ci(ci: tuple[float, float] | None) -> tuple[float, float] | None:
    return None if ci is None else (_savings(ci[0]), _savings(ci[1]))


def sections(
    analyses: list[CurveAnalysis],
    rows: list[MultiplierRow],
    by_size: list[SizeSavings],
    recommendations: list[str],
    boot: RunBootstrap,
    ledger: pd.DataFrame,
    tuned: list[list[str]],
    corrupted: pd.Series | None = None,
    extrapolations: list[Extrapolation] | None = None,
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
            _with_ci(r.data, r.data_ci, head=_bounded(r.data, r.data_bounds)),
            _with_ci(r.fitted, r.fitted_ci),
            _with_ci(
                None if r.data is None else 1 - 1 / r.data,
                _savings_ci(r.data_ci),
                ".0%",
                open_low=-math.inf,
            ),
            _with_ci(
                None if r.fitted is None else 1 - 1 / r.fitted,
                _savings_ci(r.fitted_ci),
                ".0%",
                open_low=-math.inf,
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
            f"{CURVE_LOSS.description} on log error ({_METHOD[CURVE_LOSS.name]}); "
            "★ = lowest AIC; intervals: bootstrap over runs. "
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
            "savings = 1 − 1/multiplier. Data: each learning curve interpolated in log-log "
            "(never beyond its points), the least compute over learner sizes; ≤ / ≥: a curve "
            "does not cross the target, so only a bound is known. Fit: the AIC-best curves "
            f"inverted (up to {MAX_EXTRAPOLATION:g}× beyond the data). Intervals: bootstrap "
            "over runs; an open end ( ) means more than 2.5% of the resamples do not cross "
            "the target on that side. Targets: IID's best error and two easier ones.",
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
            "Share of each run's final total FLOPs by counter (mean over runs); "
            "reference_pretrain is the part charged to the run (all of it with reference_cost "
            "include, its share with amortize).",
            [],
        ),
    ]
    if extrapolations:
        tables.append(
            (
                "Multiplier extrapolated beyond the largest budget",
                [
                    "curve",
                    "× largest compute",
                    "FLOPs",
                    "policy error (fit)",
                    f"multiplier, fit ({ci})",
                    "held-out check at the same factor",
                ],
                [
                    [
                        e.curve,
                        f"{e.factor:g}×",
                        f"{e.compute:.3g}",
                        f"{e.error:.4f}",
                        _with_ci(e.multiplier, e.interval)
                        if math.isfinite(e.multiplier)
                        else "∞ (below IID's floor)",
                        check_text(e.check),
                    ]
                    for e in extrapolations
                ],
                "The policy's AIC-best fit at that multiple of its largest compute gives an "
                "error; IID's fit, inverted, the compute it needs for it; multiplier = "
                "C_iid / C_policy. Check: both curves refitted only on frontier points at or "
                "below 1/factor of the policy's largest compute, extrapolated by the same "
                "factor to it, against the full fits there (how to read it: "
                "docs/reading-reports.md).",
                [],
            )
        )
    if corrupted is not None and not corrupted.empty:
        tables.append(
            (
                "Selected examples that were corrupted",
                ["policy", "selected corrupted (final, mean over runs)"],
                [[str(policy), f"{value:.1%}"] for policy, value in corrupted.items()],
                "The fraction of the examples each policy trained on whose label or input was "
                "corrupted, at the end of each run; only runs whose data say which examples "
                "are corrupted (not an .npz without a corrupted mask).",
                [],
            )
        )
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


def _fit_rows(analyses: list[CurveAnalysis], boot: RunBootstrap) -> list[list[str]]:
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


def tuned_rows(frame: pd.DataFrame, tuned: dict[str, dict[str, Any]]) -> list[list[str]]:
    """One row per (policy, learner, scorer) with the tuned values its runs took."""
    if not tuned or frame.empty:
        return []
    cells = frame.drop_duplicates("config_id")[
        ["config_id", "policy", "learner_size", "scorer_size"]
    ]
    rows = {
        (
            str(c.policy),
            str(c.learner_size),
            "–" if pd.isna(c.scorer_size) else str(c.scorer_size),
        ): ", ".join(
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
    excluded = [s for s in skipped if s.endswith(EXCLUDED)]
    others = [s for s in skipped if s not in duplicates and s not in excluded]
    items = "".join(f"<li>{html.escape(s)}</li>" for s in others)
    if excluded:
        inner = "".join(f"<li>{html.escape(s)}</li>" for s in excluded)
        items += (
            f"<li><details><summary>{len(excluded)} finished runs under this name that are "
            f"not in the grid as configured now (excluded)</summary><ul>{inner}</ul>"
            "</details></li>"
        )
    if duplicates:
        inner = "".join(f"<li>{html.escape(s)}</li>" for s in duplicates)
        items += (
            f"<li><details><summary>{len(duplicates)} duplicate runs of configs already "
            f"loaded (the latest finished run of each config is used)</summary><ul>{inner}"
            "</ul></details></li>"
        )
    return f"<ul>{items}</ul>"


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

"""Figures: each function takes results and returns a matplotlib Figure (never shows it)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, PercentFormatter

from analysis.curves import Frontier, SeedRuns
from analysis.fit import CurveFit
from analysis.multiplier import MultiplierCurve, SizeSavings
from analysis.run_bootstrap import RunBootstrap

COLORS = {
    "iid": "#444444",
    "learnability": "#d62728",
    "hard_scorer": "#1f77b4",
    "easy_reference": "#2ca02c",
    "hard_learner": "#9467bd",
    "rho_loss": "#ff7f0e",
}


def color(policy: str, index: int) -> str:
    return COLORS.get(policy, f"C{index % 10}")


def seeds_text(n: int) -> str:
    return f"{n} seed{'' if n == 1 else 's'}"


_TICK_STEPS = ((1.0,), (1.0, 2.0, 5.0), tuple(range(1, 10)), tuple(np.arange(10, 100) / 10))


def plain_log_ticks(axis: Axis, low: float, high: float) -> None:
    """Plain decimal ticks (0.2, 0.3, 0.5 rather than 2×10⁻¹) on a log axis spanning
    [low, high]: the coarsest 1-2-5 style set that puts at least three ticks inside."""
    ticks: list[float] = []
    decades = range(int(np.floor(np.log10(low))) - 1, int(np.ceil(np.log10(high))) + 1)
    for steps in _TICK_STEPS:
        ticks = [k * 10.0**e for e in decades for k in steps if low <= k * 10.0**e <= high]
        if len(ticks) >= 3:
            break
    if len(ticks) > 9:  # the finest steps on a narrow range: thin them out
        ticks = ticks[:: -(-len(ticks) // 8)]
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.3g}"))
    axis.set_minor_formatter(NullFormatter())


def _plain_error_axis(ax: Axes, which: str = "y") -> None:
    low, high = ax.get_ylim() if which == "y" else ax.get_xlim()
    plain_log_ticks(ax.yaxis if which == "y" else ax.xaxis, min(low, high), max(low, high))


def _style(ax: Axes) -> None:
    ax.grid(True, which="major", alpha=0.35, lw=0.6)
    ax.grid(True, which="minor", alpha=0.12, lw=0.4)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def scaling_plot(
    frame: pd.DataFrame,
    curves: list[Frontier],
    fits: dict[str, CurveFit],
    boot: RunBootstrap | None = None,
    extrapolate: float = 3.0,
) -> Figure:
    """Error vs total FLOPs, log-log: every evaluation (faint), the seed-averaged frontiers
    (bars: std over seeds, where there are several), the AIC-best fit (solid over the data,
    dashed beyond) and its bootstrap band (shaded; lighter beyond the data)."""
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for i, curve in enumerate(curves):
        c = color(curve.policy, i)
        mask = frame["policy"] == curve.policy
        if curve.scorer_size is not None:
            mask &= frame["scorer_size"] == curve.scorer_size
        ax.scatter(
            frame.loc[mask, "flops"], frame.loc[mask, "error"], s=5, color=c, alpha=0.12, lw=0
        )
        label = f"{curve.label} (frontier, {seeds_text(curve.n_seeds)})"
        if np.any(curve.error_std > 0):
            ax.errorbar(
                curve.compute,
                curve.error,
                yerr=curve.error_std,
                fmt="o",
                ms=3.5,
                color=c,
                capsize=1.5,
                elinewidth=0.8,
                label=label,
            )
        else:  # one seed: no bars, so no bar glyph in the legend either
            ax.plot(curve.compute, curve.error, "o", ms=3.5, color=c, label=label)
        fit = fits.get(curve.label)
        if fit is None:
            continue
        lo, hi = curve.compute.min(), curve.compute.max()
        band = boot.band(curve.label) if boot is not None else None
        if band is not None and boot is not None:
            inside = (boot.grid >= lo) & (boot.grid <= hi)
            beyond = (boot.grid >= hi) & (boot.grid <= hi * extrapolate)
            for part, alpha in ((inside, 0.22), (beyond, 0.1)):
                ax.fill_between(
                    boot.grid[part], band[0][part], band[1][part], color=c, alpha=alpha, lw=0
                )
        grid = np.geomspace(lo, hi, 200)
        ax.plot(grid, fit.predict(grid), "-", color=c, lw=1.6, label=f"{curve.label}: {fit.family}")
        ext = np.geomspace(hi, hi * extrapolate, 50)
        ax.plot(ext, fit.predict(ext), "--", color=c, lw=1.2, alpha=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("total training FLOPs (scoring and reference included)")
    ax.set_ylabel("test error")
    ax.set_title("Compute-efficient frontier: IID vs prioritized")
    _style(ax)
    _plain_error_axis(ax)
    ax.legend(fontsize=7.5, frameon=False)
    fig.tight_layout()
    return fig


def multiplier_plot(curves: list[MultiplierCurve], iid_best: float | None) -> Figure:
    """Compute multiplier vs target error: fitted (line: solid where both fits are inside
    their data, dashed where one extrapolates; shaded: bootstrap band) and data (markers)."""
    fig, ax = plt.subplots(figsize=(7.0, 4.4))
    for i, curve in enumerate(curves):
        c = color(curve.policy, i + 1)
        if curve.fitted_band is not None:
            ax.fill_between(
                curve.targets, curve.fitted_band[0], curve.fitted_band[1], color=c, alpha=0.18, lw=0
            )
        beyond = (
            curve.extrapolated
            if curve.extrapolated is not None
            else np.zeros(curve.targets.shape, dtype=bool)
        )
        # Each part includes its neighbour's first point, so the line has no gap.
        inside = (
            ~beyond
            | np.concatenate([[False], ~beyond[:-1]])
            | np.concatenate([~beyond[1:], [False]])
        )
        if np.isfinite(curve.fitted[~beyond]).any():
            ax.plot(
                curve.targets,
                np.where(inside, curve.fitted, np.nan),
                "-",
                color=c,
                lw=1.6,
                label=f"{curve.label} (fit)",
            )
        if np.isfinite(curve.fitted[beyond]).any():
            ax.plot(
                curve.targets,
                np.where(beyond, curve.fitted, np.nan),
                "--",
                color=c,
                lw=1.2,
                alpha=0.7,
                label=f"{curve.label} (fit, extrapolated)",
            )
        ax.plot(
            curve.targets,
            curve.data,
            "o",
            ms=3.5,
            color=c,
            mfc="white",
            label=f"{curve.label} (data)",
        )
    ax.axhline(1.0, color="#888888", lw=0.9, ls=":")
    if iid_best is not None:
        ax.axvline(iid_best, color="#444444", lw=0.8, ls="--")
        ax.annotate(
            "IID best", (iid_best, 1.0), xytext=(4, 6), textcoords="offset points", fontsize=7.5
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("target test error (harder →)")
    ax.set_ylabel("compute multiplier  C_iid / C_policy")
    ax.set_title("Compute multiplier vs target (> 1: the policy saves compute)")
    _style(ax)
    _plain_error_axis(ax, "x")
    _plain_error_axis(ax, "y")
    ax.legend(fontsize=7.5, frameon=False)
    fig.tight_layout()
    return fig


def savings_ratio_plot(rows: list[SizeSavings]) -> Figure:
    """Savings vs scorer/learner parameter ratio, one series per prioritized curve."""
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    labels = sorted({r.curve for r in rows})
    for i, label in enumerate(labels):
        part = sorted((r for r in rows if r.curve == label), key=lambda r: r.ratio)
        c = color(part[0].policy, i + 1)
        shown = [r for r in part if r.savings is not None]
        x = np.array([r.ratio for r in shown])
        y = np.array([r.savings for r in shown], dtype=float)
        yerr = np.array(
            [
                [r.savings - r.ci[0], r.ci[1] - r.savings]
                if r.ci and r.savings is not None
                else [0, 0]
                for r in shown
            ]
        ).T.reshape(2, -1)
        if any(r.ci for r in shown):
            ax.errorbar(x, y, yerr=yerr, fmt="o-", color=c, ms=4, capsize=2, lw=1.2, label=label)
        else:  # no intervals: no bar glyph in the legend
            ax.plot(x, y, "o-", color=c, ms=4, lw=1.2, label=label)
        for r in shown:
            ax.annotate(
                r.learner_size,
                (r.ratio, r.savings or 0),
                xytext=(4, 4),
                textcoords="offset points",
                fontsize=7,
            )
        missing = [r for r in part if r.savings is None]
        if missing:
            ax.plot([r.ratio for r in missing], [0.0] * len(missing), "x", color=c, ms=6)
    ax.axhline(0.0, color="#888888", lw=0.9, ls=":")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_xlabel("scorer / learner parameters")
    ax.set_ylabel("compute savings vs IID (same learner)")
    ax.set_title("Savings vs scorer size (× on the axis: IID's error not reached)")
    _style(ax)
    ax.legend(fontsize=7.5, frameon=False)
    fig.tight_layout()
    return fig


def learning_curves_plot(runs: list[SeedRuns]) -> Figure:
    """Error vs FLOPs of every learner size, one panel per curve (a policy, and its scorer size
    where the sweep varies it; seeds averaged, shaded between the best and worst seed)."""
    cols = min(4, len(runs))
    rows = -(-len(runs) // cols)
    fig, grid = plt.subplots(
        rows, cols, figsize=(4 * cols, 3.2 * rows + 0.4), sharey=True, squeeze=False
    )
    axes = grid.ravel()
    for ax in axes[len(runs) :]:
        ax.set_visible(False)
    params = {s.learner_size: s.learner_params for curve in runs for s in curve.sizes}
    sizes = sorted(params, key=lambda size: (params[size], size))
    cmap = plt.get_cmap("viridis")
    for ax, curve in zip(axes, runs, strict=False):
        for size in curve.sizes:
            j = sizes.index(size.learner_size)
            c = cmap(0.85 * j / max(1, len(sizes) - 1))
            error = size.mean_error()
            ax.plot(size.compute, error, "-", color=c, lw=1.4, label=size.learner_size)
            low, high = size.error_range()
            ax.fill_between(size.compute, low, high, color=c, alpha=0.2, lw=0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(curve.label)
        ax.set_xlabel("total FLOPs")
        ax.xaxis.set_minor_formatter(NullFormatter())  # a panel under a decade wide: no clutter
        _style(ax)
    _plain_error_axis(axes[0])  # shared error axis
    for row in grid:
        row[0].set_ylabel("test error")
    axes[len(runs) - 1].legend(title="learner", fontsize=7, frameon=False)
    spread = any(r.max_seeds > 1 for r in runs)
    fig.suptitle(
        "Learning curves per learner size (mean over seeds"
        + ("; shaded: min–max)" if spread else ")"),
        fontsize=10,
    )
    fig.tight_layout()
    return fig

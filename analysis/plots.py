"""Figures: each function takes results and returns a matplotlib Figure (never shows it)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.curves import Frontier
from analysis.fit import CurveFit

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


def scaling_plot(
    frame: pd.DataFrame,
    curves: list[Frontier],
    fits: dict[str, CurveFit],
    extrapolate: float = 3.0,
) -> Figure:
    """Error vs total FLOPs, log-log: all evaluations (faint), frontiers, fitted curves."""
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for i, curve in enumerate(curves):
        c = color(curve.policy, i)
        mask = frame["policy"] == curve.policy
        if curve.scorer_size is not None:
            mask &= frame["scorer_size"] == curve.scorer_size
        ax.scatter(
            frame.loc[mask, "flops"], frame.loc[mask, "error"], s=6, color=c, alpha=0.15, lw=0
        )
        ax.errorbar(
            curve.compute,
            curve.error,
            yerr=curve.error_std,
            fmt="o",
            ms=4,
            color=c,
            capsize=2,
            label=f"{curve.label} frontier",
        )
        fit = fits.get(curve.label)
        if fit is not None:
            lo, hi = curve.compute.min(), curve.compute.max()
            grid = np.geomspace(lo, hi, 200)
            ax.plot(
                grid, fit.predict(grid), "-", color=c, lw=1.5, label=f"{curve.label}: {fit.family}"
            )
            ext = np.geomspace(hi, hi * extrapolate, 50)
            ax.plot(ext, fit.predict(ext), ":", color=c, lw=1.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("total training FLOPs (scoring included)")
    ax.set_ylabel("test error")
    ax.set_title("Compute-efficient frontier: IID vs prioritized")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def learning_curves_plot(frame: pd.DataFrame) -> Figure:
    """Error vs FLOPs of every learner size, one panel per policy (seeds averaged)."""
    policies = sorted(frame["policy"].unique(), key=lambda p: (p != "iid", p))
    fig, axes = plt.subplots(
        1, len(policies), figsize=(4 * len(policies), 3.6), sharey=True, squeeze=False
    )
    sizes = sorted(
        frame["learner_size"].unique(),
        key=lambda s: frame.loc[frame["learner_size"] == s, "learner_params"].iloc[0],
    )
    cmap = plt.get_cmap("viridis")
    for ax, policy in zip(axes[0], policies, strict=True):
        part = frame[frame["policy"] == policy]
        for j, size in enumerate(sizes):
            curve = (
                part[part["learner_size"] == size].groupby("eval_step")[["flops", "error"]].mean()
            )
            if len(curve):
                ax.plot(
                    curve["flops"],
                    curve["error"],
                    "-",
                    color=cmap(j / max(1, len(sizes) - 1)),
                    label=str(size),
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(policy)
        ax.set_xlabel("total FLOPs")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("test error")
    axes[0][-1].legend(title="learner", fontsize=7)
    fig.tight_layout()
    return fig

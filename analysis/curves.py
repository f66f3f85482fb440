"""From the tidy frame to per-policy frontiers: seeds averaged, then the lower envelope.

A *curve* is one policy (and, when a sweep varies it, one scorer size): its frontier is the
lower envelope of error vs total FLOPs over every learner size, after averaging each
(learner size, evaluation step) over seeds. The spread over seeds is kept for the plots.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.frontier import lower_envelope


@dataclass(frozen=True)
class Frontier:
    label: str
    policy: str
    scorer_size: str | None
    compute: np.ndarray  # total FLOPs, increasing
    error: np.ndarray  # mean over seeds, strictly decreasing
    error_std: np.ndarray
    learner_size: list[str]
    n_seeds: int


def curve_label(policy: str, scorer_size: object, vary_scorer: bool) -> str:
    if vary_scorer and isinstance(scorer_size, str):
        return f"{policy} (scorer {scorer_size})"
    return policy


def frontiers(frame: pd.DataFrame) -> list[Frontier]:
    """One frontier per curve, IID first."""
    data = frame.dropna(subset=["flops", "error"])
    data = data[(data["flops"] > 0) & (data["error"] > 0)]
    vary_scorer = data.loc[data["policy"] != "iid", "scorer_size"].nunique() > 1
    data = data.assign(scorer_key=data["scorer_size"].fillna("-"))
    out = []
    for (policy, scorer), group in data.groupby(["policy", "scorer_key"], sort=True):
        points = (
            group.groupby(["learner_size", "eval_step"])
            .agg(
                flops=("flops", "mean"),
                error=("error", "mean"),
                error_std=("error", "std"),
                seeds=("seed", "nunique"),
            )
            .reset_index()
        )
        compute, error = lower_envelope(points["flops"].to_numpy(), points["error"].to_numpy())
        keep = [
            int(np.flatnonzero((points["flops"] == c) & (points["error"] == e))[0])
            for c, e in zip(compute, error, strict=True)
        ]
        chosen = points.iloc[keep]
        scorer_size = None if scorer == "-" else str(scorer)
        out.append(
            Frontier(
                label=curve_label(str(policy), scorer_size, vary_scorer),
                policy=str(policy),
                scorer_size=scorer_size,
                compute=compute,
                error=error,
                error_std=chosen["error_std"].fillna(0.0).to_numpy(),
                learner_size=[str(s) for s in chosen["learner_size"]],
                n_seeds=int(points["seeds"].max()),
            )
        )
    return sorted(out, key=lambda f: (f.policy != "iid", f.label))

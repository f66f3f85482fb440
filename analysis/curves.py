"""From the tidy frame to per-curve frontiers: seeds aggregated, then the lower envelope.

A *curve* is one policy (and, when a sweep varies it, one scorer size). Its runs are held
as :class:`SeedRuns`: for each learner size, the error of every seed at every evaluation
step. The frontier is the lower envelope of error vs total FLOPs over all (learner size,
evaluation step) points after averaging each point over seeds; the spread over seeds
(standard deviation, number of seeds) is kept per frontier point.

Resampling the seeds of each learner size with replacement and recomputing the frontier
(:func:`resample_frontier`) is the bootstrap over runs that the report's intervals use
(:mod:`analysis.run_bootstrap`): the unit of independent noise is a training run, not an
evaluation point.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from analysis.compute_at import LearningCurve
from analysis.frontier import envelope_indices
from trainers.flops import COUNTERS

STEP_COUNTERS = tuple(c for c in COUNTERS if c != "reference_pretrain")
"""Ledger counters that grow with the steps (the reference's pretraining is charged once)."""

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]


@dataclass(frozen=True)
class SizeRuns:
    """The runs of one learner size in one curve.

    ``error`` is (n_seeds, n_steps) with NaN where a seed has no evaluation at that step;
    ``compute`` the mean total FLOPs at each step.
    """

    learner_size: str
    learner_params: int
    seeds: tuple[int, ...]
    compute: FloatArray
    error: FloatArray
    start: float = 0.0  # compute charged before the first step (a pretrained reference)

    def curve(self, error: FloatArray | None = None) -> LearningCurve:
        """The seed-averaged learning curve (or one with the given per-step ``error``)."""
        return LearningCurve(
            self.compute, self.mean_error() if error is None else error, self.start
        )

    def mean_error(self, rows: NDArray[np.intp] | None = None) -> FloatArray:
        """Error averaged over seeds (all of them, or the given rows, repeats allowed)."""
        return _quietly(np.nanmean, self.error if rows is None else self.error[rows])

    def error_range(self) -> tuple[FloatArray, FloatArray]:
        """Best and worst seed's error at each step."""
        return _quietly(np.nanmin, self.error), _quietly(np.nanmax, self.error)


def _quietly(reduce: Callable[..., FloatArray], values: FloatArray, **kwargs: int) -> FloatArray:
    """Apply a nan-reduction, silencing 'Mean of empty slice': an all-NaN column stays NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.asarray(reduce(values, axis=0, **kwargs))


@dataclass(frozen=True)
class SeedRuns:
    """Every run behind one curve, by learner size (smallest first)."""

    label: str
    policy: str
    scorer_size: str | None
    scorer_params: int
    sizes: tuple[SizeRuns, ...]

    @property
    def max_seeds(self) -> int:
        return max((len(s.seeds) for s in self.sizes), default=0)

    @property
    def resamplable(self) -> bool:
        """Whether resampling seeds can change anything (some size has two seeds)."""
        return any(len(s.seeds) > 1 for s in self.sizes)


@dataclass(frozen=True)
class Frontier:
    label: str
    policy: str
    scorer_size: str | None
    compute: FloatArray  # total FLOPs, increasing
    error: FloatArray  # mean over seeds, strictly decreasing
    error_std: FloatArray  # standard deviation over seeds (0 with one seed)
    learner_size: list[str]
    n_seeds: int  # the most seeds behind any frontier point
    point_seeds: NDArray[np.intp]  # seeds behind each frontier point
    # Each learner size's learning curve (seeds averaged): where targets are crossed.
    learning_curves: tuple[LearningCurve, ...] = ()


def curve_label(policy: str, scorer_size: object, vary_scorer: bool) -> str:
    if vary_scorer and isinstance(scorer_size, str):
        return f"{policy} (scorer {scorer_size})"
    return policy


def usable_points(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Drop evaluations that cannot enter a log-log fit, saying which and why.

    NaN or infinite FLOPs/error (a diverged or cut-off evaluation) and non-positive
    values (zero error is a perfect score that a power law in log space cannot hold).
    """
    notes: list[str] = []
    if frame.empty:
        return frame, ["no evaluations to analyse"]
    keep = pd.Series(True, index=frame.index)
    for column in ("flops", "error"):
        values = pd.to_numeric(frame[column], errors="coerce")
        missing = ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
        not_positive = ~missing & (values.to_numpy(dtype=float, na_value=np.nan) <= 0)
        for mask, why in ((missing, "NaN or infinite"), (not_positive, "not positive")):
            if mask.any():
                runs = frame.loc[mask, "run_name"].fillna(frame.loc[mask, "run"]).unique()
                notes.append(
                    f"{int(mask.sum())} evaluations with {column} {why} left out "
                    f"(runs: {', '.join(map(str, sorted(runs)[:5]))}"
                    f"{', ...' if len(runs) > 5 else ''})"
                )
        keep &= ~missing & ~not_positive
    return frame[keep], notes


def seed_runs(frame: pd.DataFrame) -> list[SeedRuns]:
    """Group usable evaluations (see :func:`usable_points`) by curve, IID first."""
    if frame.empty:
        return []
    vary_scorer = frame.loc[frame["policy"] != "iid", "scorer_size"].nunique() > 1
    data = frame.assign(scorer_key=frame["scorer_size"].fillna("-"))
    out = []
    for (policy, scorer), group in data.groupby(["policy", "scorer_key"], sort=True):
        sizes = []
        for size, part in group.groupby("learner_size", sort=False):
            table = part.pivot_table(index="seed", columns="eval_step", values="error")
            compute = part.groupby("eval_step")["flops"].mean().reindex(table.columns)
            sizes.append(
                SizeRuns(
                    learner_size=str(size),
                    learner_params=int(part["learner_params"].iloc[0]),
                    seeds=tuple(int(s) for s in table.index),
                    compute=compute.to_numpy(dtype=float),
                    error=table.to_numpy(dtype=float),
                    start=_start_compute(part),
                )
            )
        sizes.sort(key=lambda s: (s.learner_params, s.learner_size))
        scorer_size = None if scorer == "-" else str(scorer)
        out.append(
            SeedRuns(
                label=curve_label(str(policy), scorer_size, vary_scorer),
                policy=str(policy),
                scorer_size=scorer_size,
                scorer_params=int(group["scorer_params"].max()),
                sizes=tuple(sizes),
            )
        )
    return sorted(out, key=lambda c: (c.policy != "iid", c.scorer_params, c.label))


def _start_compute(part: pd.DataFrame) -> float:
    """Compute charged before the first step: the total less what the steps spent (the
    ledger's per-step counters); 0 when the frame has no ledger columns."""
    steps = [f"flops/{c}" for c in STEP_COUNTERS if f"flops/{c}" in part.columns]
    if not steps:
        return 0.0
    start = part["flops"] - part[steps].fillna(0.0).sum(axis=1)
    value = float(np.nanmean(start.to_numpy(dtype=float))) if len(start) else 0.0
    return max(0.0, value) if np.isfinite(value) else 0.0


def frontier_of(runs: SeedRuns) -> Frontier:
    """The frontier of one curve with every seed, and the seed spread at each point."""
    error, std, seeds, sizes = [], [], [], []
    for size in runs.sizes:
        mean = size.mean_error()
        spread = _quietly(np.nanstd, size.error, ddof=1) if len(size.seeds) > 1 else None
        counts = np.sum(np.isfinite(size.error), axis=0)
        error.append(mean)
        std.append(np.zeros_like(mean) if spread is None else np.nan_to_num(spread))
        seeds.append(counts)
        sizes += [size.learner_size] * mean.size
    all_compute, all_error, keep = _envelope(runs, error)
    point_seeds = np.concatenate(seeds)[keep]
    return Frontier(
        label=runs.label,
        policy=runs.policy,
        scorer_size=runs.scorer_size,
        compute=all_compute[keep],
        error=all_error[keep],
        error_std=np.concatenate(std)[keep],
        learner_size=[sizes[i] for i in keep],
        n_seeds=int(point_seeds.max()) if point_seeds.size else 0,
        point_seeds=point_seeds.astype(np.intp),
        learning_curves=tuple(s.curve(m) for s, m in zip(runs.sizes, error, strict=True)),
    )


@dataclass(frozen=True)
class Resample:
    """One bootstrap resample of a curve: its frontier points and its learning curves."""

    compute: FloatArray
    error: FloatArray
    learning_curves: tuple[LearningCurve, ...]


def resample_frontier(runs: SeedRuns, rng: np.random.Generator) -> Resample:
    """The frontier after drawing each learner size's seeds with replacement (with one seed
    per size: the frontier itself), with the resampled learning curves behind it."""
    means = [s.mean_error(rng.integers(0, len(s.seeds), len(s.seeds))) for s in runs.sizes]
    compute, error, keep = _envelope(runs, means)
    curves = tuple(s.curve(m) for s, m in zip(runs.sizes, means, strict=True))
    return Resample(compute[keep], error[keep], curves)


def _envelope(runs: SeedRuns, means: list[FloatArray]) -> tuple[FloatArray, FloatArray, IntArray]:
    """All evaluations of a curve (compute, per-size mean ``means``) and the indices of its
    lower envelope among the finite ones."""
    compute = np.concatenate([size.compute for size in runs.sizes])
    error = np.concatenate(means)
    finite = np.flatnonzero(np.isfinite(error))
    return compute, error, finite[envelope_indices(compute[finite], error[finite])]

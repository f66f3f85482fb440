"""The summary's rules (analysis/summary.py, docs/reading-reports.md) on constructed sweeps:
curves that cross, a pure compute shift, a policy that never reaches IID's best error, one
seed. Frames are built as analysis.load builds them, then go through the report's
comparison (analysis.comparison.compare)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from analysis.comparison import Comparison, compare
from analysis.curves import seed_runs
from analysis.summary import CurveSummary, curve_lines, verdict
from tests.constructed import Law, frame, iid_law


def summarise(
    policy_law: Law, seeds: int = 4, n_resamples: int = 300
) -> tuple[CurveSummary, Comparison]:
    data = pd.concat(
        [frame("iid", iid_law, seeds), frame("learnability", policy_law, seeds, seed=1)],
        ignore_index=True,
    )
    comparison = compare(seed_runs(data), n_resamples=n_resamples)
    (summary,) = comparison.summaries
    check_stretches(summary)
    return summary, comparison


def text(summary: CurveSummary) -> str:
    return " ".join(curve_lines(summary, 0.95))


@pytest.mark.parametrize(
    ("interval", "expected"),
    [
        ((1.05, 2.0), "saves"),
        ((1.2, np.inf), "saves"),
        ((0.3, 0.95), "costs"),
        ((0.0, 0.5), "costs"),
        ((0.8, 1.2), "not distinguishable"),
        ((0.0, np.inf), "not distinguishable"),
        ((1.0, 1.5), "not distinguishable"),
        (None, "not distinguishable"),
    ],
)
def test_verdict_rules(interval: tuple[float, float] | None, expected: str) -> None:
    assert verdict(interval) == expected


def check_stretches(summary: CurveSummary) -> None:
    """Every target's verdict follows from its interval; stretches partition the targets."""
    assert [verdict(i) for i in summary.intervals] == summary.verdicts
    assert sum(s.n_targets for s in summary.stretches) == summary.targets.size
    assert all(a.verdict != b.verdict for a, b in itertools.pairwise(summary.stretches))


def test_curves_that_cross_save_at_hard_targets_cost_at_easy_ones_and_say_where() -> None:
    """The policy is steeper: worse than IID below C = 1e6, better above (true crossing at
    error 0.1 + 3 * 1e6^-0.2 = 0.289)."""
    summary, _ = summarise(lambda c: 0.1 + 3.0 * 1e6**0.15 * c**-0.35)
    verdicts = [s.verdict for s in summary.stretches]
    assert verdicts[0] == "costs" and verdicts[-1] == "saves", verdicts
    assert set(verdicts) <= {"costs", "not distinguishable", "saves"}
    (crossover,) = summary.crossovers
    assert crossover.direction == "saves below" and crossover.source == "fit"
    assert crossover.error == pytest.approx(0.289, rel=0.03)
    assert crossover.error_ci is not None
    assert crossover.error_ci[0] <= 0.289 <= crossover.error_ci[1]
    assert crossover.compute == pytest.approx(1e6, rel=0.25)
    assert (
        crossover.compute_ci is not None and crossover.compute_ci[0] < 1e6 < crossover.compute_ci[1]
    )
    words = text(summary)
    assert "costs at errors" in words and "saves at errors" in words and "cross at error" in words


def test_a_pure_compute_shift_saves_everywhere_without_a_crossover() -> None:
    summary, comparison = summarise(lambda c: iid_law(2.0 * c))
    assert [s.verdict for s in summary.stretches] == ["saves"]
    assert summary.crossovers == []
    (stretch,) = summary.stretches
    # Near IID's floor 1% noise in error is ~15% in compute: the points scatter about 2.
    assert stretch.multipliers is not None
    assert 1.7 < stretch.multipliers[0] <= stretch.multipliers[1] < 2.3
    assert stretch.interval is not None and 1 < stretch.interval[0] < 2 < stretch.interval[1]
    # The summary covers IID's whole error range, not one favourable target.
    assert summary.targets.max() == pytest.approx(comparison.iid.error.max(), rel=0.05)
    assert summary.targets.min() == pytest.approx(comparison.iid.error.min())
    assert "no crossover" in text(summary)


def test_a_policy_that_never_reaches_iids_best_error_costs_where_its_bounds_say_so() -> None:
    """The policy's floor is 0.25: it stops near 0.26, IID goes on to 0.22. Where the policy
    does not cross, its multiplier is bounded above by IID's compute over the policy's
    largest: below 1 (costs) until IID's compute reaches the policy's largest, at IID's best
    error (same largest compute) the bound is 1: not distinguishable."""
    summary, comparison = summarise(lambda c: 0.25 + 3.0 * (2.0 * c) ** -0.2)
    costs = [s for s in summary.stretches if s.verdict == "costs"]
    assert costs and costs[-1].n_bounded > 0  # the policy does not cross: bounds only
    assert costs[-1].interval is not None and costs[-1].interval[0] == 0.0  # open below
    assert costs[-1].interval[1] < 1.0
    assert summary.stretches[-1].verdict == "not distinguishable"
    hardest = min(comparison.rows, key=lambda r: r.target)
    assert hardest.data is None and hardest.data_bounds is not None
    assert hardest.data_bounds[0] == 0.0 and hardest.data_bounds[1] == pytest.approx(1.0)
    middle = sorted(comparison.rows, key=lambda r: r.target)[1]
    assert middle.data is None and middle.data_ci is not None and middle.data_ci[1] < 0.2


def test_one_seed_is_not_distinguishable_anywhere() -> None:
    summary, comparison = summarise(lambda c: iid_law(2.0 * c), seeds=1)
    assert not comparison.boot.resampled
    assert {s.verdict for s in summary.stretches} == {"not distinguishable"}
    assert all(s.interval is None for s in summary.stretches)
    words = text(summary)
    assert "one seed per cell, so no intervals: not distinguishable at any target" in words
    assert "CI" not in words

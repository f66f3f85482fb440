"""Where a frontier crosses a target (analysis.compute_at): the data-path multiplier on a
known compute shift, the bounds of targets a curve does not cross, and intervals built from
those bounds (analysis.run_bootstrap.censored_interval)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.compute_at import LearningCurve, crossing_bounds, ratio_bounds
from analysis.run_bootstrap import censored_interval
from tests.shift_study import SHIFT, multiplier_from_curves, multiplier_from_envelope


def test_data_multiplier_recovers_a_pure_compute_shift_within_one_percent() -> None:
    """Five learner sizes with 12 log-spaced evaluations each, the prioritized sweep reaching
    every error with 2.5x less compute (tests/shift_study.py)."""
    multiplier = multiplier_from_curves()
    crossed = np.isfinite(multiplier)
    assert crossed.sum() >= 30
    assert np.max(np.abs(multiplier[crossed] / SHIFT - 1)) < 0.01


def test_the_envelope_chords_misread_the_same_shift() -> None:
    """The method this replaced: chords between points of different learner sizes follow no
    run, and read the same shift more than 1% off at some targets."""
    multiplier = multiplier_from_envelope()
    crossed = np.isfinite(multiplier)
    assert np.max(np.abs(multiplier[crossed] / SHIFT - 1)) > 0.015


def test_a_crossed_target_has_equal_bounds() -> None:
    compute = np.logspace(0, 4, 9)
    low, high = crossing_bounds([(compute, compute**-0.5)], np.array([0.05]))
    assert low[0] == high[0] == pytest.approx(400.0)


def test_a_target_never_reached_is_bounded_below_by_the_largest_compute() -> None:
    small = LearningCurve(np.array([1.0, 10.0]), np.array([0.5, 0.4]))
    large = LearningCurve(np.array([5.0, 50.0]), np.array([0.45, 0.3]))
    low, high = crossing_bounds([small, large], np.array([0.1]))
    assert low[0] == 50.0 and math.isinf(high[0])


def test_a_target_reached_before_the_first_point_is_bounded_by_the_start_compute() -> None:
    # The run spent 3 before its first step (a pretrained reference): it cannot have reached
    # any error with less.
    curve = LearningCurve(np.array([10.0, 100.0]), np.array([0.4, 0.2]), start=3.0)
    low, high = crossing_bounds([curve], np.array([0.5]))
    assert (low[0], high[0]) == (3.0, 10.0)
    low, high = crossing_bounds([curve._replace(start=0.0)], np.array([0.5]))
    assert (low[0], high[0]) == (0.0, 10.0)


def test_a_later_learner_size_counts_its_first_point_as_its_crossing() -> None:
    """The small learner never gets below 0.4; the large one starts at 0.35 after compute
    20, which the small one's points already show is where the frontier first reaches 0.38."""
    small = LearningCurve(np.array([1.0, 10.0]), np.array([0.6, 0.4]))
    large = LearningCurve(np.array([20.0, 200.0]), np.array([0.35, 0.2]))
    low, high = crossing_bounds([small, large], np.array([0.38]))
    assert low[0] == high[0] == 20.0


def test_ratio_bounds_open_where_a_curve_does_not_cross() -> None:
    iid = (np.array([100.0, 100.0, 50.0]), np.array([100.0, 100.0, np.inf]))
    policy = (np.array([10.0, 200.0, 10.0]), np.array([10.0, np.inf, 10.0]))
    low, high = ratio_bounds(iid, policy)
    assert low.tolist() == [10.0, 0.0, 5.0]  # policy never reaches: nothing known below
    assert high.tolist() == [10.0, 0.5, np.inf]  # IID never reaches: nothing known above


def test_censored_interval_is_open_where_too_many_resamples_are() -> None:
    rng = np.random.default_rng(0)
    values = rng.lognormal(0.0, 0.1, 1000)
    low, high = values.copy(), values.copy()
    closed = censored_interval(low, high, 0.95)
    assert 0.8 < closed[0] < 0.85 and 1.17 < closed[1] < 1.25
    high[:20] = np.inf  # 2% open above: the upper end stays finite
    assert np.isfinite(censored_interval(low, high, 0.95)[1])
    high[:40] = np.inf  # 4% open above: more than the 2.5% tail, so the end is open
    assert math.isinf(censored_interval(low, high, 0.95)[1])
    low[:40] = 0.0
    assert censored_interval(low, high, 0.95)[0] == 0.0

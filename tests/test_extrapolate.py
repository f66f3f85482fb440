"""The multiplier extrapolated beyond the largest budget and its held-out check
(analysis/extrapolate.py), and the IID frontier's sizes (analysis/size_order.py), on
constructed sweeps with known laws."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from analysis.comparison import Comparison, compare
from analysis.curves import seed_runs
from analysis.extrapolate import compute_at, log_error_at, summary_line
from analysis.report import _extrapolation_caveats
from analysis.size_order import frontier_line, frontier_sizes, worse_larger_sizes
from tests.constructed import Law, frame, iid_law

SHIFT = 2.5


def compared(policy_law: Law, seeds: int = 4, noise: float = 0.01) -> Comparison:
    data = pd.concat(
        [frame("iid", iid_law, seeds, noise), frame("learnability", policy_law, seeds, noise, 1)],
        ignore_index=True,
    )
    return compare(seed_runs(data), n_resamples=200)


@pytest.mark.parametrize(
    ("family", "params"),
    [
        ("power_law", {"A": 3.0, "alpha": 0.2}),
        ("power_law_offset", {"A": 3.0, "alpha": 0.2, "E": 0.1}),
        ("exponential", {"A": 0.9, "tau": 1e6}),
        ("exponential_offset", {"A": 0.9, "tau": 1e6, "E": 0.1}),
    ],
)
def test_compute_at_inverts_every_family(family: str, params: dict[str, float]) -> None:
    compute = np.geomspace(1e3, 1e7, 9)
    error = np.exp(log_error_at(family, params, compute))
    assert np.allclose(compute_at(family, params, error), compute, rtol=1e-9)
    if "E" in params:  # at or below the floor: never reached
        assert math.isinf(float(compute_at(family, params, params["E"])))


def test_a_pure_shift_extrapolates_to_the_shift_and_its_check_holds() -> None:
    """Exact data give the shift; 0.2% run-to-run noise moves the floors of the two fits a
    little, which 100-fold beyond the data moves the multiplier by up to ~15%."""
    exact = compared(lambda c: iid_law(SHIFT * c), noise=0.0).extrapolations
    assert [r.factor for r in exact] == [10.0, 100.0]
    assert [r.multiplier for r in exact] == pytest.approx([SHIFT, SHIFT], rel=1e-4)
    rows = compared(lambda c: iid_law(SHIFT * c), noise=0.002).extrapolations
    for row in rows:
        assert row.multiplier == pytest.approx(SHIFT, rel=0.15)
        assert row.interval is not None
        assert row.interval[0] <= row.multiplier <= row.interval[1]
        assert row.check.predicted is not None and row.check.held, row.check
    assert not _extrapolation_caveats(rows)
    line = summary_line(rows)
    assert line is not None and "its held-out check held" in line and "100×" in line


def test_a_policy_with_a_higher_floor_extrapolates_to_the_laws_value() -> None:
    """Ahead at first, then held back by its floor: the multiplier falls with compute, to the
    value the two laws give (exactly on exact data, within 10% with 0.2% noise)."""

    def policy(c: np.ndarray) -> np.ndarray:
        return 0.12 + 3.0 * (SHIFT * c) ** -0.2

    for noise, tolerance in ((0.0, 1e-6), (0.002, 0.1)):
        comparison = compared(policy, noise=noise)
        top = float(next(c for c in comparison.curves if c.policy != "iid").compute.max())
        rows = comparison.extrapolations
        for row in rows:
            compute = row.factor * top
            target = float(policy(np.array([compute]))[0])
            truth = ((target - 0.1) / 3.0) ** (-1 / 0.2) / compute  # IID's law inverted
            assert row.multiplier == pytest.approx(truth, rel=tolerance)
        assert rows[1].multiplier < rows[0].multiplier < 1.0


def test_a_policy_below_iids_floor_is_infinite_far_out() -> None:
    comparison = compared(lambda c: 0.05 + 3.0 * (SHIFT * c) ** -0.2, noise=0.002)
    far = comparison.extrapolations[-1]
    assert math.isinf(far.multiplier)
    assert "∞ (IID never reaches it)" in (summary_line(comparison.extrapolations) or "")


def test_a_curve_that_bends_after_the_cut_fails_its_check_and_the_caveat_says_so() -> None:
    """The policy follows the shift up to 1e6 FLOPs (1/10 of its largest compute) and then
    flattens: fits below the cut cannot see it, so their extrapolation misses what the full
    fits show."""

    def bends(c: np.ndarray) -> np.ndarray:
        knee = 1e6
        early = iid_law(SHIFT * np.minimum(c, knee))
        return early * np.where(c > knee, (c / knee) ** -0.02, 1.0)  # still falling, slower

    comparison = compared(bends, noise=0.002)
    rows = comparison.extrapolations
    ten = next(r for r in rows if r.factor == 10.0)
    assert ten.check.predicted is not None and not ten.check.held, ten.check
    caveats = _extrapolation_caveats(rows)
    assert any("10× the largest compute" in c and "failed" in c for c in caveats), caveats
    assert "its held-out check failed" in (summary_line(rows) or "")


def test_data_too_short_for_the_factor_leave_it_untested() -> None:
    """One size only: 1.3 decades of compute, so nothing lies below 1/100 of the top."""
    data = pd.concat(
        [frame("iid", iid_law), frame("learnability", lambda c: iid_law(SHIFT * c), seed=1)],
        ignore_index=True,
    )
    data = data[data["learner_size"] == "l"]
    comparison = compare(seed_runs(data), n_resamples=50)
    hundred = next(r for r in comparison.extrapolations if r.factor == 100.0)
    assert hundred.check.predicted is None and hundred.check.reason
    assert "untested" in (summary_line(comparison.extrapolations) or "")
    assert any("could not be made" in c for c in _extrapolation_caveats([hundred]))


def test_the_frontier_lists_its_sizes_in_order_of_compute() -> None:
    comparison = compared(lambda c: iid_law(SHIFT * c))
    iid = comparison.iid
    assert iid is not None
    sizes = frontier_sizes(iid)  # the sizes overlap in compute: the frontier may alternate
    assert sizes[0][0] == "s" and sizes[-1][0] == "l"
    assert all(a[0] != b[0] and a[2] < b[2] for a, b in itertools.pairwise(sizes))
    assert sum(n for _, n, _ in sizes) == len(iid.compute)
    (iid_runs,) = (r for r in seed_runs(frame("iid", iid_law)) if r.policy == "iid")
    line = frontier_line(iid, iid_runs)
    assert line.startswith("iid frontier, sizes in order of compute: s (")
    assert "Every size's last point is on it" in line  # the law never flattens


def test_a_larger_size_ending_worse_at_more_compute_is_named() -> None:
    data = frame("iid", iid_law)
    worse = data["learner_size"] == "l"
    data.loc[worse, "error"] = data.loc[worse, "error"] * 3.0
    (runs,) = seed_runs(data)
    (problem,) = [p for p in worse_larger_sizes(runs) if " m at " in p]
    assert problem.startswith("iid: l ends at error") and "not compute-optimal" in problem
    assert not worse_larger_sizes(seed_runs(frame("iid", iid_law))[0])

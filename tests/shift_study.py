"""A pure compute shift of a realistic sweep, to measure the data-path multiplier against
a known answer (tests/test_compute_at.py asserts it, benchmarks/bench_fit.py prints it).

Five learner sizes, budgets 4x apart, each evaluated at 12 points log-spaced in compute from
2% to 100% of its budget (``eval.points: 12`` as the trainer places them). Each learning
curve follows ``law`` plus a capacity term that grows towards the end of the run (smaller
learners flatten earlier), so the frontier switches between sizes as real ones do. The
prioritized sweep is the same sweep with every curve reached at ``SHIFT`` times less
compute, evaluated at the same compute points: its true multiplier is ``SHIFT`` at every
target.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from analysis.compute_at import LearningCurve, crossed, crossing_bounds
from analysis.frontier import envelope_indices

FloatArray = NDArray[np.float64]

SHIFT = 2.5
SIZES = 5
EVAL_POINTS = 12


def law(compute: FloatArray) -> FloatArray:
    return 0.15 + 3.0 * (compute / 1e9) ** -0.4


def learning_curves(shift: float = 1.0) -> list[LearningCurve]:
    """The sweep's curves, reached at ``shift`` times less compute."""
    curves = []
    for k in range(SIZES):
        budget = 1e10 * 4.0**k
        compute = np.geomspace(0.02 * budget, budget, EVAL_POINTS)
        capacity = 0.02 * (compute * shift / budget) / (1 + k)
        curves.append(LearningCurve(compute, law(compute * shift) + capacity))
    return curves


def targets(n: int = 40) -> FloatArray:
    errors = np.concatenate([c.error for c in learning_curves()])
    return np.geomspace(errors.max(), errors.min(), n)


def multiplier_from_curves(shift: float = SHIFT) -> FloatArray:
    """The data multiplier as the report computes it (each learning curve interpolated);
    NaN where either sweep does not cross a target."""
    goal = targets()
    return crossed(crossing_bounds(learning_curves(), goal)) / crossed(
        crossing_bounds(learning_curves(shift), goal)
    )


def multiplier_from_envelope(shift: float = SHIFT) -> FloatArray:
    """The baseline: the frontier's envelope points interpolated in log-log (the report's
    method before issue 17)."""
    goal = targets()

    def compute_at(curves: list[LearningCurve]) -> FloatArray:
        compute = np.concatenate([c.compute for c in curves])
        error = np.concatenate([c.error for c in curves])
        keep = envelope_indices(compute, error)
        log_c, log_e = np.log(compute[keep]), np.log(error[keep])
        log_t = np.log(goal)
        out = np.full(goal.shape, np.nan)
        inside = (log_t < log_e[0]) & (log_t >= log_e[-1])
        out[inside] = np.exp(np.interp(-log_t[inside], -log_e, log_c))
        return out

    return compute_at(learning_curves()) / compute_at(learning_curves(shift))

"""Tests of the compute at a target error (analysis.compute_at) and of one compute
multiplier (analysis.multiplier.compute_multiplier). The report's multiplier tables and
their intervals are tested in tests/test_curves.py."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.compute_at import fit_compute_at, interpolate_compute_at
from analysis.fit import fit_curve
from analysis.multiplier import compute_multiplier


def test_interpolate_compute_at_is_exact_for_a_power_law() -> None:
    compute = np.logspace(0, 4, 9)
    error = compute**-0.5
    assert interpolate_compute_at(compute, error, 0.05) == pytest.approx(400.0)
    assert interpolate_compute_at(compute, error, 0.001) is None  # never reached
    assert interpolate_compute_at(compute, error, 2.0) is None  # crossed before the data


def test_interpolate_compute_at_uses_the_running_minimum() -> None:
    compute = [1.0, 10.0, 100.0, 1000.0]
    error = [1.0, 0.5, 0.8, 0.25]  # the bump at 100 must not create a second crossing
    assert interpolate_compute_at(compute, error, 0.5) == pytest.approx(10.0)


def test_compute_multiplier_from_points_and_fits() -> None:
    compute = np.logspace(0, 4, 30)
    iid_error = 0.1 + compute**-0.5
    prio_error = 0.1 + (4.0 * compute) ** -0.5  # the same curve, reached with 4x less compute
    from_points = compute_multiplier((compute, iid_error), (compute, prio_error), target=0.2)
    assert from_points.multiplier == pytest.approx(4.0, rel=0.02)
    assert from_points.savings == pytest.approx(0.75, abs=0.01)

    iid_fit = fit_curve(compute, iid_error, "power_law_offset")
    prio_fit = fit_curve(compute, prio_error, "power_law_offset")
    from_fits = compute_multiplier(iid_fit, prio_fit, target=0.2)
    assert from_fits.multiplier == pytest.approx(4.0, rel=1e-3)
    assert from_fits.savings == pytest.approx(0.75, abs=1e-3)
    assert not from_fits.extrapolated


def test_compute_multiplier_below_the_asymptote_is_none() -> None:
    compute = np.logspace(0, 4, 30)
    fit = fit_curve(compute, 0.1 + compute**-0.5, "power_law_offset")
    result = compute_multiplier(fit, fit, target=0.05)
    assert result.multiplier is None and result.savings is None
    assert result.reason is not None and "below the fitted asymptote" in result.reason
    compute_at, why = fit_compute_at(fit, 0.05)
    assert compute_at is None and why is not None and "below the fitted asymptote" in why
    compute_at, why = fit_compute_at(fit, 0.2)
    assert compute_at == pytest.approx(100.0, rel=1e-3) and why is None

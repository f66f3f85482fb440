"""The fitter against ``scipy.optimize.curve_fit``, and timings against plain-scipy baselines,
all measured in the same run.

Run with ``PYTHONPATH=. python benchmarks/bench_fit.py [--replicates N]`` from the repository
root. Tables:

* the fitter table (tests/fit_study.py): for each family, ``--replicates`` (default 200)
  datasets of 30 points at 5% lognormal noise with known parameters, fitted by
  ``analysis.fit.fit_curve`` (least squares on log error, its own start grid), by
  ``curve_fit`` (least squares on log error, started at the true parameters) and, for
  reference, by the Huber loss (delta 1e-3) the fitter used before: median |relative
  error| of each parameter, coverage of the 95% intervals (Gauss-Newton for ours, pcov for
  curve_fit), the rate at which AIC picks the true family, the median time of one fit and
  its ratio to curve_fit's. Goals (issue 17): errors no larger than curve_fit's, coverage
  between 90% and 98%, time at most 2x curve_fit's;
* the data-path multiplier on a pure 2.5x compute shift of a realistic sweep
  (tests/shift_study.py): the largest |relative error| over the targets both sweeps cross,
  each learning curve interpolated (the report) vs the frontier's envelope interpolated (the
  report before issue 17). Goal: within 1%;
* 1000 bootstrap refits over points (``refit_curve``: warm start, analytic gradient) vs
  cold refits through ``fit_curve`` (start grid, measured on 100 resamples and scaled to
  1000);
* the Chinchilla fit (``tests/chinchilla.py``, built on analysis.fit's recipe) over
  Besiroglu et al.'s 4500-start grid (analytic gradient) vs the same recipe with
  finite-difference gradients (every 30th start, scaled to 4500);
* 1000 Chinchilla bootstrap refits from the full-data optimum.

The Chinchilla rows use Epoch's data in tests/data/scaling.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
from scipy import optimize, special

from activescale.errors import FitError
from analysis.fit import FAMILIES, HUBER, fit_curve
from tests.chinchilla import (
    CHINCHILLA_GRID,
    bootstrap_chinchilla_points,
    epoch_chinchilla_points,
    fit_chinchilla,
)
from tests.fit_study import N_POINTS, NOISE, TRUTH, replicate, study_family
from tests.point_bootstrap import bootstrap_points
from tests.shift_study import SHIFT, multiplier_from_curves, multiplier_from_envelope


def seconds(run: Callable[[], object], repeats: int = 1) -> float:
    """Median wall-clock seconds of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def synthetic_curve() -> tuple[np.ndarray, np.ndarray]:
    compute = np.logspace(0, 4, 100)
    noise = np.exp(np.random.default_rng(0).normal(0.0, 0.01, compute.size))
    return compute, (0.2 + 2.0 * compute**-0.5) * noise


def fitter_table(replicates: int) -> None:
    """The fitter against curve_fit (and Huber) on synthetic curves (module docstring)."""
    print(
        f"fitter table: {replicates} datasets per family, {N_POINTS} points, "
        f"{NOISE:.0%} lognormal noise; curve_fit started at the true parameters"
    )
    header = (
        f"{'family':<19} {'param':<5} {'|rel err| ours':>14} {'curve_fit':>9} {'huber':>7}"
        f" {'coverage ours':>13} {'curve_fit':>9}"
    )
    print(header)
    summary = []
    for family in FAMILIES:
        study = study_family(family, replicates)
        huber = _huber_errors(family, replicates)
        for name in FAMILIES[family].param_names:
            print(
                f"{family:<19} {name:<5} {study.median_error('activescale', name):14.4f} "
                f"{study.median_error('curve_fit', name):9.4f} {np.median(huber[name]):7.4f} "
                f"{study.coverage('activescale', name):13.1%} "
                f"{study.coverage('curve_fit', name):9.1%}"
            )
        summary.append(study)
    print(
        f"\n{'family':<19} {'AIC picks true: ours':>20} {'curve_fit':>9} {'failed: ours':>12}"
        f" {'curve_fit':>9} {'ms/fit ours':>11} {'curve_fit':>9} {'ratio':>6}"
    )
    for study in summary:
        ours, base = study.median_seconds("activescale"), study.median_seconds("curve_fit")
        print(
            f"{study.family:<19} {study.selection_rate('activescale'):20.1%} "
            f"{study.selection_rate('curve_fit'):9.1%} "
            f"{study.replicates - study.fitted['activescale']:12d} "
            f"{study.replicates - study.fitted['curve_fit']:9d} "
            f"{1e3 * ours:11.3f} {1e3 * base:9.3f} {ours / base:6.2f}"
        )


def _huber_errors(family: str, replicates: int) -> dict[str, list[float]]:
    """Median |relative error| of the Huber fit on the same datasets (same seed)."""
    rng = np.random.default_rng(0)
    truth = TRUTH[family][1]
    errors: dict[str, list[float]] = {name: [] for name in truth}
    for _ in range(replicates):
        compute, error = replicate(family, rng)
        try:
            fit = fit_curve(compute, error, family, loss=HUBER)
        except FitError:
            continue
        for name, value in truth.items():
            errors[name].append(abs(fit.params[name] / value - 1.0))
    return errors


def shift_table() -> None:
    curves, envelope = multiplier_from_curves(), multiplier_from_envelope()
    print(f"\ndata-path multiplier on a pure {SHIFT}x compute shift (tests/shift_study.py)")
    for name, values in (
        ("learning curves interpolated (report)", curves),
        ("envelope interpolated (before)", envelope),
    ):
        ok = np.isfinite(values)
        worst = float(np.max(np.abs(values[ok] / SHIFT - 1.0)))
        print(f"  {name:<40} {ok.sum():3d} targets, largest |relative error| {worst:.2%}")


def curve_rows() -> list[tuple[str, float, str, float]]:
    compute, error = synthetic_curve()
    rng = np.random.default_rng(1)

    def cold_refits() -> None:
        for _ in range(100):
            index = rng.integers(0, compute.size, compute.size)
            fit_curve(compute[index], error[index], "power_law_offset")

    return [
        (
            "1000 bootstrap refits, warm start + jac",
            seconds(lambda: bootstrap_points(compute, error, "power_law_offset", n_resamples=1000)),
            "1000 cold refits via fit_curve (100 timed x 10)",
            10 * seconds(cold_refits),
        )
    ]


def finite_difference_grid(
    n_params: np.ndarray, n_tokens: np.ndarray, loss: np.ndarray, stride: int
) -> None:
    """Baseline: the same Huber / logsumexp recipe, L-BFGS-B with numerical gradients."""
    log_n, log_d, log_loss = np.log(n_params), np.log(n_tokens), np.log(loss)

    def objective(theta: np.ndarray) -> float:
        a, b, e, alpha, beta = theta
        terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
        return float(special.huber(1e-3, special.logsumexp(terms, axis=0) - log_loss).sum())

    names = ("a", "b", "e", "alpha", "beta")
    mesh = np.meshgrid(*(np.asarray(CHINCHILLA_GRID[name], float) for name in names))
    starts = np.stack([axis.ravel() for axis in mesh], axis=1)[::stride]
    for start in starts:
        optimize.minimize(objective, start, method="L-BFGS-B")


def chinchilla_rows() -> list[tuple[str, float, str, float]]:
    points = epoch_chinchilla_points()
    stride = 30
    fit_seconds = seconds(lambda: fit_chinchilla(*points))
    baseline = seconds(lambda: finite_difference_grid(*points, stride=stride)) * stride
    fit = fit_chinchilla(*points, grid={name: [v[1]] for name, v in CHINCHILLA_GRID.items()})
    return [
        (
            "Chinchilla fit, 4500-start grid + jac",
            fit_seconds,
            f"same grid, finite differences (1/{stride} timed x {stride})",
            baseline,
        ),
        (
            "1000 Chinchilla bootstrap refits",
            seconds(lambda: bootstrap_chinchilla_points(*points, n_resamples=1000, fit=fit)),
            "-",
            float("nan"),
        ),
    ]


def single_threaded_blas() -> contextlib.AbstractContextManager[object]:
    """One BLAS thread for every row, so the baselines run under the same conditions as
    analysis.fit (which limits BLAS itself; see ``single_threaded_blas`` there)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("(threadpoolctl missing: baselines run with the default BLAS threads)")
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=200, help="Datasets per family.")
    args = parser.parse_args()
    with single_threaded_blas():
        fitter_table(args.replicates)
        shift_table()
        rows = curve_rows() + chinchilla_rows()
    print()
    width = max(len(row[0]) for row in rows)
    base_width = max(len(row[2]) for row in rows)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'measurement':<{width}}  {'seconds':>9}  {'baseline':<{base_width}}  {'seconds':>9}")
    for name, value, base_name, base_value in rows:
        print(f"{name:<{width}}  {value:9.4f}  {base_name:<{base_width}}  {base_value:9.4f}")


if __name__ == "__main__":
    main()

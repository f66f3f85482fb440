"""Timings of analysis.fit against plain-scipy baselines measured in the same run.

Run with ``python benchmarks/bench_fit.py``. Rows:

* one ``power_law_offset`` fit of a 100-point curve (median of 20) vs one
  ``scipy.optimize.curve_fit`` of the same curve (least squares on raw error, one start);
* 1000 bootstrap refits (warm start, analytic gradient) vs cold refits through
  ``fit_curve`` (start grid, measured on 100 resamples and scaled to 1000);
* the Chinchilla fit over Besiroglu et al.'s 4500-start grid (analytic gradient) vs the
  same recipe with finite-difference gradients (every 30th start, scaled to 4500);
* 1000 Chinchilla bootstrap refits from the full-data optimum.

The Chinchilla rows need Epoch's data in ../shared/fixtures/scaling (skipped otherwise).
"""

from __future__ import annotations

import contextlib
import csv
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import optimize, special

from analysis.fit import (
    CHINCHILLA_GRID,
    bootstrap_chinchilla,
    bootstrap_fit,
    fit_chinchilla,
    fit_curve,
)

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "scaling"


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


def curve_rows() -> list[tuple[str, float, str, float]]:
    compute, error = synthetic_curve()

    def scipy_curve_fit() -> None:
        optimize.curve_fit(
            lambda c, a, alpha, e: e + a * c**-alpha, compute, error, p0=(1.0, 0.3, 0.1)
        )

    rows = [
        (
            "power_law_offset fit, 100 points (median of 20)",
            seconds(lambda: fit_curve(compute, error, "power_law_offset"), repeats=20),
            "scipy curve_fit, same curve (median of 20)",
            seconds(scipy_curve_fit, repeats=20),
        )
    ]

    rng = np.random.default_rng(1)

    def cold_refits() -> None:
        for _ in range(100):
            index = rng.integers(0, compute.size, compute.size)
            fit_curve(compute[index], error[index], "power_law_offset")

    rows.append(
        (
            "1000 bootstrap refits, warm start + jac",
            seconds(lambda: bootstrap_fit(compute, error, "power_law_offset", n_resamples=1000)),
            "1000 cold refits via fit_curve (100 timed x 10)",
            10 * seconds(cold_refits),
        )
    )
    return rows


def epoch_points() -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    path = FIXTURES / "epoch_chinchilla_svg_extracted_data.csv"
    if not path.is_file():
        return None
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    n_params = np.array([float(row["Model Size"]) for row in rows])
    flops = np.array([float(row["Training FLOP"]) for row in rows])
    loss = np.array([float(row["loss"]) for row in rows])
    keep = np.argsort(loss, kind="stable")[:-5]
    return n_params[keep], flops[keep] / (6 * n_params[keep]), loss[keep]


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
    points = epoch_points()
    if points is None:
        print(f"(Chinchilla rows skipped: {FIXTURES} is missing)")
        return []
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
            seconds(lambda: bootstrap_chinchilla(*points, n_resamples=1000, fit=fit)),
            "-",
            float("nan"),
        ),
    ]


def single_threaded_blas() -> contextlib.AbstractContextManager[object]:
    """One BLAS thread for every row, so the baselines run under the same conditions as
    analysis.fit (which limits BLAS itself; see ``_single_threaded_blas`` there)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("(threadpoolctl missing: baselines run with the default BLAS threads)")
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def main() -> None:
    with single_threaded_blas():
        rows = curve_rows() + chinchilla_rows()
    width = max(len(row[0]) for row in rows)
    base_width = max(len(row[2]) for row in rows)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'measurement':<{width}}  {'seconds':>9}  {'baseline':<{base_width}}  {'seconds':>9}")
    for name, value, base_name, base_value in rows:
        print(f"{name:<{width}}  {value:9.4f}  {base_name:<{base_width}}  {base_value:9.4f}")


if __name__ == "__main__":
    main()

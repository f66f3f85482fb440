"""Cost of the report's bootstrap over runs, against cold refits measured in the same run.

Run with ``PYTHONPATH=. python benchmarks/bench_report.py``. Synthetic sweep: IID and two prioritized
curves, 3 learner sizes x 3 seeds x 6 evaluations (as in tests/test_curves.py). Rows:

* 1000 resamples of every curve's runs (seeds drawn with replacement, frontier rebuilt,
  AIC-best family refitted warm from the full-data optimum, compute at 43 targets) — what
  ``write_report`` runs by default;
* the same resamples refitted cold through ``fit_curve`` (start grid), measured on 50
  resamples and scaled to 1000 — the baseline the warm start replaces;
* ``write_report`` end to end on an MLflow store holding the sweep (1000 resamples).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.curves import frontier_of, resample_frontier, seed_runs
from analysis.fit import fit_curve
from analysis.multiplier import report_targets, target_sweep
from analysis.report import write_report
from analysis.run_bootstrap import bootstrap_runs
from tests.test_curves import synthetic_frame
from tests.test_report import log_sweep


def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.concat(
        [
            synthetic_frame(1.0, "iid", rng=rng),
            synthetic_frame(2.0, "learnability", rng=rng).assign(scorer_size="xxs"),
            synthetic_frame(1.5, "learnability", rng=rng).assign(
                scorer_size="xs", scorer_params=400, run=lambda f: f["run"] + "-xs"
            ),
        ],
        ignore_index=True,
    )


def main() -> None:
    runs = seed_runs(frame())
    curves = [frontier_of(r) for r in runs]
    fits = {c.label: fit_curve(c.compute, c.error, "power_law_offset") for c in curves}
    targets = np.concatenate([report_targets(curves[0]), target_sweep(curves[0])])

    start = time.perf_counter()
    bootstrap_runs(runs, fits, targets, n_resamples=1000)
    warm = time.perf_counter() - start

    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(50):
        for curve in runs:
            resample = resample_frontier(curve, rng)
            compute, error = resample.compute, resample.error
            fit_curve(compute, error, "power_law_offset")
    cold = (time.perf_counter() - start) * 1000 / 50

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        log_sweep(uri, "bench", frame())
        start = time.perf_counter()
        write_report([("bench", uri)], Path(tmp) / "report", log_artifacts=False)
        report = time.perf_counter() - start

    print(f"{'row':58s} {'seconds':>8s}")
    print(f"{'run bootstrap, 3 curves x 1000 resamples (warm refits)':58s} {warm:8.2f}")
    print(f"{'  baseline: cold refits (fit_curve), scaled to 1000':58s} {cold:8.2f}")
    print(f"{'write_report end to end (1000 resamples, 4 plots)':58s} {report:8.2f}")


if __name__ == "__main__":
    main()

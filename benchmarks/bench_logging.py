"""MLflow logging overhead on a ~30-second run (target: <= 2% of the run's wall time).

Runs the same config with the no-op logger (baseline) and with the logger jobs use
(``trainers.tracking.FlushingMLflowLogger``: one ``log_batch`` per evaluation) writing to a
real SQLite MLflow store, interleaved, and also times the logger's own calls directly (the
overhead with no run-to-run noise in it).

    python benchmarks/bench_logging.py [--steps 55000] [--evals 30] [--reps 2]

55000 steps of the default config take about 30 s on 2 CPU cores (45000 took 24.6 s).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import torch

from trainers.config import RunConfig
from trainers.loop import RunContext, train
from trainers.tracking import FlushingMLflowLogger, MetricLogger


class TimedLogger(MetricLogger):
    """Wraps a logger and adds up the seconds spent inside it."""

    def __init__(self, inner: MetricLogger) -> None:
        self.inner = inner
        self.seconds = 0.0

    def _timed(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        start = time.perf_counter()
        fn(*args, **kwargs)
        self.seconds += time.perf_counter() - start

    def log_params(self, params: dict[str, Any]) -> None:
        self._timed(self.inner.log_params, params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._timed(self.inner.log_metrics, metrics, step)

    def flush(self) -> None:
        self._timed(self.inner.flush)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=55000)
    parser.add_argument("--evals", type=int, default=30)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = RunConfig.model_validate(
        {
            "dataset": {"train_size": 8000, "label_noise": 0.5},
            "learner": {"size": "l"},
            "scorer": {"size": "xxs"},
            "reference": {"size": "s", "steps": 200},
            "selection": {"policy": "learnability", "keep": 0.25},
            "budget": {"steps": args.steps},
            "eval": {"points": args.evals},
        }
    ).resolved()
    from mlflow.tracking import MlflowClient

    plain, logged, inside = [], [], []
    with TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        client = MlflowClient(tracking_uri=uri)
        experiment = client.create_experiment("bench", artifact_location=f"{tmp}/artifacts")
        train(cfg, RunContext(workdir=Path(tmp)))  # warm-up: caches the reference, imports
        for _ in range(args.reps):
            start = time.perf_counter()
            train(cfg, RunContext(workdir=Path(tmp)), MetricLogger())
            plain.append(time.perf_counter() - start)

            start = time.perf_counter()
            run_id = client.create_run(experiment).info.run_id
            timed = TimedLogger(FlushingMLflowLogger(uri, run_id))
            train(cfg, RunContext(workdir=Path(tmp)), timed)
            client.set_terminated(run_id)
            logged.append(time.perf_counter() - start)
            inside.append(timed.seconds)
        n_metrics = len(client.get_run(run_id).data.metrics)
    base, with_mlflow, spent = (
        statistics.median(plain),
        statistics.median(logged),
        statistics.median(inside),
    )
    print(
        f"run: {args.steps} steps, {args.evals} evaluations x {n_metrics} metrics, {args.reps} reps (medians)"
    )
    print(f"no-op logger:           {base:8.2f} s")
    print(
        f"MLflow (SQLite) logger: {with_mlflow:8.2f} s   wall-clock difference {100 * (with_mlflow - base) / base:+.2f}%"
    )
    print(
        f"time inside the logger: {spent:8.3f} s   = {100 * spent / with_mlflow:.2f}% of the run (target <= 2%)"
    )


if __name__ == "__main__":
    main()

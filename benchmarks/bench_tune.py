"""Speed of the tuning storages: trials per minute for a trivial objective (no training).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_tune.py [--trials 200] [--workers 2]

Each storage is opened the way ``activescale tune`` opens it (``orchestrator.tune.studies.open_storage``:
a journal file, or SQLite through RDBStorage with heartbeats) and shared by ``--workers``
processes that split the trials; a random sampler keeps the sampler's own cost flat. Baseline,
in the same run: one process on Optuna's in-memory storage (no storage at all). The storage
overhead per trial is the worker-seconds a trial costs on the storage minus what it costs in
memory.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from rich.console import Console
from rich.table import Table

from orchestrator.tune.config import TuneConfig
from orchestrator.tune.studies import open_storage

SPACE = {
    "optimizer.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "optimizer.warmup": {"type": "float", "low": 0.0, "high": 0.2},
}


def objective(trial: optuna.Trial) -> float:
    lr = trial.suggest_float("optimizer.lr", 1e-4, 1e-1, log=True)
    warmup = trial.suggest_float("optimizer.warmup", 0.0, 0.2)
    return -((lr - 3e-3) ** 2) - warmup


def worker(location: str | None, name: str, trials: int, seed: int, out: Any) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")
    tune = TuneConfig.model_validate({"space": SPACE})
    storage = (
        optuna.storages.InMemoryStorage() if location is None else open_storage(location, tune)
    )
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.RandomSampler(seed=seed),
    )
    start = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    out.put((start, time.perf_counter()))


def measure(location: str | None, trials: int, workers: int, repeat: int = 3) -> float:
    """Median wall seconds for ``trials`` trials split over ``workers`` processes (each
    repeat a fresh study on the same storage; setup not timed)."""
    walls = sorted(_measure_once(location, trials, workers) for _ in range(repeat))
    return walls[len(walls) // 2]


def _measure_once(location: str | None, trials: int, workers: int) -> float:
    name = f"bench-{time.monotonic_ns()}"
    if location is not None:  # create the study once, so workers do not race to create it
        tune = TuneConfig.model_validate({"space": SPACE})
        optuna.create_study(study_name=name, storage=open_storage(location, tune))
    context = mp.get_context("fork")
    out = context.Queue()
    processes = [
        context.Process(target=worker, args=(location, name, trials // workers, i, out))
        for i in range(workers)
    ]
    for p in processes:
        p.start()
    spans = [out.get() for _ in processes]
    for p in processes:
        p.join()
    return max(end for _, end in spans) - min(start for start, _ in spans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--postgres", help="Also measure this PostgreSQL URL (RDB + heartbeat), if given."
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        baseline = measure(None, args.trials, 1)
        cases = [
            ("in-memory (baseline)", 1, baseline),
            ("journal file", 1, measure(str(root / "a.journal"), args.trials, 1)),
            (
                "journal file",
                args.workers,
                measure(str(root / "b.journal"), args.trials, args.workers),
            ),
            ("SQLite (RDB + heartbeat)", 1, measure(f"sqlite:///{root / 'a.db'}", args.trials, 1)),
            (
                "SQLite (RDB + heartbeat)",
                args.workers,
                measure(f"sqlite:///{root / 'b.db'}", args.trials, args.workers),
            ),
        ]
        if args.postgres:
            cases += [
                ("PostgreSQL (RDB + heartbeat)", n, measure(args.postgres, args.trials, n))
                for n in (1, args.workers)
            ]
    per_trial_memory = baseline / args.trials
    table = Table(title=f"{args.trials} trials of a trivial objective (random sampler)")
    for column in ("storage", "workers", "wall s", "trials/min", "overhead ms/trial"):
        table.add_column(column, justify="right")
    for label, workers, wall in cases:
        worker_seconds_per_trial = wall * workers / args.trials
        overhead_ms = (worker_seconds_per_trial - per_trial_memory) * 1000
        table.add_row(
            label,
            str(workers),
            f"{wall:.2f}",
            f"{args.trials / wall * 60:.0f}",
            "-" if workers == 1 and label.startswith("in-memory") else f"{overhead_ms:.1f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()

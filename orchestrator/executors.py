"""Executors: where runs execute. One small interface; inline, local and SLURM differ behind it.

``launch(jobs, on_progress)`` starts every job. Blocking executors (``inline``, ``local``)
return when all jobs have ended; the SLURM executor returns once the jobs are submitted. Jobs
report their own state to the run store (``orchestrator/worker.py``), so the caller never
needs a handle to know how a run ended.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.errors import SubmissionError
from orchestrator.worker import RunJob, execute_run


class ExecutorConfig(BaseModel):
    """Where and how runs execute."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["local", "inline"] = Field(
        "local",
        description=(
            "local: parallel processes on this machine (submitit LocalExecutor); "
            "inline: one after another in this process (debugging)."
        ),
    )
    max_parallel: int | None = Field(
        None, ge=1, description="local: runs at once; null: the number of CPU cores."
    )
    threads_per_run: int | None = Field(
        None, ge=1, description="torch threads per run; null: cores / max_parallel."
    )


class Executor(Protocol):
    blocking: bool

    def launch(self, jobs: Sequence[RunJob], on_progress: Callable[[], None]) -> None: ...


class InlineExecutor:
    """Runs jobs one after another in this process: tracebacks and debuggers just work."""

    blocking = True

    def launch(self, jobs: Sequence[RunJob], on_progress: Callable[[], None]) -> None:
        for job in jobs:
            # A failure is recorded in the store by the worker; go on with the next run.
            with contextlib.suppress(Exception):
                execute_run(job)
            on_progress()


class LocalExecutor:
    """Parallel subprocesses through submitit's LocalExecutor, at most ``max_parallel`` at once."""

    blocking = True
    POLL_SECONDS = 0.5

    def __init__(self, folder: Path, max_parallel: int | None, threads_per_run: int | None) -> None:
        self.folder = folder
        self.max_parallel = max_parallel or os.cpu_count() or 1
        self.threads = threads_per_run or max(1, (os.cpu_count() or 1) // self.max_parallel)

    def launch(self, jobs: Sequence[RunJob], on_progress: Callable[[], None]) -> None:
        import submitit

        executor = submitit.LocalExecutor(folder=self.folder / "%j")
        executor.update_parameters(timeout_min=60 * 24 * 7)
        pending = list(jobs)
        running: list[submitit.Job[str]] = []
        while pending or running:
            while pending and len(running) < self.max_parallel:
                job = pending.pop(0)
                try:
                    running.append(executor.submit(execute_run, replace(job, threads=self.threads)))
                except Exception as err:  # submitit could not start the process
                    raise SubmissionError(f"could not start run {job.run_id}: {err}") from err
            time.sleep(self.POLL_SECONDS)
            still = [j for j in running if not j.done()]
            if len(still) != len(running):
                on_progress()
            running = still
        on_progress()


def make_executor(cfg: ExecutorConfig, workdir: Path) -> Executor:
    if cfg.kind == "inline":
        return InlineExecutor()
    return LocalExecutor(workdir / "jobs", cfg.max_parallel, cfg.threads_per_run)

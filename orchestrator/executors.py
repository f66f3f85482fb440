"""Executors: where runs execute. One small interface; inline, local and SLURM differ behind it.

``launch(jobs, on_progress)`` starts every job. Blocking executors (``inline``, ``local``)
return when all jobs have ended; the SLURM executor (``orchestrator/slurm.py``) returns once
the jobs are submitted. Jobs report their own state to the run store
(``orchestrator/worker.py``), so the caller never needs a handle to know how a run ended.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import ConfigDict, Field, field_validator

from orchestrator.errors import SubmissionError
from orchestrator.sbatch import SlurmResources, check_single_line
from orchestrator.worker import RunJob, execute_run

if TYPE_CHECKING:
    from orchestrator.store import RunStore


class ExecutorConfig(SlurmResources):
    """Where and how runs execute (the SLURM resource fields apply to kind=slurm only)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["local", "inline", "slurm"] = Field(
        "local",
        description=(
            "local: parallel processes on this machine (submitit LocalExecutor); "
            "inline: one after another in this process (debugging); "
            "slurm: job arrays on a SLURM cluster (`activescale submit`)."
        ),
    )
    max_parallel: int | None = Field(
        None, ge=1, description="local: runs at once; null: the number of CPU cores."
    )
    threads_per_run: int | None = Field(
        None, ge=1, description="torch threads per run; null: cores / max_parallel."
    )
    setup: list[str] = Field(
        default_factory=list,
        description="slurm: shell lines run before the job (e.g. `module load cuda`), one per item.",
    )
    array_parallelism: int | None = Field(
        None, ge=1, description="slurm: array tasks running at once per array (null: no limit)."
    )
    resources: dict[str, SlurmResources] = Field(
        default_factory=dict,
        description=(
            "slurm: per learner size, fields that replace the ones above, "
            "e.g. {xl: {gpus_per_node: 1, mem_gb: 32}}. Different resources: different arrays."
        ),
    )
    max_num_timeout: int = Field(
        3, ge=0, description="slurm: requeues allowed on time limit or preemption, per job."
    )
    signal_delay_s: int = Field(
        90, ge=1, description="slurm: the requeue signal comes this many seconds before the limit."
    )
    snapshot: bool = Field(
        True,
        description=(
            "slurm: run jobs from a copy of the code in WORKDIR/snapshots/ (from a source "
            "checkout), so edits after submission do not reach queued jobs."
        ),
    )

    @field_validator("setup")
    @classmethod
    def _one_command_per_line(cls, lines: list[str]) -> list[str]:
        for line in lines:
            check_single_line(line, "setup line")
        return lines

    @field_validator("resources")
    @classmethod
    def _known_sizes(cls, table: dict[str, SlurmResources]) -> dict[str, SlurmResources]:
        from trainers.models import LADDERS

        sizes = {size for ladder in LADDERS.values() for size in ladder}
        for size in table:
            if size not in sizes:
                raise ValueError(
                    f"resources: {size!r} is not a learner size; use one of {', '.join(sorted(sizes))}"
                )
        return table

    def resources_for(self, learner_size: str) -> SlurmResources:
        """The resources a run with this learner size asks for."""
        base = SlurmResources.model_validate(
            {name: getattr(self, name) for name in SlurmResources.model_fields}
        )
        return base.merged(self.resources.get(learner_size))


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


def local_executor(folder: Path, threads: int) -> Any:
    """A submitit LocalExecutor whose processes use ``threads`` threads. They are capped in the
    child's environment too: numpy/OpenBLAS (data generation) read it at import, before
    torch.set_num_threads in the worker can act."""
    import submitit

    executor = submitit.LocalExecutor(folder=folder / "%j")
    executor.update_parameters(
        timeout_min=60 * 24 * 7,
        setup=[f"export OMP_NUM_THREADS={threads}", f"export OPENBLAS_NUM_THREADS={threads}"],
    )
    return executor


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

        executor = local_executor(self.folder, self.threads)
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


def make_executor(cfg: ExecutorConfig, workdir: Path, store: RunStore | None = None) -> Executor:
    if cfg.kind == "inline":
        return InlineExecutor()
    if cfg.kind == "slurm":
        from orchestrator.slurm import SlurmExecutor

        if store is None:
            raise SubmissionError("the SLURM executor records submissions: pass the run store")
        return SlurmExecutor(cfg, workdir, store)
    return LocalExecutor(workdir / "jobs", cfg.max_parallel, cfg.threads_per_run)

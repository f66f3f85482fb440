"""Executors: where jobs execute. One small interface; inline, local and SLURM differ behind it.

A *job* is a picklable callable that does one piece of a sweep's work in a worker process:
a run (:class:`orchestrator.worker.RunJob`) or a tuning worker
(:class:`orchestrator.tune.worker.TuneJob`). ``Executor.launch(jobs, on_progress)`` starts
every job and returns one handle per job. Blocking executors (``inline``, ``local``) return
when all jobs have ended; the SLURM executor (``orchestrator/slurm.py``) returns once sbatch
has accepted them. Runs report their own state to the run store, so the caller never needs a
handle to know how a run ended; tuning waits on the handles (:func:`wait`).
``orchestrator.launch.make_executor`` is the one place that picks the backend.

A run may train on several processes (``nodes`` x ``tasks_per_node``, per learner size in
``resources``): SLURM starts them as the tasks of one job (srun), the local executor as the
tasks of one submitit LocalExecutor job, with a free ``MASTER_PORT`` chosen here; each process
then joins the run's process group (``orchestrator/ranks.py``).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import ConfigDict, Field, field_validator, model_validator

from activescale.errors import SubmissionError
from activescale.secrets import private_files
from orchestrator.recovery import stop_jobs, this_process
from orchestrator.sbatch import SlurmResources, check_single_line

if TYPE_CHECKING:
    from orchestrator.plugins import PluginRef
    from orchestrator.recovery import ProcessId


class ExecutorConfig(SlurmResources):
    """Where and how runs execute (the SLURM resource fields apply to kind=slurm only)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    kind: Literal["local", "inline", "slurm"] = Field(
        "local",
        description=(
            "local: parallel processes on this machine (submitit LocalExecutor); "
            "inline: one after another in this process (debugging); "
            "slurm: job arrays on a SLURM cluster (`activescale submit`)."
        ),
    )
    max_parallel: int | None = Field(
        None,
        ge=1,
        description="local: runs at once; null: CPU cores / the most processes a run uses.",
    )
    threads_per_run: int | None = Field(
        None,
        ge=1,
        description=(
            "local: torch threads per run, split over its processes; null: cores / max_parallel."
        ),
    )
    collective_timeout_s: int = Field(
        600,
        ge=1,
        description=(
            "Runs on several processes: a collective that waits longer fails the run (a "
            "process that hangs, or died without closing its connections)."
        ),
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
        from trainers.models import all_sizes

        sizes = all_sizes()
        for size in table:
            if size not in sizes:
                raise ValueError(
                    f"resources: {size!r} is not a learner size; use one of {', '.join(sorted(sizes))}"
                )
        return table

    @model_validator(mode="after")
    def _processes_fit_the_kind(self) -> ExecutorConfig:
        tables = {"": self, **{f"resources.{k}.": v for k, v in self.resources.items()}}
        for where, res in tables.items():
            if self.kind != "slurm" and (res.nodes or 1) > 1:
                raise ValueError(
                    f"{where}nodes: {res.nodes} nodes need kind slurm; executor.kind "
                    f"{self.kind!r} runs on this machine, so set nodes to 1"
                )
            if self.kind == "inline" and res.processes > 1:
                raise ValueError(
                    f"{where}tasks_per_node: kind inline runs each run in this process, but "
                    f"{res.processes} processes are asked for; use kind local, or remove it"
                )
        return self

    def processes_for(self, job: Job) -> int:
        """Processes a job runs as: its size's ``nodes`` x ``tasks_per_node`` for a run, one
        for a job that cannot spread (a tuning worker)."""
        return self.resources_for(job.learner_size).processes if job.data_parallel else 1

    def resources_for(self, learner_size: str) -> SlurmResources:
        """The resources a job for a learner of this size asks for."""
        base = SlurmResources.model_validate(
            {name: getattr(self, name) for name in SlurmResources.model_fields}
        )
        return base.merged(self.resources.get(learner_size))


@dataclass(frozen=True, kw_only=True)
class JobBase:
    """What every job carries besides its work: set by the executor that starts it."""

    threads: int | None = None  # torch (and BLAS) threads in the worker process
    cwd: str | None = None  # the submitter's working directory (relative paths resolve there)
    # The sweep's plugins, loaded by the job before it validates a config (SLURM: copies taken
    # at submission, orchestrator.plugins.snapshot_plugins).
    plugins: tuple[PluginRef, ...] = ()
    # The orchestrator that started the job on this machine (local executor): a worker whose
    # orchestrator is gone stops at its next step (orchestrator/recovery.py).
    supervisor: ProcessId | None = None

    @property
    def data_parallel(self) -> bool:
        """True if the job may run as several processes (a run); False: one process."""
        return False

    def enter(self) -> None:
        """Set up the worker process: the submitter's directory, the thread count, Ctrl-C."""
        if os.environ.get("SUBMITIT_EXECUTOR") == "local" and signal.getsignal(signal.SIGINT) in (
            signal.SIG_IGN,
            None,
        ):
            # The local executor's shell ignores SIGINT for the controller's sake (see
            # local_executor); the job itself stops on it.
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if self.cwd:
            os.chdir(self.cwd)
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)


class StopSignal(Protocol):
    """A request to stop that a run honours between steps (a SLURM job about to be requeued:
    ``orchestrator.slurm.DeferredRequeue``)."""

    def requested(self) -> bool: ...

    def hand_over(self) -> None:
        """Called once the checkpoint is saved: requeue the job and exit (raises SystemExit)."""


class Job(Protocol):
    """One piece of a sweep's work, run in a worker process (picklable)."""

    @property
    def threads(self) -> int | None: ...

    @property
    def cwd(self) -> str | None: ...

    @property
    def plugins(self) -> tuple[PluginRef, ...]: ...

    @property
    def requeueable(self) -> bool:
        """SLURM: True if the job checkpoints and requeues itself on the time limit or
        preemption (a run); False: it is killed there (a tuning worker: its trial is retried)."""
        ...

    @property
    def sweep(self) -> str: ...

    @property
    def key(self) -> str:
        """The job's id within its sweep (a run's id): orders and names array tasks."""
        ...

    @property
    def learner_size(self) -> str:
        """The learner size whose ``executor.resources`` the job asks for (SLURM)."""
        ...

    @property
    def data_parallel(self) -> bool:
        """True if the job may run as several processes that train together (a run: its
        size's ``nodes`` x ``tasks_per_node``); False: one process (a tuning worker)."""
        ...

    def __call__(self, job_id: str | None = None, stop: StopSignal | None = None) -> str:
        """Do the work; returns how it ended (e.g. ``completed``)."""
        ...

    def job_name(self, token: str) -> str:
        """The SLURM job name of a submission of this job, e.g. ``as-SWEEP-TOKEN``."""
        ...

    def submitted_as(self, token: str) -> Job:
        """This job, owned by submission ``token`` (a run checks it before it trains)."""
        ...


class Handle(Protocol):
    """What ``launch`` returns per job: submitit's ``Job``, or a finished inline job."""

    def done(self) -> bool: ...

    def exception(self) -> BaseException | None: ...


class Executor(Protocol):
    blocking: bool

    def launch(self, jobs: Sequence[Job], on_progress: Callable[[], None]) -> list[Any]:
        """Start every job; returns one handle per job (see :class:`Handle`)."""
        ...


@dataclass
class InlineHandle:
    """A job that already ran in this process."""

    job_id: str
    error: BaseException | None = None

    def done(self) -> bool:
        return True

    def exception(self) -> BaseException | None:
        return self.error


class InlineExecutor:
    """Runs jobs one after another in this process: tracebacks and debuggers just work."""

    blocking = True

    def launch(self, jobs: Sequence[Job], on_progress: Callable[[], None]) -> list[Any]:
        handles = []
        for i, job in enumerate(jobs):
            handle = InlineHandle(f"inline-{i}")
            try:  # a run records its failure in the store; go on with the next one
                job()
            except Exception as err:
                handle.error = err
            handles.append(handle)
            on_progress()
        return handles


def local_executor(folder: Path, threads: int, processes: int = 1, gpus: str | None = None) -> Any:
    """A submitit LocalExecutor whose processes use ``threads`` threads. They are capped in the
    child's environment too: numpy/OpenBLAS (data generation) read it at import, before
    torch.set_num_threads in the worker can act. ``processes`` > 1: each job runs as that many
    tasks, which find each other at 127.0.0.1 and a port that was free just now (torchrun's
    standalone mode picks its port the same way). ``gpus``: the job's CUDA_VISIBLE_DEVICES
    (submitit hides every GPU from a local job that asks for none).

    The shell ignores SIGINT, and so does submitit's controller below it (an ignored signal
    stays ignored across exec): Ctrl-C reaches every process of the terminal's process group,
    and a controller interrupted kills its tasks a second later, before they can save a
    checkpoint. The tasks listen again (``JobBase.enter``) and stop at their next step."""
    import submitit

    setup = [
        "trap '' INT",
        f"export OMP_NUM_THREADS={threads}",
        f"export OPENBLAS_NUM_THREADS={threads}",
    ]
    if gpus:
        setup.append(f"export CUDA_VISIBLE_DEVICES={shlex.quote(gpus)}")
    if processes > 1:
        setup += ["export MASTER_ADDR=127.0.0.1", f"export MASTER_PORT={free_port()}"]
    executor = submitit.LocalExecutor(folder=folder / "%j")
    executor.update_parameters(timeout_min=60 * 24 * 7, tasks_per_node=processes, setup=setup)
    return executor


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries: the variable's where it
    is set (indices, UUIDs or MIG names), else every device torch sees."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is not None:
        return [part.strip() for part in value.split(",") if part.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def gpus_for(visible: Sequence[str], processes: int, index: int) -> str:
    """The CUDA_VISIBLE_DEVICES of the ``index``-th run launched: one GPU per process, taken
    round-robin so that runs at once spread over the GPUs (several runs share a GPU when there
    are more runs than GPUs); a run's processes never share one. "" without GPUs."""
    if not visible:
        return ""
    count = min(processes, len(visible))
    return ",".join(visible[(index * count + i) % len(visible)] for i in range(count))


def free_port() -> int:
    """A TCP port of 127.0.0.1 that no process listens on (at the moment of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LocalExecutor:
    """Parallel subprocesses through submitit's LocalExecutor, at most ``max_parallel`` runs at
    once; a run of several processes (``processes(job)``) splits ``threads_per_run`` over them."""

    blocking = True
    POLL_SECONDS = 0.5

    def __init__(
        self,
        folder: Path,
        max_parallel: int | None,
        threads_per_run: int | None,
        processes: Callable[[Job], int] | None = None,
    ) -> None:
        self.folder = folder
        self.requested_parallel, self.requested_threads = max_parallel, threads_per_run
        self.processes = processes or (lambda job: 1)

    def launch(self, jobs: Sequence[Job], on_progress: Callable[[], None]) -> list[Any]:
        cores = os.cpu_count() or 1
        widest = max((self.processes(job) for job in jobs), default=1)
        max_parallel = self.requested_parallel or max(1, cores // widest)
        threads_per_run = self.requested_threads or max(1, cores // max_parallel)
        supervisor = this_process()
        pending = list(jobs)
        handles: list[Any] = []
        running: list[Any] = []
        gpus = visible_gpus()
        try:
            while pending or running:
                while pending and len(running) < max_parallel:
                    job = pending.pop(0)
                    processes = self.processes(job)
                    threads = max(1, threads_per_run // processes)
                    devices = gpus_for(gpus, processes, len(handles))
                    executor = local_executor(self.folder, threads, processes, devices)
                    started = replace(job, threads=threads, supervisor=supervisor)  # type: ignore[type-var]
                    try:
                        with private_files():  # the pickle holds the store and tracking URLs
                            handle = executor.submit(started)
                    except Exception as err:  # submitit could not start the process
                        raise SubmissionError(
                            f"could not start a job of {job.sweep}: {err}"
                        ) from err
                    handles.append(handle)
                    running.append(handle)
                time.sleep(self.POLL_SECONDS)
                still = [h for h in running if not h.done()]
                if len(still) != len(running):
                    on_progress()
                running = still
        except BaseException:  # Ctrl-C, SIGTERM: each job saves a checkpoint and stops
            stop_jobs(running)
            raise
        on_progress()
        return handles


def wait(handles: Sequence[Any], poll_s: float = 2.0) -> list[str]:
    """Wait for jobs to end; returns one line per job that raised."""
    while not all(h.done() for h in handles):
        time.sleep(poll_s)
    problems = []
    for handle in handles:
        error = handle.exception()
        if error is not None:  # submitit's message is a log dump: name the error and the log
            log = getattr(getattr(handle, "paths", None), "stderr", None)
            where = f"; log: {log}" if log else ""
            problems.append(f"job {handle.job_id}: {type(error).__name__}{where}")
    return problems


def cancel_all(handles: Sequence[Any]) -> None:
    """Stop jobs that are still running (scancel on SLURM, a signal locally)."""
    for handle in handles:
        with contextlib.suppress(Exception):
            handle.cancel(check=False)

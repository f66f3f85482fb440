"""What runs inside a job: one run, from store bookkeeping to MLflow to the trainer.

:func:`execute_run` is what a :class:`RunJob` does wherever an executor starts it (in this
process, in a local subprocess, or in a SLURM job). The run reports its own state to the store: started (a new
attempt), then completed with its final metrics, or failed with the tail of its traceback.

A job runs its run only if it still owns it (:meth:`RunStore.try_start`): never a run that has
completed or was cancelled, nor one resubmitted since (a stale job exits without training).
A SLURM job told to stop (time limit, preemption) checkpoints at the next step boundary, is
requeued by submitit, closes its attempt as ``interrupted`` and leaves the run in flight; the
next start resumes from that checkpoint.

A run executed here (local executor, inline) stops between two steps on SIGINT, SIGTERM or
SIGHUP, or once the orchestrator that started it is gone (``orchestrator.recovery.LocalStop``):
it saves a checkpoint and marks the run ``interrupted`` (the next ``run`` resumes it). Its
owner (host, pid, start time) and heartbeat let a later command tell that a run left
``running`` has no process any more (``orchestrator.recovery.recover_stranded``).

A run on several processes runs this in every one of them; rank 0 does all of the above, the
others follow it (``orchestrator/ranks.py``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from activescale.errors import StoreError
from activescale.schema import TAG_RUN_ID, TAG_SWEEP
from activescale.secrets import mask_text, remember
from orchestrator.executors import JobBase, StopSignal
from orchestrator.mlflow_runs import client_for, create_child, find_child, source_tags, tracked
from orchestrator.plugins import load_job_plugins, plugin_params, plugin_record
from orchestrator.recovery import LocalStop, heartbeat, process_start
from orchestrator.store import COMPLETED, FAILED, INTERRUPTED, RunStore
from trainers.tracking import FlushingMLflowLogger


@dataclass(frozen=True)
class RunJob(JobBase):
    """Everything a run's job needs, picklable (sent to subprocesses and cluster nodes)."""

    sweep: str
    run_id: str
    config: dict[str, Any]
    label: dict[str, Any]
    store_url: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    workdir: str
    reference_share: int = 1
    code_version: str | None = None
    submission: str | None = None  # the submission token (SLURM); None: always run
    requeueable: bool = True
    collective_timeout_s: float = 600.0  # on several processes (orchestrator/ranks.py)

    @property
    def data_parallel(self) -> bool:
        return True

    @property
    def learner_size(self) -> str:
        return str(self.config["learner"]["size"])

    def __call__(self, job_id: str | None = None, stop: StopSignal | None = None) -> str:
        return execute_run(self, job_id, stop)

    @property
    def key(self) -> str:
        return self.run_id

    def job_name(self, token: str) -> str:
        return run_job_name(self.sweep, token)

    def submitted_as(self, token: str) -> RunJob:
        return replace(self, submission=token)


def run_job_name(sweep: str, token: str) -> str:
    """The SLURM job name of a submission of runs (found again by name after a crash)."""
    return f"as-{sweep}-{token}"


SKIPPED = "skipped"


class RunFailed(Exception):
    """A run's error whose message held a password: raised instead, with the masked
    traceback, so the job's log never shows the secret."""


def code_version(path: Path | None = None) -> str | None:
    """``<commit>`` or ``<commit>-dirty`` of the git checkout holding this package, if any."""
    root = path or Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def mlflow_child_run(job: RunJob, store: RunStore, client: Any) -> str:
    """The run's MLflow child run: reused across attempts, so a config has exactly one."""
    row = store.run(job.sweep, job.run_id)
    if row is not None and row.mlflow_run_id:
        return row.mlflow_run_id
    tags = {TAG_RUN_ID: job.run_id, TAG_SWEEP: job.sweep}
    run_id = find_child(client, job.experiment_id, tags)
    if run_id is None:
        name = " ".join(f"{k.split('.')[-1]}={v}" for k, v in job.label.items()) or job.run_id
        tags |= source_tags(job.code_version)
        run_id = create_child(client, job.experiment_id, job.parent_run_id, name, tags)
    store.set_mlflow_run_id(job.sweep, job.run_id, run_id)
    return run_id


def progress_reporter(store: RunStore, job: RunJob) -> Callable[[int, int], None]:
    """Writes the trainer's progress to the run store (the CLI's progress lines; also the
    run's heartbeat, ``progress_at``). A store that cannot be written to does not stop the
    run: the next report tries again."""

    def report(step: int, total_steps: int) -> None:
        try:
            store.set_progress(job.sweep, job.run_id, step, total_steps)
        except (StoreError, SQLAlchemyError) as err:
            print(f"activescale: progress not recorded ({type(err).__name__})", flush=True)

    return report


@contextlib.contextmanager
def system_metrics(tracking_uri: str, mlflow_run_id: str) -> Iterator[None]:
    """MLflow's system-metrics monitor (CPU, memory, disk, network; GPU with pynvml) on the
    run while it trains, as ``system/*`` metrics every 10 s; nothing without psutil."""
    try:
        import psutil  # noqa: F401  (MLflow's monitor needs it)
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
    except ImportError:
        yield
        return
    monitor = SystemMetricsMonitor(
        mlflow_run_id, sampling_interval=10, resume_logging=True, tracking_uri=tracking_uri
    )
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()


def _on_slurm() -> bool:
    return os.environ.get("SUBMITIT_EXECUTOR") == "slurm"


def _mlflow_end(err: BaseException) -> str | None:
    # submitit exits once a SLURM job is requeued (time limit or preemption): the run goes
    # on in the next attempt, so its MLflow child stays RUNNING.
    if isinstance(err, SystemExit) and _on_slurm():
        return None
    return "KILLED" if _stopped_here(err) else "FAILED"


def _stopped_here(err: BaseException) -> bool:
    """A run executed here, stopped on request (at a step: Interrupted; or at once, a second
    Ctrl-C inline: KeyboardInterrupt)."""
    from trainers.loop import Interrupted

    return isinstance(err, Interrupted | KeyboardInterrupt) and not _on_slurm()


def _record_start_failure(job: RunJob, store: RunStore, job_id: str | None) -> None:
    host, tail = socket.gethostname(), mask_text(traceback.format_exc())
    attempt = store.try_start(job.sweep, job.run_id, job.submission, job_id, host, job.code_version)
    if attempt is not None:
        store.mark_finished(job.sweep, job.run_id, FAILED, error_tail=tail)


def execute_run(job: RunJob, job_id: str | None = None, stop: StopSignal | None = None) -> str:
    """Run one config to completion; records the outcome in the store and MLflow."""
    job.enter()
    if stop is not None or _on_slurm():
        return _execute_run(job, job_id, stop)
    # Here (local executor, inline): stop on a signal or when the orchestrator is gone. Inline,
    # the orchestrator is this process, and a second Ctrl-C stops at once.
    in_task = os.environ.get("SUBMITIT_EXECUTOR") == "local"
    with LocalStop(job.supervisor, escalate=not in_task) as local:
        outcome = _execute_run(job, job_id, local)
    if outcome == INTERRUPTED and not in_task:
        raise KeyboardInterrupt  # inline: the sweep stops with its run
    return outcome


def _execute_run(job: RunJob, job_id: str | None, stop: StopSignal | None) -> str:
    from orchestrator.ranks import clear_tails, failure_tail, follow, join, run_context
    from trainers.config import RunConfig
    from trainers.loop import Interrupted, train

    remember(job.store_url)  # their passwords never reach a stored error tail
    remember(job.tracking_uri)
    store = RunStore(job.store_url)
    try:
        ranks = join(job)  # this process alone, or one rank of the run's processes
    except Exception:
        # Rank 0 could not form the group (its port taken, a peer unreachable): the run
        # fails with the reason instead of staying submitted while the other ranks wait.
        if os.environ.get("RANK", "0") == "0":
            _record_start_failure(job, store, job_id)
        raise
    if not ranks.is_main:
        return follow(job, ranks, stop)
    attempt = store.try_start(
        job.sweep,
        job.run_id,
        job.submission,
        job_id,
        socket.gethostname(),
        job.code_version,
        pid=os.getpid(),
        process_started=process_start(os.getpid()),
    )
    if attempt is not None:
        clear_tails(job)
    if not ranks.decide(attempt is not None):
        print(f"activescale: run {job.run_id} is completed, cancelled or resubmitted: skipping")
        return SKIPPED
    print(f"activescale: run {job.run_id} attempt {attempt}, code from {Path(__file__).parent}")
    client = client_for(job.tracking_uri)
    try:
        mlflow_run_id = mlflow_child_run(job, store, client)
        with heartbeat(store, job.sweep, job.run_id), tracked(client, mlflow_run_id, _mlflow_end):
            # The plugins first: the config names their archs and datasets. A plugin removed
            # or broken since validation fails here, named, into the store's error tail.
            plugins = load_job_plugins(job.plugins)
            store.set_plugins(job.sweep, job.run_id, plugin_record(plugins))
            config = RunConfig.model_validate(job.config)
            ctx = run_context(job, ranks, stop, progress=progress_reporter(store, job))
            logger = FlushingMLflowLogger(job.tracking_uri, mlflow_run_id)
            if plugins:
                logger.log_params(plugin_params(plugins))
            try:
                with system_metrics(job.tracking_uri, mlflow_run_id):
                    metrics = train(config, ctx, logger)
            except Interrupted:
                assert stop is not None  # Interrupted is raised only when stop asked for it
                stop.hand_over()  # SLURM: submitit requeues the job and exits (SystemExit)
                raise
            store.mark_finished(job.sweep, job.run_id, COMPLETED, metrics=metrics)
    except SystemExit:
        if not _on_slurm():
            tail = mask_text(failure_tail(traceback.format_exc(), job, ranks))
            store.mark_finished(job.sweep, job.run_id, FAILED, error_tail=tail)
            raise
        # Requeued (time limit or preemption): not a failure; the next start resumes from the
        # checkpoint saved at the signal.
        store.mark_interrupted(job.sweep, job.run_id)
        raise
    except BaseException as err:
        if _stopped_here(err):  # not a failure: the next `run` resumes it
            tail = _stop_tail(err, stop)
            store.mark_finished(job.sweep, job.run_id, INTERRUPTED, error_tail=tail)
            return INTERRUPTED
        raw = failure_tail(traceback.format_exc(), job, ranks)
        tail = mask_text(raw)
        store.mark_finished(job.sweep, job.run_id, FAILED, error_tail=tail)
        if tail != raw and isinstance(err, Exception):  # a URL's password in the message:
            raise RunFailed(tail) from None  # the job log gets the masked traceback instead
        raise
    ranks.close()
    return COMPLETED


def _stop_tail(err: BaseException, stop: StopSignal | None) -> str:
    """Why a run executed here stopped, and what resumes it (the store's error tail)."""
    from trainers.loop import Interrupted

    why = stop.reason() if isinstance(stop, LocalStop) else "it was stopped"
    if isinstance(err, Interrupted):
        return f"stopped at step {err.step} because {why}; checkpoint saved: `activescale run` resumes it"
    return f"stopped at once because {why} again: `activescale run` resumes it from its last checkpoint"

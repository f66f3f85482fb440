"""What runs inside a job: one run, from store bookkeeping to MLflow to the trainer.

:func:`execute_run` is the single entry point every executor calls (in-process, in a local
subprocess, or in a SLURM job). The run reports its own state to the store: started (a new
attempt), then completed with its final metrics, or failed with the tail of its traceback.

A job runs its run only if it still owns it (:meth:`RunStore.try_start`): never a run that has
completed or was cancelled, nor one resubmitted since (a stale job exits without training).
A SLURM job told to stop (time limit, preemption) checkpoints at the next step boundary, is
requeued by submitit, closes its attempt as ``interrupted`` and leaves the run in flight; the
next start resumes from that checkpoint.
"""

from __future__ import annotations

import os
import socket
import subprocess
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from orchestrator.store import COMPLETED, FAILED, RunStore
from trainers.tracking import FlushingMLflowLogger

TAG_SWEEP = "activescale.sweep"
TAG_RUN_ID = "activescale.run_id"
TAG_PARENT = "mlflow.parentRunId"


@dataclass(frozen=True)
class RunJob:
    """Everything a job needs, picklable (sent to subprocesses and cluster nodes)."""

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
    threads: int | None = None
    submission: str | None = None  # the submission token (SLURM); None: always run
    cwd: str | None = None  # the submitter's working directory (relative paths resolve there)


SKIPPED = "skipped"


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


def mlflow_child_run(job: RunJob, store: RunStore) -> str:
    """The run's MLflow child run: reused across attempts, so a config has exactly one."""
    from mlflow.tracking import MlflowClient

    row = store.run(job.sweep, job.run_id)
    if row is not None and row.mlflow_run_id:
        return row.mlflow_run_id
    client = MlflowClient(tracking_uri=job.tracking_uri)
    existing = client.search_runs(
        [job.experiment_id],
        filter_string=f"tags.`{TAG_RUN_ID}` = '{job.run_id}' and tags.`{TAG_SWEEP}` = '{job.sweep}'",
        max_results=1,
    )
    if existing:
        run_id = existing[0].info.run_id
    else:
        name = " ".join(f"{k.split('.')[-1]}={v}" for k, v in job.label.items()) or job.run_id
        run = client.create_run(
            job.experiment_id,
            run_name=name,
            tags={TAG_PARENT: job.parent_run_id, TAG_SWEEP: job.sweep, TAG_RUN_ID: job.run_id},
        )
        run_id = run.info.run_id
    store.set_mlflow_run_id(job.sweep, job.run_id, run_id)
    return run_id


class StopSignal(Protocol):
    """A request to stop that the trainer honours between steps (see orchestrator/slurm.py)."""

    def requested(self) -> bool: ...

    def hand_over(self) -> None:
        """Called once the checkpoint is saved: requeue the job and exit (raises SystemExit)."""


def execute_run(job: RunJob, job_id: str | None = None, stop: StopSignal | None = None) -> str:
    """Run one config to completion; records the outcome in the store and MLflow."""
    import torch
    from mlflow.tracking import MlflowClient

    from trainers.config import RunConfig
    from trainers.loop import Interrupted, RunContext, train

    if job.cwd:
        os.chdir(job.cwd)
    if job.threads:
        torch.set_num_threads(job.threads)
    store = RunStore(job.store_url)
    attempt = store.try_start(
        job.sweep, job.run_id, job.submission, job_id, socket.gethostname(), job.code_version
    )
    if attempt is None:
        print(f"activescale: run {job.run_id} is completed, cancelled or resubmitted: skipping")
        return SKIPPED
    print(f"activescale: run {job.run_id} attempt {attempt}, code from {Path(__file__).parent}")
    client = MlflowClient(tracking_uri=job.tracking_uri)
    mlflow_run_id: str | None = None
    try:
        mlflow_run_id = mlflow_child_run(job, store)
        client.update_run(mlflow_run_id, status="RUNNING")
        config = RunConfig.model_validate(job.config)
        workdir = Path(job.workdir)
        ctx = RunContext(
            workdir=workdir,
            checkpoint_path=workdir / "checkpoints" / f"{job.run_id}.pt",
            reference_share=job.reference_share,
            stop_requested=stop.requested if stop else None,
        )
        try:
            metrics = train(config, ctx, FlushingMLflowLogger(job.tracking_uri, mlflow_run_id))
        except Interrupted:
            assert stop is not None
            stop.hand_over()  # submitit requeues the job and exits: SystemExit, just below
            raise
    except SystemExit:
        if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
            store.mark_finished(job.sweep, job.run_id, FAILED, error_tail=traceback.format_exc())
            raise
        # submitit exits once the job is requeued (time limit or preemption): not a failure;
        # the next start resumes from the checkpoint saved at the signal.
        store.mark_interrupted(job.sweep, job.run_id)
        raise
    except BaseException as err:
        tail = traceback.format_exc()
        status = FAILED
        store.mark_finished(job.sweep, job.run_id, status, error_tail=tail)
        if mlflow_run_id:
            client.set_terminated(mlflow_run_id, status="FAILED")
        raise err
    store.mark_finished(job.sweep, job.run_id, COMPLETED, metrics=metrics)
    client.set_terminated(mlflow_run_id, status="FINISHED")
    return COMPLETED

"""Held submission: an array never starts before its files exist.

submitit writes a job's pickle to a folder of its own only after ``sbatch`` has returned the
job id (the folder is named after it). A task that starts in between, or after the submitting
process died in between, finds no pickle and no log folder and fails at once. So every array
is submitted held (``sbatch --hold``) and released (``scontrol release``) only once its files
are in place (``orchestrator/slurm.py``, ``SlurmExecutor._submit_array``); the store gets the
job ids after the release. A ``submit`` killed anywhere leaves one of:

- runs marked without a job, no array: the next ``submit``/``status`` sets them pending;
- runs marked without a job, a held array with every pickle: it is released, the ids attached;
- the same with pickles missing (killed during sbatch): once the submission is older than
  ``grace_s()`` (120 s, or ``ACTIVESCALE_SUBMIT_GRACE_S``; a live submitter moves its pickles within seconds), the array is cancelled
  and its runs set pending, so the next ``submit`` sends them again;
- ids attached: the array was released before, nothing is left to do.

Fault injection (tests/test_slurm.py): with ``ACTIVESCALE_KILL_AT=POINT`` in its environment,
the submitting process kills itself with SIGKILL at that point (:data:`KILL_POINTS`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from activescale.errors import SubmissionError

if TYPE_CHECKING:
    from orchestrator.store import RunStore

KILL_AT_ENV = "ACTIVESCALE_KILL_AT"
KILL_POINTS = (
    "before-store",  # submit: SLURM checked, the run store not opened yet
    "after-mark",  # runs marked submitted with a token, sbatch not called
    "after-sbatch",  # sbatch returned and submitit moved the pickles; the array is held
    "after-release",  # the array is released; its job ids are not in the store yet
    "after-ids",  # the job ids are in the store
)
GRACE_ENV = "ACTIVESCALE_SUBMIT_GRACE_S"  # seconds; for tests, and very slow file systems
DEFAULT_GRACE_S = 120.0  # a submission younger than this may still be moving its pickles
HOLD = {"hold": True}  # sbatch option of every array (RESERVED in orchestrator/sbatch.py)


def fault_point(name: str) -> None:
    """Kill this process here (SIGKILL: no cleanup runs) if ``ACTIVESCALE_KILL_AT`` names
    this point. For tests of crash safety; a no-op otherwise."""
    assert name in KILL_POINTS, name
    if os.environ.get(KILL_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def grace_s() -> float:
    """How old a held array with missing pickles must be before it counts as abandoned."""
    try:
        return float(os.environ.get(GRACE_ENV, DEFAULT_GRACE_S))
    except ValueError:
        return DEFAULT_GRACE_S


def task_ids(array_id: str, tasks: int) -> list[str]:
    """The job ids of an array's tasks (submitit submits a single job as a plain job)."""
    return [array_id] if tasks == 1 else [f"{array_id}_{i}" for i in range(tasks)]


def missing_pickles(folder: Path, array_id: str, tasks: int) -> list[str]:
    """Tasks of the array whose submitit pickle is not where the job will look for it
    (``FOLDER/JOBID/JOBID_submitted.pkl``)."""
    return [
        job
        for job in task_ids(array_id, tasks)
        if not (folder / job / f"{job}_submitted.pkl").is_file()
    ]


def tasks_by_key(folder: Path, array_id: str, tasks: int) -> dict[str, str]:
    """{job key (a run id): task id} read from the array's pickles (the job each task will
    run; unreadable pickles are left out). Exact even when some runs of the submission have
    started or been resubmitted since, which the order of the runs alone is not."""
    from submitit.core.utils import DelayedSubmission

    found = {}
    for task in task_ids(array_id, tasks):
        try:
            delayed = DelayedSubmission.load(folder / task / f"{task}_submitted.pkl")
        except Exception:  # missing or damaged: that task cannot run its job either
            continue
        job = getattr(delayed.function, "job", delayed.function)  # a Requeueable wraps it
        key = getattr(job, "key", None)
        if isinstance(key, str):
            found[key] = task
    return found


def jobs_folder(store: RunStore, sweep: str) -> Path | None:
    """Where the sweep's job folders are (``WORKDIR/jobs``), from its row in the store."""
    row = store.sweep(sweep)
    workdir = json.loads(row.spec).get("workdir") if row is not None else None
    return Path(workdir) / "jobs" if workdir else None


def release(array_id: str, check: bool = True) -> None:
    """``scontrol release``: a held array's tasks may start. ``check=False``: a job no longer
    held (released already, ended) is fine."""
    try:
        result = subprocess.run(
            ["scontrol", "release", array_id], capture_output=True, text=True, timeout=60
        )
        failed = result.returncode != 0
        reason = (result.stderr or result.stdout).strip()
    except (OSError, subprocess.TimeoutExpired) as err:
        failed, reason = True, str(err)
    if failed and check:
        raise SubmissionError(
            f"sbatch accepted the array {array_id}, but `scontrol release {array_id}` failed "
            f"({reason or 'no output'}); it stays held: the next `activescale submit` or "
            "`status` releases it"
        )

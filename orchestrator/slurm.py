"""SLURM through submitit: job arrays, crash-safe submission, reconciliation, cancel.

Submitting (``SlurmExecutor.launch``): jobs (runs, or tuning workers) are grouped by the
resources they ask for (per learner size, ``executor.resources``), each group is split into
arrays of at most the cluster's ``MaxArraySize`` tasks, and each array is one ``sbatch``
(submitit ``batch()``). For every array of runs, in this order (:class:`StoreLog`; tuning
workers keep no record, their studies do):

1. the store marks its runs ``submitted`` with a fresh submission token and no job id;
2. sbatch, with the token in the job name (``as-SWEEP-TOKEN``); if sbatch fails the runs get
   their previous status back (the store is as before) and ``SubmissionError`` is raised;
3. the store records each run's job id (``ARRAYID_INDEX``, runs in run-id order).

If the orchestrator dies between 1 and 3, the next ``submit``/``status``/``cancel`` finds
runs that are ``submitted`` without a job id and looks their token up in SLURM by job name:
found, the job ids are attached (the array is in run-id order); not found, the runs go back
to ``pending`` and are submitted again. A worker only trains a run whose token in the store
is its own and that is neither completed nor cancelled, so a run is never trained twice at
once even if a job was missed; MLflow child runs are found by run id, never duplicated.

Reconciling (``reconcile``): one ``sacct`` call for every in-flight run of a sweep; a run
whose job ended without the run reporting (out of memory, node failure, time limit,
cancelled) gets the matching status. ``cancel`` is one ``scancel`` per array.

Runs are wrapped in :class:`Requeueable`, a ``submitit.helpers.Checkpointable``. On the
time limit or preemption signal
(``USR2``, ``signal_delay_s`` before the end) the job first finishes its current step and saves
a checkpoint (:class:`DeferredRequeue`); then submitit pickles the job again (``checkpoint``)
and requeues it. The new start is a new attempt that resumes from that checkpoint.

A run of several processes (``nodes`` x ``tasks_per_node``) is one job of that many tasks
(``srun``). The signal reaches every task; the ranks agree on the step to stop at, rank 0
saves the checkpoint and requeues the job (submitit requeues from global rank 0 only), and the
other tasks return quietly; the requeued job restarts all of them.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import submitit

from activescale.errors import SubmissionError
from activescale.secrets import private_files
from orchestrator.executors import ExecutorConfig, Job
from orchestrator.plugins import snapshot_plugins
from orchestrator.sbatch import SlurmResources, submitit_parameters
from orchestrator.snapshot import make_snapshot
from orchestrator.store import (
    CANCELLED,
    FAILED,
    IN_FLIGHT,
    PENDING,
    SUBMITTED,
    TIMEOUT,
    RunStore,
    utcnow,
)
from orchestrator.submission import (
    HOLD,
    fault_point,
    grace_s,
    jobs_folder,
    missing_pickles,
    release,
    task_ids,
    tasks_by_key,
)
from orchestrator.worker import run_job_name

COMMAND_TIMEOUT_S = 60
VANISHED = "VANISHED"  # our name for an array task sacct no longer lists
# sacct states -> what the store records for a run whose job ended without reporting.
ENDED_STATES = {
    "FAILED": FAILED,
    "NODE_FAIL": FAILED,
    "OUT_OF_MEMORY": FAILED,
    "BOOT_FAIL": FAILED,
    "DEADLINE": TIMEOUT,
    "TIMEOUT": TIMEOUT,
    "PREEMPTED": FAILED,
    "CANCELLED": CANCELLED,
    "COMPLETED": FAILED,  # the job ended, the run never said how: treat as failed
    "REVOKED": CANCELLED,
}


# ---------------------------------------------------------------------------------------------
# Talking to SLURM


def run_command(args: list[str], what: str) -> str:
    """Run a SLURM client command; any failure is a SubmissionError that says what to check."""
    if shutil.which(args[0]) is None:
        raise SubmissionError(
            f"cannot {what}: `{args[0]}` is not on PATH, so this machine is not a SLURM submit "
            "host. Run activescale where sbatch works (or install the SLURM client)."
        )
    try:
        result = subprocess.run(
            args, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise SubmissionError(
            f"cannot {what}: `{' '.join(args[:3])}` did not answer in {COMMAND_TIMEOUT_S} s; "
            "is slurmctld up (scontrol ping)?"
        ) from None
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SubmissionError(f"cannot {what}: `{args[0]}` failed: {message[0]}")
    return result.stdout


@dataclass(frozen=True)
class ClusterInfo:
    max_array_size: int  # tasks per array (indices 0 .. MaxArraySize-1)
    partitions: tuple[str, ...]
    default_partition: str | None


def parse_max_array_size(config_text: str) -> int:
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", config_text, re.MULTILINE)
    return int(match.group(1)) if match else 1001  # SLURM's default


def cluster_info() -> ClusterInfo:
    """MaxArraySize and partitions; raises SubmissionError when SLURM cannot be reached."""
    config = run_command(["scontrol", "show", "config"], "read the SLURM configuration")
    listing = run_command(["sinfo", "-h", "-o", "%P"], "list the SLURM partitions")
    names = [line.strip() for line in listing.splitlines() if line.strip()]
    default = next((n.rstrip("*") for n in names if n.endswith("*")), None)
    return ClusterInfo(
        parse_max_array_size(config), tuple(dict.fromkeys(n.rstrip("*") for n in names)), default
    )


def check_resources(info: ClusterInfo, resources: Sequence[SlurmResources]) -> None:
    for res in resources:
        if res.partition is not None and res.partition not in info.partitions:
            raise SubmissionError(
                f"executor.partition {res.partition!r} does not exist on this cluster; "
                f"partitions: {', '.join(info.partitions)}"
            )
    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        raise SubmissionError("sbatch/srun are not on PATH; submit from a SLURM login node")


def expand_array_ids(job_id: str) -> list[str]:
    """``123_[0-2,5%2]`` -> ["123_0", "123_1", "123_2", "123_5"]; ``123_4`` / ``123`` as is."""
    base, sep, rest = job_id.partition("_")
    if not sep or not rest.startswith("["):
        return [job_id]
    ids = []
    for part in rest.strip("[]").split("%")[0].split(","):
        low, _, high = part.partition("-")
        ids += [f"{base}_{i}" for i in range(int(low), int(high or low) + 1)]
    return ids


def parse_sacct(text: str) -> dict[str, str]:
    """``JobID|State`` lines (sacct -P -n -X) -> {task id: first word of the state}."""
    states: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 2 or not parts[0] or "." in parts[0]:
            continue
        state = parts[1].split()[0] if parts[1].strip() else "UNKNOWN"
        for task in expand_array_ids(parts[0]):
            states[task] = state
    return states


def job_states(job_ids: Sequence[str]) -> dict[str, str]:
    """States of these jobs/array tasks in ONE sacct call (queried by array id)."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    if not arrays:
        return {}
    out = run_command(
        ["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(arrays)],
        "read job states",
    )
    return parse_sacct(out)


def queued_tasks(job_ids: Sequence[str]) -> set[str] | None:
    """Array tasks and jobs slurmctld still knows (any state) of these jobs' arrays; None if
    squeue cannot say (e.g. an id slurmctld has already forgotten)."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    try:
        out = run_command(
            ["squeue", "-h", "--states=all", "-r", "-o", "%i", "-j", ",".join(arrays)],
            "list queued jobs",
        )
    except SubmissionError:
        return None
    return {task for line in out.split() for task in expand_array_ids(line.strip())}


def find_jobs_by_name(names: Sequence[str], since_s: float) -> dict[str, str]:
    """{job name: array (or job) id} for jobs with these names, known to slurmctld or sacct."""
    if not names:
        return {}
    found: dict[str, str] = {}
    joined = ",".join(names)
    since = f"now-{int(since_s) + 3600}"
    out = run_command(
        ["sacct", "-X", "-n", "-P", "-o", "JobID,JobName", "--name", joined, "-S", since],
        "look up submitted jobs",
    )
    # slurmctld knows a job the moment sbatch returns; accounting may lag a little.
    out += run_command(
        ["squeue", "-h", "--states=all", "-o", "%F|%j", "--name", joined], "look up queued jobs"
    )
    for line in out.splitlines():
        job, _, name = line.partition("|")
        if name in names and job:
            found[name] = job.split("_")[0]
    return found


def compress_task_ids(job_ids: Sequence[str]) -> list[str]:
    """["7_0", "7_1", "7_3", "9"] -> ["7_[0,1,3]", "9"] (one scancel argument per array)."""
    by_array: dict[str, list[str]] = defaultdict(list)
    singles = []
    for job_id in job_ids:
        base, sep, index = job_id.partition("_")
        if sep:
            by_array[base].append(index)
        else:
            singles.append(job_id)
    return [f"{b}_[{','.join(idx)}]" for b, idx in sorted(by_array.items())] + singles


# ---------------------------------------------------------------------------------------------
# The job


class DeferredRequeue:
    """Holds submitit's requeue signal until the trainer is between two steps.

    submitit's handler requeues the job and exits wherever the signal lands, mid-step included.
    This handler only records the signal; the trainer asks :meth:`requested` after each step,
    saves a checkpoint, and calls :meth:`hand_over`, which runs submitit's handler. The work
    done since the last periodic checkpoint is kept.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._submitit_handler: Callable[[int, Any], None] | None = None
        self._watched: int | None = None

    def install(self) -> None:
        """Take over submitit's preemption signal (``SUBMITIT_PREEMPT_SIGNAL``, default USR2)."""
        sig = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))
        handler = signal.getsignal(sig)
        if callable(handler):
            self._submitit_handler, self._watched = handler, int(sig)
            signal.signal(sig, self._record)

    def _record(self, signum: int, frame: Any) -> None:
        self.signum = signum  # nothing else: a handler may land anywhere, a print included

    def requested(self) -> bool:
        return self.signum is not None and self._submitit_handler is not None

    def hand_over(self) -> None:
        """Run submitit's handler. On several processes a rank may stop because another one
        was signalled: it hands over as if it had been."""
        assert self._submitit_handler is not None and self._watched is not None
        signum = self.signum if self.signum is not None else self._watched
        self._submitit_handler(signum, None)  # submitit: checkpoint(), requeue, sys.exit


class Requeueable(submitit.helpers.Checkpointable):
    """What an array task calls for a requeueable job (a run): requeued by submitit on the
    time limit or preemption.

    The preemption signal is deferred to the trainer's next step boundary, where it saves a
    checkpoint (:class:`DeferredRequeue`); then ``checkpoint`` (called by submitit's handler)
    resubmits this same object, and the new start resumes from that checkpoint.
    """

    def __init__(self, job: Job) -> None:
        self.job = job

    def __call__(self) -> str:
        env = submitit.JobEnvironment()
        deferred = DeferredRequeue()
        deferred.install()
        return self.job(job_id=str(env.job_id), stop=deferred)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


# ---------------------------------------------------------------------------------------------
# Submission


class SubmissionLog(Protocol):
    """Where a submission is recorded around its sbatch call (crash-safe: see the module
    docstring). The run store is one; tuning workers keep no record."""

    def before(self, sweep: str, keys: list[str], token: str) -> Any:
        """Before sbatch; returns what :meth:`failed` needs to undo it."""

    def failed(self, sweep: str, undo: Any, token: str) -> None:
        """sbatch refused: back to the state before :meth:`before`."""

    def after(self, sweep: str, token: str, job_ids: dict[str, str]) -> None:
        """sbatch accepted: each job's SLURM id, by job key."""


@dataclass(frozen=True)
class StoreLog:
    """Submissions of runs, recorded in the run store (tokens first, job ids after)."""

    store: RunStore

    def before(self, sweep: str, keys: list[str], token: str) -> dict[str, list[str]]:
        previous: dict[str, list[str]] = defaultdict(list)
        for run_id, status, *_ in self.store.run_states_of(sweep, keys):
            previous[status].append(run_id)
        self.store.mark_submitted(sweep, keys, token)
        return dict(previous)

    def failed(self, sweep: str, undo: dict[str, list[str]], token: str) -> None:
        self.store.unmark_submitted(sweep, undo, token)

    def after(self, sweep: str, token: str, job_ids: dict[str, str]) -> None:
        self.store.attach_job_ids(sweep, token, job_ids)


@dataclass
class SubmittedArray:
    token: str
    job_id: str  # the array's job id
    runs: int
    resources: SlurmResources


@dataclass
class SlurmExecutor:
    """Submits jobs as arrays (one per resource group, at most MaxArraySize tasks each),
    records each submission in ``log`` (the run store for runs), returns without waiting."""

    cfg: ExecutorConfig
    workdir: Path
    log: SubmissionLog | None = None
    folder: str = "jobs"  # under workdir: submitit's job folders
    max_array_size: int | None = None  # None: the cluster's MaxArraySize
    submitted: list[SubmittedArray] = field(default_factory=list)
    sbatch_calls: int = 0
    handles: list[Any] = field(default_factory=list)
    blocking = False

    def check(self, learner_sizes: Iterable[str]) -> None:
        """SLURM reachable, and the resources of these sizes possible on it (nothing written)."""
        check_resources(cluster_info(), [self.cfg.resources_for(s) for s in sorted(learner_sizes)])

    def launch(self, jobs: Sequence[Job], on_progress: Callable[[], None]) -> list[Any]:
        if not jobs:
            return []
        info = cluster_info()
        groups: dict[str, list[Job]] = defaultdict(list)
        by_key: dict[str, SlurmResources] = {}
        for job in jobs:
            res = self.cfg.resources_for(job.learner_size)
            res = res if job.data_parallel else res.one_process()
            key = res.model_dump_json()
            groups[key].append(job)
            by_key[key] = res
        check_resources(info, list(by_key.values()))
        size = min(self.max_array_size or info.max_array_size, info.max_array_size)
        snapshot = make_snapshot(self.workdir) if self.cfg.snapshot else None
        cwd = os.getcwd()
        # Jobs load the sweep's plugins from copies taken now, like the project's code.
        copies = {
            job.plugins: snapshot_plugins(job.plugins, self.workdir)
            if self.cfg.snapshot
            else job.plugins
            for job in jobs
        }
        handles: list[Any] = []
        for key, group in groups.items():
            group.sort(key=lambda j: j.key)  # recover_submissions relies on this order
            threads = by_key[key].cpus_per_task  # torch uses the cores SLURM gave each task
            for start in range(0, len(group), size):
                chunk = [
                    replace(j, cwd=cwd, threads=threads, plugins=copies[j.plugins])  # type: ignore[type-var]
                    for j in group[start : start + size]
                ]
                handles += self._submit_array(chunk, by_key[key], snapshot)
                on_progress()
        return handles

    def _submit_array(
        self, jobs: list[Job], resources: SlurmResources, snapshot: Path | None
    ) -> list[Any]:
        sweep = jobs[0].sweep
        token = uuid.uuid4().hex[:16]
        jobs = [j.submitted_as(token) for j in jobs]
        keys = [j.key for j in jobs]
        params = submitit_parameters(
            resources,
            job_name=jobs[0].job_name(token),
            setup=self.cfg.setup,
            array_parallelism=self.cfg.array_parallelism or len(jobs),
            snapshot=snapshot,
            signal_delay_s=self.cfg.signal_delay_s,
        )
        # Held until its pickles exist (orchestrator/submission.py), released below.
        params["additional_parameters"] = {**params.get("additional_parameters", {}), **HOLD}
        executor = submitit.SlurmExecutor(
            folder=self.workdir / self.folder / "%j", max_num_timeout=self.cfg.max_num_timeout
        )
        executor.update_parameters(**params)
        undo = self.log.before(sweep, keys, token) if self.log else None
        fault_point("after-mark")
        try:
            self.sbatch_calls += 1
            # Pickles and job folders hold the store and tracking URLs: owner-only (the job
            # logs too: sbatch passes this umask to the job).
            with private_files(), executor.batch():
                handles = [
                    executor.submit(Requeueable(job) if job.requeueable else job) for job in jobs
                ]
        except Exception as err:  # sbatch refused: the log goes back to how it was
            if self.log:
                self.log.failed(sweep, undo, token)
            raise SubmissionError(f"sbatch refused the array of {len(jobs)} jobs: {err}") from None
        array_id = handles[0].job_id.split("_")[0]
        fault_point("after-sbatch")
        release(array_id)  # every pickle is in place: the tasks may start
        fault_point("after-release")
        if self.log:
            self.log.after(sweep, token, {k: h.job_id for k, h in zip(keys, handles, strict=True)})
        fault_point("after-ids")
        self.submitted.append(SubmittedArray(token, array_id, len(jobs), resources))
        return handles


# ---------------------------------------------------------------------------------------------
# Reconciliation and cancel


@dataclass
class Reconciled:
    recovered: int = 0  # runs of an interrupted submission whose jobs were found
    requeued: int = 0  # runs of an interrupted submission with no job: back to pending
    ended: dict[str, int] = field(default_factory=dict)  # sacct state -> runs marked


def recover_submissions(store: RunStore, sweep: str, release_held: bool = True) -> Reconciled:
    """Runs marked submitted without a job id (a submission interrupted: see
    orchestrator/submission.py): their array found in SLURM with every pickle in place is
    released (unless ``release_held`` is false, for `cancel`) and its ids attached; found with
    pickles missing, and older than grace_s(), it is cancelled; not found, or cancelled, the runs
    are pending again."""
    result = Reconciled()
    orphans: dict[str, list[str]] = defaultdict(list)
    members: dict[str, list[str]] = defaultdict(list)  # every run of a submission, by token
    for run_id, status, job_id, token, _ in store.run_states(sweep):
        if token is not None:
            members[token].append(run_id)
            if status == SUBMITTED and job_id is None:
                orphans[token].append(run_id)
    if not orphans:
        return result
    oldest = store.oldest_submission(sweep, list(orphans))
    age = (utcnow() - oldest).total_seconds() if oldest else 0.0
    found = find_jobs_by_name([run_job_name(sweep, t) for t in orphans], age)
    folder = jobs_folder(store, sweep)
    for token, run_ids in orphans.items():
        # The array holds every run of the submission, in run-id order; some may have started
        # (and have their ids) since: their tasks are not the orphans'.
        size = len(members[token])
        array = found.get(run_job_name(sweep, token))
        if array is not None and folder is not None and missing_pickles(folder, array, size):
            submitted = store.oldest_submission(sweep, [token])
            if submitted and (utcnow() - submitted).total_seconds() < grace_s():
                continue  # its submitter may still be moving the pickles
            subprocess.run(  # held, so none of its tasks has started
                ["scancel", array], capture_output=True, timeout=COMMAND_TIMEOUT_S, check=False
            )
            array = None
        if array is None:
            store.unmark_submitted(sweep, {PENDING: run_ids}, token)
            result.requeued += len(run_ids)
            continue
        if release_held:
            release(array, check=False)  # already released if the submitter got that far
        tasks = (
            tasks_by_key(folder, array, size)
            if folder is not None
            else dict(zip(sorted(members[token]), task_ids(array, size), strict=True))
        )
        ids = {run_id: tasks[run_id] for run_id in run_ids if run_id in tasks}
        store.attach_job_ids(sweep, token, ids)
        result.recovered += len(ids)
        lost = sorted(set(run_ids) - set(ids))
        if lost:  # in no task of the array (cannot happen unless its pickles were damaged)
            store.unmark_submitted(sweep, {PENDING: lost}, token)
            result.requeued += len(lost)
    return result


def reconcile(store: RunStore, sweep: str) -> Reconciled:
    """Bring the store in line with SLURM for every in-flight run (one sacct call)."""
    result = recover_submissions(store, sweep)
    in_flight = [(r, s, j) for r, s, j, _, _ in store.run_states(sweep, IN_FLIGHT) if j]
    if not in_flight:
        return result
    states = job_states([j for _, _, j in in_flight])
    known_arrays = {task.split("_")[0] for task in states}
    ended: dict[str, list[str]] = defaultdict(list)
    for run_id, status, job_id in in_flight:
        state = states.get(job_id)
        if state in ENDED_STATES:
            ended[state].append(run_id)
        elif state is None and status == SUBMITTED and job_id.split("_")[0] in known_arrays:
            # A pending array task cancelled before it started leaves no record of its own,
            # while the rest of its array is still listed.
            ended[VANISHED].append(run_id)
    if ended.get(VANISHED):
        # Accounting lags slurmctld by a moment when a task leaves its pending array to start;
        # only what slurmctld does not know either has vanished (a second call, rarely made).
        by_run = dict((r, j) for r, _, j in in_flight)
        listed = queued_tasks([by_run[r] for r in ended[VANISHED]])
        ended[VANISHED] = [
            r for r in ended[VANISHED] if listed is not None and by_run[r] not in listed
        ]
    now = utcnow()
    for state, run_ids in ended.items():
        if not run_ids:
            continue
        changed = store.set_status(
            sweep,
            run_ids,
            CANCELLED if state == VANISHED else ENDED_STATES[state],
            only_from=IN_FLIGHT,
            finished_at=now,
            error_tail=(
                "SLURM no longer lists this array task while it lists the rest of its array: "
                "it was cancelled before it started (scancel)."
                if state == VANISHED
                else f"SLURM reports the job {state} and the run never reported how it ended "
                "(out of memory, node failure, time limit, scancel, or killed). "
                "See the job log under WORKDIR/jobs/."
            ),
        )
        result.ended[state] = changed
    return result


def cancel(store: RunStore, sweep: str) -> int:
    """scancel every in-flight run's job; those runs become cancelled. Returns how many."""
    recover_submissions(store, sweep, release_held=False)
    in_flight = store.run_states(sweep, IN_FLIGHT)
    job_ids = [j for _, _, j, _, _ in in_flight if j]
    if job_ids:
        if shutil.which("scancel") is None:
            raise SubmissionError("cannot cancel: `scancel` is not on PATH; run on a login node")
        args = compress_task_ids(job_ids)
        # scancel takes many ids at once; chunks keep the command line short. It exits non-zero
        # for jobs that have just ended, which is fine: their runs reported or get reconciled.
        for i in range(0, len(args), 200):
            subprocess.run(
                ["scancel", *args[i : i + 200]],
                capture_output=True,
                timeout=COMMAND_TIMEOUT_S,
                check=False,
            )
    return store.set_status(
        sweep,
        [r for r, *_ in in_flight],
        CANCELLED,
        only_from=IN_FLIGHT,
        finished_at=utcnow(),
        error_tail="cancelled with `activescale cancel`",
    )

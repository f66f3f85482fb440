"""Runs on this machine that nothing strands: owners, heartbeats, stopping and recovery.

A run executed here (``executor.kind`` local or inline) has no scheduler that would tell us
it died, so it carries its own evidence (docs/recovery.md):

- **Owner.** The process that trains it (rank 0) records itself when the attempt starts:
  host, pid and the process's start time (:class:`ProcessId`), so that a pid the system has
  given to another process since is not taken for the owner.
- **Heartbeat.** That process writes ``heartbeat_at`` every :data:`HEARTBEAT_S` seconds from a
  thread (:func:`heartbeat`), whatever the trainer is doing (data, reference, evaluation).
- **Recovery** (:func:`recover_stranded`, from ``run``, ``retry``, ``submit`` and ``status``): a
  run still ``running`` whose owner is gone becomes ``interrupted``. Gone: on this host, no
  process with that pid and start time; on another host (a shared store), no heartbeat for
  :data:`STALE_HEARTBEAT_S` seconds. ``interrupted`` is neither in flight nor failed: the next
  ``run`` resumes it from its checkpoint, whatever its attempts (``max_attempts`` counts
  against runs that fail, not against runs that were stopped).
- **Stopping.** SIGINT, SIGTERM and SIGHUP stop ``activescale`` as Ctrl-C does
  (:func:`stop_on_signals`); the local executor then asks every worker to stop
  (:func:`stop_jobs`: SIGINT to each job's task processes, which only record it,
  :class:`LocalStop`); each saves a checkpoint at its next step and marks its run
  ``interrupted``. A worker whose orchestrator is gone without a word (``kill -9`` of its pid)
  stops the same way. What does not stop within :data:`STOP_GRACE_S` is killed and recovered.
- A process group killed outright (SIGKILL) leaves no one to act: the next command recovers.

SLURM runs are not handled here: SLURM knows its jobs (``orchestrator/slurm.py`` reconciles).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from activescale.errors import StoreError
from orchestrator.store import INTERRUPTED, RUNNING, AttemptRow, RunRow, RunStore, utcnow

HEARTBEAT_S = 30.0  # how often a run's owner writes heartbeat_at
# A run owned on another host is stranded once its last sign of life (heartbeat, progress or
# start) is this old: ten missed heartbeats, and far more than clocks drift between hosts.
STALE_HEARTBEAT_S = 300.0
SUPERVISOR_CHECK_S = 1.0  # how often a worker asks whether its orchestrator is still there
STOP_GRACE_S = 120.0  # how long the orchestrator waits for its workers to checkpoint and exit
RESEND_S = 1.0  # the stop request is sent again this often (a worker still starting up)
ESCALATE_AFTER_S = 1.0  # inline: a second signal this much later is a second Ctrl-C
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


# ---------------------------------------------------------------------------------------------
# Processes


@dataclass(frozen=True)
class ProcessId:
    """A process, told apart from any later process given the same pid."""

    host: str
    pid: int
    started: str | None  # its start time as the system counts it (None: cannot be read here)


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux: clock ticks since boot, field 22 of
    /proc/PID/stat); None when it cannot be read (no such process, no /proc)."""
    fields = stat_fields(pid)
    return fields[19] if fields else None


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (field 3 onwards), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces and parentheses


def this_process() -> ProcessId:
    return ProcessId(socket.gethostname(), os.getpid(), process_start(os.getpid()))


def alive(process: ProcessId) -> bool | None:
    """Whether the process still runs: None when it is on another host (cannot be told)."""
    if process.host != socket.gethostname():
        return None
    try:
        os.kill(process.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: its start time below tells
        pass
    fields = stat_fields(process.pid)
    if fields is None:  # no /proc: the pid exists, which is all that can be told
        return True
    # A zombie has ended; a different start time is a new process under a reused pid.
    return fields[0] != "Z" and (process.started is None or fields[19] == process.started)


def owner_of(row: RunRow) -> ProcessId | None:
    """The process that owns the run's attempt, as it recorded itself (None: not recorded, a
    store written by an older version)."""
    if row.owner_host is None or row.owner_pid is None:
        return None
    return ProcessId(row.owner_host, row.owner_pid, row.owner_started)


# ---------------------------------------------------------------------------------------------
# In the worker: heartbeat and stop requests


@contextlib.contextmanager
def heartbeat(
    store: RunStore, sweep: str, run_id: str, every: float = HEARTBEAT_S
) -> Iterator[None]:
    """Write the run's ``heartbeat_at`` every ``every`` seconds while the block runs. A store
    that cannot be written to does not stop the run: the next beat tries again."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(every):
            with contextlib.suppress(StoreError, SQLAlchemyError), store.session() as s, s.begin():
                s.execute(
                    update(RunRow)
                    .where(RunRow.sweep == sweep, RunRow.id == run_id)
                    .values(heartbeat_at=utcnow())
                )

    thread = threading.Thread(target=beat, name="activescale-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


class LocalStop:
    """A stop request for a run on this machine, honoured between two steps (``StopSignal``).

    Requested by SIGINT, SIGTERM or SIGHUP (the orchestrator's request, Ctrl-C, ``timeout``, a
    closed terminal: each only recorded here, so the trainer saves a checkpoint at its next
    step), or by the orchestrator that started this worker (``supervisor``) being gone.
    ``escalate``: a second signal at least :data:`ESCALATE_AFTER_S` after the first raises
    KeyboardInterrupt at once (inline, where the user's second Ctrl-C comes here; a local
    worker is never escalated: its orchestrator kills it if it must)."""

    def __init__(self, supervisor: ProcessId | None, escalate: bool = False) -> None:
        self.supervisor = supervisor
        self.escalate = escalate
        self.signum: int | None = None
        self.first_at = 0.0
        self.orphaned = False
        self._checked = time.monotonic()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> LocalStop:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _record(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self.signum is None:
            self.signum, self.first_at = signum, now
        elif self.escalate and now - self.first_at >= ESCALATE_AFTER_S:
            raise KeyboardInterrupt

    def requested(self) -> bool:
        if self.signum is not None or self.orphaned:
            return True
        if self.supervisor is not None and time.monotonic() - self._checked >= SUPERVISOR_CHECK_S:
            self._checked = time.monotonic()
            self.orphaned = alive(self.supervisor) is False
        return self.orphaned

    def hand_over(self) -> None:
        """Nothing to hand over to: the worker marks its run interrupted and exits."""

    def reason(self) -> str:
        if self.signum is not None:
            return f"it received {signal.Signals(self.signum).name}"
        if self.orphaned and self.supervisor is not None:
            return f"the orchestrator that started it (pid {self.supervisor.pid}) was gone"
        return "it was stopped"


# ---------------------------------------------------------------------------------------------
# In the orchestrator: signals, stopping workers, recovery


class StopRequested(KeyboardInterrupt):
    """SIGTERM or SIGHUP reached the command: it stops as on Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`StopRequested` (a KeyboardInterrupt) in the main thread
    while the block runs, so every cleanup that Ctrl-C triggers runs for them too."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        raise StopRequested(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` in the process tree (Linux /proc; elsewhere none)."""
    children: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and (fields := stat_fields(int(entry.name))):
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def job_tasks(handle: Any) -> list[int]:
    """The task processes of a submitit local job (they run the job; the controller and the
    shell above them do not: a signal to the controller would kill its tasks within a second)."""
    tasks = []
    for pid in descendants(int(handle.job_id)):
        with contextlib.suppress(OSError):
            if b"submitit.core._submit" in Path(f"/proc/{pid}/cmdline").read_bytes():
                tasks.append(pid)
    return tasks


def _signal(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


def stop_jobs(handles: Sequence[Any], grace_s: float = STOP_GRACE_S) -> None:
    """Ask the local jobs ``handles`` to stop (SIGINT to their tasks, again every
    :data:`RESEND_S` for a task still starting), wait up to ``grace_s`` for them to end, then
    kill whatever remains. A second Ctrl-C (SIGINT a second or more after the first) skips
    the wait; SIGTERM and SIGHUP while waiting are ignored (the stop is under way)."""
    began = time.monotonic()

    def impatient(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and time.monotonic() - began >= ESCALATE_AFTER_S:
            raise KeyboardInterrupt

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, impatient) for sig in STOP_SIGNALS}
    try:
        with contextlib.suppress(KeyboardInterrupt):
            sent = -float("inf")
            while (running := [h for h in handles if not h.done()]) and (
                time.monotonic() - began < grace_s
            ):
                if time.monotonic() - sent >= RESEND_S:
                    for handle in running:
                        _signal(job_tasks(handle), signal.SIGINT)
                    sent = time.monotonic()
                time.sleep(0.1)
    finally:
        for handle in handles:
            if not handle.done():
                _signal([*descendants(int(handle.job_id)), int(handle.job_id)], signal.SIGKILL)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass(frozen=True)
class Stranded:
    run_id: str
    owner: str  # e.g. "pid 1234 on host-a", or "no heartbeat for 412 s"


def recover_stranded(store: RunStore, sweep: str, now: dt.datetime | None = None) -> list[Stranded]:
    """Runs of the sweep executed here (no SLURM job) left ``running`` by a process that is
    gone: each becomes ``interrupted``, its open attempt closed; returns them."""
    now = now or utcnow()
    found = []
    for row in store.runs(sweep, [RUNNING]):
        if row.job_id is not None:  # a SLURM job: reconcile() asks SLURM
            continue
        owner = owner_of(row)
        verdict = alive(owner) if owner is not None else None
        if verdict is None:  # another host, or no owner recorded: the heartbeat decides
            signs = [t for t in (row.heartbeat_at, row.progress_at, row.started_at) if t]
            silent = (now - max(signs)).total_seconds() if signs else float("inf")
            if silent < STALE_HEARTBEAT_S:
                continue
            why = f"no heartbeat for {silent:.0f} s"
        elif verdict:
            continue
        else:
            assert owner is not None  # verdict False comes from a recorded owner
            why = f"pid {owner.pid} on {owner.host} is gone"
        if _mark_stranded(store, row, why):
            found.append(Stranded(row.id, why))
    return found


def _mark_stranded(store: RunStore, row: RunRow, why: str) -> bool:
    """``row``'s attempt (still the same one: same start) is interrupted; False if the run
    moved on meanwhile (it ended, or a new attempt started)."""
    when = utcnow()
    tail = (
        f"the process that ran this attempt stopped without reporting ({why}): killed "
        "(SIGKILL, the out-of-memory killer) or its machine went down. `activescale run` "
        "resumes it from its last checkpoint."
    )
    with store.session() as s, s.begin():
        changed = s.execute(
            update(RunRow)
            .where(
                RunRow.sweep == row.sweep,
                RunRow.id == row.id,
                RunRow.status == RUNNING,
                RunRow.started_at == row.started_at,
            )
            .values(status=INTERRUPTED, finished_at=when, error_tail=tail)
        ).rowcount  # type: ignore[attr-defined]
        if changed:
            s.execute(
                update(AttemptRow)
                .where(
                    AttemptRow.sweep == row.sweep,
                    AttemptRow.run_id == row.id,
                    AttemptRow.finished_at.is_(None),
                )
                .values(status=INTERRUPTED, finished_at=when, error_tail=tail)
            )
    return bool(changed)


def recovered_line(stranded: Sequence[Stranded]) -> str | None:
    """What the CLI says about runs it just recovered (None: none)."""
    if not stranded:
        return None
    owners = "; ".join(sorted({s.owner for s in stranded}))
    return (
        f"{len(stranded)} runs were left running by a process that is gone ({owners}): "
        "interrupted; `activescale run` resumes them from their checkpoints"
    )

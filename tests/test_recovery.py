"""A dead or stopped local orchestrator never strands a run (docs/recovery.md).

Each test starts `activescale run` as a real process in its own session on a small local sweep,
waits until its runs train with a checkpoint, then stops it the way it happens in practice:
its process group killed (SIGKILL), SIGTERM to the orchestrator alone (`kill PID`), SIGINT to
the whole group (Ctrl-C in a terminal). After each: no worker survives, `status` shows no run
left running, and running again (`run`, or `retry`) completes every run once more, resumed
from its checkpoint, with the final metrics of an uninterrupted run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from sqlalchemy import text

from orchestrator.cli import main
from orchestrator.recovery import (
    STALE_HEARTBEAT_S,
    ProcessId,
    alive,
    descendants,
    process_start,
    recover_stranded,
)
from orchestrator.spec import load_sweep
from orchestrator.store import COMPLETED, FAILED, INTERRUPTED, RUNNING, RunStore
from tests.conftest import TINY_RUN, TINY_SWEEP
from trainers.loop import RunContext, train

CHECKPOINT_EVERY = 100
# The runs must still be training when the test stops them, on a fast machine too: their
# models (a plugin of the test's) pause 10 ms a forward pass, which changes no number.
PACED = Path(__file__).resolve().parent / "data" / "paced.py"  # one file: one module
SWEEP = f"""\
name: recover
plugins: [{PACED}]
{TINY_RUN.replace("arch: mlp", "arch: paced")}budget: {{steps: 1200}}
eval: {{points: 4, batch_size: 256}}
checkpoint_every: {CHECKPOINT_EVERY}
executor: {{kind: local, max_parallel: 2, threads_per_run: 2}}
grid:
  selection.policy: [iid, learnability]
"""
ROOT = Path(__file__).resolve().parent.parent


def write_sweep(tmp_path: Path, body: str = SWEEP) -> Path:
    path = tmp_path / "recover.yaml"
    path.write_text(body + f"workdir: {tmp_path / 'work'}\n")
    return path


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, float]]:
    """Final metrics of each run trained here without a stop, with a worker's thread count."""
    tmp = tmp_path_factory.mktemp("fresh")
    sweep = load_sweep(write_sweep(tmp))
    threads = torch.get_num_threads()
    # threads_per_run: 2 is each run's (the executor's threads_per_run, not split over
    # max_parallel): a thread count of its own can change the last bits of the float sums
    # (seen on an AVX-512 CPU: loss 2.0442757 with 1 thread, 2.0442755 with 2).
    torch.set_num_threads(2)
    try:
        return {
            run.run_id: train(run.config, RunContext(workdir=tmp / run.run_id))
            for run in sweep.runs
        }
    finally:
        torch.set_num_threads(threads)


def start_run(path: Path) -> subprocess.Popen[bytes]:
    log = (path.parent / "orchestrator.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "run", str(path), "--no-report"],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal's job is
    )


def wait_training(store: RunStore, sweep: str, workdir: Path, runs: int) -> None:
    """Until every run trains (step 200 or more) and has a checkpoint on disk."""
    deadline = time.monotonic() + 300
    while True:
        rows = store.runs(sweep)
        if len(rows) == runs and all(
            r.status == RUNNING
            and (r.step or 0) >= 2 * CHECKPOINT_EVERY
            and (workdir / "checkpoints" / f"{r.id}.pt").exists()
            for r in rows
        ):
            return
        assert time.monotonic() < deadline, [(r.id, r.status, r.step) for r in rows]
        time.sleep(0.2)


def wait_gone(pids: list[int], timeout_s: float = 60) -> None:
    """Until none of these processes runs (a zombie has ended)."""
    processes = [ProcessId(os.uname().nodename, pid, process_start(pid)) for pid in pids]
    deadline = time.monotonic() + timeout_s
    while survivors := [p.pid for p in processes if alive(p)]:
        assert time.monotonic() < deadline, f"still running: {survivors}"
        time.sleep(0.2)


def job_logs(workdir: Path) -> str:
    return "".join(p.read_text() for p in sorted((workdir / "jobs").rglob("*_log.out")))


@pytest.mark.parametrize(
    ("how", "again"),
    [("kill-group", "run"), ("sigterm", "run"), ("ctrl-c", "retry")],
)
def test_a_stopped_orchestrator_strands_no_run(
    tmp_path: Path,
    how: str,
    again: str,
    uninterrupted: dict[str, dict[str, float]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_sweep(tmp_path)
    sweep = load_sweep(path)
    store = RunStore(sweep.store_url)
    began = time.monotonic()
    orchestrator = start_run(path)
    wait_training(store, sweep.name, sweep.workdir, runs=2)
    workers = descendants(orchestrator.pid)
    assert len(workers) >= 6  # per run: a shell, submitit's controller, the task
    stopped = time.monotonic()
    if how == "kill-group":
        os.killpg(orchestrator.pid, signal.SIGKILL)
    elif how == "sigterm":
        orchestrator.send_signal(signal.SIGTERM)
    else:  # a terminal's Ctrl-C reaches every process of its foreground group
        os.killpg(orchestrator.pid, signal.SIGINT)
    code = orchestrator.wait(timeout=180)
    assert code == {"kill-group": -9, "sigterm": 143, "ctrl-c": 130}[how]
    wait_gone(workers)
    stop_s = time.monotonic() - stopped

    # No run stays running once `status` looked; each is interrupted, one attempt used.
    capsys.readouterr()
    assert main(["status", str(path)]) == 0
    said = capsys.readouterr()
    rows = store.runs(sweep.name)
    assert [r.status for r in rows] == [INTERRUPTED, INTERRUPTED], rows
    assert all(r.attempts == 1 for r in rows)
    if how == "kill-group":  # nobody could say: `status` found their processes gone
        assert "2 runs were left running by a process that is gone" in said.err
    else:  # each worker saved a checkpoint at its step and said so
        assert all("checkpoint saved" in (r.error_tail or "") for r in rows), rows
    saved = re.findall(r"checkpoint saved at step (\d+)", job_logs(sweep.workdir))
    assert len(saved) == (0 if how == "kill-group" else 2)

    # Running again completes every run exactly once more, from its checkpoint.
    assert main([again, str(path), "--no-report"]) == 0
    rows = store.runs(sweep.name)
    assert [(r.status, r.attempts) for r in rows] == [(COMPLETED, 2), (COMPLETED, 2)]
    for row in rows:
        attempts = store.attempts(sweep.name, row.id)
        assert [a.status for a in attempts] == [INTERRUPTED, COMPLETED]
    resumed = [int(s) for s in re.findall(r"resumed at step (\d+)", job_logs(sweep.workdir))]
    assert len(resumed) == 2 and all(s > 0 for s in resumed)
    if how == "kill-group":  # the last periodic checkpoint
        assert all(s % CHECKPOINT_EVERY == 0 for s in resumed), resumed
    else:  # the very step it stopped at: no work lost
        assert sorted(resumed) == sorted(int(s) for s in saved)
    # The metrics of a run never stopped, bitwise.
    assert {r.id: json.loads(r.final_metrics or "{}") for r in rows} == uninterrupted
    print(
        f"{how}: stopped in {stop_s:.1f} s (exit {code}); {len(rows)} runs completed, "
        f"attempts {[r.attempts for r in rows]}, resumed at steps {resumed}, metrics equal, "
        f"{time.monotonic() - began:.0f} s in all"
    )


def test_a_data_parallel_run_stops_on_every_rank_and_resumes(tmp_path: Path) -> None:
    # One run on two processes: SIGTERM to the orchestrator reaches both ranks (through it),
    # they stop at the same step, rank 0 saves the checkpoint, and the rerun resumes there.
    body = SWEEP.replace(
        "max_parallel: 2, threads_per_run: 2", "tasks_per_node: 2, threads_per_run: 2"
    )
    path = write_sweep(
        tmp_path, body.replace("  selection.policy: [iid, learnability]\n", "  seed: [0]\n")
    )
    sweep = load_sweep(path)
    store = RunStore(sweep.store_url)
    orchestrator = start_run(path)
    wait_training(store, sweep.name, sweep.workdir, runs=1)
    workers = descendants(orchestrator.pid)
    orchestrator.send_signal(signal.SIGTERM)
    assert orchestrator.wait(timeout=180) == 143
    wait_gone(workers)
    (row,) = store.runs(sweep.name)
    assert row.status == INTERRUPTED and "checkpoint saved" in (row.error_tail or ""), row
    logs = job_logs(sweep.workdir)
    saved = re.findall(r"checkpoint saved at step (\d+)", logs)
    assert len(saved) == 1  # rank 0's
    assert main(["run", str(path), "--no-report"]) == 0
    (row,) = store.runs(sweep.name)
    assert (row.status, row.attempts) == (COMPLETED, 2)
    resumed = re.findall(r"resumed at step (\d+)", job_logs(sweep.workdir))
    assert resumed == saved * 2  # each rank, from the step they stopped at


# ---------------------------------------------------------------------------------------------
# Liveness and the owner record, on a real store (no process needs to die for these)


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    store = RunStore(f"sqlite:///{tmp_path / 'store.db'}")
    store.upsert_sweep("s", {})
    store.register("s", [("r1", {}, {})])
    return store


def test_a_live_owner_keeps_its_run_and_a_reused_pid_does_not(store: RunStore) -> None:
    me = os.getpid()
    store.mark_started("s", "r1", None, os.uname().nodename, None)
    store.try_start("s", "r1", None, None, os.uname().nodename, None, me, process_start(me))
    assert recover_stranded(store, "s") == []  # this process owns it, and runs
    assert store.run("s", "r1").status == RUNNING  # type: ignore[union-attr]
    # The same pid with another start time: a later process that was given the owner's pid.
    store.try_start("s", "r1", None, None, os.uname().nodename, None, me, "1")
    (stranded,) = recover_stranded(store, "s")
    row = store.run("s", "r1")
    assert row is not None and row.status == INTERRUPTED and f"pid {me}" in stranded.owner
    assert "resumes it from its last checkpoint" in (row.error_tail or "")
    assert [a.status for a in store.attempts("s", "r1")] == [INTERRUPTED] * 3


def test_an_owner_on_another_host_is_judged_by_its_heartbeat(store: RunStore) -> None:
    store.try_start("s", "r1", None, None, "another-host", None, 1, "1")
    row = store.run("s", "r1")
    assert row is not None and row.heartbeat_at is not None
    soon = row.heartbeat_at + dt.timedelta(seconds=STALE_HEARTBEAT_S - 1)
    assert recover_stranded(store, "s", now=soon) == []
    late = row.heartbeat_at + dt.timedelta(seconds=STALE_HEARTBEAT_S + 1)
    (stranded,) = recover_stranded(store, "s", now=late)
    assert stranded.owner == f"no heartbeat for {STALE_HEARTBEAT_S + 1:.0f} s"
    assert store.run("s", "r1").status == INTERRUPTED  # type: ignore[union-attr]


def test_a_slurm_run_is_left_to_slurm(store: RunStore) -> None:
    store.try_start("s", "r1", None, "1234_0", "another-host", None, 1, "1")
    assert recover_stranded(store, "s", now=dt.datetime(2100, 1, 1)) == []


def test_an_old_store_gains_the_owner_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = RunStore(url)
    with store.engine.begin() as connection:  # a store from before owners and heartbeats
        for column in ("owner_host", "owner_pid", "owner_started", "heartbeat_at"):
            connection.execute(text(f"ALTER TABLE runs DROP COLUMN {column}"))
    store.upsert_sweep("s", {})
    store.register("s", [("r1", {}, {})])
    again = RunStore(url)
    again.try_start("s", "r1", None, None, "h", None, 7, "99")
    row = again.run("s", "r1")
    assert row is not None and (row.owner_host, row.owner_pid, row.owner_started) == ("h", 7, "99")


def test_local_retry_resumes_interrupted_runs_and_honours_max_attempts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(
        TINY_SWEEP.replace("  learner.size: [xxs, xs]\n", "") + f"workdir: {tmp_path}\n"
    )
    assert main(["run", str(path), "--no-report"]) == 0
    sweep = load_sweep(path)
    store = RunStore(sweep.store_url)
    interrupted, failed = (r.id for r in store.runs(sweep.name))
    # Both used up max_attempts (3): the failed one is not retried, the interrupted one is.
    store.set_status(sweep.name, [interrupted], INTERRUPTED, attempts=3)
    store.set_status(sweep.name, [failed], FAILED, attempts=3)
    capsys.readouterr()
    assert main(["retry", str(path), "--no-report"]) == 1  # a failed run remains
    assert "1 runs used all 3 attempts and were not retried" in capsys.readouterr().err
    assert store.run(sweep.name, interrupted).status == COMPLETED  # type: ignore[union-attr]
    assert store.run(sweep.name, failed).status == FAILED  # type: ignore[union-attr]
    assert main(["retry", str(path), "--no-report", "-o", "max_attempts=4"]) == 0
    assert store.run(sweep.name, failed).status == COMPLETED  # type: ignore[union-attr]

"""`submit` killed at every point of a submission, on the real cluster: submitting again (and
`status`) completes every run exactly once, and no task fails for a missing file.

The submitting process is killed with SIGKILL (no cleanup runs) at each point of
``orchestrator.submission.KILL_POINTS`` through ``ACTIVESCALE_KILL_AT``, and "during sbatch"
by an ``sbatch`` on PATH that lets the real one submit and then kills the process that called
it before it can read the job id (submitit has moved no pickle yet). Then ``submit`` and
``status`` run until the sweep is done, as a user would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.spec import load_sweep
from orchestrator.store import COMPLETED, IN_FLIGHT, PENDING, RunStore
from orchestrator.submission import GRACE_ENV, KILL_AT_ENV, KILL_POINTS
from tests.conftest import need_service
from tests.test_slurm import SLURM_SWEEP, mlflow_runs, slurm_up, write_sweep

FOUR_RUNS = "grid:\n  learner.size: [xxs, xs]\n  seed: [0, 1]\n"
POINTS = [*KILL_POINTS[:2], "during-sbatch", *KILL_POINTS[2:]]
KILLING_SBATCH = """#!/bin/sh
{sbatch} "$@"
status=$?
kill -9 $PPID
exit $status
"""


@pytest.fixture
def slurm() -> None:
    need_service(slurm_up(), "the local SLURM cluster (scripts/local-slurm up)")


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=600,
    )


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_submit_killed_at_any_point_then_resubmitted_runs_everything_once(
    slurm: None, tmp_path: Path, point: str
) -> None:
    path = write_sweep(tmp_path, SLURM_SWEEP + FOUR_RUNS)
    sweep = load_sweep(path)
    env = dict(os.environ, **{GRACE_ENV: "5"})  # the abandoned held array is cancelled soon
    killed = dict(env)
    if point == "during-sbatch":
        shim = tmp_path / "shim"
        shim.mkdir()
        real = shutil.which("sbatch")
        assert real is not None
        (shim / "sbatch").write_text(KILLING_SBATCH.format(sbatch=real))
        (shim / "sbatch").chmod(0o755)
        killed["PATH"] = f"{shim}{os.pathsep}{env['PATH']}"
    else:
        killed[KILL_AT_ENV] = point
    first = cli("submit", str(path), env=killed)
    assert first.returncode == -9, (first.returncode, first.stdout, first.stderr)

    deadline = time.monotonic() + 480
    store = RunStore(sweep.store_url)
    while True:
        assert time.monotonic() < deadline, store.counts(sweep.name)
        again = cli("submit", str(path), env=env)
        assert again.returncode == 0, again.stderr
        status = cli("status", str(path), env=env)
        assert status.returncode == 0, status.stderr
        counts = store.counts(sweep.name)
        if counts[COMPLETED] == 4:
            break
        assert not counts["failed"] and not counts["cancelled"], [
            (r.id, r.status, r.job_id, r.error_tail) for r in store.runs(sweep.name)
        ]
        if not any(counts[s] for s in (*IN_FLIGHT, PENDING)):
            pytest.fail(f"runs neither done nor in flight: {counts}")
        time.sleep(3)

    # Exactly once: one attempt per run, one MLflow child per run.
    for row in store.runs(sweep.name):
        assert [a.status for a in store.attempts(sweep.name, row.id)] == [COMPLETED], row.id
    assert len(mlflow_runs(sweep.tracking_uri, sweep.experiment)[1]) == 4
    # No task failed (for a missing pickle or log folder, or anything else): every task of every
    # job the sweep submitted completed, or was cancelled while still held (it never started).
    # A run reports before its job process ends: wait for the jobs to leave the queue.
    while f"as-{sweep.name}-" in _queue():
        assert time.monotonic() < deadline + 120, _queue()
        time.sleep(2)
    tasks = _all_tasks(sweep.name)
    assert tasks, "sacct lists no job of the sweep"
    for _, state, start in tasks:
        assert state == "COMPLETED" or (
            state.startswith("CANCELLED") and start in ("None", "Unknown")
        ), tasks
    logs = list((sweep.workdir / "jobs").rglob("*_log.out"))
    assert len(logs) >= 4 and all("activescale: run" in p.read_text() for p in logs), logs


def _queue() -> str:
    """Every job slurmctld holds: id, name, state (a held array forgotten would stay here)."""
    return subprocess.run(
        ["squeue", "-h", "-o", "%i|%j|%T"], capture_output=True, text=True, check=True
    ).stdout


def _all_tasks(sweep: str) -> list[tuple[str, str, str]]:
    """Every task of every job this sweep ever submitted (names as-SWEEP-TOKEN)."""
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "JobID,State,Start,JobName", "-S", "now-1days"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split("|") for line in out.splitlines() if line]
    return [(r[0], r[1], r[2]) for r in rows if len(r) == 4 and r[3].startswith(f"as-{sweep}-")]

"""The SLURM path on the real local cluster (scripts/local-slurm up): arrays, store, MLflow,
failures and retry, requeue and resume, crash-safe submission, hostile values, PostgreSQL.

Under CI=true these tests fail (never skip) when the cluster or PostgreSQL is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from orchestrator.cli import main
from orchestrator.launch import submit_sweep
from orchestrator.slurm import (
    compress_task_ids,
    expand_array_ids,
    parse_max_array_size,
    parse_sacct,
    reconcile,
)
from orchestrator.spec import load_sweep
from orchestrator.store import (
    CANCELLED,
    COMPLETED,
    FAILED,
    INTERRUPTED,
    PENDING,
    SUBMITTED,
    RunStore,
)
from tests.conftest import TINY_RUN, mlflow_server, need_service
from trainers.config import RunConfig
from trainers.loop import RunContext, train
from trainers.tracking import MemoryLogger

POSTGRES_URL = os.environ.get(
    "ACTIVESCALE_DATABASE_URL",
    "postgresql+psycopg2://activescale:activescale@127.0.0.1:5432/activescale",
)
MLFLOW_DB_URL = POSTGRES_URL.rsplit("/", 1)[0] + "/activescale_mlflow"

SLURM_SWEEP = f"""\
{TINY_RUN}budget: {{steps: 30}}
eval: {{points: 3, batch_size: 256}}
executor: {{kind: slurm, partition: debug, cpus_per_task: 1, timeout_min: 10}}
"""
SIX_RUNS = "grid:\n  learner.size: [xxs, xs, s]\n  selection.policy: [iid, learnability]\n"


def slurm_up() -> bool:
    if shutil.which("sbatch") is None:
        return False
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, check=False)
    return ping.returncode == 0 and "UP" in ping.stdout


def postgres_up() -> bool:
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(POSTGRES_URL)
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
        return True
    except Exception:
        return False


@pytest.fixture
def slurm() -> None:
    need_service(slurm_up(), "the local SLURM cluster (scripts/local-slurm up)")


def write_sweep(tmp_path: Path, body: str, name: str | None = None, extra: str = "") -> Path:
    name = name or f"t{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nworkdir: {tmp_path / 'work'}\n{body}{extra}")
    return path


def wait_done(store: RunStore, sweep: str, timeout_s: float = 240) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reconcile(store, sweep)
        counts = store.counts(sweep)
        if not counts[SUBMITTED] and not counts["running"] and not counts[PENDING]:
            return counts
        time.sleep(1.0)
    raise AssertionError(
        f"sweep {sweep} not done after {timeout_s} s: {store.counts(sweep)}\n"
        + slurm_state(store, sweep)
    )


def slurm_state(store: RunStore, sweep: str) -> str:
    """What SLURM says of the sweep's jobs (for the message of a test that waited too long)."""
    jobs = sorted({row.job_id.split("_")[0] for row in store.runs(sweep) if row.job_id})
    commands = [["squeue", "-h", "-o", "%i %T %r %M"], ["sinfo", "-N", "-h"]]
    if jobs:
        commands.append(["sacct", "-n", "-X", "-o", "JobID,State,ExitCode", "-j", ",".join(jobs)])
    out = []
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        out.append(f"$ {' '.join(command)}\n{result.stdout}{result.stderr}")
    return "\n".join(out)


def mlflow_runs(tracking_uri: str, experiment: str) -> tuple[list[object], list[object]]:
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    runs = client.search_runs([found.experiment_id])
    parents = [r for r in runs if r.data.tags.get("activescale.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    return parents, children


# ---------------------------------------------------------------------------------------------
# Pure parsing (no cluster needed)


def test_parsing_slurm_output() -> None:
    assert parse_max_array_size("Foo = 1\nMaxArraySize            = 77\n") == 77
    assert expand_array_ids("12_[0-2,5%2]") == ["12_0", "12_1", "12_2", "12_5"]
    assert expand_array_ids("12_4") == ["12_4"] and expand_array_ids("13") == ["13"]
    states = parse_sacct("12_[3-4]|PENDING\n12_0|COMPLETED\n12_1|CANCELLED by 0\n12_0.batch|X\n")
    assert states == {
        "12_3": "PENDING",
        "12_4": "PENDING",
        "12_0": "COMPLETED",
        "12_1": "CANCELLED",
    }
    assert compress_task_ids(["7_0", "7_1", "7_3", "9", "8_2"]) == ["7_[0,1,3]", "8_[2]", "9"]


# ---------------------------------------------------------------------------------------------
# The sweep test, on SQLite and on PostgreSQL + an MLflow server


@pytest.fixture(scope="module")
def mlflow_on_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    need_service(postgres_up(), f"PostgreSQL at {POSTGRES_URL} (scripts/local-postgres up)")
    artifacts = tmp_path_factory.mktemp("mlartifacts")
    with mlflow_server(
        MLFLOW_DB_URL, artifacts, artifacts / "server.log", "--workers", "2", timeout_s=120
    ) as url:
        yield url


@pytest.mark.slurm
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_six_run_array_completes_lands_in_mlflow_and_resubmits_nothing(
    slurm: None,
    tmp_path: Path,
    backend: str,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    extra = ""
    if backend == "postgres":
        server = request.getfixturevalue("mlflow_on_postgres")
        extra = f"store: {POSTGRES_URL}\ntracking: {{uri: '{server}'}}\n"
    path = write_sweep(tmp_path, SLURM_SWEEP + SIX_RUNS, extra=extra)
    sweep = load_sweep(path)
    assert main(["submit", str(path)]) == 0
    out = capsys.readouterr().out
    assert "6 runs submitted in 1 sbatch calls" in out and "FLOPs in total" in out
    store = RunStore(sweep.store_url)
    rows = store.runs(sweep.name)
    assert {r.status for r in rows} <= {SUBMITTED, "running", COMPLETED}
    arrays = {(r.job_id or "").split("_")[0] for r in rows}
    assert len(arrays) == 1 and all("_" in (r.job_id or "") for r in rows)

    counts = wait_done(store, sweep.name)
    assert counts[COMPLETED] == 6, [r.error_tail for r in store.runs(sweep.name)]
    rows = store.runs(sweep.name)
    assert all(r.attempts == 1 and r.code_version is not None for r in rows)
    parents, children = mlflow_runs(sweep.tracking_uri, sweep.experiment)
    assert len(parents) == 1 and len(children) == 6
    # The jobs ran the snapshot, not the checkout.
    logs = "".join(p.read_text() for p in (sweep.workdir / "jobs").rglob("*_log.out"))
    assert f"code from {sweep.workdir / 'snapshots'}" in logs

    # Submitting again creates nothing: not in the store, not in SLURM, not in MLflow.
    assert main(["submit", str(path)]) == 0
    assert "0 runs submitted" in capsys.readouterr().out
    assert [(r.id, r.job_id, r.attempts) for r in store.runs(sweep.name)] == [
        (r.id, r.job_id, r.attempts) for r in rows
    ]
    assert len(mlflow_runs(sweep.tracking_uri, sweep.experiment)[1]) == 6

    assert main(["status", str(path)]) == 0
    assert "6 completed" in " ".join(capsys.readouterr().out.split())


# ---------------------------------------------------------------------------------------------
# Failures and retry


@pytest.mark.slurm
def test_failed_run_has_its_traceback_and_retry_reruns_only_it(slurm: None, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.fail("this test makes a run fail by asking for CUDA on a CPU-only node")
    body = SLURM_SWEEP.replace(
        "selection: {policy: learnability, keep: 0.5}", "selection: {policy: iid}"
    )
    path = write_sweep(tmp_path, body + "grid:\n  device: [cpu, cuda]\n")
    sweep = load_sweep(path)
    store = RunStore(sweep.store_url)
    assert main(["submit", str(path)]) == 0
    wait_done(store, sweep.name)
    by_device = {json.loads(r.config)["device"]: r for r in store.runs(sweep.name)}
    assert by_device["cpu"].status == COMPLETED
    failed = by_device["cuda"]
    assert failed.status == FAILED and "Traceback" in (failed.error_tail or "")
    assert "CUDA" in (failed.error_tail or "") or "cuda" in (failed.error_tail or "")

    assert main(["retry", str(path)]) == 0
    wait_done(store, sweep.name)
    again = {json.loads(r.config)["device"]: r for r in store.runs(sweep.name)}
    assert again["cpu"].attempts == 1 and again["cpu"].job_id == by_device["cpu"].job_id
    assert again["cuda"].attempts == 2 and again["cuda"].job_id != failed.job_id
    assert [a.status for a in store.attempts(sweep.name, failed.id)] == [FAILED, FAILED]
    assert len(mlflow_runs(sweep.tracking_uri, sweep.experiment)[1]) == 2

    # max_attempts reached: retry says so and submits nothing.
    assert main(["retry", str(path), "-o", "max_attempts=2"]) == 0
    assert store.run(sweep.name, failed.id).attempts == 2  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------
# Preemption: submitit's signal, checkpoint(), requeue, resume


@pytest.mark.slurm
def test_preempted_run_requeues_and_resumes_to_identical_metrics(
    slurm: None, tmp_path: Path
) -> None:
    body = (
        SLURM_SWEEP.replace("budget: {steps: 30}", "budget: {steps: 1500}")
        .replace("eval: {points: 3, batch_size: 256}", "eval: {points: 4, batch_size: 256}")
        .replace("selection: {policy: learnability, keep: 0.5}", "selection: {policy: iid}")
        # No periodic checkpoints: only evaluations (4 of 1500 steps) and the one at the signal.
    )
    path = write_sweep(tmp_path, body)
    sweep = load_sweep(path)
    store = RunStore(sweep.store_url)
    assert main(["submit", str(path)]) == 0
    (row,) = store.runs(sweep.name)
    checkpoint = sweep.workdir / "checkpoints" / f"{row.id}.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists():
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.2)
    status = store.run(sweep.name, row.id)
    assert status is not None and status.status == "running" and status.job_id
    # What SLURM does on preemption, as submitit's own tests do it: SIGTERM, then USR2.
    subprocess.run(["scancel", "--signal=TERM", status.job_id], check=True)
    subprocess.run(["scancel", "--signal=USR2", status.job_id], check=True)

    counts = wait_done(store, sweep.name, timeout_s=240)
    assert counts[COMPLETED] == 1, store.run(sweep.name, row.id)
    attempts = store.attempts(sweep.name, row.id)
    assert [a.status for a in attempts] == [INTERRUPTED, COMPLETED]
    assert attempts[0].job_id == attempts[1].job_id  # the same job, requeued
    # The job saved a checkpoint at the step it had reached, and resumed there: no work lost.
    logs = "".join(p.read_text() for p in (sweep.workdir / "jobs").rglob("*_log.out"))
    saved = re.findall(r"stop requested; checkpoint saved at step (\d+)", logs)
    resumed = re.findall(r"resumed at step (\d+)", logs)
    assert len(saved) == 1 and resumed == saved, logs[-3000:]

    # The uninterrupted run, here, with the job's thread count.
    config = RunConfig.model_validate_json(row.config)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        logger = MemoryLogger()
        expected = train(config, RunContext(workdir=tmp_path / "fresh"), logger)
    finally:
        torch.set_num_threads(threads)
    final = store.run(sweep.name, row.id)
    assert final is not None and json.loads(final.final_metrics or "{}") == expected
    (child,) = mlflow_runs(sweep.tracking_uri, sweep.experiment)[1]
    client = MlflowClient(tracking_uri=sweep.tracking_uri)
    history = client.get_metric_history(child.info.run_id, "accuracy")  # type: ignore[attr-defined]
    assert sorted({m.step for m in history}) == [step for step, _ in logger.history]


# ---------------------------------------------------------------------------------------------
# Crash-safe submission


@pytest.mark.slurm
def test_orchestrator_killed_mid_submission_loses_and_doubles_nothing(
    slurm: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_sweep(tmp_path, SLURM_SWEEP + SIX_RUNS)
    sweep = load_sweep(path)
    store = RunStore(sweep.store_url)
    calls = {"n": 0}
    original = RunStore.attach_job_ids

    def killed_on_second_array(self: RunStore, *args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # sbatch of array 2 succeeded; its job ids were never recorded
            raise KeyboardInterrupt
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(RunStore, "attach_job_ids", killed_on_second_array)
    with pytest.raises(KeyboardInterrupt):
        submit_sweep(sweep, store, max_array_size=2)
    monkeypatch.setattr(RunStore, "attach_job_ids", original)
    states = store.run_states(sweep.name)
    assert sum(1 for _, s, job, _, _ in states if s == SUBMITTED and job) == 2
    assert sum(1 for _, s, job, _, _ in states if s == SUBMITTED and not job) == 2
    pending = [r for r, s, *_ in states if s == PENDING]
    assert len(pending) == 2
    # A second submitter died after marking a run, before its sbatch.
    store.mark_submitted(sweep.name, pending[:1], "deadbeefdeadbeef")

    outcome = submit_sweep(sweep, store, max_array_size=2)
    assert (outcome.recovered, outcome.requeued, outcome.submitted) == (2, 1, 2)
    counts = wait_done(store, sweep.name)
    assert counts[COMPLETED] == 6
    for run_id, *_ in store.run_states(sweep.name):
        assert [a.status for a in store.attempts(sweep.name, run_id)] == [COMPLETED]
    assert len(mlflow_runs(sweep.tracking_uri, sweep.experiment)[1]) == 6


# ---------------------------------------------------------------------------------------------
# Hostile values, cancel and reconcile, bad input


@pytest.mark.slurm
def test_hostile_yaml_values_never_reach_a_shell(slurm: None, tmp_path: Path) -> None:
    marker = Path(f"/tmp/activescale-pwned-{uuid.uuid4().hex}")
    hostile = f"q'uo\"te $(touch {marker}) `touch {marker}` ; touch {marker}"
    work = tmp_path / f"w $(touch {marker}) `touch {marker}` 'q\""
    yaml_hostile = json.dumps(hostile)  # a YAML double-quoted scalar
    name = f"h{uuid.uuid4().hex[:8]}"
    path = tmp_path / "hostile.yaml"
    path.write_text(
        f"name: {name}\nworkdir: {json.dumps(str(work))}\n"
        f"store: sqlite:///{tmp_path / 'store.db'}\n"
        f"tracking: {{uri: 'sqlite:///{tmp_path / 'mlflow.db'}', experiment: {yaml_hostile}}}\n"
        f"description: {yaml_hostile}\n"
        + SLURM_SWEEP.replace(
            "timeout_min: 10}",
            f"timeout_min: 10, additional_parameters: {{comment: {yaml_hostile}}}}}",
        ).replace("selection: {policy: learnability, keep: 0.5}", "selection: {policy: iid}")
    )
    sweep = load_sweep(path)
    store = RunStore(sweep.store_url)
    assert main(["submit", str(path)]) == 0
    (row,) = store.runs(name)
    shown = subprocess.run(
        ["scontrol", "show", "job", (row.job_id or "").split("_")[0]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"Comment={hostile}" in shown
    assert wait_done(store, name)[COMPLETED] == 1
    assert not marker.exists()
    assert list(work.glob("jobs/*/*_log.out"))  # logs landed in the hostile directory

    # A newline would end an #SBATCH line: it is a named error, and nothing is registered.
    bad = tmp_path / "newline.yaml"
    bad.write_text(
        path.read_text().replace(
            "description:", 'executor: {kind: slurm, setup: ["echo a\\necho b"]}\nx:', 1
        )
    )
    assert main(["submit", str(bad)]) == 2


@pytest.mark.slurm
def test_cancel_and_a_job_killed_behind_our_back(slurm: None, tmp_path: Path) -> None:
    # Jobs that may start only in an hour: cancel and reconcile without spending CPU (`hold`
    # is activescale's own: every array is held until its files exist, then released).
    body = SLURM_SWEEP.replace(
        "timeout_min: 10}", "timeout_min: 10, additional_parameters: {begin: now+1hour}}"
    )
    path = write_sweep(tmp_path, body + "grid:\n  seed: [0, 1, 2]\n")
    sweep = load_sweep(path)
    store = RunStore(sweep.store_url)
    assert main(["submit", str(path)]) == 0
    rows = store.runs(sweep.name)
    # One job dies without reporting (someone ran scancel): status notices.
    victim = rows[0]
    subprocess.run(["scancel", victim.job_id or ""], check=True)
    deadline = time.monotonic() + 30
    while store.run(sweep.name, victim.id).status != CANCELLED:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "sacct never reported the cancelled job"
        assert main(["status", str(path)]) == 0
        time.sleep(0.5)
    assert "cancelled before it started" in (store.run(sweep.name, victim.id).error_tail or "")  # type: ignore[union-attr]
    assert main(["cancel", str(path)]) == 0
    assert store.counts(sweep.name)[CANCELLED] == 3
    queued = subprocess.run(
        ["squeue", "-h", "-j", (rows[1].job_id or "").split("_")[0], "-t", "PD,R"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    assert queued.strip() == ""


@pytest.mark.slurm
def test_bad_input_exits_2_and_leaves_the_store_alone(
    slurm: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store_db = tmp_path / "work" / "store.db"
    # A sweep error: dotted key and line, nothing registered.
    path = write_sweep(tmp_path, SLURM_SWEEP + "grid:\n  learner.size: [xs, huge]\n")
    assert main(["submit", str(path)]) == 2
    assert "learner.size" in capsys.readouterr().err and not store_db.exists()

    # A partition that does not exist: named, nothing registered.
    path = write_sweep(tmp_path, SLURM_SWEEP.replace("partition: debug", "partition: nosuch"))
    assert main(["submit", str(path)]) == 2
    err = capsys.readouterr().err
    assert "'nosuch' does not exist" in err and "debug" in err and not store_db.exists()

    # SLURM unreachable (no client on PATH): named, nothing registered.
    path = write_sweep(tmp_path, SLURM_SWEEP)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["submit", str(path)]) == 2
    assert "not a SLURM submit host" in capsys.readouterr().err and not store_db.exists()
    monkeypatch.undo()

    # More memory than the largest node has: named before anything is written.
    path = write_sweep(
        tmp_path, SLURM_SWEEP.replace("cpus_per_task: 1", "cpus_per_task: 1, mem_gb: 100000")
    )
    assert main(["submit", str(path)]) == 2
    assert "largest node of partition 'debug'" in capsys.readouterr().err
    assert not store_db.exists()

    # sbatch itself refuses (a node feature no node has, which validation does not know):
    # runs keep their status.
    path = write_sweep(
        tmp_path,
        SLURM_SWEEP.replace(
            "timeout_min: 10}", "timeout_min: 10, additional_parameters: {constraint: nosuch}}"
        ),
    )
    assert main(["submit", str(path)]) == 2
    assert "sbatch refused" in capsys.readouterr().err
    sweep = load_sweep(path)
    states = RunStore(sweep.store_url).run_states(sweep.name)
    assert states and all(
        s == PENDING and job is None and token is None for _, s, job, token, _ in states
    )

"""Tuning (orchestrator/tune.py) with real components: Optuna journal/SQLite/PostgreSQL
storages, local worker processes, a SLURM job array, MLflow child runs, a killed worker, the
pruner, from_tuning, and one test per bad-input rule.

Under CI=true the PostgreSQL and SLURM tests fail (never skip) when the service is missing.
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from activescale.schema import TAG_STUDY, TAG_TRIAL
from orchestrator.cli import main
from orchestrator.executors import local_executor
from orchestrator.launch import prepare as prepare_sweep
from orchestrator.spec import load_sweep
from orchestrator.tune.command import make_tune_jobs
from orchestrator.tune.config import TuneConfig
from orchestrator.tune.studies import (
    grid_space,
    open_storage,
    prepare,
    storage_location,
    target_trials,
)
from orchestrator.tune.worker import run_worker
from tests.conftest import TINY_RUN, need_service
from tests.test_slurm import POSTGRES_URL, postgres_up, slurm_up

OPTUNA_DB_URL = POSTGRES_URL.rsplit("/", 1)[0] + "/activescale_optuna"

TUNE_SWEEP = (
    TINY_RUN.replace("{policy: learnability, keep: 0.5}", "{policy: iid}")
    + """\
budget: {steps: 30}
eval: {points: 3, batch_size: 256}
executor: {kind: local}
grid:
  learner.size: [xxs]
  seed: [0, 1]
tune:
  space:
    optimizer.lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
    optimizer.warmup: {type: float, low: 0.0, high: 0.2}
  per: [learner.size]
  trials: 3
  workers: 2
  pruner: {kind: none}
"""
)


def write_sweep(tmp_path: Path, body: str = TUNE_SWEEP, extra: str = "") -> Path:
    name = f"t{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nworkdir: {tmp_path / 'work'}\n{body}{extra}")
    return path


def optuna_db() -> str:
    """The PostgreSQL database for Optuna (created on first use)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        exists = connection.execute(
            sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = 'activescale_optuna'")
        ).scalar()
        if not exists:
            connection.execute(sqlalchemy.text("CREATE DATABASE activescale_optuna"))
    engine.dispose()
    return OPTUNA_DB_URL


@pytest.fixture
def postgres() -> str:
    need_service(postgres_up(), f"PostgreSQL at {POSTGRES_URL} (scripts/local-postgres up)")
    return optuna_db()


def check_study_and_mlflow(path: Path, trials: int = 3) -> None:
    """The study finished; every trial is an MLflow child run of the sweep's parent run."""
    sweep = load_sweep(path)
    tune = sweep.settings.tune
    assert tune is not None
    storage = open_storage(storage_location(sweep), tune, create=False)
    name = f"{sweep.name}/learner.size=xxs"
    study = optuna.load_study(study_name=name, storage=storage)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) >= trials
    client = MlflowClient(tracking_uri=sweep.tracking_uri)
    experiment = client.get_experiment_by_name(sweep.experiment)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("activescale.role") == "sweep")
    children = [r for r in runs if r.data.tags.get(TAG_STUDY) == name]
    assert sorted(int(r.data.tags[TAG_TRIAL]) for r in children) == [t.number for t in study.trials]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    by_trial = {int(r.data.tags[TAG_TRIAL]): r for r in children}
    for trial in complete:
        run = by_trial[trial.number]
        assert run.info.status == "FINISHED"
        assert run.data.metrics["objective"] == pytest.approx(trial.value)
        assert float(run.data.params["optimizer.lr"]) == pytest.approx(trial.params["optimizer.lr"])


# ---------------------------------------------------------------------------------------------
# Local workers on a journal file and on SQLite; from_tuning


@pytest.mark.parametrize("storage", ["journal", "sqlite"])
def test_two_local_workers_finish_a_study_and_feed_the_sweep(
    tmp_path: Path, storage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = ""
    if storage == "sqlite":
        extra = f"  storage: sqlite:///{tmp_path / 'optuna.db'}\n"
    path = write_sweep(tmp_path, TUNE_SWEEP + extra)
    assert main(["plan", str(path), "-o", "from_tuning=true"]) == 2
    assert "run `activescale tune" in capsys.readouterr().err

    assert main(["tune", str(path)]) == 0
    out = capsys.readouterr().out
    assert "best parameters per study" in out and "optimizer.lr=" in out
    check_study_and_mlflow(path)
    if storage == "journal":
        assert (tmp_path / "work" / "tune" / "optuna.journal").is_file()

    # from_tuning: the runs take the best values; they change the run ids; plan shows them.
    plain = load_sweep(path)
    tuned = prepare_sweep(load_sweep(path, ["from_tuning=true"]))
    sweep = load_sweep(path)
    storage_ = open_storage(storage_location(sweep), sweep.settings.tune)  # type: ignore[arg-type]
    best = optuna.load_study(study_name=f"{sweep.name}/learner.size=xxs", storage=storage_)
    for run in tuned.runs:
        assert run.config.optimizer.lr == pytest.approx(best.best_params["optimizer.lr"])
        assert run.tuned == best.best_params
        assert f'"lr":{run.config.optimizer.lr}' in run.config_text().replace(" ", "")
    assert {r.run_id for r in tuned.runs}.isdisjoint({r.run_id for r in plain.runs})
    assert main(["plan", str(path), "-o", "from_tuning=true"]) == 0
    assert "tuned values" in capsys.readouterr().out
    if storage == "journal":  # the tuned sweep end to end: its report lists the tuned values
        assert main(["run", str(path), "-o", "from_tuning=true", "--executor", "inline"]) == 0
        report = (tmp_path / "work" / "report" / "report.md").read_text()
        assert "## Tuned hyperparameters" in report
        assert f"optimizer.lr={best.best_params['optimizer.lr']:.4g}" in report
        # A second call with other run ids shares the parent: both calls' values are kept.
        again = ["from_tuning=true", "optimizer.weight_decay=0.02"]
        flags = ["-o", again[0], "-o", again[1], "--no-report", "--executor", "inline"]
        assert main(["run", str(path), *flags]) == 0
        from analysis.load import load_runs, load_tuned

        data = load_runs([(sweep.name, sweep.tracking_uri)])
        kept = load_tuned([(sweep.name, sweep.tracking_uri)], data.all_parents)
        second = prepare_sweep(load_sweep(path, again))
        assert {r.run_id for r in (*tuned.runs, *second.runs)} <= set(kept)


# ---------------------------------------------------------------------------------------------
# PostgreSQL storage, a SLURM job array of workers


@pytest.mark.postgres
def test_two_local_workers_on_postgresql(tmp_path: Path, postgres: str) -> None:
    path = write_sweep(tmp_path, TUNE_SWEEP + f"  storage: {postgres}\n")
    assert main(["tune", str(path)]) == 0
    check_study_and_mlflow(path)


@pytest.mark.slurm
def test_workers_as_a_slurm_job_array(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    need_service(slurm_up(), "the local SLURM cluster (scripts/local-slurm up)")
    body = TUNE_SWEEP.replace(
        "executor: {kind: local}",
        "executor: {kind: slurm, partition: debug, cpus_per_task: 1, timeout_min: 10}",
    )
    path = write_sweep(tmp_path, body)
    # A partition that does not exist: named, and no study, store or MLflow data is created.
    assert main(["tune", str(path), "-o", "executor.partition=nosuch"]) == 2
    assert "'nosuch' does not exist" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()

    assert main(["tune", str(path)]) == 0
    out = capsys.readouterr().out
    assert "slurm array" in out and "2 workers" in out
    check_study_and_mlflow(path)
    logs = list((tmp_path / "work" / "tune" / "jobs").rglob("*_log.out"))
    assert len(logs) == 2  # one array task per worker


# ---------------------------------------------------------------------------------------------
# A worker killed mid-trial; the pruner


@pytest.mark.postgres
def test_killed_worker_trial_is_failed_retried_and_the_study_completes(
    tmp_path: Path, postgres: str
) -> None:
    body = (
        TUNE_SWEEP.replace("budget: {steps: 30}", "budget: {steps: 3000}")
        .replace("  workers: 2\n", "  workers: 1\n  heartbeat_interval: 1\n  grace_period: 3\n")
        .replace("  trials: 3\n", "  trials: 1\n")
    )
    path = write_sweep(tmp_path, body + f"  storage: {postgres}\n")
    sweep = load_sweep(path)
    (job,) = make_tune_jobs(sweep, workers=1, threads=1)
    handle = local_executor(tmp_path / "jobs", 1).submit(job)  # not blocking: kill it below
    storage = open_storage(job.storage, sweep.settings.tune)  # type: ignore[arg-type]
    study = optuna.load_study(study_name=job.studies[0].name, storage=storage)
    deadline = time.monotonic() + 120
    while not any("worker" in t.user_attrs for t in study.get_trials(states=(TrialState.RUNNING,))):
        assert time.monotonic() < deadline, f"no trial started: {handle.stderr()}"
        assert not handle.done(), handle.stderr()
        time.sleep(0.2)
    (victim,) = study.get_trials(states=(TrialState.RUNNING,))
    os.kill(int(victim.user_attrs["worker"].split(":")[1]), signal.SIGKILL)  # dies mid-trial

    # A new worker finds the silent trial, fails it, runs its retry, and finishes the study.
    threads = torch.get_num_threads()
    try:
        run_worker(replace(job, worker=1, poll_s=0.2))
    finally:
        torch.set_num_threads(threads)
    trials = {t.number: t for t in study.get_trials()}
    assert trials[victim.number].state == TrialState.FAIL
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == victim.params
    assert sum(1 for t in trials.values() if t.state == TrialState.COMPLETE) == 1


def test_journal_trials_left_running_by_dead_workers_are_retried_on_the_next_tune(
    tmp_path: Path,
) -> None:
    path = write_sweep(tmp_path)
    sweep = load_sweep(path)
    studies, location, tune = prepare(sweep)
    study = optuna.load_study(study_name=studies[0].name, storage=open_storage(location, tune))
    orphan = study.ask()  # a worker took this trial, then died (no heartbeat in a journal)
    orphan.suggest_float("optimizer.lr", 1e-3, 1e-1, log=True)

    prepare(sweep)  # what `activescale tune` does before it starts its workers
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[1].params == trials[0].params
    assert trials[1].system_attrs["failed_trial"] == orphan.number


def test_grid_sampler_space_and_trial_count() -> None:
    tune = TuneConfig.model_validate(
        {
            "space": {
                "optimizer.lr": {"type": "categorical", "choices": [0.01, 0.1]},
                "optimizer.warmup": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.1},
                "eval.points": {"type": "int", "low": 2, "high": 6, "step": 2},
            },
            "sampler": {"kind": "grid"},
            "trials": 100,
        }
    )
    space = grid_space(tune)
    assert space["optimizer.lr"] == [0.01, 0.1] and space["eval.points"] == [2, 4, 6]
    assert space["optimizer.warmup"] == pytest.approx([0.0, 0.1, 0.2])
    assert target_trials(tune) == 18  # the grid, not the 100 asked for


def test_pruner_stops_a_deliberately_bad_learning_rate(tmp_path: Path) -> None:
    body = (
        TUNE_SWEEP.replace("budget: {steps: 30}", "budget: {steps: 60}")
        .replace("eval: {points: 3, batch_size: 256}", "eval: {points: 5, batch_size: 256}")
        .replace("    optimizer.warmup: {type: float, low: 0.0, high: 0.2}\n", "")
        .replace("high: 1.0e-1, log: true}", "high: 20.0, log: true}")
        .replace(
            "pruner: {kind: none}", "pruner: {kind: median, startup_trials: 2, warmup_evals: 0}"
        )
        .replace("trials: 3", "trials: 4")
    )
    path = write_sweep(tmp_path, body)
    sweep = load_sweep(path)
    studies, location, tune = prepare(sweep)
    study = optuna.load_study(study_name=studies[0].name, storage=open_storage(location, tune))
    for lr in (3e-3, 1e-2, 10.0, 5e-3):
        study.enqueue_trial({"optimizer.lr": lr})
    (job,) = make_tune_jobs(sweep, workers=1, threads=1)
    threads = torch.get_num_threads()
    try:
        run_worker(job)
    finally:
        torch.set_num_threads(threads)
    by_lr = {t.params["optimizer.lr"]: t for t in study.get_trials()}
    assert by_lr[10.0].state == TrialState.PRUNED
    assert len(by_lr[10.0].intermediate_values) < 5  # stopped before its last evaluation
    assert by_lr[3e-3].state == by_lr[1e-2].state == TrialState.COMPLETE
    client = MlflowClient(tracking_uri=sweep.tracking_uri)
    run_id = by_lr[10.0].user_attrs["mlflow_run_id"]
    assert client.get_run(run_id).info.status == "KILLED"


# ---------------------------------------------------------------------------------------------
# Bad input: named error with file:line and dotted key, exit 2, nothing started


@pytest.mark.parametrize(
    ("line", "replacement", "expected"),
    [
        (
            "    optimizer.lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}",
            "    optimizer.lr: {type: normal, low: 1.0e-3, high: 1.0e-1}",
            ["tune.space.optimizer.lr", "'normal'", "'float', 'int', 'categorical'"],
        ),
        (
            "    optimizer.lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}",
            "    optimizer.lr: {type: float, low: 0.1, high: 0.01}",
            ["tune.space.optimizer.lr", "must be smaller than high"],
        ),
        (
            "    optimizer.lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}",
            "    optimizer.lr: {type: float, low: 0.0, high: 0.1, log: true}",
            ["tune.space.optimizer.lr", "log-uniform needs low > 0"],
        ),
        (
            "    optimizer.lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}",
            "    optimizer.learning_rate: {type: float, low: 1.0e-3, high: 1.0e-1}",
            ["tune.space.optimizer.learning_rate", "not a run-config key"],
        ),
        (
            "    optimizer.warmup: {type: float, low: 0.0, high: 0.2}",
            "    optimizer.warmup: {type: float, low: 0.0, high: 1.5}",
            ["tune.space.optimizer.warmup", "1.5", "Narrow the range"],
        ),
        (
            "  per: [learner.size]",
            "  per: [learner.width]",
            ["tune.per", "'learner.width'", "not a grid axis", "learner.size, seed"],
        ),
        (
            "  per: [learner.size]",
            "  per: [learner.size]\n  sampler: {kind: grid}",
            ["tune", "needs a step for float optimizer.lr"],
        ),
        (
            "tune:\n",
            "from_tuning: true\nnot_tune:\n",
            ["from_tuning", "there is no tune: section"],
        ),
    ],
    ids=[
        "unknown-type",
        "low-ge-high",
        "log-low-le-0",
        "unknown-key",
        "out-of-range",
        "unknown-per-axis",
        "grid-needs-step",
        "from-tuning-without-tune",
    ],
)
def test_bad_tune_input_is_a_named_error_and_starts_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    line: str,
    replacement: str,
    expected: list[str],
) -> None:
    assert line in TUNE_SWEEP
    path = write_sweep(tmp_path, TUNE_SWEEP.replace(line, replacement, 1))
    assert main(["tune", str(path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    for text in expected:
        assert text in err, err
    assert re.search(rf"{re.escape(str(path))}:\d+: {re.escape(expected[0])}", err), err
    assert not (tmp_path / "work").exists()  # nothing registered, no storage, no workers


def test_the_example_sweep_is_valid_and_asks_for_tuning_first(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = Path(__file__).resolve().parent.parent / "sweeps" / "tune_example.yaml"
    sweep = load_sweep(example, ["workdir=/nonexistent/tune_example"])
    assert sweep.settings.from_tuning and len(sweep.runs) == 8
    assert main(["plan", str(example), "-o", "workdir=/nonexistent/tune_example"]) == 2
    assert "activescale tune" in capsys.readouterr().err


def test_overrides_reach_single_search_space_entries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """tune.space keys are dotted run-config keys: `-o` splits them off, not at their dots."""
    path = write_sweep(tmp_path)

    def space(*overrides: str) -> dict[str, object]:
        tune = load_sweep(path, list(overrides)).settings.tune
        assert tune is not None
        return {k: v.model_dump(exclude_none=True) for k, v in tune.space.items()}

    lr = space("tune.space.optimizer.lr.high=0.01")["optimizer.lr"]
    assert lr == {"type": "float", "low": 1e-3, "high": 0.01, "log": True}
    replaced = space("tune.space.optimizer.lr={type: categorical, choices: [1.0e-3, 3.0e-3]}")
    assert replaced["optimizer.lr"] == {"type": "categorical", "choices": [1e-3, 3e-3]}
    added = space("tune.space.optimizer.beta2={type: float, low: 0.9, high: 0.999}")
    assert set(added) == {"optimizer.lr", "optimizer.warmup", "optimizer.beta2"}
    # A bad overridden value is the same named error as one written in the file: exit 2.
    assert main(["tune", str(path), "-o", "tune.space.optimizer.lr.low=0.5"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "tune.space.optimizer.lr" in err and "must be smaller than high" in err
    assert not (tmp_path / "work").exists()

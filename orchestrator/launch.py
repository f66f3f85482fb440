"""Sweep lifecycle shared by the CLI commands: prepare, register, pick what to run, build
jobs, pick the executor.

A loaded sweep (``orchestrator/spec.py``) is first *prepared* (:func:`prepare`): tuned values
applied, preflight checks run; both read files (the tuning storage, the data), which loading
does not.

Registering is idempotent: run ids are config hashes, so a second ``activescale run`` of the
same YAML adds nothing and executes only what has not completed. ``submit_sweep`` is the
non-blocking SLURM path (``activescale submit`` / ``retry``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from activescale.errors import StoreError, SubmissionError
from activescale.schema import ARTIFACT_TUNED
from orchestrator.executors import Executor, ExecutorConfig, InlineExecutor, LocalExecutor
from orchestrator.mlflow_runs import client_for, ensure_parent
from orchestrator.spec import Sweep
from orchestrator.store import (
    COMPLETED,
    IN_FLIGHT,
    INTERRUPTED,
    PENDING,
    RETRYABLE,
    RunRow,
    RunStore,
)
from orchestrator.submission import fault_point
from orchestrator.worker import RunJob, code_version
from trainers.distributed import check_data_parallel
from trainers.reference import reference_key
from trainers.tasks import task_for


def prepare(sweep: Sweep, apply_tuning: bool = True) -> Sweep:
    """The loaded sweep, ready to run: with ``from_tuning`` (unless ``apply_tuning`` is false,
    as for `activescale tune` itself) each run takes its study's best values; then
    :func:`preflight` checks every run config. Raises the named error of the first problem."""
    if sweep.settings.from_tuning and apply_tuning:
        from orchestrator.tune.studies import apply_best_params

        sweep.runs = apply_best_params(sweep)
    from orchestrator.plan import preflight

    preflight(r.config for r in sweep.runs)
    check_processes(sweep)
    return sweep


def check_processes(sweep: Sweep) -> None:
    """Every run can train on the processes its learner size asks for (``nodes`` x
    ``tasks_per_node``): its batch splits evenly over them, its task allows it."""
    executor = sweep.settings.executor
    for run in sweep.runs:
        size = str(run.config.learner.size)
        processes = executor.resources_for(size).processes
        sized = executor.resources.get(size)
        asked = sized is not None and (sized.nodes or sized.tasks_per_node)
        where = f"executor.resources.{size}" if asked else "executor"
        where += ".nodes x tasks_per_node"
        check_data_parallel(
            run.config.batch_size, task_for(run.config).independent_rows, processes, where
        )


@dataclass(frozen=True)
class Registration:
    """A registration's counts, of the grid as configured now; ``outside``: runs registered
    under the sweep's name by other configurations (other overrides), left out of them."""

    total: int
    new: int
    completed: int
    in_flight: int
    experiment_id: str
    parent_run_id: str
    outside: int = 0


def record_sweep(sweep: Sweep, store: RunStore) -> None:
    """The sweep's row: its YAML, where its files and MLflow data live, and the run ids of its
    grid as configured now (what `status NAME` and `report NAME` cover)."""
    store.upsert_sweep(
        sweep.name,
        {
            "source": sweep.source,
            "sweep": sweep.raw,
            "workdir": str(sweep.workdir),
            "tracking_uri": sweep.tracking_uri,
            "experiment": sweep.experiment,
        },
        grid=grid_run_ids(sweep),
    )


def grid_run_ids(sweep: Sweep) -> frozenset[str]:
    """The run ids of the sweep as loaded (after overrides and tuned values)."""
    return frozenset(r.run_id for r in sweep.runs)


def register(sweep: Sweep, store: RunStore) -> Registration:
    record_sweep(sweep, store)
    new = store.register(
        sweep.name,
        ((r.run_id, r.config_text(), r.label) for r in sweep.runs),
    )
    grid = grid_run_ids(sweep)
    counts = store.counts(sweep.name, grid)
    everything = sum(store.counts(sweep.name).values())
    experiment_id, parent = ensure_parent(sweep, store, code_version())
    tuned = {r.run_id: r.tuned for r in sweep.runs if r.tuned}
    if tuned:  # from_tuning: the report shows which values each run took
        from analysis.load import load_tuned

        # A parent serves every call of the sweep (say include, then amortize): keep the
        # values the earlier calls' runs took.
        earlier = load_tuned([(sweep.name, sweep.tracking_uri)], {sweep.name: parent})
        client_for(sweep.tracking_uri).log_dict(parent, earlier | tuned, ARTIFACT_TUNED)
    return Registration(
        total=sum(counts.values()),
        new=new,
        completed=counts[COMPLETED],
        in_flight=sum(counts[s] for s in IN_FLIGHT),
        experiment_id=experiment_id,
        parent_run_id=parent,
        outside=everything - sum(counts.values()),
    )


def runs_to_execute(
    sweep: Sweep, store: RunStore, statuses: Sequence[str] | None = None
) -> tuple[list[RunRow], int]:
    """This sweep's runs in ``statuses`` (default: neither completed nor in flight) that may
    run again, and how many were left out for having used up ``max_attempts``. Pending and
    interrupted runs always may: an interruption (Ctrl-C, a killed orchestrator) is not a
    failure of the run, and it resumes from its checkpoint."""
    if statuses is None:
        statuses = (PENDING, INTERRUPTED, *RETRYABLE)
    wanted = {r.run_id for r in sweep.runs}
    rows = [r for r in store.runs(sweep.name, statuses) if r.id in wanted]
    limit = sweep.settings.max_attempts
    kept = [r for r in rows if r.attempts < limit or r.status in (PENDING, INTERRUPTED)]
    return kept, len(rows) - len(kept)


def reference_shares(sweep: Sweep) -> Counter[str]:
    """How many runs of the sweep share each pretrained reference (for reference_cost=amortize)."""
    return Counter(
        reference_key(r.config)
        for r in sweep.runs
        if r.config.uses_reference
        and r.config.reference
        and r.config.reference.mode == "pretrained"
    )


def make_jobs(sweep: Sweep, rows: list[RunRow], registration: Registration) -> list[RunJob]:
    if not registration.parent_run_id:
        raise StoreError("the sweep has no MLflow parent run; register it with MLflow first")
    shares = reference_shares(sweep)
    planned = {r.run_id: r.config for r in sweep.runs}  # validated when the sweep was loaded
    version = code_version()
    jobs = []
    for row in rows:
        config = planned[row.id]
        share = (
            shares.get(reference_key(config), 1)
            if config.uses_reference and config.reference
            else 1
        )
        jobs.append(
            RunJob(
                sweep=sweep.name,
                run_id=row.id,
                config=row.config_dict(),
                label=json.loads(row.label),
                store_url=sweep.store_url,
                tracking_uri=sweep.tracking_uri,
                experiment_id=registration.experiment_id,
                parent_run_id=registration.parent_run_id,
                workdir=str(sweep.workdir),
                reference_share=share,
                code_version=version,
                collective_timeout_s=sweep.settings.executor.collective_timeout_s,
                plugins=sweep.plugins,
            )
        )
    return jobs


def execute_runs(
    sweep: Sweep,
    store: RunStore,
    registration: Registration,
    rows: list[RunRow],
    on_progress: Callable[[], None] = lambda: None,
) -> list[Any]:
    """Run these rows of a registered sweep with its executor, inline or local (blocking;
    SLURM goes through :func:`submit_sweep`). Each run records how it ended in the store;
    returns the executor's handles. The CLI's `run` and the notebook API both come here."""
    jobs = make_jobs(sweep, rows, registration)
    executor = make_executor(sweep.settings.executor, sweep.workdir, store=store)
    return executor.launch(jobs, on_progress)


@dataclass
class SubmitOutcome:
    registration: Registration
    submitted: int = 0
    arrays: list[tuple[str, int]] = field(default_factory=list)  # (array job id, runs)
    sbatch_calls: int = 0
    at_max_attempts: int = 0  # retryable runs that used up max_attempts
    recovered: int = 0  # runs of an interrupted earlier submission, found in SLURM
    requeued: int = 0  # runs of an interrupted earlier submission, pending again


def make_executor(
    cfg: ExecutorConfig,
    workdir: Path,
    *,
    store: RunStore | None = None,
    folder: str = "jobs",
    parallel: int | None = None,
    threads: int | None = None,
) -> Executor:
    """The backend of ``cfg.kind``: the one place that picks it, for runs and tuning workers.

    ``store``: SLURM submissions of runs are recorded there (tokens, job ids); ``folder``:
    where under ``workdir`` the job logs go; ``parallel`` / ``threads``: local processes at
    once and threads each (default: the executor config's)."""
    if cfg.kind == "inline":
        return InlineExecutor()
    if cfg.kind == "slurm":
        from orchestrator.slurm import SlurmExecutor, StoreLog

        return SlurmExecutor(cfg, workdir, StoreLog(store) if store else None, folder)
    return LocalExecutor(
        workdir / folder,
        parallel or cfg.max_parallel,
        threads or cfg.threads_per_run,
        cfg.processes_for,
    )


def submit_sweep(
    sweep: Sweep,
    store: RunStore | str,
    statuses: Sequence[str] = (PENDING,),
    max_array_size: int | None = None,
    registration: Registration | None = None,
) -> SubmitOutcome:
    """Register the sweep (unless ``registration`` says it is) and submit its runs in
    ``statuses`` (pending; for `retry`, failed, timed-out and cancelled, up to max_attempts)
    as SLURM job arrays; returns once sbatch has accepted them.

    SLURM is checked (reachable, partitions exist) before the store is touched (given as a
    URL, it is not even opened), so a cluster problem leaves the store as it was.
    """
    from orchestrator.recovery import recover_stranded
    from orchestrator.slurm import SlurmExecutor, reconcile

    cfg = sweep.settings.executor
    if cfg.kind != "slurm":
        raise SubmissionError(
            f"executor.kind is {cfg.kind!r}: `submit` sends runs to SLURM. Set executor.kind: "
            "slurm (or pass --executor slurm), or use `activescale run` to run here."
        )
    SlurmExecutor(cfg, sweep.workdir).check({str(r.config.learner.size) for r in sweep.runs})
    fault_point("before-store")
    if isinstance(store, str):  # opened only now: a SLURM problem must not create a store
        store = RunStore(store)
    registration = registration or register(sweep, store)
    recover_stranded(store, sweep.name)  # runs left running here by a process that is gone
    reconciled = reconcile(store, sweep.name)
    rows, at_max_attempts = runs_to_execute(sweep, store, statuses)
    outcome = SubmitOutcome(
        registration,
        at_max_attempts=at_max_attempts,
        recovered=reconciled.recovered,
        requeued=reconciled.requeued,
    )
    if not rows:
        return outcome
    executor = make_executor(cfg, sweep.workdir, store=store)
    assert isinstance(executor, SlurmExecutor)  # cfg.kind is slurm, checked above
    executor.max_array_size = max_array_size
    executor.launch(make_jobs(sweep, rows, registration), lambda: None)
    outcome.submitted = len(rows)
    outcome.arrays = [(a.job_id, a.runs) for a in executor.submitted]
    outcome.sbatch_calls = executor.sbatch_calls
    return outcome

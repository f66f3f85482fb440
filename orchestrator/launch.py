"""Sweep lifecycle shared by the CLI commands: register, pick what to run, build jobs.

Registering is idempotent: run ids are config hashes, so a second ``activescale run`` of the
same YAML adds nothing and executes only what has not completed. ``submit_sweep`` is the
non-blocking SLURM path (``activescale submit`` / ``retry``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from analysis.load import TUNED_ARTIFACT
from orchestrator.errors import StoreError, SubmissionError
from orchestrator.spec import Sweep
from orchestrator.store import COMPLETED, IN_FLIGHT, PENDING, RETRYABLE, RunRow, RunStore
from orchestrator.worker import TAG_SWEEP, RunJob, code_version
from trainers.reference import reference_key


@dataclass(frozen=True)
class Registration:
    total: int
    new: int
    completed: int
    in_flight: int
    experiment_id: str
    parent_run_id: str


def ensure_mlflow_parent(sweep: Sweep, store: RunStore) -> tuple[str, str]:
    """The sweep's MLflow experiment and parent run, created on first use."""
    from mlflow.tracking import MlflowClient

    row = store.sweep(sweep.name)
    client = MlflowClient(tracking_uri=sweep.tracking_uri)
    if row is not None and row.mlflow_parent_run_id and row.mlflow_experiment_id:
        try:
            client.get_run(row.mlflow_parent_run_id)
            return row.mlflow_experiment_id, row.mlflow_parent_run_id
        except Exception:  # the tracking store was moved or wiped: make a new parent
            pass
    experiment = client.get_experiment_by_name(sweep.experiment)
    if experiment is None:
        artifacts = None
        if sweep.tracking_uri.startswith("sqlite:"):
            artifacts = (sweep.workdir / "mlartifacts").as_uri()
        experiment_id = client.create_experiment(sweep.experiment, artifact_location=artifacts)
    else:
        experiment_id = experiment.experiment_id
    parent = client.create_run(
        experiment_id,
        run_name=f"sweep:{sweep.name}",
        tags={TAG_SWEEP: sweep.name, "activescale.role": "sweep"},
    )
    client.log_param(parent.info.run_id, "sweep.runs", len(sweep.runs))
    store.set_mlflow_parent(sweep.name, experiment_id, parent.info.run_id)
    return experiment_id, parent.info.run_id


def record_sweep(sweep: Sweep, store: RunStore) -> None:
    """The sweep's row: its YAML and where its files and MLflow data live (for `status NAME`)."""
    store.upsert_sweep(
        sweep.name,
        {
            "source": sweep.source,
            "sweep": sweep.raw,
            "workdir": str(sweep.workdir),
            "tracking_uri": sweep.tracking_uri,
            "experiment": sweep.experiment,
        },
    )


def register(sweep: Sweep, store: RunStore) -> Registration:
    record_sweep(sweep, store)
    new = store.register(
        sweep.name,
        ((r.run_id, r.config_text(), r.label) for r in sweep.runs),
    )
    counts = store.counts(sweep.name)
    experiment_id, parent = ensure_mlflow_parent(sweep, store)
    tuned = {r.run_id: r.tuned for r in sweep.runs if r.tuned}
    if tuned:  # from_tuning: the report shows which values each run took
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=sweep.tracking_uri).log_dict(parent, tuned, TUNED_ARTIFACT)
    return Registration(
        total=sum(counts.values()),
        new=new,
        completed=counts[COMPLETED],
        in_flight=sum(counts[s] for s in IN_FLIGHT),
        experiment_id=experiment_id,
        parent_run_id=parent,
    )


def runs_to_execute(
    sweep: Sweep, store: RunStore, statuses: Sequence[str] = (PENDING, *RETRYABLE)
) -> tuple[list[RunRow], int]:
    """This sweep's runs in ``statuses`` (default: neither completed nor in flight) that may
    run again, and how many were left out for having used up ``max_attempts``."""
    wanted = {r.run_id for r in sweep.runs}
    rows = [r for r in store.runs(sweep.name, statuses) if r.id in wanted]
    limit = sweep.settings.max_attempts
    kept = [r for r in rows if r.attempts < limit or r.status == PENDING]
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
            )
        )
    return jobs


@dataclass
class SubmitOutcome:
    registration: Registration
    submitted: int = 0
    arrays: list[tuple[str, int]] = field(default_factory=list)  # (array job id, runs)
    sbatch_calls: int = 0
    at_max_attempts: int = 0  # retryable runs that used up max_attempts
    recovered: int = 0  # runs of an interrupted earlier submission, found in SLURM
    requeued: int = 0  # runs of an interrupted earlier submission, pending again


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
    from orchestrator.slurm import SlurmExecutor, check_resources, cluster_info, reconcile

    cfg = sweep.settings.executor
    if cfg.kind != "slurm":
        raise SubmissionError(
            f"executor.kind is {cfg.kind!r}: `submit` sends runs to SLURM. Set executor.kind: "
            "slurm (or pass --executor slurm), or use `activescale run` to run here."
        )
    sizes = {str(r.config.learner.size) for r in sweep.runs}
    check_resources(cluster_info(), [cfg.resources_for(size) for size in sorted(sizes)])
    if isinstance(store, str):  # opened only now: a SLURM problem must not create a store
        store = RunStore(store)
    registration = registration or register(sweep, store)
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
    executor = SlurmExecutor(cfg, sweep.workdir, store, max_array_size=max_array_size)
    executor.launch(make_jobs(sweep, rows, registration), lambda: None)
    outcome.submitted = len(rows)
    outcome.arrays = [(a.job_id, a.runs) for a in executor.submitted]
    outcome.sbatch_calls = executor.sbatch_calls
    return outcome

"""Tuning: Optuna studies per grid cell, run by parallel workers that share one storage.

A sweep's ``tune:`` section names a search space over dotted run-config keys, and the grid
axes that get a study of their own (``per``)::

    tune:
      space:
        optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
        selection.temperature: {type: float, low: 0.3, high: 3.0}
      per: [learner.size, selection.policy]
      trials: 20
      workers: 4

``activescale tune SWEEP.yaml`` creates one study per distinct combination of the ``per`` axes
(named ``SWEEP/learner.size=s/selection.policy=iid``; the sweep's other axes take their first
value) and starts ``workers`` processes, here or as a SLURM job array, that all work through
every study on one storage. A trial trains the study's run config with the suggested values
and maximises the test accuracy; every evaluation (log-spaced in FLOPs) reports the accuracy
to the pruner. With ``from_tuning: true`` the main sweep's runs take their study's best values
before their run ids are computed, so the values are part of each run's config and params.

Storage: a file path (default ``WORKDIR/tune/optuna.journal``) is an Optuna journal file, safe
for many processes on one machine or a shared file system; a URL (``sqlite:///...`` for one
process, ``postgresql+psycopg2://...`` for many nodes) is an RDBStorage with heartbeats: a
worker that dies mid-trial stops beating, its trial is failed after ``grace_period`` seconds
and retried (``RetryFailedTrialCallback``), so the study still reaches its trial count.
"""

from __future__ import annotations

import math
import os
import socket
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestrator.errors import ActivescaleError, SubmissionError
from trainers.tracking import MetricLogger

if TYPE_CHECKING:
    import optuna

    from orchestrator.spec import Lines, PlannedRun, Sweep


class TuneError(ActivescaleError):
    """A study is missing or unfinished, or tuning workers failed."""


# ---------------------------------------------------------------------------------------------
# Configuration


class FloatDistribution(BaseModel):
    """A float between ``low`` and ``high`` (log-uniform with ``log: true``)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["float"] = Field(description="float: a real number in [low, high].")
    low: float = Field(description="Smallest value.")
    high: float = Field(description="Largest value (must exceed low).")
    log: bool = Field(False, description="Sample log-uniformly (low must be > 0).")
    step: float | None = Field(
        None, gt=0, description="Grid spacing (needed by sampler grid; not with log)."
    )

    @model_validator(mode="after")
    def _valid_range(self) -> FloatDistribution:
        check_range(self.low, self.high, self.log, self.step)
        return self


class IntDistribution(BaseModel):
    """An integer between ``low`` and ``high`` inclusive."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["int"] = Field(description="int: an integer in [low, high].")
    low: int = Field(description="Smallest value.")
    high: int = Field(description="Largest value (must exceed low).")
    log: bool = Field(False, description="Sample log-uniformly (low must be > 0).")
    step: int = Field(1, ge=1, description="Spacing between values (1 with log).")

    @model_validator(mode="after")
    def _valid_range(self) -> IntDistribution:
        check_range(self.low, self.high, self.log, None if self.step == 1 else self.step)
        return self


class CategoricalDistribution(BaseModel):
    """One of a list of values."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["categorical"] = Field(description="categorical: one of `choices`.")
    choices: list[str | int | float | bool | None] = Field(
        min_length=1, description="The values to choose from (scalars)."
    )


def check_range(low: float, high: float, log: bool, step: float | None) -> None:
    if not low < high:
        raise ValueError(f"low ({low}) must be smaller than high ({high})")
    if log and low <= 0:
        raise ValueError(f"log-uniform needs low > 0 (got low = {low}); use e.g. 1e-5")
    if log and step is not None:
        raise ValueError("log and step cannot be combined; drop one")


Distribution = Annotated[
    FloatDistribution | IntDistribution | CategoricalDistribution, Field(discriminator="type")
]
# Names pydantic puts into error locations for the tagged union (left out of messages).
DISTRIBUTION_TAGS = frozenset({"float", "int", "categorical"})


class SamplerConfig(BaseModel):
    """How the next trial's values are chosen."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["tpe", "random", "grid"] = Field(
        "tpe",
        description="tpe: Bayesian (TPE); random; grid: every combination (floats need step).",
    )
    seed: int = Field(0, description="Sampler seed; worker i on study j uses seed + i + 1000 j.")


class PrunerConfig(BaseModel):
    """When a trial is stopped early, from its accuracy at the FLOP checkpoints."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["median", "hyperband", "none"] = Field(
        "median",
        description=(
            "median: stop a trial below the median of earlier trials at the same evaluation; "
            "hyperband: successive halving over evaluations; none: never prune."
        ),
    )
    startup_trials: int = Field(
        5, ge=0, description="median: trials that complete before any is pruned."
    )
    warmup_evals: int = Field(
        1, ge=0, description="median: evaluations of a trial before it can be pruned."
    )


class TuneConfig(BaseModel):
    """The ``tune:`` section: what to search, how, and how many trials per study."""

    model_config = ConfigDict(extra="forbid")

    space: dict[str, Distribution] = Field(
        min_length=1,
        description="Dotted run-config keys -> distributions, e.g. optimizer.lr: {type: float, "
        "low: 1e-4, high: 1e-1, log: true}.",
    )
    sampler: SamplerConfig = Field(default_factory=SamplerConfig, description="Sampler.")
    pruner: PrunerConfig = Field(default_factory=PrunerConfig, description="Pruner.")
    trials: int = Field(20, ge=1, description="Finished (completed or pruned) trials per study.")
    per: list[str] = Field(
        default_factory=list,
        description="Grid axes that get a study each (e.g. [learner.size, selection.policy]); "
        "the other axes take their first value while tuning.",
    )
    objective: Literal["final", "best"] = Field(
        "final", description="Maximise the final test accuracy, or the best one seen."
    )
    storage: str | None = Field(
        None,
        description="A journal file path (null: WORKDIR/tune/optuna.journal), or a URL: "
        "sqlite:///... (one process) or postgresql+psycopg2://... (many nodes).",
    )
    workers: int = Field(2, ge=1, description="Worker processes (local) or array tasks (slurm).")
    heartbeat_interval: int = Field(
        10, ge=1, description="URL storages: seconds between a running trial's heartbeats."
    )
    grace_period: int | None = Field(
        None, ge=1, description="URL storages: a trial silent this long fails (null: 2x beat)."
    )
    max_retry: int = Field(2, ge=0, description="Retries of a trial whose worker died.")

    @model_validator(mode="after")
    def _grid_is_finite(self) -> TuneConfig:
        if self.sampler.kind == "grid":
            for key, dist in self.space.items():
                if isinstance(dist, FloatDistribution) and dist.step is None:
                    raise ValueError(
                        f"sampler grid needs a step for float {key}; add step: or use kind tpe"
                    )
        return self


# ---------------------------------------------------------------------------------------------
# Validation against the sweep (called by spec.parse_sweep)


def check_tuning(sweep: Sweep, lines: Lines) -> None:
    """Tuned keys exist in the run config and their ranges are valid values; ``per`` axes are
    grid axes; ``from_tuning`` has a ``tune`` section. Errors name file:line and dotted key."""
    from pydantic import ValidationError

    from orchestrator.spec import _deep_copy, _explain, _fail, _set_dotted
    from trainers.config import RunConfig

    tune = sweep.settings.tune
    if tune is None:
        if sweep.settings.from_tuning:
            raise _fail(
                lines.where(("from_tuning",)),
                "from_tuning",
                True,
                "there is no tune: section to take the parameters from",
                "Add a tune: section, or remove from_tuning.",
            )
        return
    for axis in tune.per:
        if axis not in sweep.grid:
            raise _fail(
                lines.where(("tune", "per")),
                "tune.per",
                axis,
                "not a grid axis",
                f"Grid axes: {', '.join(sweep.grid) or '(none)'}.",
            )
    for key, dist in tune.space.items():
        where = lines.where(("tune", "space", key))
        if key in sweep.grid:
            raise _fail(
                where,
                f"tune.space.{key}",
                key,
                "the key is also a grid axis",
                "Tune it or grid it, not both.",
            )
        if isinstance(dist, CategoricalDistribution):
            samples: list[Any] = list(dist.choices)
        else:
            samples = [dist.low, dist.high]
        for value in samples:
            point = _deep_copy(sweep.base)
            _set_dotted(point, key, value)
            try:
                RunConfig.model_validate(point)
            except ValidationError as err:
                error = next(
                    (e for e in err.errors() if ".".join(map(str, e["loc"])).startswith(key)),
                    err.errors()[0],
                )
                if error["type"] == "extra_forbidden":
                    _, problem, fix = _explain(error, RunConfig)
                    problem = "not a run-config key"
                else:
                    _, problem, fix = _explain(error, RunConfig)
                    fix = "Narrow the range to values the run config accepts."
                raise _fail(where, f"tune.space.{key}", value, problem, fix) from None


# ---------------------------------------------------------------------------------------------
# Studies


@dataclass(frozen=True)
class StudySpec:
    """One study: its name, the grid values it stands for, and the run config it tunes."""

    name: str
    axes: dict[str, Any]
    config: dict[str, Any]  # the run config (JSON) the trials start from
    learner_size: str


def study_name(sweep_name: str, axes: dict[str, Any]) -> str:
    return "/".join([sweep_name, *(f"{key}={value}" for key, value in axes.items())])


def plan_studies(sweep: Sweep) -> list[StudySpec]:
    """One study per distinct combination of the ``per`` axes, in grid order."""
    tune = sweep.settings.tune
    assert tune is not None  # callers check: a programming error otherwise
    studies: dict[str, StudySpec] = {}
    for run in sweep.runs:
        axes = {axis: run.label[axis] for axis in tune.per}
        name = study_name(sweep.name, axes)
        if name not in studies:
            studies[name] = StudySpec(
                name, axes, run.config.model_dump(mode="json"), str(run.config.learner.size)
            )
    return list(studies.values())


def storage_location(sweep: Sweep) -> str:
    tune = sweep.settings.tune
    assert tune is not None
    return tune.storage or str(sweep.workdir / "tune" / "optuna.journal")


def is_url(location: str) -> bool:
    return "://" in location


def open_storage(
    location: str, tune: TuneConfig, create: bool = True
) -> optuna.storages.BaseStorage:
    """A journal file storage for a path, an RDBStorage (with heartbeats) for a URL."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend

    if not is_url(location):
        path = Path(location)
        if not create and not path.exists():
            raise TuneError(f"no tuning journal at {path}: run `activescale tune SWEEP.yaml` first")
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs: dict[str, Any] = {}
    if location.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                location,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=tune.heartbeat_interval,
                grace_period=tune.grace_period or 2 * tune.heartbeat_interval,
                # Optuna >= 4.9's name for failed_trial_callback=RetryFailedTrialCallback.
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(tune.max_retry),
            )
    except (optuna.exceptions.StorageInternalError, ImportError, ValueError) as err:
        raise TuneError(f"cannot open the tuning storage {location}: {err}") from None


def finished_trials(study: optuna.Study) -> tuple[int, int]:
    """(completed, pruned) trials of a study."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    complete = sum(1 for t in trials if t.state == TrialState.COMPLETE)
    return complete, len(trials) - complete


def target_trials(tune: TuneConfig) -> int:
    """Trials per study: ``trials``, or fewer when a grid has fewer points."""
    if tune.sampler.kind != "grid":
        return tune.trials
    return min(tune.trials, math.prod(len(v) for v in grid_space(tune).values()))


def grid_space(tune: TuneConfig) -> dict[str, list[Any]]:
    space: dict[str, list[Any]] = {}
    for key, dist in tune.space.items():
        if isinstance(dist, CategoricalDistribution):
            space[key] = list(dist.choices)
        elif isinstance(dist, IntDistribution):
            space[key] = list(range(dist.low, dist.high + 1, dist.step))
        else:
            step = dist.step or 1.0
            n = math.floor((dist.high - dist.low) / step + 1e-9) + 1
            space[key] = [dist.low + i * step for i in range(n)]
    return space


def make_sampler(tune: TuneConfig, worker: int, study: int = 0) -> optuna.samplers.BaseSampler:
    import optuna

    # The same seed in every worker (or study) would repeat the same suggestions.
    seed = tune.sampler.seed + worker + 1000 * study
    if tune.sampler.kind == "grid":
        return optuna.samplers.GridSampler(grid_space(tune), seed=seed)
    if tune.sampler.kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(tune: TuneConfig) -> optuna.pruners.BasePruner:
    import optuna

    if tune.pruner.kind == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=tune.pruner.startup_trials, n_warmup_steps=tune.pruner.warmup_evals
        )
    if tune.pruner.kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.NopPruner()


def suggest(trial: optuna.Trial, key: str, dist: Any) -> Any:
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(key, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, log=dist.log, step=dist.step)
    return trial.suggest_categorical(key, dist.choices)


def with_params(config: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The run config (JSON) with dotted ``params`` applied, validated and resolved."""
    from orchestrator.spec import _deep_copy, _set_dotted
    from trainers.config import RunConfig

    data = _deep_copy(config)
    for key, value in params.items():
        _set_dotted(data, key, value)
    return RunConfig.model_validate(data).resolved().model_dump(mode="json")


# ---------------------------------------------------------------------------------------------
# The worker


TAG_STUDY = "activescale.study"
TAG_TRIAL = "activescale.trial"
# Not activescale.sweep: trials must not count as the sweep's runs in its report.
TAG_TUNED_SWEEP = "activescale.tuned_sweep"


class PruningLogger(MetricLogger):
    """Forwards metrics, and reports each evaluation's accuracy to the trial's pruner."""

    def __init__(self, inner: MetricLogger, trial: optuna.Trial) -> None:
        self.inner = inner
        self.trial = trial
        self.evaluations = 0
        self.best = -math.inf

    def log_params(self, params: dict[str, Any]) -> None:
        self.inner.log_params(params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import optuna

        self.inner.log_metrics(metrics, step)
        accuracy = float(metrics["accuracy"])
        self.best = max(self.best, accuracy)
        self.trial.report(accuracy, step=self.evaluations)
        self.evaluations += 1
        if self.trial.should_prune():
            self.inner.flush()
            raise optuna.TrialPruned(f"accuracy {accuracy:.4f} at evaluation {self.evaluations}")

    def flush(self) -> None:
        self.inner.flush()


@dataclass(frozen=True)
class TuneJob:
    """What one worker needs (picklable: sent to local processes and SLURM tasks)."""

    sweep: str
    studies: list[StudySpec]
    tune: dict[str, Any]  # TuneConfig, as JSON
    storage: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    workdir: str
    worker: int = 0
    threads: int | None = None
    cwd: str | None = None
    poll_s: float = 1.0  # URL storages: how often a worker with nothing to start looks again


def run_worker(job: TuneJob) -> int:
    """Work through every study (starting at a different one per worker) until each has its
    trials; returns the number of trials this worker finished."""
    import optuna
    import torch

    if job.cwd:
        os.chdir(job.cwd)
    if job.threads:
        torch.set_num_threads(job.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tune = TuneConfig.model_validate(job.tune)
    storage = open_storage(job.storage, tune)
    heartbeat = is_url(job.storage)
    target = target_trials(tune)
    done = 0
    n = len(job.studies)
    for index in [(job.worker + i) % n for i in range(n)]:
        spec = job.studies[index]
        study = optuna.load_study(
            study_name=spec.name,
            storage=storage,
            sampler=make_sampler(tune, job.worker, index),
            pruner=make_pruner(tune),
        )
        done += _work_on(study, spec, job, tune, target, heartbeat)
    return done


def _work_on(
    study: optuna.Study, spec: StudySpec, job: TuneJob, tune: TuneConfig, target: int, beat: bool
) -> int:
    import optuna
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    done = 0
    failures = 0
    ended: list[TrialState] = []

    def record(_: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        ended.append(trial.state)

    while True:
        if beat:  # a dead worker's trial fails here and is queued again
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                fail_stale_trials(study)
        states = [t.state for t in study.get_trials(deepcopy=False)]
        finished = sum(1 for s in states if s in (TrialState.COMPLETE, TrialState.PRUNED))
        running = sum(1 for s in states if s == TrialState.RUNNING)
        waiting = sum(1 for s in states if s == TrialState.WAITING)
        if finished >= target:
            return done
        if waiting or finished + running < target:
            ended.clear()
            study.optimize(
                _objective(spec, job, tune), n_trials=1, catch=(Exception,), callbacks=[record]
            )
            if TrialState.FAIL in ended:
                failures += 1
                if failures > tune.trials:
                    raise TuneError(f"study {spec.name}: {failures} trials failed in one worker")
            else:
                done += 1
        elif beat:  # the last trials run elsewhere: wait, in case their worker dies
            time.sleep(job.poll_s)
        else:  # a journal file has no heartbeats: nothing to wait for
            return done


def _objective(spec: StudySpec, job: TuneJob, tune: TuneConfig) -> Callable[[Any], float]:
    def objective(trial: optuna.Trial) -> float:
        from mlflow.tracking import MlflowClient

        from orchestrator.worker import TAG_PARENT
        from trainers.config import RunConfig
        from trainers.loop import RunContext, train
        from trainers.tracking import FlushingMLflowLogger

        params = {key: suggest(trial, key, dist) for key, dist in tune.space.items()}
        config = RunConfig.model_validate(with_params(spec.config, params))
        client = MlflowClient(tracking_uri=job.tracking_uri)
        dead = trial.user_attrs.get("mlflow_run_id")  # a retry inherits its dead trial's attrs
        if dead:
            client.set_terminated(dead, status="FAILED")
        run = client.create_run(
            job.experiment_id,
            run_name=f"{spec.name} #{trial.number}",
            tags={
                TAG_PARENT: job.parent_run_id,
                TAG_TUNED_SWEEP: job.sweep,
                TAG_STUDY: spec.name,
                TAG_TRIAL: str(trial.number),
                "activescale.role": "trial",
            },
        )
        run_id = run.info.run_id
        trial.set_user_attr("mlflow_run_id", run_id)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        logger = PruningLogger(FlushingMLflowLogger(job.tracking_uri, run_id), trial)
        try:
            metrics = train(config, RunContext(workdir=Path(job.workdir)), logger)
        except BaseException as err:
            client.set_terminated(run_id, status="KILLED" if _is_pruned(err) else "FAILED")
            raise
        value = logger.best if tune.objective == "best" else float(metrics["accuracy"])
        client.log_metric(run_id, "objective", value)
        client.set_terminated(run_id, status="FINISHED")
        return value

    return objective


def _is_pruned(err: BaseException) -> bool:
    import optuna

    return isinstance(err, optuna.TrialPruned)


# ---------------------------------------------------------------------------------------------
# Running the studies


def prepare(sweep: Sweep) -> tuple[list[StudySpec], str, Any]:
    """Create the studies (idempotent) and the MLflow parent; returns (studies, storage, tune)."""
    import optuna

    tune = sweep.settings.tune
    if tune is None:
        raise TuneError(f"{sweep.source}: the sweep has no tune: section; add one to tune it")
    studies = plan_studies(sweep)
    location = storage_location(sweep)
    storage = open_storage(location, tune)
    for spec in studies:
        study = optuna.create_study(
            study_name=spec.name, storage=storage, direction="maximize", load_if_exists=True
        )
        if not study.user_attrs:
            study.set_user_attr("axes", spec.axes)
            study.set_user_attr("sweep", sweep.name)
        if not is_url(location):
            requeue_orphans(study, tune)
    return studies, location, tune


def requeue_orphans(study: optuna.Study, tune: TuneConfig) -> list[int]:
    """A journal file has no heartbeats: trials an earlier `tune` left running (its workers
    died) are failed and queued again, as a URL storage does for a silent trial. Call this only
    when no worker of the study is alive (before starting them)."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    retry = RetryHeartbeatStaleTrialCallback(tune.max_retry)
    failed = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                retry(study, study._storage.get_trial(trial._trial_id))
                failed.append(trial.number)
    return failed


def make_tune_jobs(sweep: Sweep, workers: int, threads: int | None) -> list[TuneJob]:
    from orchestrator.launch import ensure_mlflow_parent, record_sweep
    from orchestrator.store import RunStore

    studies, location, tune = prepare(sweep)
    store = RunStore(sweep.store_url)
    record_sweep(sweep, store)
    experiment_id, parent = ensure_mlflow_parent(sweep, store)
    return [
        TuneJob(
            sweep=sweep.name,
            studies=studies,
            tune=tune.model_dump(mode="json"),
            storage=location,
            tracking_uri=sweep.tracking_uri,
            experiment_id=experiment_id,
            parent_run_id=parent,
            workdir=str(sweep.workdir),
            worker=i,
            threads=threads,
            cwd=os.getcwd(),
        )
        for i in range(workers)
    ]


def launch_local(jobs: Sequence[TuneJob], folder: Path) -> list[Any]:
    """One local process per worker (submitit LocalExecutor); returns the submitit jobs."""
    from orchestrator.executors import local_executor

    executor = local_executor(folder, jobs[0].threads or 1 if jobs else 1)
    try:
        return [executor.submit(run_worker, job) for job in jobs]
    except Exception as err:
        raise SubmissionError(f"could not start a tuning worker: {err}") from err


def launch_slurm(sweep: Sweep, jobs: Sequence[TuneJob]) -> list[Any]:
    """The workers as one SLURM job array (resources of the first study's learner size)."""
    import submitit

    from orchestrator.sbatch import submitit_parameters
    from orchestrator.slurm import check_resources, cluster_info
    from orchestrator.snapshot import make_snapshot

    cfg = sweep.settings.executor
    resources = cfg.resources_for(jobs[0].studies[0].learner_size)
    check_resources(cluster_info(), [resources])
    snapshot = make_snapshot(sweep.workdir) if cfg.snapshot else None
    params = submitit_parameters(
        resources,
        job_name=f"as-tune-{sweep.name}-{uuid.uuid4().hex[:8]}",
        setup=cfg.setup,
        array_parallelism=cfg.array_parallelism or len(jobs),
        snapshot=snapshot,
        signal_delay_s=cfg.signal_delay_s,
    )
    executor = submitit.SlurmExecutor(folder=sweep.workdir / "tune" / "jobs" / "%j")
    executor.update_parameters(**params)
    threads = resources.cpus_per_task
    try:
        with executor.batch():
            handles = [executor.submit(run_worker, _with(job, threads=threads)) for job in jobs]
    except Exception as err:
        raise SubmissionError(f"sbatch refused the tuning array: {err}") from None
    return handles


def _with(job: TuneJob, **changes: Any) -> TuneJob:
    from dataclasses import replace

    return replace(job, **changes)


def wait(handles: Sequence[Any], poll_s: float = 2.0) -> list[str]:
    """Wait for the workers; returns one line per worker that failed."""
    while not all(h.done() for h in handles):
        time.sleep(poll_s)
    problems = []
    for handle in handles:
        error = handle.exception()
        if error is not None:  # the message is a log dump: name the error and the log
            problems.append(
                f"worker {handle.job_id}: {type(error).__name__}; log: {handle.paths.stderr}"
            )
    return problems


@dataclass(frozen=True)
class StudyResult:
    name: str
    complete: int
    pruned: int
    failed: int
    best_value: float | None
    best_params: dict[str, Any]


def results(sweep: Sweep) -> list[StudyResult]:
    """Where each of the sweep's studies stands."""
    import optuna
    from optuna.trial import TrialState

    tune = sweep.settings.tune
    assert tune is not None
    storage = open_storage(storage_location(sweep), tune, create=False)
    out = []
    for spec in plan_studies(sweep):
        try:
            study = optuna.load_study(study_name=spec.name, storage=storage)
        except KeyError:
            raise TuneError(
                f"no study {spec.name!r} in {storage_location(sweep)}: run "
                f"`activescale tune {sweep.source}` first"
            ) from None
        complete, pruned = finished_trials(study)
        failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
        best = study.best_trial if complete else None
        out.append(
            StudyResult(
                spec.name,
                complete,
                pruned,
                failed,
                best.value if best else None,
                dict(best.params) if best else {},
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# from_tuning: the main sweep takes each study's best values


def apply_best_params(sweep: Sweep) -> list[PlannedRun]:
    """The sweep's runs with their study's best values applied (before hashing)."""
    from orchestrator.spec import PlannedRun, canonical_json, config_hash_text
    from trainers.config import RunConfig

    tune = sweep.settings.tune
    assert tune is not None
    target = target_trials(tune)
    best: dict[str, dict[str, Any]] = {}
    for result in results(sweep):
        if result.complete + result.pruned < target or not result.complete:
            raise TuneError(
                f"study {result.name!r} is unfinished ({result.complete} completed and "
                f"{result.pruned} pruned of {target} trials): run `activescale tune "
                f"{sweep.source}` first, or remove from_tuning"
            )
        best[result.name] = result.best_params
    runs: list[PlannedRun] = []
    seen: set[str] = set()
    for run in sweep.runs:
        params = best[study_name(sweep.name, {a: run.label[a] for a in tune.per})]
        data = with_params(run.config.model_dump(mode="json"), params)
        text = canonical_json(data)
        run_id = config_hash_text(text)
        if run_id in seen:
            continue
        seen.add(run_id)
        runs.append(PlannedRun(run_id, RunConfig.model_validate(data), run.label, text, params))
    return runs


# ---------------------------------------------------------------------------------------------
# The command


def run_tuning(sweep: Sweep, console: Any) -> list[StudyResult]:
    """`activescale tune`: start the workers, wait for them, print each study's best values."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tune = sweep.settings.tune
    if tune is None:
        raise TuneError(f"{sweep.source}: the sweep has no tune: section; add one to tune it")
    on_slurm = sweep.settings.executor.kind == "slurm"
    if on_slurm:  # before anything is created: a cluster problem leaves no trace
        from orchestrator.slurm import check_resources, cluster_info

        size = plan_studies(sweep)[0].learner_size
        check_resources(cluster_info(), [sweep.settings.executor.resources_for(size)])
    threads = None if on_slurm else max(1, (os.cpu_count() or 1) // tune.workers)
    jobs = make_tune_jobs(sweep, tune.workers, threads)
    console.print(
        f"tuning [bold]{sweep.name}[/]: {len(jobs[0].studies)} studies x "
        f"{target_trials(tune)} trials, {tune.workers} workers "
        f"({'slurm array' if on_slurm else 'local'}), storage {jobs[0].storage}"
    )
    if on_slurm:
        handles = launch_slurm(sweep, jobs)
        console.print(f"  array {handles[0].job_id.split('_')[0]}: {len(handles)} workers")
    else:
        handles = launch_local(jobs, sweep.workdir / "tune" / "jobs")
    try:
        problems = wait(handles)
    except KeyboardInterrupt:  # stop the workers too (scancel on SLURM)
        for handle in handles:
            handle.cancel(check=False)
        raise
    handles.clear()  # submitit's LocalJob.__del__ fails if it runs at interpreter exit
    found = results(sweep)
    console.print(results_table(found))
    for r in found:
        params = ", ".join(f"{k}={_short(v)}" for k, v in r.best_params.items())
        console.print(f"  {r.name}: {params or '(no completed trial)'}", highlight=False)
    for problem in problems:  # e.g. a killed worker whose trial another worker retried
        console.print(f"[yellow]a tuning worker failed[/]: {problem}", highlight=False)
    unfinished = [r.name for r in found if r.complete + r.pruned < target_trials(tune)]
    if unfinished:
        raise TuneError(
            f"studies not finished: {', '.join(unfinished)}; run `activescale tune` again "
            "(it continues them)"
        )
    return found


def results_table(found: Sequence[StudyResult]) -> Any:
    from rich.table import Table

    table = Table(title="best parameters per study")
    for column in ("study", "completed", "pruned", "failed", "best accuracy"):
        table.add_column(column, overflow="fold")
    for r in found:
        value = "" if r.best_value is None else f"{r.best_value:.4f}"
        table.add_row(r.name, str(r.complete), str(r.pruned), str(r.failed), value)
    return table


def tuned_table(sweep: Sweep) -> Any:
    """`plan`: the tuned values each run takes (from_tuning)."""
    from rich.table import Table

    tune = sweep.settings.tune
    assert tune is not None
    table = Table(title="tuned values (from_tuning)")
    table.add_column("run id", style="cyan")
    for axis in sweep.grid:
        table.add_column(axis)
    for key in tune.space:
        table.add_column(key)
    for run in sweep.runs:
        table.add_row(
            run.run_id,
            *(str(run.label.get(a, "")) for a in sweep.grid),
            *(_short(run.tuned.get(k, "")) for k in tune.space),
        )
    return table


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)

"""What a tuning worker process runs: trial after trial of every study, until each has its
trials. Each trial trains one run config with the suggested values as an MLflow child run of
the sweep's parent (the same bookkeeping as a run: ``orchestrator/mlflow_runs.py``)."""

from __future__ import annotations

import math
import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from activescale.errors import TuneError
from activescale.schema import (
    METRIC_OBJECTIVE,
    ROLE_TRIAL,
    TAG_ROLE,
    TAG_STUDY,
    TAG_TRIAL,
    TAG_TUNED_SWEEP,
)
from orchestrator.executors import JobBase, StopSignal
from orchestrator.mlflow_runs import client_for, create_child, tracked
from orchestrator.plugins import load_job_plugins, plugin_params
from orchestrator.tune.config import TuneConfig
from orchestrator.tune.studies import (
    StudySpec,
    is_url,
    make_pruner,
    make_sampler,
    open_storage,
    suggest,
    target_trials,
    with_params,
)
from trainers.tracking import FlushingMLflowLogger, MetricLogger

if TYPE_CHECKING:
    import optuna


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
class TuneJob(JobBase):
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
    poll_s: float = 1.0  # URL storages: how often a worker with nothing to start looks again
    # Killed at the SLURM time limit, not requeued: a URL storage retries its trial elsewhere.
    requeueable: bool = False

    @property
    def key(self) -> str:
        return f"worker-{self.worker:05d}"

    @property
    def learner_size(self) -> str:
        """The array asks for the resources of the first study's learner size."""
        return self.studies[0].learner_size

    def __call__(self, job_id: str | None = None, stop: StopSignal | None = None) -> str:
        return f"{run_worker(self)} trials"

    def job_name(self, token: str) -> str:
        return f"as-tune-{self.sweep}-{token}"

    def submitted_as(self, token: str) -> TuneJob:
        return self


def run_worker(job: TuneJob) -> int:
    """Work through every study (starting at a different one per worker) until each has its
    trials; returns the number of trials this worker finished."""
    import optuna

    job.enter()
    plugins = load_job_plugins(job.plugins)  # before any trial's config is validated
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tune = TuneConfig.model_validate(job.tune)
    storage = open_storage(job.storage, tune)
    heartbeat = is_url(job.storage)
    done = 0
    n = len(job.studies)
    for index in [(job.worker + i) % n for i in range(n)]:
        spec = job.studies[index]
        study = optuna.load_study(
            study_name=spec.name,
            storage=storage,
            sampler=make_sampler(tune, job.worker, index, spec.space),
            pruner=make_pruner(tune),
        )
        target = target_trials(tune, spec.space)
        done += _work_on(study, spec, job, tune, target, heartbeat, plugin_params(plugins))
    return done


def _work_on(
    study: optuna.Study,
    spec: StudySpec,
    job: TuneJob,
    tune: TuneConfig,
    target: int,
    beat: bool,
    plugins: dict[str, str],
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
                _objective(spec, job, tune, plugins),
                n_trials=1,
                catch=(Exception,),
                callbacks=[record],
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


def _objective(
    spec: StudySpec, job: TuneJob, tune: TuneConfig, plugins: dict[str, str]
) -> Callable[[Any], float]:
    def objective(trial: optuna.Trial) -> float:
        from trainers.config import RunConfig
        from trainers.loop import RunContext, train

        # Only the keys the study's run config reads (StudySpec.space).
        params = {key: suggest(trial, key, tune.space[key]) for key in spec.space}
        config = RunConfig.model_validate(with_params(spec.config, params))
        client = client_for(job.tracking_uri)
        dead = trial.user_attrs.get("mlflow_run_id")  # a retry inherits its dead trial's attrs
        if dead:
            client.set_terminated(dead, status="FAILED")
        tags = {
            TAG_TUNED_SWEEP: job.sweep,
            TAG_STUDY: spec.name,
            TAG_TRIAL: str(trial.number),
            TAG_ROLE: ROLE_TRIAL,
        }
        name = f"{spec.name} #{trial.number}"
        run_id = create_child(client, job.experiment_id, job.parent_run_id, name, tags)
        trial.set_user_attr("mlflow_run_id", run_id)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        logger = PruningLogger(FlushingMLflowLogger(job.tracking_uri, run_id), trial)
        if plugins:  # the code of each plugin the trial ran with (digest, version)
            logger.log_params(plugins)
        with tracked(client, run_id, _trial_end):
            metrics = train(config, RunContext(workdir=Path(job.workdir)), logger)
            value = logger.best if tune.objective == "best" else float(metrics["accuracy"])
            client.log_metric(run_id, METRIC_OBJECTIVE, value)
        return value

    return objective


def _trial_end(err: BaseException) -> str:
    import optuna

    return "KILLED" if isinstance(err, optuna.TrialPruned) else "FAILED"

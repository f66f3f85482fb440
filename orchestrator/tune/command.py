"""`activescale tune`: create the studies, start the workers through the sweep's executor
(local processes, or one SLURM job array), wait, print each study's best values."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from activescale.errors import TuneError
from activescale.secrets import mask_url
from orchestrator.tune.studies import (
    StudyResult,
    plan_studies,
    prepare,
    results,
    target_trials,
)
from orchestrator.tune.worker import TuneJob

if TYPE_CHECKING:
    from orchestrator.spec import Sweep


def make_tune_jobs(sweep: Sweep, workers: int, threads: int | None) -> list[TuneJob]:
    """Create the studies and the MLflow parent; one job per worker."""
    from orchestrator.launch import record_sweep
    from orchestrator.mlflow_runs import ensure_parent
    from orchestrator.store import RunStore

    studies, location, tune = prepare(sweep)
    store = RunStore(sweep.store_url)
    record_sweep(sweep, store)
    experiment_id, parent = ensure_parent(sweep, store)
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
            plugins=sweep.plugins,
        )
        for i in range(workers)
    ]


def run_tuning(sweep: Sweep, console: Any) -> list[StudyResult]:
    """`activescale tune`: start the workers, wait for them, print each study's best values."""
    import optuna

    from orchestrator.executors import cancel_all, wait
    from orchestrator.launch import make_executor

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tune = sweep.settings.tune
    if tune is None:
        raise TuneError(f"{sweep.source}: the sweep has no tune: section; add one to tune it")
    cfg = sweep.settings.executor
    threads = None if cfg.kind == "slurm" else max(1, (os.cpu_count() or 1) // tune.workers)
    executor = make_executor(
        cfg, sweep.workdir, folder="tune/jobs", parallel=tune.workers, threads=threads
    )
    check = getattr(executor, "check", None)
    if check is not None:  # SLURM, before anything is created: a cluster problem leaves no trace
        check([plan_studies(sweep)[0].learner_size])
    jobs = make_tune_jobs(sweep, tune.workers, threads)
    studies = jobs[0].studies
    targets = {spec.name: target_trials(tune, spec.space) for spec in studies}
    console.print(
        f"tuning [bold]{sweep.name}[/]: {len(studies)} studies x "
        f"{'/'.join(str(t) for t in sorted(set(targets.values())))} trials, {tune.workers} "
        f"workers ({'slurm array' if cfg.kind == 'slurm' else cfg.kind}), "
        f"storage {mask_url(jobs[0].storage)}"
    )
    for spec in studies:  # keys the study's run config ignores are not searched
        for key, why in spec.dropped.items():
            console.print(f"  {spec.name}: tune.space.{key} not searched: {why}", highlight=False)
    handles: list[Any] = []
    try:
        handles = executor.launch(jobs, lambda: None)
        if not executor.blocking:
            console.print(f"  array {handles[0].job_id.split('_')[0]}: {len(handles)} workers")
        problems = wait(handles)
    except KeyboardInterrupt:  # stop the workers too (scancel on SLURM)
        cancel_all(handles)
        raise
    handles.clear()  # submitit's LocalJob.__del__ fails if it runs at interpreter exit
    found = results(sweep)
    console.print(results_table(found))
    for r in found:
        params = ", ".join(f"{k}={_short(v)}" for k, v in r.best_params.items())
        console.print(f"  {r.name}: {params or '(no completed trial)'}", highlight=False)
    for problem in problems:  # e.g. a killed worker whose trial another worker retried
        console.print(f"[yellow]a tuning worker failed[/]: {problem}", highlight=False)
    unfinished = [r.name for r in found if r.complete + r.pruned < targets.get(r.name, tune.trials)]
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

"""The ``activescale`` command line.

    activescale validate SWEEP.yaml        expand the grid, print the run table
    activescale plan SWEEP.yaml            runs, estimated FLOPs and GPU-hours
    activescale run SWEEP.yaml             validate -> register -> execute -> report
    activescale submit SWEEP.yaml          validate -> register -> sbatch job arrays, return
    activescale status SWEEP [--watch]     where the sweep stands (YAML path or sweep name)
    activescale retry SWEEP.yaml           resubmit failed, timed-out and cancelled runs
    activescale cancel SWEEP               scancel the sweep's in-flight jobs
    activescale report SWEEP [SWEEP ...]   fits, comparisons, report.html
    activescale tune SWEEP.yaml            Optuna studies of the sweep's tune: section

Every user error is an ``ActivescaleError``: one message, exit code 2, nothing half-done.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestrator.errors import ActivescaleError, SubmissionError, SweepSpecError
from orchestrator.executors import Executor
from orchestrator.store import IN_FLIGHT, PENDING, RETRYABLE, STATUSES, RunStore
from orchestrator.worker import RunJob

if TYPE_CHECKING:
    from orchestrator.spec import Sweep

console = Console()
# soft_wrap: an error stays one line (greppable in job logs) instead of wrapping at 80 columns.
err_console = Console(stderr=True, soft_wrap=True)


# ---------------------------------------------------------------------------------------------
# Resolving a sweep from a YAML path or a name


@dataclass(frozen=True)
class SweepLocation:
    """Where a registered sweep's store and MLflow data live."""

    name: str
    store_url: str
    tracking_uri: str
    workdir: Path


def locate(ref: str, overrides: Sequence[str] = (), store: str | None = None) -> SweepLocation:
    """A sweep from its YAML file, or by name from its default work directory runs/NAME."""
    if ref.endswith((".yaml", ".yml")) or Path(ref).is_file():
        from orchestrator.spec import load_sweep  # imports torch: only when there is YAML

        sweep = load_sweep(ref, tuple(overrides))
        return SweepLocation(
            sweep.name, store or sweep.store_url, sweep.tracking_uri, sweep.workdir
        )
    workdir = (Path("runs") / ref).resolve()
    url = store or f"sqlite:///{workdir / 'store.db'}"
    if store is None and not (workdir / "store.db").exists():
        raise SweepSpecError(
            f"no sweep named {ref!r} under {workdir.parent}; pass the sweep's YAML file, "
            "or --store URL for a store elsewhere"
        )
    row = RunStore(url).sweep(ref)
    if row is None:
        raise SweepSpecError(f"the store {url} has no sweep named {ref!r}; run it first")
    spec = json.loads(row.spec)
    return SweepLocation(ref, url, spec["tracking_uri"], Path(spec["workdir"]))


# ---------------------------------------------------------------------------------------------
# Commands


def cmd_validate(args: argparse.Namespace) -> int:
    from orchestrator.spec import load_sweep

    sweep = load_sweep(args.sweep, args.override)
    table = Table(title=f"sweep {sweep.name}: {len(sweep.runs)} runs")
    axes = list(sweep.grid)
    table.add_column("run id", style="cyan")
    for axis in axes:
        table.add_column(axis)
    for run in sweep.runs:
        table.add_row(run.run_id, *(str(run.label.get(a, "")) for a in axes))
    console.print(table)
    grid_points = 1
    for values in sweep.grid.values():
        grid_points *= len(values)
    merged = grid_points - len(sweep.runs)
    note = f" ({merged} grid points merged: settings their policy ignores)" if merged else ""
    console.print(f"{len(sweep.runs)} runs from {grid_points} grid points{note}; valid.")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from orchestrator.executors import make_executor
    from orchestrator.launch import make_jobs, register, runs_to_execute
    from orchestrator.spec import load_sweep

    overrides = _overrides(args, executor="executor.kind", max_parallel="executor.max_parallel")
    sweep = load_sweep(args.sweep, overrides)
    store = RunStore(args.store or sweep.store_url)
    started = time.perf_counter()
    registration = register(sweep, store)
    rows, _ = runs_to_execute(sweep, store)
    skipped = registration.completed
    console.print(
        f"sweep [bold]{sweep.name}[/]: {len(sweep.runs)} runs "
        f"({registration.new} new); work directory {sweep.workdir}"
    )
    if skipped:
        console.print(f"{skipped} runs already completed: not rerun")
    if registration.in_flight:
        console.print(f"{registration.in_flight} runs are in flight elsewhere: left alone")
    if rows and sweep.settings.executor.kind == "slurm":
        from orchestrator.launch import submit_sweep

        submit_sweep(sweep, store, statuses=(PENDING, *RETRYABLE), registration=registration)
        _watch(store, sweep.name, args.interval)
    elif rows:
        jobs = make_jobs(sweep, rows, registration)
        executor = make_executor(sweep.settings.executor, sweep.workdir, store)
        _execute_with_progress(executor, jobs, store, sweep.name)
    else:
        console.print("nothing to run")
    counts = store.counts(sweep.name)
    console.print(_counts_line(counts) + f" in {time.perf_counter() - started:.0f} s")
    for row in store.runs(sweep.name, ["failed"]):
        tail = (row.error_tail or "").strip().splitlines()[-1:] or ["?"]
        err_console.print(f"[red]run {row.id} failed[/]: {tail[0]}")
    if not args.no_report:
        _report([SweepLocation(sweep.name, store.url, sweep.tracking_uri, sweep.workdir)], None)
    return 1 if counts["failed"] else 0


def _execute_with_progress(
    executor: Executor, jobs: list[RunJob], store: RunStore, sweep_name: str
) -> None:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("running", total=len(jobs))
        ids = {j.run_id for j in jobs}

        def update() -> None:
            finished = store.run_states(sweep_name, ["completed", "failed"])  # light columns
            done = sum(1 for run_id, *_ in finished if run_id in ids)
            progress.update(task, completed=done)

        executor.launch(jobs, update)
        update()


def _counts_line(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {status}" for status, n in counts.items() if n) or "no runs"


def _overrides(args: argparse.Namespace, **flags: str) -> list[str]:
    """The -o overrides, plus CLI flags that are shorthands for sweep keys (flag=dotted key)."""
    overrides = list(args.override)
    for flag, key in flags.items():
        value = getattr(args, flag, None)
        if value:
            overrides.append(f"{key}={value}")
    return overrides


def _load_for_slurm(args: argparse.Namespace) -> Sweep:
    from orchestrator.spec import load_sweep

    return load_sweep(args.sweep, _overrides(args, executor="executor.kind"))


def _print_plan(sweep: Sweep, flops_per_second: float | None) -> None:
    from orchestrator.plan import plan

    rate = flops_per_second or sweep.settings.plan.flops_per_second
    summary = plan([r.config for r in sweep.runs], rate)
    console.print(f"plan: {summary.line()}")


def cmd_plan(args: argparse.Namespace) -> int:
    from orchestrator.plan import PlanSummary, plan

    sweep = _load_for_slurm(args)
    rate = args.flops_per_second or sweep.settings.plan.flops_per_second
    by_size: dict[str, list[object]] = {}
    for run in sweep.runs:
        by_size.setdefault(str(run.config.learner.size), []).append(run.config)
    table = Table(title=f"sweep {sweep.name}: cost estimate at {rate:.3g} FLOP/s per GPU")
    for column in ("learner size", "runs", "FLOPs", "GPU-hours"):
        table.add_column(column, justify="right")
    total, distinct = 0.0, 0
    for size, configs in by_size.items():
        part = plan(configs, rate)  # type: ignore[arg-type]
        total, distinct = total + part.total_flops, distinct + part.distinct_costs
        table.add_row(size, str(part.runs), f"{part.total_flops:.3g}", f"{part.gpu_hours:.3g}")
    console.print(table)
    if any(run.tuned for run in sweep.runs):
        from orchestrator.tune import tuned_table

        console.print(tuned_table(sweep))
    # Sizes have disjoint cost keys, so their parts sum to the whole without measuring again.
    console.print(f"plan: {PlanSummary(len(sweep.runs), distinct, total, rate).line()}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from orchestrator.spec import load_sweep
    from orchestrator.tune import run_tuning

    overrides = _overrides(args, executor="executor.kind", workers="tune.workers")
    sweep = load_sweep(args.sweep, overrides, apply_tuning=False)
    run_tuning(sweep, console)
    return 0


def cmd_submit(args: argparse.Namespace, retry: bool = False) -> int:
    from orchestrator.launch import submit_sweep

    sweep = _load_for_slurm(args)
    if not retry:
        _print_plan(sweep, args.flops_per_second)
    statuses = RETRYABLE if retry else (PENDING,)
    outcome = submit_sweep(sweep, args.store or sweep.store_url, statuses=statuses)
    reg = outcome.registration
    console.print(
        f"sweep [bold]{sweep.name}[/]: {reg.total} runs ({reg.new} new, {reg.completed} "
        f"completed, {reg.in_flight} in flight); work directory {sweep.workdir}"
    )
    if outcome.recovered or outcome.requeued:
        console.print(
            f"an interrupted earlier submission: {outcome.recovered} runs found in SLURM, "
            f"{outcome.requeued} had no job and were submitted again"
        )
    for array_id, runs in outcome.arrays:
        console.print(f"  array {array_id}: {runs} runs")
    what = "retried" if retry else "submitted"
    console.print(
        f"{outcome.submitted} runs {what} in {outcome.sbatch_calls} sbatch calls; "
        f"follow with: activescale status {args.sweep} --watch"
    )
    if outcome.at_max_attempts:
        err_console.print(
            f"{outcome.at_max_attempts} runs used all {sweep.settings.max_attempts} attempts and "
            "were not retried; raise max_attempts (-o max_attempts=N) to retry them"
        )
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    return cmd_submit(args, retry=True)


def cmd_cancel(args: argparse.Namespace) -> int:
    from orchestrator.slurm import cancel

    location = locate(args.sweep, args.override, args.store)
    store = RunStore(location.store_url)
    cancelled = cancel(store, location.name)
    console.print(f"sweep [bold]{location.name}[/]: {cancelled} runs cancelled")
    console.print(_counts_line(store.counts(location.name)))
    return 0


def reconciled_counts(store: RunStore, sweep: str) -> dict[str, int]:
    """Counts after bringing in-flight runs in line with SLURM (when it can be reached)."""
    from orchestrator.slurm import reconcile

    if any(job or token for _, _, job, token, _ in store.run_states(sweep, IN_FLIGHT)):
        try:
            reconcile(store, sweep)
        except SubmissionError as err:
            err_console.print(f"[yellow]not reconciled with SLURM[/]: {err}")
    return store.counts(sweep)


def _watch(store: RunStore, sweep: str, interval: float) -> dict[str, int]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(sweep, total=None)
        while True:
            counts = reconciled_counts(store, sweep)
            ended = sum(n for status, n in counts.items() if status not in (*IN_FLIGHT, "pending"))
            progress.update(
                task,
                total=sum(counts.values()),
                completed=ended,
                description=f"{sweep}: {_counts_line(counts)}",
            )
            if not any(counts[s] for s in IN_FLIGHT):
                return counts
            time.sleep(interval)


def cmd_status(args: argparse.Namespace) -> int:
    location = locate(args.sweep, args.override, args.store)
    store = RunStore(location.store_url)
    if args.watch:
        _watch(store, location.name, args.interval)
    counts = reconciled_counts(store, location.name)
    console.print(f"sweep [bold]{location.name}[/] ({location.store_url}): {_counts_line(counts)}")
    summary = Table()
    for status in STATUSES:
        summary.add_column(status, justify="right")
    summary.add_column("total", justify="right")
    summary.add_row(*(str(counts[s]) for s in STATUSES), str(sum(counts.values())))
    console.print(summary)
    if args.runs:
        table = Table()
        for column in ("run id", "status", "attempts", "grid values", "accuracy", "error"):
            table.add_column(column)
        for row in store.runs(location.name):
            metrics = json.loads(row.final_metrics) if row.final_metrics else {}
            tail = (row.error_tail or "").strip().splitlines()[-1:] or [""]
            accuracy = f"{metrics['accuracy']:.3f}" if "accuracy" in metrics else ""
            table.add_row(row.id, row.status, str(row.attempts), row.label, accuracy, tail[0][:60])
        console.print(table)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    locations = [locate(ref, args.override, args.store) for ref in args.sweeps]
    _report(locations, Path(args.out) if args.out else None)
    return 0


def _report(locations: list[SweepLocation], out: Path | None) -> None:
    from analysis.report import write_report

    out_dir = out or locations[0].workdir / "report"
    result = write_report([(loc.name, loc.tracking_uri) for loc in locations], out_dir)
    console.print(f"report: [bold]{result.html}[/]")
    for note in result.skipped:
        console.print(f"  skipped: {note}")


# ---------------------------------------------------------------------------------------------
# Parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="activescale",
        description="Scaling-law sweeps of online active data selection (IID vs prioritized).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "-o",
            "--override",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="Dotted override applied after the YAML, e.g. -o learner.lr=3e-4 (repeatable).",
        )
        return p

    p = add("validate", "Validate a sweep YAML and print its expanded run table.")
    p.add_argument("sweep", help="Sweep YAML file.")
    p.set_defaults(func=cmd_validate)

    p = add("run", "Validate, register and execute a sweep, then write its report.")
    p.add_argument("sweep", help="Sweep YAML file.")
    p.add_argument(
        "--executor", choices=["local", "inline", "slurm"], help="Override executor.kind."
    )
    p.add_argument("--max-parallel", type=int, help="Override executor.max_parallel.")
    p.add_argument("--store", help="Run-store SQLAlchemy URL (default: the sweep's).")
    p.add_argument("--no-report", action="store_true", help="Skip the report at the end.")
    p.add_argument(
        "--interval", type=float, default=10.0, help="slurm: seconds between status polls."
    )
    p.set_defaults(func=cmd_run)

    p = add("plan", "Estimate a sweep's FLOPs and GPU-hours before running it.")
    p.add_argument("sweep", help="Sweep YAML file.")
    p.add_argument(
        "--flops-per-second",
        type=float,
        help="Assumed sustained FLOP/s per GPU (default: the sweep's plan.flops_per_second).",
    )
    p.set_defaults(func=cmd_plan)

    for name, text, func in (
        ("submit", "Submit a sweep's pending runs to SLURM as job arrays and return.", cmd_submit),
        ("retry", "Resubmit a sweep's failed, timed-out and cancelled runs.", cmd_retry),
    ):
        p = add(name, text)
        p.add_argument("sweep", help="Sweep YAML file.")
        p.add_argument("--executor", choices=["slurm"], help="Override executor.kind.")
        p.add_argument("--store", help="Run-store SQLAlchemy URL (default: the sweep's).")
        p.add_argument(
            "--flops-per-second", type=float, help="Throughput for the cost summary (FLOP/s)."
        )
        p.set_defaults(func=func)

    p = add("cancel", "Cancel a sweep's in-flight SLURM jobs (scancel); they become cancelled.")
    p.add_argument("sweep", help="Sweep YAML file or sweep name (looked up under runs/).")
    p.add_argument("--store", help="Run-store SQLAlchemy URL (default: the sweep's).")
    p.set_defaults(func=cmd_cancel)

    p = add("status", "Show where a sweep stands (reconciled with SLURM).")
    p.add_argument("sweep", help="Sweep YAML file or sweep name (looked up under runs/).")
    p.add_argument("--store", help="Run-store SQLAlchemy URL (default: the sweep's).")
    p.add_argument("--runs", action="store_true", help="List every run.")
    p.add_argument(
        "--watch",
        action="store_true",
        help="Refresh with a progress bar until nothing is in flight.",
    )
    p.add_argument("--interval", type=float, default=10.0, help="Seconds between refreshes.")
    p.set_defaults(func=cmd_status)

    p = add("tune", "Run the sweep's Optuna studies (tune: section) with parallel workers.")
    p.add_argument("sweep", help="Sweep YAML file.")
    p.add_argument("--workers", type=int, help="Override tune.workers.")
    p.add_argument(
        "--executor", choices=["local", "slurm"], help="Workers here, or as a SLURM job array."
    )
    p.set_defaults(func=cmd_tune)

    p = add("report", "Fit scaling curves and write the HTML/Markdown report.")
    p.add_argument("sweeps", nargs="+", help="Sweep YAML files or sweep names.")
    p.add_argument("--store", help="Run-store SQLAlchemy URL (default: the sweep's).")
    p.add_argument("--out", help="Output directory (default: WORKDIR/report of the first sweep).")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # MLflow announces database migrations at INFO level; keep the CLI's output to the point.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ActivescaleError as err:
        err_console.print(f"[bold red]error:[/] {err}", highlight=False)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())

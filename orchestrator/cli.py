"""The ``activescale`` command line.

    activescale validate SWEEP.yaml        expand the grid, print the run table
    activescale plan SWEEP.yaml            runs, estimated FLOPs and GPU-hours
    activescale run SWEEP.yaml             validate -> register -> execute -> report
    activescale submit SWEEP.yaml          validate -> register -> sbatch job arrays, return
    activescale status SWEEP [--watch]     where the sweep stands (YAML path or sweep name)
    activescale retry SWEEP.yaml           rerun failed, timed-out, cancelled, interrupted runs
    activescale cancel SWEEP               scancel the sweep's in-flight jobs
    activescale report SWEEP [SWEEP ...]   fits, comparisons, report.html
    activescale tune SWEEP.yaml            Optuna studies of the sweep's tune: section
    activescale data pack SRC OUT          write a dataset as WebDataset shards + manifest
    activescale data inspect OUT           print a shard set's manifest (--verify: checksums)

Every user error is an ``ActivescaleError``: one message, exit code 2, nothing half-done.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

import activescale
from activescale.errors import ActivescaleError
from activescale.secrets import mask_text, mask_url
from orchestrator.data_command import add_data_commands
from orchestrator.locate import SweepLocation, locate
from orchestrator.mlflow_runs import client_for, end_parent, experiment_url
from orchestrator.plugins import load_entry_points
from orchestrator.recovery import recover_stranded, recovered_line, stop_on_signals
from orchestrator.status import ProgressTracker, error_line, run_record, sweep_outcome
from orchestrator.store import INTERRUPTED, PENDING, RETRYABLE, STATUSES, RunStore
from orchestrator.watch import counts_line, execute_with_progress, reconciled_counts, watch

if TYPE_CHECKING:
    from orchestrator.sbatch import SlurmResources
    from orchestrator.spec import Sweep
    from trainers.config import RunConfig

console = Console()
# soft_wrap: an error stays one line (greppable in job logs) instead of wrapping at 80 columns.
err_console = Console(stderr=True, soft_wrap=True)


# ---------------------------------------------------------------------------------------------
# Commands


def load_prepared(path: str, overrides: Sequence[str], apply_tuning: bool = True) -> Sweep:
    """The sweep at ``path``, loaded and prepared (tuned values, preflight checks)."""
    from orchestrator.launch import prepare
    from orchestrator.spec import load_sweep

    return prepare(load_sweep(path, tuple(overrides)), apply_tuning)


def load_checked(args: argparse.Namespace, overrides: Sequence[str], **options: object) -> Sweep:
    """The sweep of a command that may write: loaded, prepared and checked before anything is
    written (``orchestrator.checks``), with the command's ``--allow-long``."""
    from orchestrator.checks import load_checked as load

    allow_long = bool(getattr(args, "allow_long", False))
    return load(args.sweep, overrides, allow_long=allow_long, **options)  # type: ignore[arg-type]


def cmd_validate(args: argparse.Namespace) -> int:
    sweep = load_checked(args, args.override)
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


def cmd_run(args: argparse.Namespace, retry: bool = False) -> int:
    """`run` (and `retry` here: its runs that failed or were interrupted, up to max_attempts)."""
    from orchestrator.launch import execute_runs, grid_run_ids, register, runs_to_execute

    overrides = _overrides(
        args, executor="executor.kind", max_parallel="executor.max_parallel", store="store"
    )
    sweep = load_checked(args, overrides)  # before anything is written
    if retry and sweep.settings.executor.kind == "slurm":
        return cmd_submit(args, retry=True, sweep=sweep)
    store = RunStore(sweep.store_url)
    started = time.perf_counter()
    _say_recovered(store, sweep.name)  # a run whose process is gone is no longer in flight
    registration = register(sweep, store)
    grid = grid_run_ids(sweep)
    rows, at_max_attempts = runs_to_execute(
        sweep, store, (INTERRUPTED, *RETRYABLE) if retry else None
    )
    console.print(
        f"sweep [bold]{sweep.name}[/]: {len(sweep.runs)} runs "
        f"({registration.new} new); work directory {sweep.workdir}"
    )
    if url := experiment_url(sweep.tracking_uri, registration.experiment_id):
        console.print(f"MLflow: {url}")
    if registration.completed:
        console.print(f"{registration.completed} runs of this grid already completed: not rerun")
    if registration.in_flight:
        console.print(f"{registration.in_flight} runs are in flight elsewhere: left alone")
    if registration.outside:
        console.print(
            f"{registration.outside} other runs are registered under this name (other "
            "overrides): not in this grid, left out of its counts and report"
        )
    if at_max_attempts and retry:
        _say_at_max_attempts(at_max_attempts, sweep.settings.max_attempts)
    try:
        if rows and sweep.settings.executor.kind == "slurm":
            from orchestrator.launch import submit_sweep

            statuses = (PENDING, INTERRUPTED, *RETRYABLE)
            submit_sweep(sweep, store, statuses=statuses, registration=registration)
            watch(store, sweep.name, args.interval, console, err_console, grid)
        elif rows:
            execute_with_progress(
                lambda update: execute_runs(sweep, store, registration, rows, update),
                {row.id for row in rows},
                store,
                sweep.name,
                console,
            )
        else:
            console.print("nothing to run")
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP: the workers have stopped
        _say_recovered(store, sweep.name)  # those killed after the grace period
        _end_parent(sweep.tracking_uri, registration.parent_run_id, "KILLED")
        raise
    counts = store.counts(sweep.name, grid)
    console.print(counts_line(counts) + f" in {time.perf_counter() - started:.0f} s")
    if outcome := sweep_outcome(counts):
        _end_parent(sweep.tracking_uri, registration.parent_run_id, outcome)
    for row in store.runs(sweep.name, ["failed"]):
        if row.id in grid:
            err_console.print(f"[red]run {row.id} failed[/]: {escape(error_line(row) or '?')}")
    if not args.no_report:
        location = SweepLocation(sweep.name, store.url, sweep.tracking_uri, sweep.workdir, grid)
        _report([location], None)
    return 1 if counts["failed"] else 0


def _say_recovered(store: RunStore, sweep: str) -> None:
    """Runs left running by a process that is gone become interrupted (and are named)."""
    if line := recovered_line(recover_stranded(store, sweep)):
        err_console.print(line)


def _say_at_max_attempts(runs: int, max_attempts: int) -> None:
    err_console.print(
        f"{runs} runs used all {max_attempts} attempts and were not retried; raise "
        "max_attempts (-o max_attempts=N) to retry them"
    )


def _end_parent(tracking_uri: str, parent_run_id: str, status: str) -> None:
    """End the sweep's MLflow parent run; a tracking server that cannot be reached is named,
    never fatal (the runs themselves are recorded)."""
    try:
        end_parent(tracking_uri, parent_run_id, status)
    except Exception as err:  # MLflow raises many types for an unreachable store
        err_console.print(f"[yellow]MLflow parent run not ended[/]: {type(err).__name__}: {err}")


def _overrides(args: argparse.Namespace, **flags: str) -> list[str]:
    """The -o overrides, plus CLI flags that are shorthands for sweep keys (flag=dotted key)."""
    overrides = list(args.override)
    for flag, key in flags.items():
        value = getattr(args, flag, None)
        if value:
            overrides.append(f"{key}={value}")
    return overrides


def _load_for_slurm(args: argparse.Namespace) -> Sweep:
    return load_checked(args, _overrides(args, executor="executor.kind", store="store"))


def _print_plan(sweep: Sweep, flops_per_second: float | None) -> None:
    from orchestrator.plan import plan

    rate = flops_per_second or sweep.settings.plan.flops_per_second
    summary = plan([r.config for r in sweep.runs], rate, resources=_resources_of(sweep))
    console.print(f"plan: {summary.line()}")


def _resources_of(sweep: Sweep) -> Callable[[RunConfig], SlurmResources]:
    return lambda config: sweep.settings.executor.resources_for(str(config.learner.size))


def cmd_plan(args: argparse.Namespace) -> int:
    from orchestrator.plan import PlanSummary, plan

    # Memory checked (a plan builds its models on the CPU); length and environment are not.
    sweep = load_checked(args, _overrides(args, executor="executor.kind"), environment=False)
    rate = args.flops_per_second or sweep.settings.plan.flops_per_second
    by_size: dict[str, list[object]] = {}
    for run in sweep.runs:
        by_size.setdefault(str(run.config.learner.size), []).append(run.config)
    table = Table(title=f"sweep {sweep.name}: cost estimate at {rate:.3g} FLOP/s per GPU")
    for column in ("learner size", "runs", "devices/run", "FLOPs", "GPU-hours"):
        table.add_column(column, justify="right")
    parts = []
    for size, configs in by_size.items():
        part = plan(configs, rate, resources=_resources_of(sweep))  # type: ignore[arg-type]
        parts.append(part)
        devices = sweep.settings.executor.resources_for(size).devices
        table.add_row(
            size,
            str(part.runs),
            str(devices),
            f"{part.total_flops:.3g}",
            f"{part.gpu_hours:.3g}",
        )
    console.print(table)
    if any(run.tuned for run in sweep.runs):
        from orchestrator.tune.command import tuned_table

        console.print(tuned_table(sweep))
    # Sizes have disjoint cost keys, so their parts sum to the whole without measuring again.
    console.print(f"plan: {PlanSummary.combined(parts, rate).line()}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from orchestrator.tune.command import run_tuning

    overrides = _overrides(args, executor="executor.kind", workers="tune.workers")
    sweep = load_checked(args, overrides, apply_tuning=False, command="tune")
    run_tuning(sweep, console)
    return 0


def cmd_submit(args: argparse.Namespace, retry: bool = False, sweep: Sweep | None = None) -> int:
    from orchestrator.launch import submit_sweep

    sweep = sweep or _load_for_slurm(args)
    if not retry:
        _print_plan(sweep, args.flops_per_second)
    statuses = (INTERRUPTED, *RETRYABLE) if retry else (PENDING,)
    outcome = submit_sweep(sweep, sweep.store_url, statuses=statuses)
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
        _say_at_max_attempts(outcome.at_max_attempts, sweep.settings.max_attempts)
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    return cmd_run(args, retry=True)


def cmd_cancel(args: argparse.Namespace) -> int:
    from orchestrator.slurm import cancel

    location = locate(args.sweep, args.override, args.store)
    store = RunStore(location.store_url)
    cancelled = cancel(store, location.name)
    console.print(f"sweep [bold]{location.name}[/]: {cancelled} runs cancelled")
    console.print(counts_line(store.counts(location.name)))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    location = locate(args.sweep, args.override, args.store)
    store = RunStore(location.store_url)
    grid = location.grid
    if args.watch and not args.json:
        watch(store, location.name, args.interval, console, err_console, grid)
    counts = reconciled_counts(store, location.name, err_console, grid)
    _end_finished_parent(store, location, counts)
    if args.json:  # one JSON object per line and run: nothing else on stdout
        try:
            for row in store.runs(location.name):
                if grid is None or row.id in grid or args.all:
                    sys.stdout.write(json.dumps(run_record(row, grid)) + "\n")
            sys.stdout.flush()
        except BrokenPipeError:  # `| head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    scope = "its grid as configured now" if grid is not None else "every run of the name"
    console.print(
        f"sweep [bold]{location.name}[/] ({mask_url(location.store_url)}), {scope}: "
        f"{counts_line(counts)}"
    )
    summary = Table()
    for status in STATUSES:
        summary.add_column(status, justify="right")
    summary.add_column("total", justify="right")
    summary.add_row(*(str(counts[s]) for s in STATUSES), str(sum(counts.values())))
    console.print(summary)
    outside = sum(store.counts(location.name).values()) - sum(counts.values())
    if outside:
        console.print(
            f"{outside} other runs are registered under this name (other overrides); "
            "--runs --all lists them"
        )
    tracker = ProgressTracker()
    for progress in store.progress(location.name):
        if grid is None or progress[0] in grid:
            console.print("  " + tracker.line(*progress))
    if args.runs:
        table = Table()
        for column in ("run id", "status", "attempts", "grid values", "step", "accuracy", "error"):
            table.add_column(column)
        for row in store.runs(location.name):
            if grid is not None and row.id not in grid and not args.all:
                continue
            metrics = json.loads(row.final_metrics) if row.final_metrics else {}
            accuracy = f"{metrics['accuracy']:.3f}" if "accuracy" in metrics else ""
            step = f"{row.step}/{row.total_steps}" if row.step is not None else ""
            table.add_row(
                row.id,
                row.status,
                str(row.attempts),
                row.label,
                step,
                accuracy,
                (error_line(row) or "")[:60],
            )
        console.print(table)
    return 0


def _end_finished_parent(store: RunStore, location: SweepLocation, counts: dict[str, int]) -> None:
    """Once nothing of the grid is in flight or pending (a SLURM sweep that ended after
    `submit`), the MLflow parent run gets the sweep's outcome."""
    outcome = sweep_outcome(counts)
    row = store.sweep(location.name)
    if outcome is None or row is None or not row.mlflow_parent_run_id:
        return
    try:
        parent = client_for(location.tracking_uri).get_run(row.mlflow_parent_run_id)
    except Exception:  # the tracking store cannot be read: status still answers
        return
    if parent.info.status == "RUNNING":
        _end_parent(location.tracking_uri, row.mlflow_parent_run_id, outcome)


def cmd_report(args: argparse.Namespace) -> int:
    locations = [locate(ref, args.override, args.store) for ref in args.sweeps]
    _report(locations, Path(args.out) if args.out else None)
    return 0


def _report(locations: list[SweepLocation], out: Path | None) -> None:
    from analysis.report import write_report

    out_dir = out or locations[0].workdir / "report"
    result = write_report(
        [(loc.name, loc.tracking_uri) for loc in locations],
        out_dir,
        grids={loc.name: loc.grid for loc in locations},
    )
    console.print(f"report: [bold]{result.html}[/]")
    for note in result.skipped:
        console.print(f"  skipped: {note}")


# ---------------------------------------------------------------------------------------------
# Parser


def add_allow_long(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-long",
        action="store_true",
        help="Accept runs longer than 1e9 examples (steps x batch); refused by default.",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="activescale",
        description="Scaling-law sweeps of online active data selection (IID vs prioritized).",
    )
    parser.add_argument(
        "--version", action="version", version=f"activescale {activescale.__version__}"
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
    add_allow_long(p)
    p.set_defaults(func=cmd_validate)

    p = add("run", "Validate, register and execute a sweep, then write its report.")
    p.add_argument("sweep", help="Sweep YAML file.")
    p.add_argument(
        "--executor", choices=["local", "inline", "slurm"], help="Override executor.kind."
    )
    p.add_argument("--max-parallel", type=int, help="Override executor.max_parallel.")
    p.add_argument("--store", help="Run-store SQLAlchemy URL (default: the sweep's).")
    p.add_argument("--no-report", action="store_true", help="Skip the report at the end.")
    add_allow_long(p)
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
        (
            "retry",
            "Run a sweep's failed, timed-out, cancelled and interrupted runs again (SLURM: "
            "submit them), up to max_attempts.",
            cmd_retry,
        ),
    ):
        p = add(name, text)
        p.add_argument("sweep", help="Sweep YAML file.")
        kinds = ["local", "inline", "slurm"] if name == "retry" else ["slurm"]
        p.add_argument("--executor", choices=kinds, help="Override executor.kind.")
        if name == "retry":  # here, as `run` does
            p.add_argument("--max-parallel", type=int, help="Override executor.max_parallel.")
            p.add_argument("--no-report", action="store_true", help="Skip the report.")
            p.add_argument("--interval", type=float, default=10.0, help="slurm: poll seconds.")
        p.add_argument("--store", help="Run-store SQLAlchemy URL (default: the sweep's).")
        p.add_argument(
            "--flops-per-second", type=float, help="Throughput for the cost summary (FLOP/s)."
        )
        add_allow_long(p)
        p.set_defaults(func=func)

    p = add("cancel", "Cancel a sweep's in-flight SLURM jobs (scancel); they become cancelled.")
    p.add_argument("sweep", help="Sweep YAML file or sweep name (looked up under runs/).")
    p.add_argument("--store", help="Run-store SQLAlchemy URL (default: the sweep's).")
    p.set_defaults(func=cmd_cancel)

    p = add(
        "status",
        "Show where a sweep stands (reconciled with SLURM): the runs of its grid as configured "
        "now (by YAML: after the overrides; by name: as last registered).",
    )
    p.add_argument("sweep", help="Sweep YAML file or sweep name (looked up under runs/).")
    p.add_argument("--store", help="Run-store SQLAlchemy URL (default: the sweep's).")
    p.add_argument("--runs", action="store_true", help="List every run of the grid.")
    p.add_argument(
        "--json",
        action="store_true",
        help="Print one JSON object per run and line, nothing else (keys: docs/status-json.md).",
    )
    p.add_argument(
        "--all",
        action="store_true",
        help="With --runs or --json: also the runs registered under the name outside the grid.",
    )
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
    add_allow_long(p)
    p.set_defaults(func=cmd_tune)

    p = add("report", "Fit scaling curves and write the HTML/Markdown report.")
    p.add_argument("sweeps", nargs="+", help="Sweep YAML files or sweep names.")
    p.add_argument("--store", help="Run-store SQLAlchemy URL (default: the sweep's).")
    p.add_argument("--out", help="Output directory (default: WORKDIR/report of the first sweep).")
    p.set_defaults(func=cmd_report)
    add_data_commands(sub)
    return parser


def quiet_libraries() -> None:
    """Keep library notices that say nothing about the user's sweep off the terminal:
    deprecation and future warnings (MLflow, SQLAlchemy, pandas), Optuna's
    ExperimentalWarning, MLflow's INFO logs and its "View run at" lines. Set here, where the
    CLI starts, not in library code; job processes inherit the environment variables."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    # optuna.exceptions.ExperimentalWarning, matched by its text (importing optuna is slow).
    warnings.filterwarnings("ignore", message=r".* is experimental \(supported from")


def main(argv: Sequence[str] | None = None) -> int:
    quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        load_entry_points()  # installed plugins load for every command
        with stop_on_signals():  # SIGTERM and SIGHUP: as Ctrl-C (KeyboardInterrupt)
            return int(args.func(args))
    except ActivescaleError as err:  # one line, with every password masked
        message = Text.assemble(("error:", "bold red"), " ", mask_text(str(err)))
        err_console.print(message, highlight=False)  # a Text: brackets in values are not markup
        return 2
    except KeyboardInterrupt as err:
        err_console.print("interrupted")
        return 128 + getattr(err, "signum", 2)  # 130 for Ctrl-C, 143 for SIGTERM


if __name__ == "__main__":
    sys.exit(main())

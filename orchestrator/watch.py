"""Live views of a sweep for the CLI: the progress of runs executing here (a bar of finished
runs and one line per running run: step/total, steps/s, ETA, read from the run store while
they train), and the SLURM watch loop (counts reconciled with SLURM until nothing is in flight).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from activescale.errors import SubmissionError
from activescale.secrets import mask_text
from orchestrator.status import ProgressTracker
from orchestrator.store import IN_FLIGHT, RunStore

POLL_SECONDS = 1.0  # progress lines: how often the run store is read while runs train
COLUMNS = (
    TextColumn("{task.description}"),
    BarColumn(),
    MofNCompleteColumn(),
    TimeElapsedColumn(),
)


def execute_with_progress(
    launch: Callable[[Callable[[], None]], object],
    ids: set[str],
    store: RunStore,
    sweep_name: str,
    console: Console,
) -> None:
    """Run ``launch(on_progress)`` (the runs ``ids``, blocking) with a bar of finished runs and
    one line per running run (step/total, steps/s, ETA), polled from the run store while they
    train."""
    progress = Progress(*COLUMNS, console=console)
    task = progress.add_task("running", total=len(ids))
    tracker = ProgressTracker()
    lock = threading.Lock()

    def view() -> Group:
        running = [row for row in store.progress(sweep_name) if row[0] in ids]
        return Group(progress, *(Text("  " + tracker.line(*row)) for row in running))

    with Live(Group(progress), console=console, refresh_per_second=4, transient=False) as live:

        def update() -> None:
            with lock:
                finished = store.run_states(sweep_name, ["completed", "failed"])
                progress.update(task, completed=sum(1 for run_id, *_ in finished if run_id in ids))
                live.update(view())

        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(POLL_SECONDS):
                with contextlib.suppress(Exception):  # a busy store: try again next time
                    update()

        poller = threading.Thread(target=poll, name="activescale-progress", daemon=True)
        poller.start()
        try:
            launch(update)
        finally:
            stop.set()
            poller.join()
            update()


def counts_line(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {status}" for status, n in counts.items() if n) or "no runs"


def reconciled_counts(
    store: RunStore, sweep: str, err_console: Console, grid: frozenset[str] | None = None
) -> dict[str, int]:
    """Counts (of the runs of ``grid``, when given) after bringing in-flight runs in line with
    SLURM (when it can be reached), and runs left running here by a process that is gone
    back to interrupted (``orchestrator/recovery.py``)."""
    from orchestrator.recovery import recover_stranded, recovered_line
    from orchestrator.slurm import reconcile

    if line := recovered_line(recover_stranded(store, sweep)):
        err_console.print(line)

    if any(job or token for _, _, job, token, _ in store.run_states(sweep, IN_FLIGHT)):
        try:
            result = reconcile(store, sweep)
            if result.requeued:  # an interrupted submission's runs, without a job to run them
                err_console.print(
                    f"an interrupted submission left {result.requeued} runs without a job: they "
                    "are pending again; `activescale submit` sends them"
                )
        except SubmissionError as err:
            err_console.print(
                f"[yellow]not reconciled with SLURM[/]: {escape(mask_text(str(err)))}"
            )
    return store.counts(sweep, grid)


def watch(
    store: RunStore,
    sweep: str,
    interval: float,
    console: Console,
    err_console: Console,
    grid: frozenset[str] | None = None,
) -> dict[str, int]:
    with Progress(*COLUMNS, console=console, transient=False) as progress:
        task = progress.add_task(sweep, total=None)
        while True:
            counts = reconciled_counts(store, sweep, err_console, grid)
            ended = sum(n for status, n in counts.items() if status not in (*IN_FLIGHT, "pending"))
            progress.update(
                task,
                total=sum(counts.values()),
                completed=ended,
                description=f"{sweep}: {counts_line(counts)}",
            )
            if not any(counts[s] for s in IN_FLIGHT):
                return counts
            time.sleep(interval)

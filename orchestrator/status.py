"""Where a sweep stands, for the CLI: its grid's runs as records (``status --json``), progress
lines of the runs in flight, and the outcome its MLflow parent run ends with.

A record is one JSON object per run with stable keys (:data:`RECORD_KEYS`, documented in
docs/status-json.md). Progress comes from the run store's ``step``, ``total_steps`` and
``progress_at`` columns, which the worker writes every ~2 s while a run trains
(``orchestrator/worker.py``); ``progress_at`` is also the run's heartbeat.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from activescale.secrets import mask_text
from orchestrator.store import (
    CANCELLED,
    COMPLETED,
    FAILED,
    IN_FLIGHT,
    INTERRUPTED,
    PENDING,
    TIMEOUT,
    RunRow,
)

RECORD_KEYS = (
    "run_id",
    "sweep",
    "status",
    "in_grid",
    "attempts",
    "grid",
    "step",
    "total_steps",
    "progress_at",
    "started_at",
    "finished_at",
    "final_metrics",
    "mlflow_run_id",
    "job_id",
    "code_version",
    "error",
)
"""The keys of every ``status --json`` record, in this order (docs/status-json.md)."""


def _time(value: dt.datetime | None) -> str | None:
    return None if value is None else value.replace(tzinfo=dt.timezone.utc).isoformat()


def error_line(row: RunRow) -> str | None:
    """The last line of the run's error tail (None when it has none), passwords masked."""
    lines = mask_text(row.error_tail or "").strip().splitlines()
    return lines[-1] if lines else None


def run_record(row: RunRow, grid: Collection[str] | None) -> dict[str, Any]:
    """One run as a JSON-ready dict with the keys of :data:`RECORD_KEYS`."""
    record = {
        "run_id": row.id,
        "sweep": row.sweep,
        "status": row.status,
        "in_grid": grid is None or row.id in grid,
        "attempts": row.attempts,
        "grid": json.loads(row.label) if row.label else {},
        "step": row.step,
        "total_steps": row.total_steps,
        "progress_at": _time(row.progress_at),
        "started_at": _time(row.started_at),
        "finished_at": _time(row.finished_at),
        "final_metrics": json.loads(row.final_metrics) if row.final_metrics else None,
        "mlflow_run_id": row.mlflow_run_id,
        "job_id": row.job_id,
        "code_version": row.code_version,
        "error": error_line(row),
    }
    return {key: record[key] for key in RECORD_KEYS}


@dataclass
class ProgressTracker:
    """Steps per second of each running run, from the progress the CLI has seen of it."""

    first: dict[str, tuple[int, dt.datetime]] = field(default_factory=dict)

    def line(
        self,
        run_id: str,
        label: str,
        step: int | None,
        total: int | None,
        progress_at: dt.datetime | None,
        started_at: dt.datetime | None,
    ) -> str:
        """'<grid values>: step 1200/4000 (30%), 85 steps/s, ETA 33 s' (or 'starting')."""
        values = json.loads(label) if label else {}
        name = " ".join(f"{k.split('.')[-1]}={v}" for k, v in values.items()) or run_id
        if step is None or total is None or progress_at is None:
            return f"{name}: starting"
        seen = self.first.setdefault(run_id, (step, progress_at))
        if step < seen[0]:  # a new attempt started again from a checkpoint
            seen = self.first[run_id] = (step, progress_at)
        if seen[1] < progress_at and step > seen[0]:
            rate = (step - seen[0]) / (progress_at - seen[1]).total_seconds()
        elif started_at is not None and progress_at > started_at and step > 0:
            rate = step / (progress_at - started_at).total_seconds()
        else:
            rate = 0.0
        text = f"{name}: step {step}/{total} ({step / max(total, 1):.0%})"
        if rate > 0:
            text += f", {rate:.3g} steps/s, ETA {_duration((total - step) / rate)}"
        return text


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def sweep_outcome(counts: dict[str, int]) -> str | None:
    """The MLflow status the parent run ends with, or None while runs are in flight or
    pending: FINISHED when every run completed, FAILED when one failed or timed out,
    KILLED when runs were cancelled or interrupted (and none failed)."""
    if any(counts.get(s, 0) for s in (*IN_FLIGHT, PENDING)):
        return None
    if counts.get(FAILED, 0) or counts.get(TIMEOUT, 0):
        return "FAILED"
    if counts.get(CANCELLED, 0) or counts.get(INTERRUPTED, 0):
        return "KILLED"
    return "FINISHED" if counts.get(COMPLETED, 0) else None

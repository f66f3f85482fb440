"""The run store: which runs a sweep has, and how each one stands.

Two tables (SQLAlchemy 2.x typed models) plus the attempt history:

- ``sweeps``: one row per sweep name, with its spec, its MLflow parent run and the run ids
  of its grid as last registered (what ``report NAME`` and ``status NAME`` cover);
- ``runs``: one row per (sweep, run id); the run id is a stable hash of the resolved config,
  so registering a sweep again adds only the runs it did not have;
- ``attempts``: one row per execution attempt of a run (job id, host, outcome); a requeued
  or retried run adds a row each time it starts.

Submission is crash-safe: a run is marked ``submitted`` with a fresh submission token *before*
its job exists, and gets its job id after; a worker runs only if the store's token for its run
is still the one it was submitted with (see ``orchestrator/slurm.py``).

Default: a SQLite file in the sweep's work directory, in WAL mode so that parallel local
workers can write while the orchestrator reads. Any SQLAlchemy URL works; on a cluster use
PostgreSQL (SQLite on a network filesystem is unsafe with many writers).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ForeignKeyConstraint,
    Integer,
    String,
    Text,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from activescale.errors import StoreError
from activescale.secrets import mask_text, mask_url, private_files

PENDING, SUBMITTED, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT = (
    "pending",
    "submitted",
    "running",
    "completed",
    "failed",
    "cancelled",
    "timeout",
)
# A run stopped before its end (Ctrl-C, SIGTERM, its process gone: orchestrator/recovery.py)
# or an attempt that ended without reporting (requeue, preemption). Neither in flight nor
# failed: the next `run` resumes it from its checkpoint.
INTERRUPTED = "interrupted"
STATUSES = (PENDING, SUBMITTED, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, INTERRUPTED)
RETRYABLE = (FAILED, CANCELLED, TIMEOUT)
IN_FLIGHT = (SUBMITTED, RUNNING)
ERROR_TAIL_CHARS = 4000
CHUNK = 500  # rows per IN (...) clause


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class SweepRow(Base):
    __tablename__ = "sweeps"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    spec: Mapped[str] = mapped_column(Text)  # the resolved sweep, as JSON
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    mlflow_experiment_id: Mapped[str | None] = mapped_column(String(64))
    mlflow_parent_run_id: Mapped[str | None] = mapped_column(String(64))
    grid: Mapped[str | None] = mapped_column(Text)  # run ids of the last registration, JSON

    def grid_run_ids(self) -> frozenset[str] | None:
        """The run ids of the grid as last registered (None: registered before they were kept)."""
        return None if self.grid is None else frozenset(json.loads(self.grid))


class RunRow(Base):
    __tablename__ = "runs"
    __table_args__ = (ForeignKeyConstraint(["sweep"], ["sweeps.name"]),)

    sweep: Mapped[str] = mapped_column(String(100), primary_key=True)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    config: Mapped[str] = mapped_column(Text)  # resolved RunConfig, JSON
    label: Mapped[str] = mapped_column(Text)  # the grid values that produced it, JSON
    status: Mapped[str] = mapped_column(String(16), default=PENDING, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    submitted_at: Mapped[dt.datetime | None]
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    job_id: Mapped[str | None] = mapped_column(String(64))
    submission: Mapped[str | None] = mapped_column(String(64), index=True)
    error_tail: Mapped[str | None] = mapped_column(Text)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    code_version: Mapped[str | None] = mapped_column(String(64))
    final_metrics: Mapped[str | None] = mapped_column(Text)  # JSON
    # The plugins the latest attempt loaded (module, path, digest, version), JSON.
    plugins: Mapped[str | None] = mapped_column(Text)
    # Progress of the running attempt, written by the worker every few seconds; progress_at
    # doubles as the run's heartbeat (a running run whose progress_at is old has stopped).
    step: Mapped[int | None] = mapped_column(Integer)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    progress_at: Mapped[dt.datetime | None]
    # The process that runs the attempt (pid and start time, on owner_host) and its heartbeat:
    # how a run executed here is known to be stranded (orchestrator/recovery.py).
    owner_host: Mapped[str | None] = mapped_column(String(255))
    owner_pid: Mapped[int | None] = mapped_column(Integer)
    owner_started: Mapped[str | None] = mapped_column(String(32))
    heartbeat_at: Mapped[dt.datetime | None]

    def config_dict(self) -> dict[str, Any]:
        return dict(json.loads(self.config))


class AttemptRow(Base):
    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sweep: Mapped[str] = mapped_column(String(100), index=True)
    run_id: Mapped[str] = mapped_column(String(32), index=True)
    number: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str | None] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default=RUNNING)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]
    error_tail: Mapped[str | None] = mapped_column(Text)


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for any SQLAlchemy URL; SQLite files get WAL mode and a busy timeout."""
    try:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"timeout": 30})
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(url, pool_pre_ping=True)
    except (ArgumentError, ImportError, NoSuchModuleError, ValueError) as err:
        raise StoreError(
            f"store URL {mask_url(url)!r} cannot be used: {mask_text(str(err))}. Use "
            "sqlite:///PATH or postgresql+psycopg2://USER:PASS@HOST/DB "
            "(pip install 'activescale[postgres]')."
        ) from None
    return engine


class RunStore:
    """Typed access to the store; every method is one short transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        try:
            # A SQLite store holds the sweep's spec (a tracking URL's password, say): created
            # owner-only; SQLite gives its -wal and -shm files the same permissions.
            with private_files():
                Base.metadata.create_all(self.engine)
            self._migrate()
        except DBAPIError as err:  # unreachable, refused, or not a database (a damaged file)
            raise StoreError(
                f"cannot open the run store at {mask_url(url)}: {mask_text(str(err.orig))}; "
                "check the URL (for SQLite: the file is a store, not another file)"
            ) from None

    def _migrate(self) -> None:
        """Add columns that newer versions introduced to a store created by an older one."""
        added = {
            "runs": {
                "submission": "VARCHAR(64)",
                "plugins": "TEXT",
                "step": "INTEGER",
                "total_steps": "INTEGER",
                "progress_at": "TIMESTAMP",
                "owner_host": "VARCHAR(255)",
                "owner_pid": "INTEGER",
                "owner_started": "VARCHAR(32)",
                "heartbeat_at": "TIMESTAMP",
            },
            "sweeps": {"grid": "TEXT"},
        }
        for table, wanted in added.items():
            columns = {c["name"] for c in inspect(self.engine).get_columns(table)}
            for name, kind in wanted.items():
                if name not in columns:
                    with self.engine.begin() as connection:
                        connection.execute(text(f"ALTER TABLE {table} ADD COLUMN {name} {kind}"))

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # -- sweeps ---------------------------------------------------------------------------
    def upsert_sweep(
        self, name: str, spec: dict[str, Any], grid: Iterable[str] | None = None
    ) -> SweepRow:
        """Create or update the sweep's row; ``grid``: the run ids it has as configured now."""
        grid_text = None if grid is None else json.dumps(sorted(grid))
        with self.session() as s, s.begin():
            row = s.get(SweepRow, name)
            if row is None:
                row = SweepRow(name=name, spec=json.dumps(spec, sort_keys=True), grid=grid_text)
                s.add(row)
            else:
                row.spec = json.dumps(spec, sort_keys=True)
                if grid_text is not None:
                    row.grid = grid_text
            return row

    def sweep(self, name: str) -> SweepRow | None:
        with self.session() as s:
            return s.get(SweepRow, name)

    def set_mlflow_parent(self, name: str, experiment_id: str, parent_run_id: str) -> None:
        with self.session() as s, s.begin():
            s.execute(
                update(SweepRow)
                .where(SweepRow.name == name)
                .values(mlflow_experiment_id=experiment_id, mlflow_parent_run_id=parent_run_id)
            )

    # -- runs -----------------------------------------------------------------------------
    def register(
        self, sweep: str, runs: Iterable[tuple[str, dict[str, Any] | str, dict[str, Any]]]
    ) -> int:
        """Add (run_id, config, label) rows not yet present; returns how many were new.

        ``config`` may be given already serialized (JSON text), which large sweeps do.
        """
        with self.session() as s, s.begin():
            known = set(s.scalars(select(RunRow.id).where(RunRow.sweep == sweep)))
            now = utcnow()
            rows = [
                {
                    "sweep": sweep,
                    "id": run_id,
                    "config": config
                    if isinstance(config, str)
                    else json.dumps(config, sort_keys=True),
                    "label": json.dumps(label, sort_keys=True, default=str),
                    "status": PENDING,
                    "attempts": 0,
                    "created_at": now,
                }
                for run_id, config, label in runs
                if run_id not in known
            ]
            if rows:
                s.execute(insert(RunRow), rows)
            return len(rows)

    def runs(self, sweep: str, statuses: Sequence[str] | None = None) -> list[RunRow]:
        with self.session() as s:
            query = select(RunRow).where(RunRow.sweep == sweep)
            if statuses is not None:
                query = query.where(RunRow.status.in_(statuses))
            return list(s.scalars(query.order_by(RunRow.created_at, RunRow.id)))

    def run_states(
        self, sweep: str, statuses: Sequence[str] | None = None
    ) -> list[tuple[str, str, str | None, str | None, int]]:
        """(run id, status, job id, submission token, attempts): the light columns only."""
        with self.session() as s:
            query = select(
                RunRow.id, RunRow.status, RunRow.job_id, RunRow.submission, RunRow.attempts
            ).where(RunRow.sweep == sweep)
            if statuses is not None:
                query = query.where(RunRow.status.in_(statuses))
            return [tuple(row) for row in s.execute(query.order_by(RunRow.id))]  # type: ignore[misc]

    def run_states_of(
        self, sweep: str, run_ids: Sequence[str]
    ) -> list[tuple[str, str, str | None, str | None, int]]:
        """:meth:`run_states` of these runs only."""
        out: list[tuple[str, str, str | None, str | None, int]] = []
        with self.session() as s:
            for i in range(0, len(run_ids), CHUNK):
                query = select(
                    RunRow.id, RunRow.status, RunRow.job_id, RunRow.submission, RunRow.attempts
                ).where(RunRow.sweep == sweep, RunRow.id.in_(run_ids[i : i + CHUNK]))
                out += [tuple(row) for row in s.execute(query)]  # type: ignore[misc]
        return out

    def oldest_submission(self, sweep: str, tokens: Sequence[str]) -> dt.datetime | None:
        with self.session() as s:
            return s.scalar(
                select(func.min(RunRow.submitted_at)).where(
                    RunRow.sweep == sweep, RunRow.submission.in_(tokens)
                )
            )

    def run(self, sweep: str, run_id: str) -> RunRow | None:
        with self.session() as s:
            return s.get(RunRow, (sweep, run_id))

    def counts(self, sweep: str, run_ids: Collection[str] | None = None) -> dict[str, int]:
        """Runs per status: of the whole sweep, or of the runs ``run_ids`` (a grid)."""
        if run_ids is not None:
            counts = dict.fromkeys(STATUSES, 0)
            for run_id, status, *_ in self.run_states(sweep):
                if run_id in run_ids:
                    counts[status] = counts.get(status, 0) + 1
            return counts
        with self.session() as s:
            rows = s.execute(
                select(RunRow.status, func.count())
                .where(RunRow.sweep == sweep)
                .group_by(RunRow.status)
            )
            counts = dict.fromkeys(STATUSES, 0)
            counts.update({status: n for status, n in rows})
            return counts

    def set_status(
        self,
        sweep: str,
        run_ids: Sequence[str],
        status: str,
        only_from: Sequence[str] | None = None,
        **values: Any,
    ) -> int:
        """Set the status of these runs (those now in ``only_from``, if given); returns how many."""
        changed = 0
        with self.session() as s, s.begin():
            for i in range(0, len(run_ids), CHUNK):
                query = update(RunRow).where(
                    RunRow.sweep == sweep, RunRow.id.in_(run_ids[i : i + CHUNK])
                )
                if only_from is not None:
                    query = query.where(RunRow.status.in_(only_from))
                changed += s.execute(query.values(status=status, **values)).rowcount  # type: ignore[attr-defined]
        return changed

    # -- submission (crash-safe: token first, job ids after) --------------------------------
    def mark_submitted(self, sweep: str, run_ids: Sequence[str], token: str) -> None:
        """Before sbatch: these runs belong to submission ``token`` and have no job yet."""
        self.set_status(
            sweep, run_ids, SUBMITTED, submission=token, job_id=None, submitted_at=utcnow()
        )

    def unmark_submitted(self, sweep: str, previous: dict[str, list[str]], token: str) -> None:
        """Undo :meth:`mark_submitted` (sbatch failed): each run gets its previous status back."""
        with self.session() as s, s.begin():
            for status, run_ids in previous.items():
                for i in range(0, len(run_ids), CHUNK):
                    s.execute(
                        update(RunRow)
                        .where(
                            RunRow.sweep == sweep,
                            RunRow.id.in_(run_ids[i : i + CHUNK]),
                            RunRow.submission == token,
                        )
                        .values(status=status, submission=None, submitted_at=None)
                    )

    def attach_job_ids(self, sweep: str, token: str, job_ids: dict[str, str]) -> None:
        """After sbatch: each run of submission ``token`` gets its SLURM job id."""
        if not job_ids:
            return
        with self.session() as s, s.begin():
            s.connection().execute(
                update(RunRow.__table__)  # type: ignore[arg-type]
                .where(
                    RunRow.__table__.c.sweep == bindparam("b_sweep"),
                    RunRow.__table__.c.id == bindparam("b_id"),
                    RunRow.__table__.c.submission == bindparam("b_token"),
                )
                .values(job_id=bindparam("b_job")),
                [
                    {"b_sweep": sweep, "b_id": run_id, "b_token": token, "b_job": job}
                    for run_id, job in job_ids.items()
                ],
            )

    def try_start(
        self,
        sweep: str,
        run_id: str,
        token: str | None,
        job_id: str | None,
        host: str,
        code_version: str | None,
        pid: int | None = None,
        process_started: str | None = None,
    ) -> int | None:
        """Start a new attempt if this job still owns the run; else None (the job must exit).

        A job owns its run while the run is neither completed nor cancelled and, for jobs
        submitted with a token, the store still holds that token (a newer submission of the
        same run makes older jobs stale). ``pid`` and ``process_started``: the process that
        runs the attempt, on ``host`` (its owner: orchestrator/recovery.py).
        """
        with self.session() as s, s.begin():
            row = s.get(RunRow, (sweep, run_id), with_for_update=True)
            if row is None:
                raise StoreError(
                    f"run {run_id} of sweep {sweep!r} is not in the store {mask_url(self.url)}"
                )
            if row.status in (COMPLETED, CANCELLED):
                return None
            if token is not None and row.submission != token:
                return None
            return self._start_attempt(s, row, job_id, host, code_version, pid, process_started)

    def mark_started(
        self, sweep: str, run_id: str, job_id: str | None, host: str, code_version: str | None
    ) -> int:
        """Record the start of a new attempt; returns its number."""
        with self.session() as s, s.begin():
            row = s.get(RunRow, (sweep, run_id))
            if row is None:
                raise StoreError(
                    f"run {run_id} of sweep {sweep!r} is not in the store {mask_url(self.url)}"
                )
            return self._start_attempt(s, row, job_id, host, code_version)

    @staticmethod
    def _start_attempt(
        s: Session,
        row: RunRow,
        job_id: str | None,
        host: str,
        code_version: str | None,
        pid: int | None = None,
        process_started: str | None = None,
    ) -> int:
        now = utcnow()
        # An attempt still open was cut short without reporting (requeue, preemption, kill).
        s.execute(
            update(AttemptRow)
            .where(
                AttemptRow.sweep == row.sweep,
                AttemptRow.run_id == row.id,
                AttemptRow.finished_at.is_(None),
            )
            .values(status=INTERRUPTED, finished_at=now)
        )
        row.attempts += 1
        row.status = RUNNING
        row.started_at = now
        row.finished_at = None
        row.step, row.progress_at = None, now  # the start is the attempt's first heartbeat
        row.heartbeat_at = now
        row.owner_host, row.owner_pid, row.owner_started = host, pid, process_started
        # The job of this attempt: None when it runs here (a run once on SLURM, run locally
        # now, must not be reconciled with its old job).
        row.job_id = job_id
        row.code_version = code_version
        s.add(
            AttemptRow(
                sweep=row.sweep,
                run_id=row.id,
                number=row.attempts,
                job_id=job_id,
                host=host,
                started_at=now,
            )
        )
        return row.attempts

    def mark_finished(
        self,
        sweep: str,
        run_id: str,
        status: str,
        metrics: dict[str, float] | None = None,
        error_tail: str | None = None,
    ) -> None:
        tail = error_tail[-ERROR_TAIL_CHARS:] if error_tail else None
        with self.session() as s, s.begin():
            row = s.get(RunRow, (sweep, run_id))
            if row is None:
                raise StoreError(
                    f"run {run_id} of sweep {sweep!r} is not in the store {mask_url(self.url)}"
                )
            row.status = status
            row.finished_at = utcnow()
            row.error_tail = tail
            if metrics is not None:
                row.final_metrics = json.dumps(metrics, sort_keys=True)
            attempt = s.scalars(
                select(AttemptRow)
                .where(AttemptRow.sweep == sweep, AttemptRow.run_id == run_id)
                .order_by(AttemptRow.number.desc())
                .limit(1)
            ).first()
            if attempt is not None:
                attempt.status = status
                attempt.finished_at = row.finished_at
                attempt.error_tail = tail

    def mark_interrupted(self, sweep: str, run_id: str) -> None:
        """Close the open attempt as interrupted; the run stays in flight (it was requeued)."""
        with self.session() as s, s.begin():
            s.execute(
                update(AttemptRow)
                .where(
                    AttemptRow.sweep == sweep,
                    AttemptRow.run_id == run_id,
                    AttemptRow.finished_at.is_(None),
                )
                .values(status=INTERRUPTED, finished_at=utcnow())
            )

    def set_progress(self, sweep: str, run_id: str, step: int, total_steps: int) -> None:
        """The running attempt is at ``step`` of ``total_steps`` now (also its heartbeat)."""
        with self.session() as s, s.begin():
            s.execute(
                update(RunRow)
                .where(RunRow.sweep == sweep, RunRow.id == run_id)
                .values(
                    step=step, total_steps=total_steps, progress_at=utcnow(), heartbeat_at=utcnow()
                )
            )

    def progress(
        self, sweep: str, statuses: Sequence[str] = (RUNNING,)
    ) -> list[tuple[str, str, int | None, int | None, dt.datetime | None, dt.datetime | None]]:
        """(run id, label, step, total steps, progress_at, started_at) of runs in ``statuses``."""
        with self.session() as s:
            query = select(
                RunRow.id,
                RunRow.label,
                RunRow.step,
                RunRow.total_steps,
                RunRow.progress_at,
                RunRow.started_at,
            ).where(RunRow.sweep == sweep, RunRow.status.in_(statuses))
            return [tuple(row) for row in s.execute(query.order_by(RunRow.id))]  # type: ignore[misc]

    def set_mlflow_run_id(self, sweep: str, run_id: str, mlflow_run_id: str) -> None:
        with self.session() as s, s.begin():
            s.execute(
                update(RunRow)
                .where(RunRow.sweep == sweep, RunRow.id == run_id)
                .values(mlflow_run_id=mlflow_run_id)
            )

    def set_plugins(self, sweep: str, run_id: str, plugins: list[dict[str, Any]]) -> None:
        """Record the plugins a run's attempt loaded (their files' digests and versions)."""
        with self.session() as s, s.begin():
            s.execute(
                update(RunRow)
                .where(RunRow.sweep == sweep, RunRow.id == run_id)
                .values(plugins=json.dumps(plugins, sort_keys=True))
            )

    def attempts(self, sweep: str, run_id: str) -> list[AttemptRow]:
        with self.session() as s:
            return list(
                s.scalars(
                    select(AttemptRow)
                    .where(AttemptRow.sweep == sweep, AttemptRow.run_id == run_id)
                    .order_by(AttemptRow.number)
                )
            )

"""Run store round-trips on a real SQLite file (WAL mode)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from activescale.errors import StoreError
from orchestrator.store import COMPLETED, FAILED, PENDING, RUNNING, RunStore


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(f"sqlite:///{tmp_path / 'store.db'}")


def test_register_is_idempotent(store: RunStore) -> None:
    store.upsert_sweep("s", {"a": 1})
    runs = [("r1", {"seed": 0}, {"seed": 0}), ("r2", {"seed": 1}, {"seed": 1})]
    assert store.register("s", runs) == 2
    assert store.register("s", runs) == 0
    assert store.register("s", [*runs, ("r3", {"seed": 2}, {"seed": 2})]) == 1
    assert [r.id for r in store.runs("s")] == ["r1", "r2", "r3"]
    assert store.counts("s")[PENDING] == 3


def test_attempts_and_outcomes_round_trip(store: RunStore) -> None:
    store.upsert_sweep("s", {})
    store.register("s", [("r1", {"seed": 0}, {})])
    assert store.mark_started("s", "r1", "job-1", "host", "abc123") == 1
    assert store.run("s", "r1").status == RUNNING  # type: ignore[union-attr]
    store.mark_finished("s", "r1", FAILED, error_tail="x" * 10_000)
    row = store.run("s", "r1")
    assert row is not None and row.status == FAILED and len(row.error_tail or "") == 4000
    assert store.mark_started("s", "r1", "job-2", "host", "abc123") == 2
    store.mark_finished("s", "r1", COMPLETED, metrics={"accuracy": 0.5})
    row = store.run("s", "r1")
    assert row is not None and row.attempts == 2 and row.final_metrics == '{"accuracy": 0.5}'
    history = store.attempts("s", "r1")
    assert [(a.number, a.job_id, a.status) for a in history] == [
        (1, "job-1", FAILED),
        (2, "job-2", COMPLETED),
    ]


def test_reopening_keeps_everything(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    first = RunStore(url)
    first.upsert_sweep("s", {"k": "v"})
    first.register("s", [("r1", {}, {})])
    first.set_mlflow_parent("s", "1", "parent")
    second = RunStore(url)
    sweep = second.sweep("s")
    assert sweep is not None and sweep.mlflow_parent_run_id == "parent"
    assert [r.id for r in second.runs("s")] == ["r1"]


def test_sqlite_store_uses_wal(store: RunStore) -> None:
    with store.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_unknown_run_is_a_named_error(store: RunStore) -> None:
    with pytest.raises(StoreError, match="not in the store"):
        store.mark_started("s", "missing", None, "host", None)


def test_bad_url_is_a_named_error() -> None:
    with pytest.raises(StoreError, match="cannot be used"):
        RunStore("nosuchdialect://x")

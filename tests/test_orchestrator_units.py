"""Orchestrator pieces that need no cluster: fast expansion, plan, snapshot, store migration."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from orchestrator.errors import SweepSpecError
from orchestrator.plan import plan
from orchestrator.snapshot import content_hash, make_snapshot
from orchestrator.spec import parse_sweep
from orchestrator.store import RunStore
from tests.conftest import TINY_SWEEP
from trainers.config import RunConfig
from trainers.loop import FlopEstimate, estimate_flops

GRID = "grid:\n  learner.size: [xxs, xs]\n  selection.policy: [iid, learnability]\n  seed: [0, 1]\n  optimizer.lr: [0.001, 0.002]\n  scorer.size: [xxs, xs]\n"


def sweep_text(grid: str = GRID) -> str:
    return TINY_SWEEP.split("grid:")[0] + grid


def test_fast_expansion_equals_full_validation() -> None:
    sweep = parse_sweep(sweep_text(), "s.yaml")
    # iid runs ignore the scorer size: 2 sizes x (1 iid + 2 learnability) x 2 seeds x 2 lrs
    assert len(sweep.runs) == 2 * 3 * 2 * 2
    for run in sweep.runs:
        assert run.run_id == run.config.run_id()
        assert json.loads(run.config_json) == run.config.model_dump(mode="json")
        full = RunConfig.model_validate(run.config.model_dump()).resolved()
        assert full == run.config


def test_fast_expansion_reports_the_same_error_as_full_validation() -> None:
    with pytest.raises(SweepSpecError, match=r"s.yaml:\d+: learner.size = 'huge'"):
        parse_sweep(sweep_text("grid:\n  learner.size: [xs, huge]\n"), "s.yaml")
    with pytest.raises(SweepSpecError, match=r"selection\.keep"):
        parse_sweep(sweep_text("grid:\n  selection.keep: [0.5, 0.001]\n"), "s.yaml")


def test_plan_sums_estimates_and_measures_each_cost_once() -> None:
    sweep = parse_sweep(sweep_text(), "s.yaml")
    calls: list[RunConfig] = []

    def counting(config: RunConfig) -> FlopEstimate:
        calls.append(config)
        return estimate_flops(config)

    summary = plan([r.config for r in sweep.runs], 1e12, counting)
    # seed and learning rate do not change the cost: 2 sizes x 3 (policy, scorer) combinations
    assert summary.runs == 24 and len(calls) == summary.distinct_costs == 6
    assert summary.total_flops == pytest.approx(
        sum(estimate_flops(r.config).total for r in sweep.runs)
    )
    assert summary.gpu_hours == pytest.approx(summary.total_flops / 1e12 / 3600)


def test_plan_command_prints_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator.cli import main

    path = tmp_path / "s.yaml"
    path.write_text(sweep_text())
    assert main(["plan", str(path), "--flops-per-second", "1e12"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "24 runs" in out and "GPU-hours at 1e+12 FLOP/s" in out


def test_snapshot_is_a_content_addressed_copy(tmp_path: Path) -> None:
    root = tmp_path / "src"
    for package in ("orchestrator", "trainers", "analysis"):
        (root / package / "__pycache__").mkdir(parents=True)
        (root / package / "__init__.py").write_text(f"NAME = {package!r}\n")
        (root / package / "__pycache__" / "x.pyc").write_bytes(b"junk")
    (root / "pyproject.toml").write_text("")
    first = make_snapshot(tmp_path / "work", root)
    assert first is not None and first.name == content_hash(root)
    assert (first / "trainers" / "__init__.py").read_text() == "NAME = 'trainers'\n"
    assert not list(first.rglob("*.pyc"))
    assert make_snapshot(tmp_path / "work", root) == first  # unchanged code: same snapshot
    (root / "trainers" / "__init__.py").write_text("NAME = 'edited'\n")
    second = make_snapshot(tmp_path / "work", root)
    assert (
        second != first
        and (first / "trainers" / "__init__.py").read_text() == "NAME = 'trainers'\n"
    )
    assert make_snapshot(tmp_path / "work", tmp_path / "nowhere") is None  # installed package


def test_store_from_before_submission_tokens_is_migrated(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as connection:
        connection.execute(
            "CREATE TABLE runs (sweep VARCHAR(100), id VARCHAR(32), config TEXT, label TEXT, status VARCHAR(16), attempts INTEGER, created_at DATETIME, submitted_at DATETIME, started_at DATETIME, finished_at DATETIME, job_id VARCHAR(64), error_tail TEXT, mlflow_run_id VARCHAR(64), code_version VARCHAR(64), final_metrics TEXT, PRIMARY KEY (sweep, id))"
        )
    store = RunStore(f"sqlite:///{db}")
    store.upsert_sweep("s", {})
    store.register("s", [("r1", {}, {})])
    store.mark_submitted("s", ["r1"], "tok")
    assert store.run_states("s") == [("r1", "submitted", None, "tok", 0)]


def test_a_stale_or_finished_job_does_not_start_its_run(tmp_path: Path) -> None:
    store = RunStore(f"sqlite:///{tmp_path / 'store.db'}")
    store.upsert_sweep("s", {})
    store.register("s", [("r1", {}, {})])
    store.mark_submitted("s", ["r1"], "old")
    store.mark_submitted("s", ["r1"], "new")
    assert store.try_start("s", "r1", "old", "1_0", "h", None) is None
    assert store.try_start("s", "r1", "new", "2_0", "h", None) == 1
    assert store.try_start("s", "r1", "new", "2_0", "h", None) == 2  # a requeue
    assert [a.status for a in store.attempts("s", "r1")] == ["interrupted", "running"]
    store.mark_finished("s", "r1", "completed", metrics={})
    assert store.try_start("s", "r1", "new", "2_0", "h", None) is None

"""A sweep run again with other overrides: its counts, `status` and report cover the grid as
configured now, and list the other runs under the name as excluded (issue 17). Also what
every run leaves in the store and in MLflow: progress and heartbeat, status records, the
parent run's outcome, source tags, the experiment kind, compute-indexed metrics."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from activescale import __version__, schema
from orchestrator.cli import main
from orchestrator.spec import load_sweep
from orchestrator.status import RECORD_KEYS
from orchestrator.store import RunStore
from tests.conftest import TINY_RUN


@pytest.fixture
def seeds_sweep(tmp_path: Path) -> Path:
    path = tmp_path / "seeds.yaml"
    path.write_text(
        f"name: seeds\n{TINY_RUN}budget: {{steps: 30}}\neval: {{points: 3, batch_size: 256}}\n"
        f"executor: {{kind: inline}}\nworkdir: {tmp_path / 'work'}\n"
        "grid:\n  selection.policy: [iid, learnability]\n  seed: [0, 1, 2]\n"
    )
    return path


def records(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    capsys.readouterr()
    assert main(["status", *args, "--json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_reports_and_counts_cover_the_grid_as_configured_now(
    seeds_sweep: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["run", str(seeds_sweep), "--no-report"]) == 0  # seeds 0, 1, 2: 6 runs
    capsys.readouterr()
    two = ["-o", "grid.seed=[0,1]"]
    assert main(["run", str(seeds_sweep), *two]) == 0
    out = capsys.readouterr().out
    assert "4 runs of this grid already completed: not rerun" in out
    assert "2 other runs are registered under this name" in out
    assert "4 completed in" in out  # the grid's counts, not the sweep's 6
    report = (seeds_sweep.parent / "work" / "report" / "report.md").read_text()
    assert "the 4 runs of the grid as configured now, 4 of them finished" in report
    assert "2 finished runs under this name are not in this grid" in report
    assert report.count("not in the grid as configured now") == 2  # each listed in Skipped
    assert "4 finished runs" in report and "2 seeds" in report

    # status by YAML follows the overrides; by name, the last registration's grid.
    by_yaml = records(capsys, str(seeds_sweep), *two)
    assert len(by_yaml) == 4 and all(r["in_grid"] for r in by_yaml)
    assert {r["grid"]["seed"] for r in by_yaml} == {0, 1}  # type: ignore[index]
    monkeypatch.chdir(seeds_sweep.parent)
    Path("runs").symlink_to(seeds_sweep.parent / "work" / "..")
    (seeds_sweep.parent / "seeds").symlink_to(seeds_sweep.parent / "work")
    by_name = records(capsys, "seeds")
    assert {r["run_id"] for r in by_name} == {r["run_id"] for r in by_yaml}
    everything = records(capsys, "seeds", "--all")
    assert len(everything) == 6 and sum(not r["in_grid"] for r in everything) == 2
    assert main(["report", "seeds", "--out", str(seeds_sweep.parent / "by_name")]) == 0
    by_name_report = (seeds_sweep.parent / "by_name" / "report.md").read_text()
    assert "the 4 runs of the grid as configured now" in by_name_report


def test_status_records_progress_and_mlflow_after_a_run(
    seeds_sweep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = ["-o", "grid.seed=[0]"]
    assert main(["run", str(seeds_sweep), *one, "--no-report"]) == 0
    rows = records(capsys, str(seeds_sweep), *one)
    assert len(rows) == 2
    for row in rows:
        assert tuple(row) == RECORD_KEYS  # stable keys, in order
        assert row["status"] == "completed" and row["attempts"] == 1
        assert row["step"] == row["total_steps"] == 30  # the last progress report
        assert row["progress_at"] is not None and row["error"] is None
        assert isinstance(row["final_metrics"], dict) and "error" in row["final_metrics"]

    sweep = load_sweep(seeds_sweep, ("grid.seed=[0]",))
    client = MlflowClient(tracking_uri=sweep.tracking_uri)
    experiment = client.get_experiment_by_name("seeds")
    assert experiment is not None
    assert experiment.tags[schema.TAG_EXPERIMENT_KIND] == schema.EXPERIMENT_KIND_TRAINING
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get(schema.TAG_ROLE) == schema.ROLE_SWEEP]
    assert parent.info.status == "FINISHED"  # ended with the sweep's outcome
    children = [r for r in runs if r is not parent and r.info.run_id != parent.info.run_id]
    for run in (parent, *children):
        commit = run.data.tags[schema.TAG_GIT_COMMIT]
        assert len(commit) == 40 and run.data.tags[schema.TAG_GIT_DIRTY] in ("true", "false")
    child = children[0]
    flops = client.get_metric_history(child.info.run_id, schema.METRIC_FLOPS)
    by_compute = client.get_metric_history(child.info.run_id, schema.by_compute_metric("error"))
    errors = client.get_metric_history(child.info.run_id, schema.METRIC_ERROR)
    assert [m.step for m in by_compute] == [round(m.value / 1e6) for m in flops]
    assert [m.value for m in by_compute] == [m.value for m in errors]

    # A later call makes the parent RUNNING again, and it ends again with the outcome.
    assert main(["run", str(seeds_sweep), "-o", "grid.seed=[1]", "--no-report"]) == 0
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"activescale {__version__}" == "activescale 0.2.0"


def test_a_store_from_before_grids_and_progress_is_migrated(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as connection:
        connection.execute(
            "CREATE TABLE sweeps (name VARCHAR(100) PRIMARY KEY, spec TEXT, created_at DATETIME, "
            "mlflow_experiment_id VARCHAR(64), mlflow_parent_run_id VARCHAR(64))"
        )
        connection.execute(
            "CREATE TABLE runs (sweep VARCHAR(100), id VARCHAR(32), config TEXT, label TEXT, status VARCHAR(16), attempts INTEGER, created_at DATETIME, submitted_at DATETIME, started_at DATETIME, finished_at DATETIME, job_id VARCHAR(64), submission VARCHAR(64), error_tail TEXT, mlflow_run_id VARCHAR(64), code_version VARCHAR(64), final_metrics TEXT, PRIMARY KEY (sweep, id))"
        )
        connection.execute("INSERT INTO sweeps (name, spec) VALUES ('s', '{}')")
    store = RunStore(f"sqlite:///{db}")
    row = store.sweep("s")
    assert row is not None and row.grid_run_ids() is None  # registered before grids were kept
    store.register("s", [("r1", {}, {}), ("r2", {}, {})])
    store.upsert_sweep("s", {}, grid=["r1"])
    row = store.sweep("s")
    assert row is not None and row.grid_run_ids() == {"r1"}
    assert store.counts("s", {"r1"})["pending"] == 1 and store.counts("s")["pending"] == 2
    store.mark_started("s", "r1", None, "h", None)
    store.set_progress("s", "r1", 7, 30)
    ((run_id, _, step, total, beat, started),) = store.progress("s")
    assert (run_id, step, total) == ("r1", 7, 30) and beat is not None and started is not None

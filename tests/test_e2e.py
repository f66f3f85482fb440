"""A tiny sweep end to end on the inline executor: YAML -> store -> trainer -> MLflow -> report."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from orchestrator.checks import load_checked
from orchestrator.cli import main
from orchestrator.launch import make_executor, make_jobs, register, runs_to_execute
from orchestrator.spec import load_sweep
from orchestrator.store import RunStore


def test_tiny_sweep_end_to_end(tiny_sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tiny_sweep)]) == 0
    out = capsys.readouterr().out
    sweep = load_sweep(tiny_sweep)
    store = RunStore(sweep.store_url)
    assert store.counts("tiny")["completed"] == 4

    # MLflow: one parent run, one child per config, with params and the flops/accuracy metrics.
    client = MlflowClient(tracking_uri=sweep.tracking_uri)
    experiment = client.get_experiment_by_name("tiny")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("activescale.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(children) == 4
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    child = children[0]
    assert {"learner.params", "selection.policy", "seed"} <= set(child.data.params)
    flops = client.get_metric_history(child.info.run_id, "flops")
    assert len(flops) >= 3 and all(b.value > a.value for a, b in itertools.pairwise(flops))
    assert 0.0 <= child.data.metrics["accuracy"] <= 1.0

    # The report exists, embeds its plots, and is logged on the parent run.
    report = sweep.workdir / "report" / "report.html"
    assert str(report) in out.replace("\n", "")
    page = report.read_text()
    pngs = sorted(p.name for p in report.parent.glob("*.png"))
    assert {"scaling.png", "learning_curves.png"} <= set(pngs)
    assert page.count("data:image/png;base64,") == len(pngs)
    assert "learnability" in page and "iid" in page
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id, "report")}
    assert "report/report.html" in artifacts

    # Running again reruns nothing and says so.
    assert main(["run", str(tiny_sweep), "--no-report"]) == 0
    assert "4 runs of this grid already completed: not rerun" in capsys.readouterr().out
    assert len(client.search_runs([experiment.experiment_id])) == 5
    assert all(r.attempts == 1 for r in store.runs("tiny"))

    assert main(["status", str(tiny_sweep), "--runs"]) == 0
    assert "4 completed" in capsys.readouterr().out


def test_a_failing_run_is_recorded_with_its_traceback(tmp_path: Path) -> None:
    # Whatever a run can be checked for is checked before it is registered (a run asking for
    # CUDA where there is none is refused by validation: tests/hostile/), so here the run fails
    # through what changes after: its data file is removed between registration and execution.
    data = tmp_path / "data.npz"
    rng = np.random.default_rng(0)
    np.savez(
        data,
        x=rng.normal(size=(96, 8)),
        y=np.arange(96) % 2,
        x_test=rng.normal(size=(16, 8)),
        y_test=np.arange(16) % 2,
    )
    sweep_file = tmp_path / "bad.yaml"
    sweep_file.write_text(
        "name: fails\n"
        f"workdir: {tmp_path / 'work'}\n"
        "executor: {kind: inline}\n"
        f"dataset: {{name: npz, path: {data}, clean_size: 16}}\n"
        "batch_size: 16\n"
        "budget: {steps: 5}\n"
    )
    sweep = load_checked(str(sweep_file))
    store = RunStore(sweep.store_url)
    registration = register(sweep, store)
    rows, _ = runs_to_execute(sweep, store)
    data.unlink()
    executor = make_executor(sweep.settings.executor, sweep.workdir, store=store)
    executor.launch(make_jobs(sweep, rows, registration), lambda: None)
    (row,) = store.runs("fails")
    assert row.status == "failed" and "Traceback" in (row.error_tail or "")
    assert "does not exist" in (row.error_tail or "")


def test_missing_data_file_fails_before_anything_is_registered(tmp_path: Path) -> None:
    sweep_file = tmp_path / "bad.yaml"
    sweep_file.write_text(
        "name: nodata\n"
        f"workdir: {tmp_path / 'work'}\n"
        "dataset: {name: npz, path: /nonexistent/data.npz}\n"
    )
    assert main(["run", str(sweep_file)]) == 2
    assert not (tmp_path / "work").exists()


def test_model_that_does_not_fit_the_data_fails_at_validation(tmp_path: Path) -> None:
    sweep_file = tmp_path / "bad.yaml"
    sweep_file.write_text("name: vit\nlearner: {arch: vit, size: xs}\n")
    assert main(["validate", str(sweep_file)]) == 2

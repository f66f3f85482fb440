"""The example plugin package (examples/resnet1d_plugin: a 1-D ResNet ladder and a CSV dataset)
end to end: `validate`, `run` inline and on the local executor, `submit` on the real local
SLURM cluster, `report`; the same metrics, bitwise, on all three; a plugin edited after
`submit` changes no queued job; and examples/notebook.py.

The entry-point path of the same package is tests/test_plugins.py (its pyproject's entry
points, installed as package metadata). Under CI=true the SLURM tests fail (never skip) when
the cluster is missing.
"""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow.tracking import MlflowClient

from orchestrator.cli import main
from orchestrator.plugins import digest_of
from orchestrator.spec import load_sweep
from orchestrator.store import COMPLETED, RunStore
from tests.conftest import need_service
from tests.test_plugins import isolated  # noqa: F401 (autouse: registries restored per test)
from tests.test_slurm import slurm_up, wait_done

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "resnet1d_plugin"
SWEEP = EXAMPLE / "sweep.yaml"
SLURM = ["executor.kind=slurm", "executor.partition=debug", "executor.cpus_per_task=1"]
# Shorter than the example as shipped (it is the same sweep otherwise).
QUICK = ["budget.steps=40", "reference.steps=30", "executor.timeout_min=10"]
PARAMS = {"xs": 1950, "s": 7222}  # the ladder's parameter counts at 1 channel, 6 classes


@pytest.fixture(scope="module")
def signals(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's CSV (generated: the tests need nothing from outside the repository)."""
    script = EXAMPLE / "activescale_resnet1d" / "make_csv.py"
    write_csv = runpy.run_path(str(script))["write_csv"]
    path: Path = write_csv(tmp_path_factory.mktemp("data") / "signals.csv", n=1200)
    return path


def overrides(workdir: Path, signals: Path, *more: str) -> list[str]:
    name = f"resnet1d_{uuid.uuid4().hex[:6]}"
    settings = [f"name={name}", f"workdir={workdir}", f"dataset.path={signals}", *QUICK, *more]
    return [part for item in settings for part in ("-o", item)]


def values(args: list[str]) -> list[str]:
    """The KEY=VALUE overrides of a ``-o KEY=VALUE ...`` argument list."""
    return [a for a in args if a != "-o"]


def histories(workdir: Path, experiment: str) -> dict[str, dict[str, Any]]:
    """Every child run's params and full metric histories, by run id (config hash)."""
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    out = {}
    for run in client.search_runs([found.experiment_id]):
        run_id = run.data.tags.get("activescale.run_id")
        if run_id is None:
            continue
        metrics = {
            key: [
                (m.step, m.value)
                for m in sorted(
                    client.get_metric_history(run.info.run_id, key), key=lambda m: m.step
                )
            ]
            for key in run.data.metrics
            if not key.startswith("system/")  # the machine's load, not the run's results
        }
        out[run_id] = {"params": run.data.params, "metrics": metrics, "status": run.info.status}
    return out


def check_plugin_params(runs: dict[str, dict[str, Any]], digest: str) -> None:
    for run in runs.values():
        params = run["params"]
        assert run["status"] == "FINISHED"
        assert params["learner.arch"] == "resnet1d"
        assert int(params["learner.params"]) == PARAMS[params["learner.size"]]
        assert params["plugin.activescale_resnet1d"] == digest
        if params["selection.policy"] == "learnability":
            assert int(params["scorer.params"]) == PARAMS["xs"]
            assert int(params["reference.params"]) == PARAMS["s"]


@pytest.mark.slow
@pytest.mark.slurm
def test_the_example_sweep_gives_the_same_metrics_inline_local_and_on_slurm(
    tmp_path: Path, signals: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    need_service(slurm_up(), "the local SLURM cluster (scripts/local-slurm up)")
    digest = digest_of(EXAMPLE / "activescale_resnet1d")
    dirs = {kind: tmp_path / kind for kind in ("inline", "local", "slurm")}
    args = {kind: overrides(folder, signals) for kind, folder in dirs.items()}

    assert main(["validate", str(SWEEP), *args["inline"]]) == 0
    assert "4 runs from 4 grid points; valid." in capsys.readouterr().out
    assert main(["plan", str(SWEEP), *args["inline"]]) == 0
    plan = capsys.readouterr().out
    assert "4 runs" in plan and "FLOPs in total" in plan

    # SLURM first (submit returns at once), the two others while its jobs run.
    slurm = [*args["slurm"], *(p for s in SLURM for p in ("-o", s))]
    assert main(["submit", str(SWEEP), *slurm]) == 0
    assert "4 runs submitted" in capsys.readouterr().out
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the jobs' thread count (threads_per_run, cpus_per_task)
    try:
        assert main(["run", str(SWEEP), *args["inline"], "--executor", "inline"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert main(["run", str(SWEEP), *args["local"], "--executor", "local"]) == 0
    sweep = load_sweep(SWEEP, values(slurm))
    store = RunStore(sweep.store_url)
    counts = wait_done(store, sweep.name, timeout_s=480)
    assert counts[COMPLETED] == 4, [r.error_tail for r in store.runs(sweep.name)]
    for row in store.runs(sweep.name):  # the jobs loaded the snapshot's copy of the plugin
        (recorded,) = json.loads(row.plugins or "[]")
        assert recorded["path"].startswith(str(dirs["slurm"] / "snapshots" / "plugins"))
        assert recorded["digest"] == digest
    assert main(["report", str(SWEEP), *slurm]) == 0
    report = (dirs["slurm"] / "report" / "report.md").read_text()
    assert "4 finished runs; policies: iid, learnability; learner sizes: xs, s" in report

    runs = {}
    for kind, folder in dirs.items():
        experiment = next(a.split("=", 1)[1] for a in args[kind] if a.startswith("name="))
        runs[kind] = histories(folder, experiment)
        assert len(runs[kind]) == 4
        check_plugin_params(runs[kind], digest)
    assert runs["inline"].keys() == runs["local"].keys() == runs["slurm"].keys()
    for run_id, inline in runs["inline"].items():
        # Bitwise: every metric at every evaluation, compared as floats (no tolerance).
        assert (
            inline["metrics"]
            == runs["local"][run_id]["metrics"]
            == runs["slurm"][run_id]["metrics"]
        )
        assert len(inline["metrics"]["accuracy"]) == 4


@pytest.mark.slow
@pytest.mark.slurm
def test_a_plugin_edited_after_submit_changes_no_queued_job(tmp_path: Path, signals: Path) -> None:
    need_service(slurm_up(), "the local SLURM cluster (scripts/local-slurm up)")
    shutil.copytree(EXAMPLE / "activescale_resnet1d", tmp_path / "activescale_resnet1d")
    shutil.copy(SWEEP, tmp_path / "sweep.yaml")  # plugins: [activescale_resnet1d/], the copy
    digest = digest_of(tmp_path / "activescale_resnet1d")
    one_run = ["grid.learner.size=[xs]", "grid.selection.policy=[iid]"]
    later = ["executor.additional_parameters={begin: now+10}"]  # queued while we edit
    args = overrides(tmp_path / "work", signals, *SLURM, *one_run, *later)
    path = tmp_path / "sweep.yaml"
    assert main(["submit", str(path), *args]) == 0
    models = tmp_path / "activescale_resnet1d" / "models.py"
    models.write_text(models.read_text() + "\nraise RuntimeError('edited after submit')\n")
    # The edit breaks the plugin for any process that loads it now (validate, a local job)...
    fresh = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "validate", str(path), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert fresh.returncode == 2 and "RuntimeError: edited after submit" in fresh.stderr
    # ...but not the queued job, which loads the copy taken at submission.
    store = RunStore(f"sqlite:///{tmp_path / 'work' / 'store.db'}")
    name = next(a.split("=", 1)[1] for a in args if a.startswith("name="))
    (row,) = store.runs(name)
    assert row.status == "submitted"  # still waiting for its begin time
    counts = wait_done(store, name, timeout_s=480)
    (row,) = store.runs(name)
    assert counts[COMPLETED] == 1, row.error_tail
    (recorded,) = json.loads(row.plugins or "[]")
    assert recorded["digest"] == digest != digest_of(tmp_path / "activescale_resnet1d")
    assert recorded["path"] == str(
        tmp_path
        / "work"
        / "snapshots"
        / "plugins"
        / digest.removeprefix("sha256:")
        / "activescale_resnet1d"
    )


@pytest.mark.slow
def test_the_notebook_example_runs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "notebook.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        cwd=tmp_path,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "sweep resnet1d_demo: 4 completed" in out
    assert "runs, " in out and "GPU-hours" in out  # the plan line
    assert "resnet1d" in out and "multiplier" in out  # the results frame and the comparison


def test_the_example_ladder_spans_three_orders_of_magnitude() -> None:
    from orchestrator.plugins import load_sweep_plugins
    from trainers.models import ModelConfig, build_model, count_params, ladder

    load_sweep_plugins(["activescale_resnet1d/"], EXAMPLE, "test")
    sizes = ladder("resnet1d").sizes
    params = [
        count_params(build_model(ModelConfig(arch="resnet1d", size=s), (64,), 6, 0)) for s in sizes
    ]
    assert len(sizes) >= 4 and params == sorted(params) and params[-1] / params[0] > 1000
    assert dict(zip(sizes, params, strict=True))["xs"] == PARAMS["xs"]

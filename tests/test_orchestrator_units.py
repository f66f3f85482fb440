"""Orchestrator pieces that need no cluster: fast expansion, plan, snapshot, store migration."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

import pytest

from activescale.errors import SweepSpecError
from orchestrator.plan import FlopEstimate, estimate_flops, plan
from orchestrator.snapshot import content_hash, make_snapshot
from orchestrator.spec import parse_sweep
from orchestrator.store import RunStore
from tests.conftest import TINY_SWEEP
from trainers.config import RunConfig

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
    for package in ("activescale", "orchestrator", "trainers", "analysis"):
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


def test_local_runs_spread_over_the_visible_gpus() -> None:
    from orchestrator.executors import gpus_for

    two = ["0", "1"]
    assert [gpus_for(two, 1, i) for i in range(3)] == ["0", "1", "0"]  # runs share when many
    assert gpus_for(two, 2, 0) == gpus_for(two, 2, 1) == "0,1"  # one GPU per process
    assert gpus_for(["GPU-a", "GPU-b", "GPU-c"], 2, 1) == "GPU-c,GPU-a"  # names pass through
    assert gpus_for(two, 4, 0) == "0,1"  # never the same GPU twice in one run
    assert gpus_for([], 2, 0) == ""  # no GPU: none visible, as before


def test_a_local_job_sees_the_gpus_it_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """submitit's LocalExecutor sets CUDA_VISIBLE_DEVICES="" for a job that asks for no GPU;
    the job's own setup line gives it its GPUs back (a variable, so no GPU is needed here)."""
    import functools
    import os

    from orchestrator.executors import local_executor, visible_gpus

    report = functools.partial(os.getenv, "CUDA_VISIBLE_DEVICES")  # runs in the job
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 5")
    assert visible_gpus() == ["3", "5"]
    seen = [local_executor(tmp_path, 1, 1, gpus).submit(report).result() for gpus in ("5", "")]
    assert seen == ["5", ""]


@pytest.mark.parametrize("arch", ["mlp", "cnn1d", "vit"])
@pytest.mark.parametrize("task", ["classification", "contrastive"])
def test_the_cpu_activation_probe_measures_what_the_meta_one_does(
    arch: str, task: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validation probes small models on the CPU (zero weights, one thread) instead of the meta
    device; both must see the same output sizes, for every built-in ladder and task."""
    import torch

    from orchestrator import plausibility
    from orchestrator.plan import data_spec_of
    from trainers.tasks import task_for

    overrides: dict[str, object] = {"learner": {"arch": arch, "size": "s"}}
    if task == "contrastive":
        overrides |= {"task": "contrastive", "dataset": {"name": "mnist1d_pairs"}}
    cfg = RunConfig.model_validate(overrides)
    entry, spec = task_for(cfg), data_spec_of(cfg)
    if arch == "vit":  # images: 3 x 16 x 16
        spec = dataclasses.replace(spec, input_shape=(3, 16, 16))
        cfg.learner = cfg.learner.model_copy(update={"patch": 4})
    with torch.device("meta"):
        model = entry.build(cfg.learner, spec, 0)
    meta = plausibility.forward_bytes(entry, model, spec, 4, torch.device("meta"))
    probed = []
    measure = plausibility.forward_bytes

    def spy(*args: object) -> tuple[float, float]:
        probed.append(str(args[-1]))
        return measure(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(plausibility, "forward_bytes", spy)
    threads = torch.get_num_threads()
    assert plausibility._per_example(entry, cfg.learner, model, spec) == (meta[0] / 4, meta[1] / 4)
    assert probed == ["cpu"] and torch.get_num_threads() == threads
    assert all(p.device.type == "meta" for p in model.parameters())  # the meta model is kept

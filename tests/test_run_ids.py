"""Run ids: those of the shipped sweeps never change unless the README's upgrade note says so,
and settings a run ignores (here reference_cost without a pretrained reference) do not
enter them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.spec import load_sweep
from trainers.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "shipped_run_ids.json"


def test_shipped_sweeps_keep_their_run_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ids of every sweep under sweeps/ as of issue 17 (their configs unchanged); a
    change here needs an upgrade note in the README (completed runs would run again)."""
    monkeypatch.chdir(ROOT)
    golden = json.loads(GOLDEN.read_text())
    current = {
        str(path.relative_to(ROOT)): sorted(r.run_id for r in load_sweep(str(path)).runs)
        for path in sorted((ROOT / "sweeps").rglob("*.yaml"))
    }
    assert current.keys() >= golden.keys()
    for name, ids in golden.items():
        assert current[name] == ids, name


def config(policy: str, reference_cost: str, mode: str = "pretrained") -> RunConfig:
    return RunConfig.model_validate(
        {
            "scorer": {"arch": "mlp", "size": "xxs"},
            "reference": {"arch": "mlp", "size": "xxs", "mode": mode},
            "selection": {"policy": policy},
            "reference_cost": reference_cost,
        }
    )


@pytest.mark.parametrize("policy", ["iid", "hard_scorer", "hard_learner"])
def test_reference_cost_does_not_change_runs_without_a_reference(policy: str) -> None:
    ids = {config(policy, cost).resolved().run_id() for cost in ("include", "amortize", "exclude")}
    assert len(ids) == 1


def test_reference_cost_does_not_change_runs_with_a_parallel_reference() -> None:
    ids = {
        config("learnability", cost, mode="parallel").resolved().run_id()
        for cost in ("include", "amortize", "exclude")
    }
    assert len(ids) == 1


def test_reference_cost_changes_runs_that_pretrain_a_reference() -> None:
    ids = {config("learnability", cost).resolved().run_id() for cost in ("include", "amortize")}
    assert len(ids) == 2


def test_a_sweep_with_amortize_reruns_no_iid_baseline(tmp_path: Path) -> None:
    """The fast grid dumper (orchestrator/spec.py) must agree with the config's own dump
    once resolved() changes reference_cost; and IID keeps its id under amortize."""
    base = """\
dataset: {name: mnist1d, train_size: 512, test_size: 256, clean_size: 128}
learner: {arch: mlp, size: xs}
scorer: {arch: mlp, size: xxs}
reference: {arch: mlp, size: xxs, steps: 20}
selection: {policy: learnability, keep: 0.5}
budget: {steps: 40}
grid:
  selection.policy: [iid, learnability, hard_scorer]
"""
    ids = {}
    for cost in ("include", "amortize"):
        path = tmp_path / f"{cost}.yaml"
        path.write_text(f"name: s_{cost}\nreference_cost: {cost}\n{base}")
        sweep = load_sweep(str(path))
        assert all(r.run_id == r.config.run_id() for r in sweep.runs)
        ids[cost] = {r.config.selection.policy: r.run_id for r in sweep.runs}
    assert ids["include"]["iid"] == ids["amortize"]["iid"]
    assert ids["include"]["hard_scorer"] == ids["amortize"]["hard_scorer"]
    assert ids["include"]["learnability"] != ids["amortize"]["learnability"]

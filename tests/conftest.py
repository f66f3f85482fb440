"""Shared fixtures: tiny sweeps that run in seconds on CPU with real components."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

IN_CI = os.environ.get("CI", "").lower() == "true"


def need_service(
    available: bool, what: str, hint: str = "start it with the script named in README"
) -> None:
    """Skip locally when a real service (or shared data) is missing; under CI=true, fail."""
    if available:
        return
    message = f"{what} is not available ({hint})"
    if IN_CI:
        pytest.fail(f"CI=true: {message}")
    pytest.skip(message)  # reached only without CI=true (under CI the line above fails)


# The run config every test sweep builds on (here, tests/test_slurm.py, tests/test_tune.py):
# a small MNIST-1D pool and tiny models, so a run takes a second or two on one CPU.
TINY_RUN = """\
dataset: {name: mnist1d, train_size: 512, test_size: 256, clean_size: 128, label_noise: 0.3}
learner: {arch: mlp, size: xs}
scorer: {arch: mlp, size: xxs}
reference: {arch: mlp, size: xxs, steps: 20}
selection: {policy: learnability, keep: 0.5}
batch_size: 32
"""
TINY_SWEEP = f"""\
name: tiny
{TINY_RUN}budget: {{steps: 40}}
eval: {{points: 4, batch_size: 256}}
executor: {{kind: inline}}
grid:
  learner.size: [xxs, xs]
  selection.policy: [iid, learnability]
"""


@pytest.fixture
def tiny_sweep(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SWEEP + f"workdir: {tmp_path / 'work'}\n")
    return path


def tiny_run_config(**overrides: object) -> dict[str, object]:
    """A RunConfig dict for loop tests (a few steps, tiny data)."""
    config: dict[str, object] = yaml.safe_load(TINY_RUN)
    config |= {"budget": {"steps": 30}, "eval": {"points": 4, "batch_size": 256}}
    return config | overrides

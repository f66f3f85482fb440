"""Shared fixtures: tiny sweeps that run in seconds on CPU with real components."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

IN_CI = os.environ.get("CI", "").lower() == "true"


def need_service(
    available: bool, what: str, hint: str = "start it with the script named in README"
) -> None:
    """Skip locally when a real service is missing; under CI=true, fail."""
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


@contextlib.contextmanager
def datasets_restored() -> Iterator[None]:
    """The dataset registry as it was before the block, afterwards: a dataset a test registers
    would otherwise stay for the rest of the process (tests/test_data_registry.py lists it)."""
    import trainers.data.registry

    registry = trainers.data.registry._REGISTRY
    before = dict(registry)
    try:
        yield
    finally:
        registry.clear()
        registry.update(before)


@contextlib.contextmanager
def mlflow_server(
    backend: str, artifacts: Path, log: Path, *extra: str, timeout_s: float = 180
) -> Iterator[str]:
    """A real ``mlflow server`` on ``backend`` (a store URL), serving artifacts from the
    folder ``artifacts``, its output in ``log``; yields its URL once /health answers, and
    stops it afterwards. A server that exits or does not answer in time fails the test with
    its log."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend]
    command += ["--artifacts-destination", artifacts.as_uri()]
    command += ["--host", "127.0.0.1", "--port", str(port), *extra]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {log.read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

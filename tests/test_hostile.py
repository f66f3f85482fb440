"""The hostile-input corpus: careless and malicious sweeps, each refused before anything is
written.

``tests/hostile/cases/NAME.yaml`` is one case (``{tmp}`` in it becomes the case's own empty
folder); ``tests/hostile/expected.yaml`` says, per case, the tokens its message must contain
(``{file}`` is the case file's name), the tokens it must not contain (a password), extra CLI
arguments, the files to make first (``tests/hostile/make.py``: data files and sweep files that
cannot be text) and the service it needs. For each case the real CLI runs ``validate`` and then
``run`` (``submit`` for SLURM cases) in a process of its own, in the case's folder, with
``sbatch`` and ``scancel`` replaced by a shim that records any call; each must exit 2 with one
message holding the tokens, print no traceback, write nothing (the folder is listed before
and after) and call neither.

The processes are forked from a server that imported the CLI once (multiprocessing's
forkserver), so a case costs its checks, not torch's import; ``test_the_console_script``
runs a few cases through the installed ``activescale`` script as well.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import need_service
from tests.hostile import make, warm

HERE = Path(__file__).resolve().parent / "hostile"
CASES = HERE / "cases"
EXPECTED: dict[str, dict[str, Any]] = yaml.safe_load((HERE / "expected.yaml").read_text())
SHIM = """#!/bin/sh
echo "$(basename "$0") $*" >> "$HOSTILE_SLURM_CALLS"
exit 1
"""


def test_every_case_file_has_an_entry_and_every_entry_a_file() -> None:
    files = {p.stem for p in CASES.glob("*.yaml")}
    assert files == set(EXPECTED), files ^ set(EXPECTED)
    assert len(files) >= 60


@pytest.fixture(scope="module")
def forked() -> Any:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests.hostile.warm"])
    return context


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under ``root``: (size, mtime ns, mode), to see that nothing was written."""
    found = {}
    for path in sorted(root.rglob("*")):
        stat = path.lstat()
        found[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns, stat.st_mode)
    return found


def run_case(name: str, tmp_path: Path, forked: Any, command: str) -> tuple[int, str, str]:
    spec = EXPECTED[name]
    case = tmp_path / "case"
    case.mkdir(exist_ok=True)
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    for tool in ("sbatch", "scancel"):
        (shim / tool).write_text(SHIM)
        (shim / tool).chmod(0o755)
    sweep = case / f"{name}.yaml"
    if not sweep.exists():
        sweep.write_bytes((CASES / f"{name}.yaml").read_bytes().replace(b"{tmp}", bytes(case)))
        for maker in spec.get("make", []):
            getattr(make, maker)(case, sweep)
    env = dict(os.environ)
    env["PATH"] = f"{shim}{os.pathsep}{env.get('PATH', '')}"
    env["HOSTILE_SLURM_CALLS"] = str(logs / "slurm_calls")
    env["COLUMNS"] = "200"
    before = snapshot(case)
    out, err = logs / f"{command}.out", logs / f"{command}.err"
    args = [command, sweep.name, *(a.replace("{tmp}", str(case)) for a in spec.get("args", []))]
    process = forked.Process(target=warm.command, args=(args, str(case), env, str(out), str(err)))
    process.start()
    process.join(300)
    assert process.exitcode is not None, f"{name}: `{command}` did not finish in 300 s"
    assert snapshot(case) == before, f"{name}: `{command}` wrote into its folder"
    assert not (logs / "slurm_calls").exists(), (logs / "slurm_calls").read_text()
    return process.exitcode, out.read_text(errors="replace"), err.read_text(errors="replace")


def needs(spec: dict[str, Any]) -> None:
    need = spec.get("needs")
    if need == "slurm":
        from tests.test_slurm import slurm_up

        need_service(slurm_up(), "the local SLURM cluster (scripts/local-slurm up)")
    elif need == "postgres":
        from tests.test_slurm import POSTGRES_URL, postgres_up

        need_service(postgres_up(), f"PostgreSQL at {POSTGRES_URL} (scripts/local-postgres up)")
    elif need == "no_cuda":
        import torch

        # The case asks for CUDA where there is none: it needs a process that sees no GPU.
        need_service(
            not torch.cuda.is_available(),
            "a process without CUDA for this case",
            "run the tests with CUDA_VISIBLE_DEVICES='' on a machine with GPUs",
        )


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hostile_input_is_refused_before_anything_is_written(
    name: str, tmp_path: Path, forked: Any
) -> None:
    spec = EXPECTED[name]
    needs(spec)
    second = "submit" if spec.get("needs") == "slurm" else "run"
    for command in ["validate", *spec.get("commands", [second])]:
        code, out, err = run_case(name, tmp_path, forked, command)
        shown = f"`{command}` of {name}: exit {code}\nstdout: {out}\nstderr: {err}"
        assert code == 2, shown
        assert "Traceback" not in out + err, shown
        message = err.strip()
        assert message.startswith("error: ") and "\n" not in message, shown
        for token in spec["tokens"]:
            assert token.replace("{file}", f"{name}.yaml") in message, f"{token!r} missing: {shown}"
        for token in spec.get("absent", []):
            assert token not in out + err, f"{token!r} shown: {shown}"


def test_a_valid_sweep_passes_the_same_runner(tmp_path: Path, forked: Any) -> None:
    """The control: the quickstart sweep, run through the same harness, validates (exit 0) and
    its validation writes nothing either."""
    case = tmp_path / "case"
    case.mkdir()
    quickstart = Path(__file__).resolve().parents[1] / "sweeps" / "quickstart.yaml"
    sweep = case / "quickstart.yaml"
    sweep.write_text(quickstart.read_text())
    before = snapshot(case)
    out, err = tmp_path / "out", tmp_path / "err"
    args = (["validate", sweep.name], str(case), dict(os.environ), str(out), str(err))
    process = forked.Process(target=warm.command, args=args)
    process.start()
    process.join(300)
    assert process.exitcode == 0, err.read_text()
    assert "valid." in out.read_text() and snapshot(case) == before


CONSOLE_CASES = ["duplicate_nested_key", "npz_nan_inputs", "workdir_is_a_file"]


@pytest.mark.parametrize("name", CONSOLE_CASES)
def test_the_console_script(name: str, tmp_path: Path) -> None:
    """The installed entry point behaves as the forked CLI does."""
    spec = EXPECTED[name]
    script = shutil.which("activescale", path=str(Path(sys.prefix) / "bin"))
    assert script is not None, sys.prefix
    case = tmp_path / "case"
    case.mkdir()
    sweep = case / f"{name}.yaml"
    sweep.write_bytes((CASES / f"{name}.yaml").read_bytes().replace(b"{tmp}", bytes(case)))
    for maker in spec.get("make", []):
        getattr(make, maker)(case, sweep)
    before = snapshot(case)
    result = subprocess.run(
        [script, "run", sweep.name], cwd=case, capture_output=True, text=True, check=False
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert all(t.replace("{file}", sweep.name) in result.stderr for t in spec["tokens"])
    assert snapshot(case) == before

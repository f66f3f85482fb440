"""What the corpus's fork server (tests/test_hostile.py) imports once: the CLI, what torch
imports the first time a model runs on the meta device, and :func:`command`, which each forked
process runs, so a case costs its checks and nothing else."""

from __future__ import annotations

import os
import sys

import orchestrator.checks  # noqa: F401
from orchestrator.cli import main
from orchestrator.plausibility import estimate_footprint
from trainers.config import RunConfig

estimate_footprint(RunConfig())


def command(argv: list[str], cwd: str, env: dict[str, str], out: str, err: str) -> None:
    """One CLI command, as `activescale ARGV` would run it: in ``cwd``, with ``env``, its
    output in the files ``out`` and ``err``; the process exits with the command's code."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(handle, fd)
        os.close(handle)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 (the process ends with it)
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

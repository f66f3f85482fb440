"""Every check that can run before anything is written: ``activescale validate`` is this, and
``run``, ``submit``, ``retry`` and ``tune`` do it first, so input they refuse leaves no work
directory, no store, no MLflow store and no SLURM job behind.

:func:`load_checked`, in order (cheap first; see docs/validation.md):

1. the sweep file (``orchestrator.spec.load_sweep``: YAML limits, strict types, finite
   numbers, cross-field rules, grid, overrides, ``tune:``);
2. paths (``workdir``, SQLite files, the tuning journal): no control characters, no ``~`` or
   ``$VAR`` that would be taken literally, creatable where they do not exist; URLs parse and
   their drivers load (``orchestrator.urls``); ``device: cuda`` has CUDA where it runs here;
3. data and models (``orchestrator.launch.prepare``: tuned values, data files read and
   checked, models built on the meta device);
4. SLURM settings against the cluster (``orchestrator.slurm_checks``, read-only calls);
5. memory and length of every run (``orchestrator.plausibility``; ``--allow-long``);
6. the store, the tracking server and the tuning storage answer (read-only).

Each problem is a named ActivescaleError with ``file:line``, the dotted key, the value, what is
allowed and what to do; the CLI prints it as one line and exits 2.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from activescale.errors import ActivescaleError, ConfigError
from activescale.secrets import remember
from orchestrator.keys import fail
from orchestrator.plausibility import Capacity, check_runs
from orchestrator.spec import Sweep, load_sweep
from orchestrator.urls import (
    Problem,
    check_database_url,
    check_tracking_uri,
    is_database_url,
    store_error,
)
from trainers.data.checks import physical_memory

if TYPE_CHECKING:
    from orchestrator.slurm_checks import ClusterLimits
    from trainers.config import RunConfig

NAME_MAX = 255  # bytes of one path component (Linux, macOS)
PATH_MAX = 4095


def load_checked(
    path: str,
    overrides: Sequence[str] = (),
    *,
    allow_long: bool = False,
    apply_tuning: bool = True,
    command: str = "validate",
    environment: bool = True,
) -> Sweep:
    """The sweep at ``path``, loaded, prepared and checked (see the module docstring).

    ``command``: ``tune`` counts ``tune.workers`` as the runs at once; ``environment=False``
    (``plan``) leaves out paths, URLs, devices and the cluster, and the length limit."""
    from orchestrator.launch import prepare

    sweep = load_sweep(path, tuple(overrides))
    for url in (sweep.store_url, sweep.tracking_uri, _tune_storage(sweep)):
        remember(url)  # every later message masks these passwords
    if environment:
        check_paths_and_urls(sweep)
        check_device(sweep)
    try:
        prepare(sweep, apply_tuning)
    except ActivescaleError as err:  # "dataset: ..." -> "sweep.yaml:3: dataset: ..."
        key = str(err).split(": ", 1)[0]
        key = key if key.replace(".", "").replace("_", "").isalnum() else "from_tuning"
        raise type(err)(f"{where(sweep, key)}: {err}") from None
    limits = None
    if environment and sweep.settings.executor.kind == "slurm":
        from orchestrator.slurm_checks import check_cluster

        sizes = [str(r.config.learner.size) for r in sweep.runs]
        limits = check_cluster(sweep.settings.executor, sizes, lambda key: where(sweep, key))
    check_runs(
        [(r.run_id, r.label, r.config) for r in sweep.runs],
        lambda cfg: capacity(sweep, cfg, limits, command),
        sweep.settings.plan.flops_per_second,
        allow_long or not environment,
        lambda key: where(sweep, key),
    )
    if environment:
        check_paths_and_urls(sweep, reach=True)
    return sweep


def where(sweep: Sweep, key: str) -> str:
    """``file:line`` of a dotted key: its grid axis if gridded, the override if overridden."""
    lines = sweep.lines
    if lines is None:
        return sweep.source
    if ("override", key) in lines.lines:
        return f"{sweep.source} (-o {key})"
    for axis in sweep.grid:
        if key == axis or key.startswith(axis + ".") or axis.startswith(key + "."):
            return lines.where(("grid", axis))
    return lines.where(tuple(key.split(".")))


# ---------------------------------------------------------------------------------------------
# Paths and URLs


def check_paths_and_urls(sweep: Sweep, reach: bool = False) -> None:
    """``workdir``, ``store``, ``tracking.uri``, ``tune.storage``: well-formed and creatable
    (``reach=False``), or answering (``reach=True``: servers are contacted, read-only)."""
    settings = sweep.settings
    if not reach:
        key = "workdir" if settings.workdir is not None else "name"
        _path_at(sweep, key, settings.workdir or str(sweep.workdir), sweep.workdir, "folder")
    store_key = "store" if settings.store is not None else "workdir"
    tracking_key = "tracking.uri" if settings.tracking.uri is not None else "workdir"
    try:
        check_database_url(sweep.store_url, creatable, reach)
    except Problem as problem:
        raise store_error(where(sweep, store_key), store_key, sweep.store_url, problem) from None
    try:
        check_tracking_uri(sweep.tracking_uri, sweep.experiment, creatable, reach)
    except Problem as problem:
        raise store_error(
            where(sweep, tracking_key), tracking_key, sweep.tracking_uri, problem
        ) from None
    storage = _tune_storage(sweep)
    if storage is None:
        return
    key = "tune.storage" if settings.tune and settings.tune.storage else "workdir"
    try:
        if is_database_url(storage):
            check_database_url(storage, creatable, reach)
        elif "://" in storage:
            raise Problem(
                "not a tuning storage (a journal file path, or a sqlite:/// or postgresql URL)",
                "Give a path, or a database URL.",
            )
        elif not reach:
            check_sqlite_file_or_journal(Path(storage))
    except Problem as problem:
        raise store_error(where(sweep, key), key, storage, problem) from None


def check_sqlite_file_or_journal(path: Path) -> None:
    if path.exists() and not path.is_file():
        raise Problem(f"{str(path)!r} is not a file", "Point it at a journal file.")
    creatable(path, "file")


def _tune_storage(sweep: Sweep) -> str | None:
    tune = sweep.settings.tune
    if tune is None:
        return None
    return tune.storage or str(sweep.workdir / "tune" / "optuna.journal")


def _path_at(sweep: Sweep, key: str, written: str, path: Path, kind: str) -> None:
    try:
        check_text(written)
        creatable(path, kind)
    except Problem as problem:
        raise fail(where(sweep, key), key, written, problem.problem, problem.fix) from None


def check_text(written: str) -> None:
    """A path as written: no control characters, no shell syntax that is not expanded."""
    for char in written:
        if unicodedata.category(char) == "Cc":
            raise Problem(
                f"the path contains the control character U+{ord(char):04X}",
                "Remove it; paths are one line of printable characters.",
            )
    if written.startswith(("~", "$")):
        raise Problem(
            f"{written[0]!r} at the start of a path is not expanded (no shell reads it), so a "
            f"folder named {written.split('/')[0]!r} would be created here",
            "Write the full path, e.g. /home/me/runs.",
        )


def creatable(path: Path, kind: str) -> None:
    """``path`` is, or can be made as, a ``kind`` ("folder" or "file") by this user: nothing
    on the way is a file, the nearest existing folder is writable. Nothing is created."""
    text = str(path)
    check_text(text)
    encoded = os.fsencode(text)
    if len(encoded) > PATH_MAX or any(len(p) > NAME_MAX for p in encoded.split(b"/")):
        raise Problem(
            f"the path is longer than the filesystem allows ({len(encoded)} bytes; at most "
            f"{PATH_MAX}, and {NAME_MAX} per name)",
            "Use a shorter path.",
        )
    if path.exists():
        if kind == "folder" and not path.is_dir():
            raise Problem(
                f"{text!r} exists and is not a folder", "Point it at a folder, or a new path."
            )
        if kind == "file" and path.is_dir():
            raise Problem(f"{text!r} is a folder, not a file", "Point it at a file.")
        folder = path if path.is_dir() else path.parent
    else:
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise Problem(
                f"{str(folder)!r} is a file, so {text!r} cannot be created under it",
                "Point it somewhere else, or move that file away.",
            )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise Problem(
            f"no permission to write in {str(folder)!r}", "Point it at a folder you can write."
        )


# ---------------------------------------------------------------------------------------------
# Devices and capacity


def check_device(sweep: Sweep) -> None:
    """``device: cuda`` where it runs here (inline, local) needs CUDA; a SLURM job's node may
    have GPUs the submitting machine lacks, so it is not checked there."""
    kind = sweep.settings.executor.kind
    if kind == "slurm" or not any(r.config.device == "cuda" for r in sweep.runs):
        return
    import torch

    if torch.cuda.is_available():
        return
    raise fail(
        where(sweep, "device"),
        "device",
        "cuda",
        f"CUDA is not available on this machine (torch.cuda.is_available() is false) and "
        f"executor.kind is {kind!r}: every run would fail at its first step",
        "Use device: auto or cpu here, or executor.kind: slurm on nodes with GPUs.",
        ConfigError,
    )


def capacity(sweep: Sweep, cfg: RunConfig, limits: ClusterLimits | None, command: str) -> Capacity:
    """The memory a run of ``cfg`` may use where it runs, and how many run at once."""
    executor = sweep.settings.executor
    if executor.kind == "slurm":
        resources = executor.resources_for(str(cfg.learner.size))
        if limits is not None:
            host, name = limits.memory_bytes(resources)
        elif resources.mem_gb is not None:
            host, name = resources.mem_gb * 2**30, f"its executor.mem_gb of {resources.mem_gb:g} GB"
        else:
            host, name = float("inf"), "the cluster's nodes"
        return Capacity(host, name)
    memory = physical_memory() or float("inf")
    gpu, gpu_name = None, ""
    import torch

    if cfg.device != "cpu" and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory
        gpu, gpu_name = float(total), f"the {total / 1e9:.3g} GB of GPU 0"
    parallel = 1
    if command == "tune" and sweep.settings.tune is not None:
        parallel = sweep.settings.tune.workers
    elif executor.kind == "local":
        parallel = min(executor.max_parallel or os.cpu_count() or 1, len(sweep.runs))
    return Capacity(memory, f"this machine's {memory / 1e9:.3g} GB of RAM", gpu, gpu_name, parallel)

"""Code snapshots: queued SLURM jobs run the code as it was when they were submitted.

From a source checkout (an editable install), ``submit`` copies the project's packages
(``activescale``, ``orchestrator``, ``trainers``, ``analysis``; Python files and package data, no caches) into
``WORKDIR/snapshots/<content hash>/`` and the jobs start there (``sbatch --chdir``), so
``python -m submitit.core._submit`` finds the snapshot's packages first on ``sys.path``.
Equal code gives the same directory, so resubmitting unchanged code copies nothing. When the
packages are installed normally (site-packages), the install is the snapshot and nothing is
copied. Dependencies (torch, mlflow, submitit) come from the submitting virtual environment,
which must be on a filesystem the nodes share.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

PACKAGES = ("activescale", "orchestrator", "trainers", "analysis")
SOURCE_ROOT = Path(__file__).resolve().parent.parent


def is_source_checkout(root: Path = SOURCE_ROOT) -> bool:
    return (root / "pyproject.toml").is_file() and all((root / p).is_dir() for p in PACKAGES)


def _files(root: Path) -> list[Path]:
    files = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files.append(path)
    return files


def content_hash(root: Path = SOURCE_ROOT) -> str:
    digest = hashlib.sha256()
    for path in _files(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def make_snapshot(workdir: Path, root: Path = SOURCE_ROOT) -> Path | None:
    """The snapshot directory for the current code (created if new); None when installed."""
    if not is_source_checkout(root):
        return None
    target = workdir / "snapshots" / content_hash(root)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    for path in _files(root):
        dest = staging / path.relative_to(root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    try:
        os.rename(staging, target)  # atomic: a concurrent submit sees all or nothing
    except OSError:  # another submit made the same snapshot first
        shutil.rmtree(staging, ignore_errors=True)
    return target

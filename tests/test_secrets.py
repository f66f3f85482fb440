"""Secrets are never shown: URLs masked everywhere, files holding them owner-only.

The acceptance test runs the CLI against a PostgreSQL store and a PostgreSQL tracking store of
a role made for it, with a password nothing else contains, and looks for that password in every
output, every file under the test's folder (work directory, job logs, report, MLflow
artifacts) and every MLflow record: only the job pickles hold it (a job needs its URLs), and
they and their folders are readable by their owner only.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from activescale.secrets import mask_text, mask_url, private_files, remember
from tests.conftest import TINY_RUN, need_service
from tests.test_slurm import postgres_up

# ---------------------------------------------------------------------------------------------
# Masking


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (
            "postgresql+psycopg2://me:pa55@db.example:5432/x",
            "postgresql+psycopg2://me:***@db.example:5432/x",
        ),
        ("https://me:pa55@mlflow.example/", "https://me:***@mlflow.example/"),
        ("postgresql://me:p@ss@host/db", "postgresql://me:***@host/db"),  # '@' not escaped
        ("postgresql://me:p%40ss@host/db", "postgresql://me:***@host/db"),
        ("postgresql://me@host/db", "postgresql://me@host/db"),  # no password
        ("sqlite:////tmp/store.db", "sqlite:////tmp/store.db"),
        ("http://host:5000", "http://host:5000"),  # a port is not a password
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_mask_text_masks_urls_and_remembered_passwords() -> None:
    text = "could not connect to postgresql://bob:hunter2@h/db (password 'hunter2' refused)"
    assert "hunter2" not in mask_text(text).split("(")[0]
    remember("postgresql://bob:hunter2@h/db")
    assert "hunter2" not in mask_text(text)
    # Examples in messages stay readable; a password equal to the user name is not scrubbed
    # from free text (it would garble every mention of the user), but its URLs are masked.
    assert "USER:PASSWORD@HOST" in mask_text("write postgresql://USER:PASSWORD@HOST/DB")
    remember("postgresql://alice:alice@h/alice")
    assert mask_text("user alice: postgresql://alice:alice@h/alice") == (
        "user alice: postgresql://alice:***@h/alice"
    )


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_private_files_are_owner_only(tmp_path: Path) -> None:
    before = current_umask()
    with private_files():
        (tmp_path / "folder").mkdir()
        (tmp_path / "folder" / "file").write_text("x")
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "folder" / "file").stat().st_mode) == 0o600
    assert current_umask() == before


def test_a_run_whose_tracking_server_fails_never_shows_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MLflow's own message holds the URL it called, password included ("API request to
    # http://me:PASSWORD@host/... failed"): the stored tail and the raised error are masked.
    from orchestrator.store import RunStore
    from orchestrator.worker import RunFailed, RunJob, execute_run
    from tests.conftest import tiny_run_config
    from trainers.config import RunConfig

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    password = f"Pw-{uuid.uuid4().hex}"
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = RunStore(url)
    store.upsert_sweep("s", {})
    config = RunConfig.model_validate(tiny_run_config()).model_dump(mode="json")
    store.register("s", [("r1", config, {})])
    job = RunJob(
        sweep="s",
        run_id="r1",
        config=config,
        label={},
        store_url=url,
        tracking_uri=f"http://me:{password}@127.0.0.1:1",
        experiment_id="0",
        parent_run_id="p",
        workdir=str(tmp_path),
    )
    with pytest.raises(RunFailed) as info:
        execute_run(job)
    assert "me:***@127.0.0.1:1" in str(info.value) and password not in str(info.value)
    row = store.run("s", "r1")
    assert row is not None and row.status == "failed"
    assert "me:***@" in (row.error_tail or "") and password not in (row.error_tail or "")


# ---------------------------------------------------------------------------------------------
# The acceptance test: a known password, found nowhere


PSQL_ADMIN = ["runuser", "-u", "postgres", "--", "psql", "-p", "5432", "-X", "-q"]


def psql_admin(sql: str) -> None:
    subprocess.run(
        [*PSQL_ADMIN, "-v", "ON_ERROR_STOP=1", "-tA", "-c", sql],
        check=True,
        capture_output=True,
        text=True,
    )


@pytest.fixture
def secret_role() -> Iterator[tuple[str, str]]:
    """A PostgreSQL role with a password no other text contains, and its two databases."""
    need_service(postgres_up(), "PostgreSQL (scripts/local-postgres up)")
    need_service(
        os.geteuid() == 0 and shutil.which("runuser") is not None,
        "a PostgreSQL superuser (runuser -u postgres psql, as root)",
    )
    role, password = f"hostile_{uuid.uuid4().hex[:8]}", f"Pw-{uuid.uuid4().hex}"
    psql_admin(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    for db in ("store", "mlflow"):
        psql_admin(f"CREATE DATABASE {role}_{db} OWNER {role}")
    try:
        yield role, password
    finally:
        for db in ("store", "mlflow"):
            psql_admin(f"DROP DATABASE IF EXISTS {role}_{db} WITH (FORCE)")
        psql_admin(f"DROP ROLE IF EXISTS {role}")


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env=dict(os.environ, COLUMNS="200"),
    )


@pytest.mark.postgres
def test_a_known_password_is_in_no_output_log_report_or_mlflow_record(
    tmp_path: Path, secret_role: tuple[str, str]
) -> None:
    role, password = secret_role
    base = f"postgresql+psycopg2://{role}:{password}@127.0.0.1:5432/{role}"
    name = f"s{uuid.uuid4().hex[:8]}"
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        f"name: {name}\nworkdir: {tmp_path / 'work'}\nstore: {base}_store\n"
        f"tracking: {{uri: '{base}_mlflow'}}\n{TINY_RUN}budget: {{steps: 20}}\n"
        "eval: {points: 3, batch_size: 256}\nexecutor: {kind: local, max_parallel: 2}\n"
        "grid: {selection.policy: [iid, learnability]}\n"
    )
    wrong = tmp_path / "wrong.yaml"  # the password with a suffix: refused, and never shown
    wrong.write_text(sweep.read_text().replace(f":{password}@", f":{password}-wrong@"))
    results = [
        cli(tmp_path, "validate", str(sweep)),
        cli(tmp_path, "plan", str(sweep)),
        cli(tmp_path, "run", str(sweep)),
        cli(tmp_path, "status", str(sweep), "--runs"),
        cli(tmp_path, "status", name, "--store", f"{base}_store"),
        cli(tmp_path, "report", str(sweep)),
    ]
    assert all(r.returncode == 0 for r in results), [(r.args, r.stderr) for r in results]
    assert f"{role}:***@" in results[3].stdout  # the status header shows the masked URL
    refused = [cli(tmp_path, "validate", str(wrong)), cli(tmp_path, "run", str(wrong))]
    refused.append(cli(tmp_path, "status", name, "--store", f"{base}_store-nodb"))
    assert all(r.returncode == 2 for r in refused), [r.stderr for r in refused]
    assert "password authentication failed" in refused[0].stderr
    for result in results + refused:
        assert password not in result.stdout + result.stderr, result.args

    # Files: only the job pickles hold it (the jobs need the URLs), owner-only.
    holders = [
        path
        for path in tmp_path.rglob("*")
        if path.is_file() and path not in (sweep, wrong) and password.encode() in path.read_bytes()
    ]
    assert holders and all(p.suffix == ".pkl" and "jobs" in p.parts for p in holders), holders
    for path in holders:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700, path.parent
    report = tmp_path / "work" / "report" / "report.html"
    assert report.is_file() and list((tmp_path / "work" / "jobs").rglob("*_log.out"))

    # MLflow: every experiment, run, parameter, tag, metric name and artifact path.
    client = MlflowClient(tracking_uri=f"{base}_mlflow")
    records: list[object] = []
    for experiment in client.search_experiments():
        records += [experiment.name, experiment.artifact_location, experiment.tags]
        for run in client.search_runs([experiment.experiment_id]):
            records += [run.info.run_name, run.data.params, run.data.tags, list(run.data.metrics)]
            records += [a.path for a in client.list_artifacts(run.info.run_id)]
            records += [a.path for a in client.list_artifacts(run.info.run_id, "report")]
    dumped = json.dumps(records, default=str)
    assert name in dumped and password not in dumped

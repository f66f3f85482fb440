"""Store URLs, tracking URIs and tuning storages: parsed, and reached, before anything is
written.

``store``, ``tracking.uri`` and ``tune.storage`` are checked the same way by
``orchestrator.checks``: the text must parse (a SQLAlchemy URL with an installed driver, an
``http(s)://`` MLflow server, or a path), a SQLite file must be creatable or already be a
SQLite database, and a server must answer (a database: a connection and ``SELECT 1``; an MLflow
server: one read-only request, which also checks the credentials). Nothing is created: no
file, no table, no experiment. Every URL in a message has its password masked.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from activescale.errors import StoreError
from activescale.secrets import mask_text, mask_url, remember

CONNECT_TIMEOUT_S = 10
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mariadb", "mssql", "oracle")
# Raises an error for a path that cannot be created (orchestrator.checks.check_creatable).
PathCheck = Callable[[Path, str], None]


class Problem(Exception):
    """What is wrong with a URL or path: (problem, what to do); the caller adds where and
    which key (``orchestrator.checks``)."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem, self.fix = problem, fix


def is_database_url(url: str) -> bool:
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""
    return scheme in DATABASE_SCHEMES


def check_database_url(url: str, creatable: PathCheck, reach: bool = True) -> None:
    """A SQLAlchemy URL: parses, its driver is installed; a SQLite file can be created or is a
    database already; a server accepts a connection (``reach``). Raises Problem."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    remember(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as err:
        raise Problem(
            f"not a database URL ({mask_text(str(err))})",
            "Write e.g. sqlite:///PATH or postgresql+psycopg2://USER:PASSWORD@HOST:5432/DB.",
        ) from None
    try:
        parsed.get_dialect()
    except (NoSuchModuleError, ImportError) as err:
        raise Problem(
            f"the database driver {parsed.drivername!r} cannot be loaded ({mask_text(str(err))})",
            "Use sqlite or postgresql+psycopg2 (pip install 'activescale[postgres]').",
        ) from None
    if parsed.drivername.startswith("sqlite"):
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            raise Problem(
                "an in-memory SQLite database is lost when the process ends, and every job "
                "would see its own",
                "Give a file: sqlite:///PATH (three slashes, then the path).",
            )
        check_sqlite_file(Path(database), creatable)
        return
    if reach:
        _connect(url, parsed.get_backend_name())


def check_sqlite_file(path: Path, creatable: PathCheck) -> None:
    """An existing file must be a readable SQLite database; a new one must be creatable.

    The file is opened through SQLite only, read-only: a plain open() and close() of a
    database file drops every POSIX lock this process holds on it, which corrupts a store
    that is open here and written elsewhere (sqlite.org/howtocorrupt.html, 2.2)."""
    if not path.exists():
        creatable(path, "file")
        return
    if not path.is_file():
        raise Problem(f"{str(path)!r} is not a file", "Point it at a SQLite file.")
    try:
        uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
        connection = sqlite3.connect(uri, uri=True, timeout=CONNECT_TIMEOUT_S)
        try:  # the whole file's structure, without reading every row (a store: seconds)
            verdict = connection.execute("PRAGMA quick_check(1)").fetchone()
        finally:
            connection.close()
        if verdict is not None and verdict[0] != "ok":
            raise sqlite3.DatabaseError(" ".join(str(verdict[0]).split())[:200])
    except sqlite3.DatabaseError as err:
        if "not a database" in str(err):
            raise Problem(
                f"{str(path)!r} exists and is not a SQLite database",
                "Point it at a new file or a SQLite database; do not reuse other files.",
            ) from None
        raise Problem(
            f"{str(path)!r} cannot be read as a SQLite database ({err})",
            "Restore it from a backup, or move it away to start a new store.",
        ) from None


def _connect(url: str, backend: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    connect_args = (
        {"connect_timeout": CONNECT_TIMEOUT_S} if backend in ("postgresql", "mysql") else {}
    )
    try:
        engine = create_engine(url, connect_args=connect_args)
    except (SQLAlchemyError, TypeError, ImportError) as err:
        raise Problem(f"cannot be used ({mask_text(str(err))})", "Check the URL.") from None
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as err:
        reason = mask_text(str(getattr(err, "orig", None) or err)).strip().splitlines()
        raise Problem(
            f"the database does not accept a connection: {' '.join(reason)[:300]}",
            "Check the host, port, user, password and database name, and that the server runs.",
        ) from None
    finally:
        engine.dispose()


def check_mlflow_server(uri: str, experiment: str, reach: bool = True) -> None:
    """An ``http(s)://`` MLflow server: host and port parse; one read-only request (the
    experiment by name) succeeds with the credentials in the URL."""
    remember(uri)
    parts = urllib.parse.urlsplit(uri)
    try:
        port = parts.port
    except ValueError:
        raise Problem("the port is not a number", "Write e.g. http://HOST:5000.") from None
    if not parts.hostname:
        raise Problem("the URL has no host", "Write e.g. http://HOST:5000.")
    if not reach:
        return
    netloc = parts.hostname + (f":{port}" if port else "")
    base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    query = urllib.parse.urlencode({"experiment_name": experiment})
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/experiments/get-by-name?{query}")
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT_S) as response:
            _mlflow_answer(response.read(), "experiment")
            return
    except urllib.error.HTTPError as err:
        if err.code == 404:  # no such experiment yet: an MLflow server says so in JSON
            _mlflow_answer(err.read(), "error_code")
            return
        if err.code in (401, 403):
            raise Problem(
                f"the MLflow server refused the credentials (HTTP {err.code})",
                "Put the right user and password in the URL (https://USER:PASSWORD@HOST).",
            ) from None
        raise Problem(
            f"the MLflow server answered HTTP {err.code} to a read-only request",
            "Check that the URL is an MLflow tracking server.",
        ) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise Problem(
            f"no MLflow server answers there ({mask_text(str(reason))})",
            "Start the server (mlflow server ...) or fix the host and port.",
        ) from None


def _mlflow_answer(body: bytes, key: str) -> None:
    """An MLflow server answers in JSON with ``key``; anything else is another server."""
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or key not in answer:
        raise Problem(
            "a server answers there, but not as an MLflow tracking server (no MLflow JSON)",
            "Point it at the MLflow server (mlflow server --host ... --port ...).",
        )


def check_tracking_uri(uri: str, experiment: str, creatable: PathCheck, reach: bool) -> None:
    """Any tracking URI MLflow takes that activescale supports: a database URL, an MLflow
    server, or a file store (a path or file:// URL). Raises Problem."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if is_database_url(uri):
        check_database_url(uri, creatable, reach)
    elif scheme in ("http", "https"):
        check_mlflow_server(uri, experiment, reach)
    elif scheme == "file" or not scheme:
        path = Path(urllib.parse.urlsplit(uri).path if scheme else uri)
        if path.exists() and not path.is_dir():
            raise Problem(
                f"{str(path)!r} is a file, not an MLflow file store folder",
                "Point it at a folder, or use a database or an MLflow server.",
            )
        creatable(path, "folder")
    else:
        raise Problem(
            f"the scheme {scheme!r} is not a tracking store activescale uses",
            "Use sqlite:///PATH, postgresql+psycopg2://..., http(s)://HOST:PORT or a folder.",
        )


def store_error(where: str, key: str, url: str, problem: Problem) -> StoreError:
    """The StoreError for a problem of the URL at ``key`` (password masked)."""
    from orchestrator.keys import fail

    error = fail(where, key, mask_url(url), problem.problem, problem.fix, StoreError)
    assert isinstance(error, StoreError)
    return error

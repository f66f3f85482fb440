"""Tracking servers as `validate` reaches them: a real HTTP server on localhost answering as
an MLflow server would, as another web server, or refusing the credentials."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from orchestrator.urls import Problem, check_mlflow_server


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        kind = self.server.kind  # type: ignore[attr-defined]
        expected = "Basic " + base64.b64encode(b"me:s3cret").decode()
        if kind == "auth" and self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.end_headers()
            return
        if kind in ("mlflow", "auth"):
            body = json.dumps({"error_code": "RESOURCE_DOES_NOT_EXIST"}).encode()
            self.send_response(404)
        else:
            body = b"<html>a blog</html>"
            self.send_response(200)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.kind = request.param  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("server", ["mlflow"], indirect=True)
def test_an_mlflow_server_that_answers_is_accepted(server: str) -> None:
    check_mlflow_server(f"http://{server}", "exp")


@pytest.mark.parametrize("server", ["blog"], indirect=True)
def test_another_web_server_is_not_a_tracking_server(server: str) -> None:
    with pytest.raises(Problem, match="not as an MLflow tracking server"):
        check_mlflow_server(f"http://{server}", "exp")


@pytest.mark.parametrize("server", ["auth"], indirect=True)
def test_credentials_are_sent_from_the_url_and_checked(server: str) -> None:
    check_mlflow_server(f"http://me:s3cret@{server}", "exp")
    with pytest.raises(Problem, match="refused the credentials"):
        check_mlflow_server(f"http://me:wrong@{server}", "exp")

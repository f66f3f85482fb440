"""The MLflow UI as a user opens it: a tiny sweep tracked by a real `mlflow server`, its
experiment page and charts rendered by headless Chromium (docs/status-json.md, "MLflow")."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from matplotlib import image as mpimg
from mlflow.tracking import MlflowClient

from activescale import schema
from orchestrator.cli import main
from tests.conftest import TINY_RUN, mlflow_server, need_service

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An `mlflow server` on a SQLite store of its own."""
    root = tmp_path_factory.mktemp("mlflow_ui")
    backend = f"sqlite:///{root / 'mlflow.db'}"
    with mlflow_server(backend, root / "artifacts", root / "server.log") as url:
        yield url


def chromium(url: str, out: Path, *, dom: bool, budget_ms: int = 30000) -> str:
    """The page after its scripts ran (virtual time), as DOM text or a screenshot in ``out``."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    need_service(binary is not None, "chromium (apt-get install chromium chromium-driver)")
    assert binary is not None
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                f"--user-data-dir={profile}",
                "--window-size=1400,2400",  # tall: the UI renders chart sections in view
                f"--virtual-time-budget={budget_ms}",
                "--dump-dom" if dom else f"--screenshot={out}",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=400,
            check=True,
        )
    return done.stdout


def page_text(dom: str) -> str:
    """The text a reader sees: the DOM without styles, scripts and tags, spaces collapsed."""
    dom = re.sub(r"<(style|script)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def rendered(url: str, out: Path, needle: str) -> str:
    """The page's text once it shows ``needle``: the UI fetches from the server in real time,
    which a loaded machine slows down, so a longer budget is tried before giving up."""
    text = ""
    for budget in (30000, 90000, 240000):
        dom = chromium(url, out, dom=True, budget_ms=budget)
        text = page_text(dom)
        if needle in text:
            break
    out.with_suffix(".html").write_text(dom)  # kept for a look when an assertion fails
    return text


def test_the_experiment_opens_on_runs_with_compute_charts(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "ui.yaml"
    sweep.write_text(
        f"name: ui\n{TINY_RUN}budget: {{steps: 30}}\neval: {{points: 3, batch_size: 256}}\n"
        f"executor: {{kind: inline}}\nworkdir: {tmp_path / 'work'}\ntracking: {{uri: {server}}}\n"
        "grid:\n  selection.policy: [iid, learnability]\n"
    )
    assert main(["run", str(sweep), "--no-report"]) == 0
    out = capsys.readouterr().out
    experiment = MlflowClient(server).get_experiment_by_name("ui")
    assert experiment is not None
    link = f"{server}/#/experiments/{experiment.experiment_id}?{schema.EXPERIMENT_VIEW_QUERY}"
    assert link in out.replace("\n", "")  # the CLI prints the link that opens on runs

    runs_page = rendered(link, tmp_path / "runs.png", "matching runs")
    # The runs table (its footer counts them), with the sweep's parent run at the top level
    # (the children are nested under it), not the GenAI overview.
    assert "matching runs" in runs_page and "sweep:ui" in runs_page
    # The runs sit nested (collapsed) under the sweep's parent run, whose own chart view has
    # no metrics; each run's page shows its charts, the compute-indexed section among them.
    client = MlflowClient(server)
    (child, *_) = (
        r
        for r in client.search_runs([experiment.experiment_id])
        if "activescale.run_id" in r.data.tags
    )
    charts = (
        f"{server}/#/experiments/{experiment.experiment_id}/runs/{child.info.run_id}/model-metrics"
    )
    charts_page = rendered(charts, tmp_path / "charts.png", "by_mflops (3)")
    assert "by_mflops (3)" in charts_page  # error, accuracy, loss vs MFLOPs: no chart built by hand
    chromium(charts, tmp_path / "charts.png", dom=False, budget_ms=90000)
    pixels = mpimg.imread(tmp_path / "charts.png")[..., :3]
    assert pixels.shape[:2] == (2400, 1400)
    assert (pixels.std(axis=2) > 0.1).sum() > 2000  # coloured chart lines, not a blank page

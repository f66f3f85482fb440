"""The report on real MLflow stores: bad input renders what it can, and the page opens in a
real headless Chromium with its plots drawn."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import image as mpimg
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from analysis.curves import seed_runs
from analysis.load import LoadError
from analysis.plots import learning_curves_plot
from analysis.report import write_report
from tests.conftest import need_service
from tests.test_curves import synthetic_frame


def log_sweep(uri: str, name: str, frame: pd.DataFrame, duplicate: str | None = None) -> None:
    """Log ``frame`` (one row per run and evaluation) as a sweep: a parent and child runs."""
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment(name)
    parent = client.create_run(
        experiment,
        run_name=f"sweep:{name}",
        tags={"activescale.sweep": name, "activescale.role": "sweep"},
    )
    client.set_terminated(parent.info.run_id)
    runs = [(run, part) for run, part in frame.groupby("run", sort=True)]
    if duplicate is not None:
        runs += [(run, part) for run, part in runs if run == duplicate]
    for run, part in runs:
        first = part.iloc[0]
        child = client.create_run(
            experiment,
            run_name=str(first["run_name"]),
            tags={"activescale.sweep": name, "mlflow.parentRunId": parent.info.run_id},
        )
        params = {
            "selection.policy": first["policy"],
            "learner.size": first["learner_size"],
            "learner.params": int(first["learner_params"]),
            "scorer.size": first["scorer_size"] or "xxs",
            "scorer.params": int(first["scorer_params"]),
            "seed": int(first["seed"]),
        }
        metrics = [
            Metric(key, float(row[column]), 0, int(row["eval_step"]))
            for _, row in part.iterrows()
            for key, column in (("flops", "flops"), ("error", "error"))
        ]
        client.log_batch(
            child.info.run_id,
            metrics=metrics,
            params=[Param(k, str(v)) for k, v in params.items()],
            tags=[RunTag("activescale.run_id", str(run))],
        )
        client.set_terminated(child.info.run_id)


def comparison_frame(seeds: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.concat(
        [
            synthetic_frame(1.0, "iid", seeds=seeds, rng=rng),
            synthetic_frame(2.0, "learnability", seeds=seeds, rng=rng).assign(
                scorer_size="xxs", scorer_params=100
            ),
            synthetic_frame(1.6, "learnability", seeds=seeds, rng=rng).assign(
                scorer_size="xxxs", scorer_params=20, run=lambda f: f["run"] + "-tiny"
            ),
        ],
        ignore_index=True,
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One sqlite MLflow store holding every sweep the tests read."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    good = comparison_frame()
    log_sweep(uri, "good", good, duplicate="iid-s-0")
    bad = comparison_frame(seeds=1)
    bad.loc[bad.index[:3], "error"] = np.nan
    bad.loc[bad.index[3], "error"] = 0.0
    bad.loc[bad.index[4], "flops"] = -1.0
    log_sweep(uri, "bad_values", bad)
    few = comparison_frame(seeds=1)
    log_sweep(uri, "few_points", few[(few["learner_size"] == "s") & (few["eval_step"] < 2)])
    log_sweep(uri, "no_iid", good[good["policy"] != "iid"])
    client = MlflowClient(tracking_uri=uri)
    empty = client.create_experiment("empty")
    parent = client.create_run(
        empty, tags={"activescale.sweep": "empty", "activescale.role": "sweep"}
    )
    client.set_terminated(parent.info.run_id)
    return uri


def test_report_compares_scorers_and_states_its_method(store: str, tmp_path: Path) -> None:
    result = write_report([("good", store)], tmp_path, n_resamples=200)
    page = result.html.read_text()
    assert {p.name for p in result.plots} == {
        f"{name}.{ext}"
        for name in ("scaling", "multiplier", "savings_ratio", "learning_curves")
        for ext in ("png", "svg")
    }
    assert page.count("data:image/png;base64,") == 4
    # The duplicated run is dropped and said so; seeds are resampled, and the winner named.
    assert any("duplicate of run" in s for s in result.skipped)
    assert "bootstrap over runs (200 resamples)" in page
    assert "wins by ΔAIC" in page and "95% CI" in page
    assert "smallest scorer keeping ≥ 90% of the best savings" in page
    md = result.markdown.read_text()
    assert "## Compute multiplier vs IID" in md and "learnability (scorer xxs)" in md


def test_learning_curves_have_one_panel_per_curve() -> None:
    """Two scorer sizes of one policy are two panels, not one line averaged over both."""
    runs = seed_runs(comparison_frame())
    fig = learning_curves_plot(runs)
    assert (
        [ax.get_title() for ax in fig.axes]
        == [r.label for r in runs]
        == [
            "iid",
            "learnability (scorer xxxs)",
            "learnability (scorer xxs)",
        ]
    )
    for ax, curve in zip(fig.axes, runs, strict=True):
        lines = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
        assert lines.keys() == {size.learner_size for size in curve.sizes}
        for size in curve.sizes:
            assert np.allclose(lines[size.learner_size], size.mean_error())


def test_bad_values_are_skipped_and_named(store: str, tmp_path: Path) -> None:
    result = write_report([("bad_values", store)], tmp_path, log_artifacts=False)
    notes = " ".join(result.skipped)
    assert "3 evaluations with error NaN or infinite left out" in notes
    assert "1 evaluations with error not positive left out" in notes
    assert "1 evaluations with flops not positive left out" in notes
    assert "single seed: no confidence intervals" in " ".join(result.caveats)
    assert result.html.read_text().count("data:image/png;base64,") >= 3


def test_too_few_points_renders_without_fits(store: str, tmp_path: Path) -> None:
    result = write_report([("few_points", store)], tmp_path, log_artifacts=False)
    assert any("2 frontier points, too few to fit" in s for s in result.skipped)
    page = result.html.read_text()
    assert "Skipped" in page and "data:image/png;base64," in page


def test_no_iid_curve_skips_multipliers(store: str, tmp_path: Path) -> None:
    result = write_report([("no_iid", store)], tmp_path, log_artifacts=False)
    assert any("no IID curve" in s for s in result.skipped)
    assert not (tmp_path / "multiplier.png").exists()


@pytest.mark.parametrize("name", ["unknown", "empty"])
def test_unknown_or_empty_sweep_is_a_named_error(store: str, tmp_path: Path, name: str) -> None:
    with pytest.raises(LoadError, match=f"sweep '{name}' has no runs"):
        write_report([(name, store)], tmp_path)


def test_an_unknown_sweep_next_to_a_good_one_is_skipped(store: str, tmp_path: Path) -> None:
    result = write_report([("good", store), ("unknown", store)], tmp_path, n_resamples=50)
    assert any("sweep not loaded" in s and "'unknown'" in s for s in result.skipped)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_renders_in_headless_chromium(store: str, tmp_path: Path) -> None:
    chromium = _chromium()
    need_service(chromium is not None, "chromium (apt-get install chromium chromium-driver)")
    assert chromium is not None
    result = write_report([("good", store)], tmp_path, n_resamples=100, log_artifacts=False)
    shot = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                f"--screenshot={shot}",
                "--window-size=1200,3000",
                result.html.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    pixels = mpimg.imread(shot)[..., :3]  # floats in [0, 1]
    assert pixels.shape[:2] == (3000, 1200)
    # The plots draw the policies in saturated red and blue; text and tables never do.
    red = (pixels[..., 0] > 0.7) & (pixels[..., 1] < 0.35) & (pixels[..., 2] < 0.35)
    blue = (pixels[..., 2] > 0.6) & (pixels[..., 0] < 0.35)
    assert red.sum() > 500, "no red plot pixels: the embedded figures did not render"
    # Rows holding plot pixels span a figure's height, not a line of text.
    plot_rows = np.flatnonzero((red | (pixels.sum(axis=2) < 1.2)).sum(axis=1) > 20)
    assert plot_rows.size > 200
    assert blue.sum() + red.sum() > 1000

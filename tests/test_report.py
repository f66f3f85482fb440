"""The report on real MLflow stores: bad input renders what it can, and the page opens in a
real headless Chromium with its plots drawn."""

from __future__ import annotations

import html
import re
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

from activescale.errors import LoadError
from analysis.comparison import compare
from analysis.curves import frontier_of, seed_runs
from analysis.plots import learning_curves_plot, multiplier_plot, scaling_plot
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
        if first.get("schedule") == "wsd":  # cosine runs log no schedule (its default)
            params |= {"optimizer.schedule": "wsd", "optimizer.cooldown": 0.2}
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
    log_sweep(uri, "wsd", good.assign(schedule="wsd"))
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
    # Beyond the largest budget: a table row per curve and factor, a summary line per curve,
    # and IID's frontier read by size.
    assert "## Multiplier extrapolated beyond the largest budget" in md
    assert "| learnability (scorer xxs) | 100× |" in md
    assert "learnability (scorer xxs) vs IID extrapolated from the fits: at 10×" in md
    assert "iid frontier, sizes in order of compute: " in md


def test_the_report_says_which_schedule_made_the_frontier_points(
    store: str, tmp_path: Path
) -> None:
    wsd = write_report([("wsd", store)], tmp_path / "wsd", n_resamples=20)
    page = wsd.markdown.read_text()
    assert (
        "cooldown 20% of each budget): frontier points are cooldown branches of a WSD run" in page
    )
    assert "cosine" not in page and not any("intermediate evaluations" in c for c in wsd.caveats)
    cosine = write_report([("good", store)], tmp_path / "cosine", n_resamples=20)
    page = cosine.markdown.read_text()
    assert "frontier points are intermediate evaluations of a cosine run" in page
    assert any("overstate the error" in c for c in cosine.caveats)


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


def _dump_dom(chromium: str, url: str) -> str:
    """The page's DOM as headless Chromium renders it."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                f"--user-data-dir={profile}",
                "--dump-dom",
                url,
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
    return done.stdout


PLAIN_NUMBER = re.compile(r"^\d+(\.\d+)?$")


def _svg_texts(dom: str) -> list[str]:
    return [html.unescape(t).strip() for t in re.findall(r"<text[^>]*>([^<]*)</text>", dom)]


def test_figures_read_at_a_glance_in_headless_chromium(store: str, tmp_path: Path) -> None:
    """Plain decimal error ticks, '1 seed', no bar glyphs without bars, captions of what is
    drawn: read from the SVGs and the page as Chromium renders them."""
    chromium = _chromium()
    need_service(chromium is not None, "chromium (apt-get install chromium chromium-driver)")
    assert chromium is not None
    one = write_report([("bad_values", store)], tmp_path / "one", log_artifacts=False)
    three = write_report(
        [("good", store)], tmp_path / "three", n_resamples=100, log_artifacts=False
    )
    texts = _svg_texts(_dump_dom(chromium, (one.html.parent / "scaling.svg").as_uri()))
    assert any("(frontier, 1 seed)" in t for t in texts), texts
    assert not any("1 seeds" in t for t in texts)
    # The error axis: its tick labels are plain decimals (no "6×10⁻¹").
    ticks = [t for t in texts if PLAIN_NUMBER.match(t)]
    assert len(ticks) >= 3, texts
    assert all(0 < float(t) <= 1 for t in ticks)
    three_texts = _svg_texts(_dump_dom(chromium, (three.html.parent / "scaling.svg").as_uri()))
    assert any("(frontier, 3 seeds)" in t for t in three_texts)
    # Captions say what is drawn: bars and bands only where there are several seeds.
    one_page = _dump_dom(chromium, one.html.as_uri())
    three_page = _dump_dom(chromium, three.html.as_uri())
    assert "bars: std over seeds" not in one_page and "bootstrap band" not in one_page
    assert "bars: std over seeds" in three_page and "bootstrap band over seeds" in three_page
    assert "one seed per cell, so no intervals: not distinguishable at any target" in one_page
    assert "IID's error range" in three_page and "docs/reading-reports.md" in three_page


def test_one_seed_frontiers_have_no_error_bar_glyphs() -> None:
    frame = comparison_frame(seeds=1)
    runs = seed_runs(frame)
    curves = [frontier_of(r) for r in runs]
    fig = scaling_plot(frame, curves, {})
    (ax,) = fig.axes
    assert not ax.containers  # no ErrorbarContainer: nothing draws a glyph without bars
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels and all(label.endswith("(frontier, 1 seed)") for label in labels)
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks and all(PLAIN_NUMBER.match(t) for t in ticks), ticks


def test_the_extrapolated_part_of_the_fitted_multiplier_is_dashed(
    store: str, tmp_path: Path
) -> None:
    data = seed_runs(comparison_frame())
    comparison = compare(data, n_resamples=50)
    curves = comparison.multiplier_curves
    assert any(c.extrapolated is not None and c.extrapolated.any() for c in curves)
    fig = multiplier_plot(curves, None)
    styles = {line.get_label(): line.get_linestyle() for line in fig.axes[0].get_lines()}
    dashed = [label for label in styles if label.endswith("(fit, extrapolated)")]
    assert dashed and all(styles[label] == "--" for label in dashed)
    assert all(styles[label] == "-" for label in styles if label.endswith("(fit)"))


def test_tuned_values_come_from_every_call_of_the_sweep(tmp_path: Path) -> None:
    """A sweep run twice (say include, then amortize) has a parent per call, each with the
    tuned values of its own runs; the report's table needs them all."""
    from activescale import schema
    from analysis.load import load_tuned

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("tuned")
    parents = []
    for values in ({"a": {"optimizer.lr": 0.01}}, {"b": {"optimizer.lr": 0.02}}):
        parent = client.create_run(experiment, tags={"activescale.sweep": "tuned"}).info.run_id
        client.log_dict(parent, values, schema.ARTIFACT_TUNED)
        parents.append(parent)
    both = load_tuned([("tuned", uri)], {"tuned": parents})
    assert both == {"a": {"optimizer.lr": 0.01}, "b": {"optimizer.lr": 0.02}}
    assert load_tuned([("tuned", uri)], {"tuned": parents[0]}) == {"a": {"optimizer.lr": 0.01}}


def test_the_ledger_shows_the_pretraining_as_charged() -> None:
    """Under amortize a run's total holds a share of its reference's pretraining while the
    counter holds all of it; the ledger's shares add up to the total."""
    from analysis.report import _ledger

    frame = pd.DataFrame(
        {
            "run": ["a", "b"],
            "policy": ["learnability", "learnability"],
            "eval_step": [1, 1],
            "flops": [100.0, 150.0],
            "flops/learner_train": [90.0, 90.0],
            "flops/reference_forward": [5.0, 5.0],
            "flops/reference_pretrain": [50.0, 55.0],  # a: a tenth charged; b: all of it
        }
    )
    table = _ledger(frame)
    assert table.loc["learnability"].sum() == pytest.approx(1.0)
    assert table.loc["learnability", "reference_pretrain"] == pytest.approx((0.05 + 55 / 150) / 2)

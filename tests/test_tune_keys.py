"""Tuning searches only the keys a study's run config reads, and `activescale tune` keeps
library warnings (Optuna's ExperimentalWarning, deprecations) off the user's terminal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from orchestrator.tune.config import TuneConfig
from orchestrator.tune.studies import searched_keys
from tests.test_tune import TUNE_SWEEP, write_sweep
from trainers.config import RunConfig

SPACE = {
    "optimizer.lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
    "selection.temperature": {"type": "float", "low": 0.1, "high": 2.0},
    "scorer.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
}


def config(policy: str, method: str = "topk") -> dict[str, object]:
    return RunConfig.model_validate(
        {
            "scorer": {"arch": "mlp", "size": "xxs"},
            "reference": {"arch": "mlp", "size": "xxs"},
            "selection": {"policy": policy, "method": method},
        }
    ).model_dump(mode="json")


def test_iid_studies_do_not_search_selection_or_scorer_keys() -> None:
    tune = TuneConfig.model_validate({"space": SPACE})
    kept, dropped = searched_keys(config("iid"), tune)
    assert kept == ("optimizer.lr",)
    assert set(dropped) == {"selection.temperature", "scorer.lr"}
    assert "'iid'" in dropped["scorer.lr"]


def test_topk_ignores_the_temperature_and_sample_reads_it() -> None:
    tune = TuneConfig.model_validate({"space": SPACE})
    assert searched_keys(config("learnability"), tune)[0] == ("optimizer.lr", "scorer.lr")
    kept, dropped = searched_keys(config("learnability", "sample"), tune)
    assert kept == tuple(SPACE) and not dropped


def test_a_tuned_method_makes_the_temperature_matter() -> None:
    space = SPACE | {"selection.method": {"type": "categorical", "choices": ["topk", "sample"]}}
    tune = TuneConfig.model_validate({"space": space})
    kept, _ = searched_keys(config("learnability"), tune)
    assert "selection.temperature" in kept


def test_tune_prints_no_library_warning_and_says_what_it_left_out(tmp_path: Path) -> None:
    body = TUNE_SWEEP.replace("  workers: 2\n", "  workers: 1\n").replace("trials: 3", "trials: 2")
    body = body.replace(
        "    optimizer.warmup: {type: float, low: 0.0, high: 0.2}\n",
        "    selection.temperature: {type: float, low: 0.1, high: 2.0}\n",
    )
    path = write_sweep(tmp_path, body)
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "tune", str(path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr and "warn" not in done.stderr.lower(), done.stderr
    assert "tune.space.selection.temperature not searched" in done.stdout
    assert "optimizer.lr=" in done.stdout

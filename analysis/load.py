"""Loading: a sweep's runs from MLflow into one tidy frame (one row per evaluation point).

Columns: sweep, run, policy, learner_size, learner_params, scorer_size, scorer_params,
ratio (scorer/learner params), seed, step, flops (total), every ``flops/<counter>`` of the
ledger, accuracy, error, loss, selected_corrupted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from orchestrator.errors import ActivescaleError

TAG_SWEEP = "activescale.sweep"
TAG_ROLE = "activescale.role"
METRICS = ("flops", "accuracy", "error", "loss", "selected_corrupted", "step")
LEDGER = (
    "learner_train",
    "learner_forward",
    "scorer_forward",
    "scorer_train",
    "reference_forward",
    "reference_train",
    "reference_pretrain",
    "scoring",
)


class LoadError(ActivescaleError):
    """A sweep cannot be found in, or read from, its MLflow tracking store."""


@dataclass
class SweepData:
    frame: pd.DataFrame
    parent_run_ids: dict[str, str]
    skipped: list[str] = field(default_factory=list)


def load_runs(sweeps: list[tuple[str, str]]) -> SweepData:
    """Read finished child runs of each (sweep name, tracking URI) into one frame."""
    from mlflow.tracking import MlflowClient

    rows: list[dict[str, object]] = []
    parents: dict[str, str] = {}
    skipped: list[str] = []
    for name, uri in sweeps:
        client = MlflowClient(tracking_uri=uri)
        experiments = [e.experiment_id for e in client.search_experiments()]
        runs = (
            client.search_runs(
                experiments, filter_string=f"tags.`{TAG_SWEEP}` = '{name}'", max_results=50000
            )
            if experiments
            else []
        )
        if not runs:
            raise LoadError(
                f"sweep {name!r} has no runs in the MLflow store {uri}; "
                "check the name and the tracking URI, or run the sweep first"
            )
        for run in runs:
            if run.data.tags.get(TAG_ROLE) == "sweep":
                parents[name] = run.info.run_id
                continue
            if run.info.status != "FINISHED":
                skipped.append(f"{name}/{run.info.run_name}: status {run.info.status}")
                continue
            rows += _run_rows(client, name, run)
    frame = pd.DataFrame(rows)
    if frame.empty:
        raise LoadError(f"no finished runs in sweeps {[n for n, _ in sweeps]}; nothing to analyse")
    return SweepData(frame, parents, skipped)


def _run_rows(client: Any, sweep: str, run: Any) -> list[dict[str, object]]:
    params = run.data.params
    keys = [*METRICS, *(f"flops/{k}" for k in LEDGER)]
    history: dict[int, dict[str, float]] = {}
    for key in keys:
        for metric in client.get_metric_history(run.info.run_id, key):
            history.setdefault(metric.step, {})[key] = metric.value
    learner_params = int(params.get("learner.params", 0))
    scorer_params = int(params.get("scorer.params", 0))
    base = {
        "sweep": sweep,
        "run": run.info.run_id,
        "run_name": run.info.run_name,
        "policy": params.get("selection.policy", "iid"),
        "keep": float(params.get("selection.keep", 1.0)),
        "learner_arch": params.get("learner.arch"),
        "learner_size": params.get("learner.size"),
        "learner_params": learner_params,
        "scorer_size": params.get("scorer.size") if scorer_params else None,
        "scorer_params": scorer_params,
        "ratio": scorer_params / learner_params if learner_params and scorer_params else None,
        "reference_size": params.get("reference.size")
        if params.get("reference.params", "0") != "0"
        else None,
        "seed": int(params.get("seed", 0)),
    }
    return [base | {"eval_step": step} | values for step, values in sorted(history.items())]

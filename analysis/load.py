"""Loading: a sweep's runs from MLflow into one tidy frame (one row per evaluation point).

Columns: sweep, run, config_id (the store's run id, tag ``activescale.run_id``), run_name,
policy, keep, learner_arch, learner_size, learner_params, scorer_size, scorer_params, ratio
(scorer/learner params), reference_size, seed, eval_step, flops (total), every
``flops/<counter>`` of the ledger, accuracy, error, loss, selected_corrupted.

A config can appear more than once in MLflow (a sweep rerun after a code change, a run
resubmitted by hand). Two finished runs are the same config when they carry the same
``activescale.run_id`` tag or log identical parameters; only the one that finished last is
kept, and the others are listed in ``SweepData.skipped``, so seeds are never double-counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from orchestrator.errors import ActivescaleError
from trainers.flops import COUNTERS

TAG_SWEEP = "activescale.sweep"
TAG_ROLE = "activescale.role"
TAG_RUN_ID = "activescale.run_id"
METRICS = ("flops", "accuracy", "error", "loss", "selected_corrupted", "step")
LEDGER = (*COUNTERS, "scoring")  # every counter of the FLOP ledger, as logged by the trainer


class LoadError(ActivescaleError):
    """A sweep cannot be found in, or read from, its MLflow tracking store."""


@dataclass
class SweepData:
    frame: pd.DataFrame
    parent_run_ids: dict[str, str]
    skipped: list[str] = field(default_factory=list)
    tuned: dict[str, dict[str, Any]] = field(default_factory=dict)  # config id -> tuned values


TUNED_ARTIFACT = "tuning/tuned.json"  # written on the parent run by a from_tuning sweep


def load_tuned(sweeps: list[tuple[str, str]], parents: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Tuned values per config id (``from_tuning`` sweeps), from the parent runs' artifact."""
    import json
    import tempfile

    from mlflow.tracking import MlflowClient

    tuned: dict[str, dict[str, Any]] = {}
    for name, uri in sweeps:
        if name not in parents:
            continue
        client = MlflowClient(tracking_uri=uri)
        names = {a.path for a in client.list_artifacts(parents[name], "tuning")}
        if TUNED_ARTIFACT in names:
            with tempfile.TemporaryDirectory() as tmp:
                path = client.download_artifacts(parents[name], TUNED_ARTIFACT, tmp)
                with open(path) as f:
                    tuned |= json.load(f)
    return tuned


def load_runs(sweeps: list[tuple[str, str]]) -> SweepData:
    """Read the finished child runs of each (sweep name, tracking URI) into one frame.

    Runs that did not finish and duplicates of a config are left out and listed in
    ``skipped``. Of several sweeps, one that cannot be read is skipped (and listed) as
    long as another one can.

    Raises:
        LoadError: no sweep has a finished run (unknown names, empty sweeps).
    """
    from mlflow.tracking import MlflowClient

    rows: list[dict[str, object]] = []
    parents: dict[str, str] = {}
    skipped: list[str] = []
    failures: list[LoadError] = []
    for name, uri in sweeps:
        try:
            parent, finished, not_finished = _sweep_runs(name, uri)
        except LoadError as failure:
            failures.append(failure)
            continue
        if parent is not None:
            parents[name] = parent
        skipped += not_finished
        kept, duplicates = deduplicate(finished)
        skipped += [
            f"{name}/{run.info.run_name}: duplicate of run {kept_id} (same config; "
            "the latest finished run is used)"
            for run, kept_id in duplicates
        ]
        client = MlflowClient(tracking_uri=uri)
        for run in kept:
            rows += _run_rows(client, name, run)
    if not rows:
        reasons = "; ".join(str(f) for f in failures)
        raise LoadError(
            f"no finished runs in sweeps {[n for n, _ in sweeps]}; nothing to analyse"
            + (f" ({reasons})" if reasons else "")
        )
    skipped = [f"sweep not loaded: {failure}" for failure in failures] + skipped
    return SweepData(pd.DataFrame(rows), parents, skipped)


def _sweep_runs(name: str, uri: str) -> tuple[str | None, list[Any], list[str]]:
    """(parent run id, finished child runs, notes on the unfinished ones) of one sweep."""
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri)
        experiments = [e.experiment_id for e in client.search_experiments()]
        runs = (
            client.search_runs(
                experiments, filter_string=f"tags.`{TAG_SWEEP}` = '{name}'", max_results=50000
            )
            if experiments
            else []
        )
    except Exception as failure:  # MLflow raises many types for an unreadable store
        raise LoadError(
            f"cannot read the MLflow store {uri} ({type(failure).__name__}: {failure}); "
            "check the tracking URI"
        ) from failure
    children = [run for run in runs if run.data.tags.get(TAG_ROLE) != "sweep"]
    parent = next((run.info.run_id for run in runs if run.data.tags.get(TAG_ROLE) == "sweep"), None)
    if not children:
        raise LoadError(
            f"sweep {name!r} has no runs in the MLflow store {uri}; "
            "check the name and the tracking URI, or run the sweep first"
        )
    finished = [run for run in children if run.info.status == "FINISHED"]
    not_finished = [
        f"{name}/{run.info.run_name}: status {run.info.status}"
        for run in children
        if run.info.status != "FINISHED"
    ]
    return parent, finished, not_finished


def deduplicate(runs: list[Any]) -> tuple[list[Any], list[tuple[Any, str]]]:
    """Keep the latest-finished run of each config: (kept runs, [(dropped run, kept id)]).

    Two runs are the same config when they share the ``activescale.run_id`` tag, or when
    they have the same run name (the grid point) and agree on every parameter both
    logged. The tag changes with the code version, and newer code logs parameters that
    older runs lack (at their defaults), so neither identity alone finds every duplicate.
    """
    latest_first = sorted(runs, key=lambda run: run.info.end_time or 0, reverse=True)
    kept: list[Any] = []
    dropped: list[tuple[Any, str]] = []
    by_tag: dict[str, str] = {}
    by_name: dict[str, list[Any]] = {}
    for run in latest_first:
        tag = run.data.tags.get(TAG_RUN_ID)
        match = by_tag.get(tag) if tag is not None else None
        if match is None:
            match = next(
                (
                    other.info.run_id
                    for other in by_name.get(run.info.run_name, [])
                    if _same_params(run.data.params, other.data.params)
                ),
                None,
            )
        if match is not None:
            dropped.append((run, match))
            continue
        if tag is not None:
            by_tag[tag] = run.info.run_id
        by_name.setdefault(run.info.run_name, []).append(run)
        kept.append(run)
    return kept, dropped


def _same_params(a: dict[str, str], b: dict[str, str]) -> bool:
    return all(a[key] == b[key] for key in a.keys() & b.keys())


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
        "config_id": run.data.tags.get(TAG_RUN_ID),
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

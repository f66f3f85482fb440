"""Loading: a sweep's runs from MLflow into one tidy frame (one row per evaluation point).

Columns: sweep, run, config_id (the store's run id, tag ``activescale.run_id``), run_name,
policy, keep, learner_arch, learner_size, learner_params, scorer_size, scorer_params, ratio
(scorer/learner params), reference_size, seed, schedule (cosine or wsd), cooldown (wsd's
fraction, else None), eval_step, flops (total: for wsd, of the run sized for the point), every
``flops/<counter>`` of the ledger, accuracy, error, loss, selected_corrupted.

A report covers the runs of a sweep's grid as configured now when it is given their run ids
(``load_runs(..., grids)``); finished runs under the same name outside the grid (an earlier
call with other overrides) are listed as excluded, never mixed in.

A config can appear more than once in MLflow (a sweep rerun after a code change, a run
resubmitted by hand). Two finished runs are the same config when they carry the same
``activescale.run_id`` tag or log identical parameters; only the one that finished last is
kept, and the others are listed in ``SweepData.skipped``, so seeds are never double-counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from activescale import schema
from activescale.errors import LoadError
from activescale.secrets import mask_text, mask_url
from trainers.flops import COUNTERS

METRICS = (
    schema.METRIC_FLOPS,
    schema.METRIC_ACCURACY,
    schema.METRIC_ERROR,
    schema.METRIC_LOSS,
    schema.METRIC_SELECTED_CORRUPTED,
    schema.METRIC_STEP,
)
LEDGER = (*COUNTERS, "scoring")  # every counter of the FLOP ledger, as logged by the trainer


@dataclass(frozen=True)
class Coverage:
    """Which runs a report of one sweep covers: those of its grid as configured now.

    ``grid``: the number of runs in the grid (None: not known, every run of the name is
    read); ``finished``: finished runs read; ``excluded``: names of finished runs under the
    sweep's name that are not in the grid (an earlier call with other overrides)."""

    grid: int | None
    finished: int
    excluded: tuple[str, ...] = ()


@dataclass
class SweepData:
    frame: pd.DataFrame
    parent_run_ids: dict[str, str]
    skipped: list[str] = field(default_factory=list)
    tuned: dict[str, dict[str, Any]] = field(default_factory=dict)  # config id -> tuned values
    coverage: dict[str, Coverage] = field(default_factory=dict)
    # Every parent run of each name (a sweep run again with overrides has one per call).
    all_parents: dict[str, list[str]] = field(default_factory=dict)


EXCLUDED = "not in the grid as configured now"
"""Marks a skipped note about a finished run outside the grid (the HTML groups them)."""


def load_tuned(
    sweeps: list[tuple[str, str]], parents: Mapping[str, str | list[str]]
) -> dict[str, dict[str, Any]]:
    """Tuned values per config id (``from_tuning`` sweeps), from the artifact of every parent
    run given per name (each call of a sweep logs the values its runs took)."""
    import json
    import tempfile

    from mlflow.tracking import MlflowClient

    tuned: dict[str, dict[str, Any]] = {}
    for name, uri in sweeps:
        if name not in parents:
            continue
        client = MlflowClient(tracking_uri=uri)
        ids = parents[name]
        for parent in [ids] if isinstance(ids, str) else ids:
            names = {a.path for a in client.list_artifacts(parent, "tuning")}
            if schema.ARTIFACT_TUNED in names:
                with tempfile.TemporaryDirectory() as tmp:
                    path = client.download_artifacts(parent, schema.ARTIFACT_TUNED, tmp)
                    with open(path) as f:
                        tuned |= json.load(f)
    return tuned


def load_runs(
    sweeps: list[tuple[str, str]], grids: Mapping[str, frozenset[str] | None] | None = None
) -> SweepData:
    """Read the finished child runs of each (sweep name, tracking URI) into one frame.

    ``grids``: per sweep name, the run ids (tag ``activescale.run_id``) of its grid as
    configured now; only those runs are read, and finished runs outside the grid are
    listed in ``skipped`` as excluded (None or absent: every run of the name). Runs that did
    not finish and duplicates of a config are left out and listed in ``skipped``. Of
    several sweeps, one that cannot be read is skipped (and listed) as long as another
    one can.

    Raises:
        LoadError: no sweep has a finished run (unknown names, empty sweeps).
    """
    from mlflow.tracking import MlflowClient

    rows: list[dict[str, object]] = []
    parents: dict[str, str] = {}
    all_parents: dict[str, list[str]] = {}
    skipped: list[str] = []
    failures: list[LoadError] = []
    coverage: dict[str, Coverage] = {}
    for name, uri in sweeps:
        grid = (grids or {}).get(name)
        try:
            found, finished, not_finished = _sweep_runs(name, uri, grid)
        except LoadError as failure:
            failures.append(failure)
            continue
        if found:
            parents[name], all_parents[name] = found[0], found
        excluded = []
        if grid is not None:
            excluded = [r for r in finished if r.data.tags.get(schema.TAG_RUN_ID) not in grid]
            finished = [r for r in finished if r.data.tags.get(schema.TAG_RUN_ID) in grid]
            skipped += [f"{name}/{r.info.run_name}: {EXCLUDED}" for r in excluded]
        skipped += not_finished
        kept, duplicates = deduplicate(finished)
        coverage[name] = Coverage(
            None if grid is None else len(grid),
            len(kept),
            tuple(str(r.info.run_name) for r in excluded),
        )
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
    return SweepData(
        pd.DataFrame(rows), parents, skipped, coverage=coverage, all_parents=all_parents
    )


def _sweep_runs(
    name: str, uri: str, grid: frozenset[str] | None = None
) -> tuple[list[str], list[Any], list[str]]:
    """(parent run ids, the latest first; finished child runs; notes on the unfinished ones of
    the grid) of one sweep."""
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri)
        experiments = [e.experiment_id for e in client.search_experiments()]
        runs = (
            client.search_runs(
                experiments,
                filter_string=f"tags.`{schema.TAG_SWEEP}` = '{name}'",
                max_results=50000,
            )
            if experiments
            else []
        )
    except Exception as failure:  # MLflow raises many types for an unreadable store
        raise LoadError(
            f"cannot read the MLflow store {mask_url(uri)} ({type(failure).__name__}: "
            f"{mask_text(str(failure))}); check the tracking URI"
        ) from None
    children = [run for run in runs if run.data.tags.get(schema.TAG_ROLE) != schema.ROLE_SWEEP]
    parents = [
        run.info.run_id for run in runs if run.data.tags.get(schema.TAG_ROLE) == schema.ROLE_SWEEP
    ]
    if not children:
        raise LoadError(
            f"sweep {name!r} has no runs in the MLflow store {mask_url(uri)}; "
            "check the name and the tracking URI, or run the sweep first"
        )
    finished = [run for run in children if run.info.status == "FINISHED"]
    not_finished = [
        f"{name}/{run.info.run_name}: status {run.info.status}"
        for run in children
        if run.info.status != "FINISHED"
        and (grid is None or run.data.tags.get(schema.TAG_RUN_ID) in grid)
    ]
    return parents, finished, not_finished


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
        tag = run.data.tags.get(schema.TAG_RUN_ID)
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
    keys = [*METRICS, *(schema.ledger_metric(k) for k in LEDGER)]
    history: dict[int, dict[str, float]] = {}
    for key in keys:
        for metric in client.get_metric_history(run.info.run_id, key):
            history.setdefault(metric.step, {})[key] = metric.value
    learner_params = int(params.get(schema.params_key("learner"), 0))
    scorer_params = int(params.get(schema.params_key("scorer"), 0))
    base = {
        "sweep": sweep,
        "run": run.info.run_id,
        "config_id": run.data.tags.get(schema.TAG_RUN_ID),
        "run_name": run.info.run_name,
        "policy": params.get(schema.PARAM_POLICY, "iid"),
        "keep": float(params.get(schema.PARAM_KEEP, 1.0)),
        "learner_arch": params.get(schema.model_param("learner", "arch")),
        "learner_size": params.get(schema.model_param("learner", "size")),
        "learner_params": learner_params,
        "scorer_size": params.get(schema.model_param("scorer", "size")) if scorer_params else None,
        "scorer_params": scorer_params,
        "ratio": scorer_params / learner_params if learner_params and scorer_params else None,
        "reference_size": params.get(schema.model_param("reference", "size"))
        if params.get(schema.params_key("reference"), "0") != "0"
        else None,
        "seed": int(params.get(schema.PARAM_SEED, 0)),
        # Absent: a cosine run (the parameter is left out at its default, as are run ids).
        "schedule": params.get(schema.PARAM_SCHEDULE, "cosine"),
        "cooldown": float(params[schema.PARAM_COOLDOWN])
        if schema.PARAM_COOLDOWN in params
        else None,
    }
    return [base | {"eval_step": step} | values for step, values in sorted(history.items())]

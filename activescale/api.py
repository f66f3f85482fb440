"""The notebook API: load a sweep, plan it, run it and analyse its results from Python.

Each function composes what the CLI does (``orchestrator/cli.py``), so a sweep run here is
the sweep `activescale run` runs: same run ids, same store, same MLflow experiment, same
report afterwards (``activescale report SWEEP.yaml``)::

    from activescale import api

    sweep = api.load("sweeps/quickstart.yaml", overrides={"budget.steps": 200})
    print(api.plan(sweep).line())      # runs, FLOPs, GPU-hours
    print(api.run(sweep))              # inline (this process) or executor="local"
    frame = api.results(sweep)         # one row per evaluation of every finished run
    fits = api.fit(frame)              # curve -> every family fitted, best by AIC first
    table = api.compare(frame)         # compute multipliers over IID, one row per target

Plugins named in the sweep's ``plugins:`` list are imported by :func:`load`, exactly as by
the CLI, and jobs of the local executor import them again in their own processes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from activescale.errors import SubmissionError

if TYPE_CHECKING:
    import pandas as pd

    from analysis.model_selection import CurveAnalysis
    from orchestrator.plan import PlanSummary
    from orchestrator.spec import Sweep

__all__ = ["RunSummary", "compare", "fit", "load", "plan", "results", "run"]

Overrides = Sequence[str] | Mapping[str, Any]


def load(path: str | Path, overrides: Overrides = (), *, check: bool = True) -> Sweep:
    """The sweep at ``path`` (YAML), with ``overrides`` applied after it (``["seed=1"]`` as on
    the command line, or ``{"seed": 1}``) and its plugins imported. ``check``: run the checks
    `activescale validate` runs (data readable, models fit the data), and apply tuned values
    of a ``from_tuning`` sweep."""
    from orchestrator.launch import prepare
    from orchestrator.spec import load_sweep

    if isinstance(overrides, Mapping):
        # JSON is YAML: each value is parsed back exactly as the CLI parses `-o key=value`.
        overrides = [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    sweep = load_sweep(path, tuple(overrides))
    return prepare(sweep) if check else sweep


def plan(sweep: Sweep, flops_per_second: float | None = None) -> PlanSummary:
    """The sweep's estimated FLOPs and GPU-hours (measured per distinct cost, as `plan`)."""
    from orchestrator.plan import plan as plan_configs

    rate = flops_per_second or sweep.settings.plan.flops_per_second
    return plan_configs([r.config for r in sweep.runs], rate)


@dataclass(frozen=True)
class RunSummary:
    """How a sweep's runs stand after :func:`run`: counts by status, failures' last lines."""

    sweep: str
    counts: dict[str, int]
    failed: dict[str, str] = field(default_factory=dict)  # run id -> last line of its error

    def __str__(self) -> str:
        counts = ", ".join(f"{n} {status}" for status, n in self.counts.items() if n)
        lines = [f"sweep {self.sweep}: {counts or 'no runs'}"]
        lines += [f"  run {run_id} failed: {line}" for run_id, line in self.failed.items()]
        return "\n".join(lines)


def run(
    sweep: Sweep,
    executor: Literal["inline", "local"] | None = None,
    *,
    max_parallel: int | None = None,
    store: str | None = None,
) -> RunSummary:
    """Register the sweep and run what has not completed, here (``inline``) or in parallel
    processes (``local``); default: the sweep's executor. Blocks until every run has ended.
    Runs already completed are not run again (run ids are config hashes)."""
    from orchestrator.launch import execute_runs, register, runs_to_execute
    from orchestrator.store import FAILED, RunStore

    settings = sweep.settings.executor
    kind = executor or settings.kind
    if kind not in ("inline", "local"):
        raise SubmissionError(
            f"executor {kind!r}: api.run runs here, inline or local; submit to SLURM with "
            "`activescale submit SWEEP.yaml`, or pass executor='local'"
        )
    update: dict[str, Any] = {"kind": kind}
    if max_parallel is not None:
        update["max_parallel"] = max_parallel
    executor_cfg = settings.model_validate(settings.model_dump() | update)
    sweep = replace(sweep, settings=sweep.settings.model_copy(update={"executor": executor_cfg}))
    run_store = RunStore(store or sweep.store_url)
    registration = register(sweep, run_store)
    rows, _ = runs_to_execute(sweep, run_store)
    if rows:
        execute_runs(sweep, run_store, registration, rows)
    failed = {
        row.id: ((row.error_tail or "").strip().splitlines() or ["?"])[-1]
        for row in run_store.runs(sweep.name, [FAILED])
    }
    return RunSummary(sweep.name, run_store.counts(sweep.name), failed)


def results(*sweeps: Sweep) -> pd.DataFrame:
    """The finished runs of these sweeps as one tidy frame, one row per evaluation (columns:
    ``analysis.load``: policy, learner_size, learner_params, flops, accuracy, error, ...)."""
    from analysis.load import load_runs

    return load_runs([(s.name, s.tracking_uri) for s in sweeps]).frame


def fit(frame: pd.DataFrame) -> dict[str, CurveAnalysis]:
    """Each curve's frontier (a policy, and its scorer size when the sweep varies it) with
    every report family fitted and ranked by AIC: ``fit(frame)["iid"].best``."""
    from analysis.curves import frontier_of, seed_runs, usable_points
    from analysis.model_selection import analyse_frontier

    usable, _ = usable_points(frame)
    return {runs.label: analyse_frontier(frontier_of(runs))[0] for runs in seed_runs(usable)}


def compare(frame: pd.DataFrame, targets: Sequence[float] | None = None) -> pd.DataFrame:
    """Compute multipliers of every prioritised curve over IID (how many times more compute
    IID needs to reach the same error), at ``targets`` (default: the report's, from IID's
    frontier), from the fitted curves where a family fits, else from the frontier points."""
    import numpy as np
    import pandas as pd

    from activescale.errors import FitError
    from analysis.multiplier import compute_multiplier, report_targets

    analyses = fit(frame)
    iid = analyses.get("iid")
    if iid is None:
        raise FitError("no IID curve to compare with; add selection.policy iid to the sweep")

    def curve(analysis: CurveAnalysis) -> Any:
        best = analysis.best
        return best if best is not None else (analysis.frontier.compute, analysis.frontier.error)

    wanted = np.asarray(targets if targets is not None else report_targets(iid.frontier))
    rows = []
    for label, analysis in analyses.items():
        if label == "iid":
            continue
        for target in wanted:
            result = compute_multiplier(curve(iid), curve(analysis), float(target))
            rows.append({"curve": label, **result.__dict__})
    return pd.DataFrame(rows)

"""A notebook, as a script: load the example plugin's sweep, plan it, run it, analyse it.

    python examples/notebook.py [WORKDIR]

Each ``# %%`` cell is one step (they run as cells in Jupyter or VS Code). Nothing here goes
through the command line: ``activescale.api`` composes what `activescale run` does, and the
sweep's plugin (``examples/resnet1d_plugin/activescale_resnet1d/``) is loaded by the sweep's
``plugins:`` list.
"""

# %% Setup: data for the example dataset (a CSV of labelled signals), and a work directory
from __future__ import annotations

import runpy
import sys
import tempfile
from pathlib import Path

from activescale import api

HERE = Path(__file__).resolve().parent
WORKDIR = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="notebook-"))
WORKDIR.mkdir(parents=True, exist_ok=True)
make_csv = runpy.run_path(str(HERE / "resnet1d_plugin" / "activescale_resnet1d" / "make_csv.py"))
data = make_csv["write_csv"](WORKDIR / "signals.csv", n=2000)

# %% Load the sweep, with overrides (a dict, or ["key=value", ...] as on the command line)
sweep = api.load(
    HERE / "resnet1d_plugin" / "sweep.yaml",
    overrides={
        "workdir": str(WORKDIR / "work"),
        "dataset.path": str(data),
        "budget.steps": 60,
        "reference.steps": 40,
    },
)
for planned in sweep.runs:
    print(planned.run_id, planned.label)

# %% Plan: FLOPs measured per distinct run cost, and GPU-hours at the assumed throughput
print(api.plan(sweep).line())

# %% Run here, one run after another (executor="local" runs them in parallel processes)
summary = api.run(sweep, executor="inline")
print(summary)
assert not summary.failed, summary

# %% Results: one row per evaluation of every finished run
frame = api.results(sweep)
print(frame[["policy", "learner_arch", "learner_size", "learner_params", "flops", "error"]])

# %% Fit each curve's frontier (every family, ranked by AIC) and compare the policies
fits = api.fit(frame)
for label, analysis in fits.items():
    best = analysis.best
    print(label, best.family if best is not None else "(not fitted)")
print(api.compare(frame)[["curve", "target", "multiplier", "savings", "reason"]])

"""The MLflow run schema: every tag, parameter, metric and artifact name activescale writes.

The writers (``orchestrator/worker.py``, ``orchestrator/mlflow_runs.py``, the trainer's
``run_params``) and the reader (``analysis/load.py``) use these names, so a renamed field
changes in one place. In MLflow, a sweep is one experiment with one *parent* run (role
``sweep``); every run config of the grid is one *child* run, and every tuning trial one more
child (role ``trial``, tagged with its study rather than the sweep, so reports never count it).

Parameters of a child run are its resolved config, flattened to dotted keys
(``learner.size``, ``selection.policy``, ...), plus the facts the trainer measures: each
model's parameter count (:func:`params_key`), the planned steps and the FLOPs of one step,
the number of processes that trained it, and the code of each plugin it loaded
(:func:`plugin_param`).
Metrics are logged at every evaluation, with the learner step as MLflow's step.
"""

from __future__ import annotations

from typing import Final

# -- tags -----------------------------------------------------------------------------------
TAG_SWEEP: Final = "activescale.sweep"  # on the parent and on every run child
TAG_RUN_ID: Final = "activescale.run_id"  # the run id (config hash) of a run child
TAG_ROLE: Final = "activescale.role"  # ROLE_SWEEP on the parent, ROLE_TRIAL on trials
TAG_PARENT: Final = "mlflow.parentRunId"  # MLflow's own: nests children under the parent
# Trials carry the sweep they tune under this tag, not TAG_SWEEP: a report reads runs only.
TAG_TUNED_SWEEP: Final = "activescale.tuned_sweep"
TAG_STUDY: Final = "activescale.study"
TAG_TRIAL: Final = "activescale.trial"

ROLE_SWEEP: Final = "sweep"
ROLE_TRIAL: Final = "trial"

# MLflow's own names: the code version a run came from (shown in the UI's source column), and
# the experiment kind; MLflow 3's UI reads the kind when it has no workflow-type switch (newer
# builds open on the kind chosen by the URL's ``workflowType`` instead: EXPERIMENT_VIEW_QUERY).
TAG_GIT_COMMIT: Final = "mlflow.source.git.commit"
TAG_SOURCE_NAME: Final = "mlflow.source.name"
TAG_SOURCE_TYPE: Final = "mlflow.source.type"
TAG_GIT_DIRTY: Final = "activescale.git_dirty"  # "true": uncommitted changes in the checkout
TAG_EXPERIMENT_KIND: Final = "mlflow.experimentKind"
EXPERIMENT_KIND_TRAINING: Final = "custom_model_development"  # the UI's "Machine learning"
EXPERIMENT_VIEW_QUERY: Final = "workflowType=machine_learning"  # the UI opens on runs

# -- parameters -----------------------------------------------------------------------------
PARAM_SWEEP_RUNS: Final = "sweep.runs"  # on the parent: runs in the grid
PARAM_POLICY: Final = "selection.policy"
PARAM_KEEP: Final = "selection.keep"
PARAM_SEED: Final = "seed"
PARAM_TOTAL_STEPS: Final = "schedule.total_steps"
PARAM_STEP_FLOPS: Final = "schedule.step_flops"
PARAM_SUPER_BATCH: Final = "super_batch"
# The learning-rate schedule (absent: cosine, left out of the config dump at its default).
PARAM_SCHEDULE: Final = "optimizer.schedule"
PARAM_COOLDOWN: Final = "optimizer.cooldown"
# Processes that trained the run together (data parallel); an execution resource, like the
# device: not part of the run's config or id.
PARAM_WORLD_SIZE: Final = "distributed.world_size"
ROLES: Final = ("learner", "scorer", "reference")  # the models of a run


def params_key(role: str) -> str:
    """The parameter holding a model's parameter count (0: the run has no such model)."""
    return f"{role}.params"


def model_param(role: str, field: str) -> str:
    """The parameter of one field of a model's config, e.g. ``learner.size``."""
    return f"{role}.{field}"


PLUGIN_PREFIX: Final = "plugin."


def plugin_param(name: str) -> str:
    """The parameter recording the code of one plugin a run loaded, e.g.
    ``plugin.activescale_resnet1d`` = ``0.1.0 sha256:...`` (version when installed, and a
    digest of its files). Plugins are not part of the run id (nor is the project's code)."""
    return PLUGIN_PREFIX + name


# -- metrics (each evaluation) --------------------------------------------------------------
METRIC_FLOPS: Final = "flops"  # the ledger total: every pass charged, scoring included
# wsd runs: what the run itself spent so far, every cooldown branch included (``flops`` is the
# compute of a run sized for the point: main branch to the branch point plus its cooldown).
METRIC_RUN_FLOPS: Final = "run_flops"
METRIC_ACCURACY: Final = "accuracy"
METRIC_ERROR: Final = "error"
METRIC_LOSS: Final = "loss"
METRIC_TRAIN_LOSS: Final = "train_loss"
METRIC_SELECTED_CORRUPTED: Final = "selected_corrupted"
METRIC_STEP: Final = "step"
METRIC_OBJECTIVE: Final = "objective"  # a trial's value for its study
FLOPS_PREFIX: Final = "flops/"  # one metric per ledger counter: flops/learner_train, ...


def ledger_metric(counter: str) -> str:
    return FLOPS_PREFIX + counter


# Copies of the evaluation metrics with the total compute as MLflow's step, in MFLOPs (MLflow
# steps are integers; int64 holds 9e24 FLOPs): in the MLflow UI their default "Step" x-axis is
# compute, so every run's error-vs-FLOPs curve is one chart, no chart to build by hand.
BY_COMPUTE_PREFIX: Final = "by_mflops/"
BY_COMPUTE_METRICS: Final = (METRIC_ERROR, METRIC_ACCURACY, METRIC_LOSS)
FLOPS_PER_COMPUTE_STEP: Final = 1e6


def by_compute_metric(metric: str) -> str:
    return BY_COMPUTE_PREFIX + metric


# -- artifacts (on the parent run) ----------------------------------------------------------
ARTIFACT_TUNED: Final = "tuning/tuned.json"  # from_tuning: the values each run took
ARTIFACT_REPORT: Final = "report"  # the report's files

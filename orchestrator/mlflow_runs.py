"""MLflow bookkeeping shared by runs and tuning trials: the sweep's experiment and parent run,
one child run per piece of work, its status from start to end, the code version it came from
(names: activescale/schema.py).

A run config has exactly one child across all its attempts (found again by its run-id tag);
a tuning trial gets a child of its own, and a retried trial ends its dead predecessor's.
Training inside :func:`tracked` marks the child RUNNING, then FINISHED, FAILED or KILLED by
how the block ends; the metrics go through :class:`trainers.tracking.FlushingMLflowLogger`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from activescale.schema import (
    EXPERIMENT_KIND_TRAINING,
    EXPERIMENT_VIEW_QUERY,
    PARAM_SWEEP_RUNS,
    ROLE_SWEEP,
    TAG_EXPERIMENT_KIND,
    TAG_GIT_COMMIT,
    TAG_GIT_DIRTY,
    TAG_PARENT,
    TAG_ROLE,
    TAG_SOURCE_NAME,
    TAG_SOURCE_TYPE,
    TAG_SWEEP,
)

if TYPE_CHECKING:
    from orchestrator.spec import Sweep
    from orchestrator.store import RunStore

# How a block that raised ends its child run: an MLflow status, or None to leave it RUNNING
# (a SLURM job that is requeued goes on in its next attempt).
EndStatus = Callable[[BaseException], str | None]


def client_for(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def source_tags(code_version: str | None) -> dict[str, str]:
    """MLflow's source tags for a run from ``code_version`` (``<commit>`` or
    ``<commit>-dirty``, see ``orchestrator.worker.code_version``): the commit and whether
    the checkout had uncommitted changes; nothing when the code is not a git checkout."""
    tags = {TAG_SOURCE_NAME: "activescale", TAG_SOURCE_TYPE: "JOB"}
    if code_version:
        commit, dirty = code_version.removesuffix("-dirty"), code_version.endswith("-dirty")
        tags |= {TAG_GIT_COMMIT: commit, TAG_GIT_DIRTY: "true" if dirty else "false"}
    return tags


def ensure_parent(
    sweep: Sweep, store: RunStore, code_version: str | None = None
) -> tuple[str, str]:
    """The sweep's MLflow experiment and parent run, created on first use (ids kept in the
    run store, so every command and job of the sweep finds the same ones). The parent is
    RUNNING until :func:`end_parent` gives it the sweep's outcome; registering the sweep
    again (another `run` or `submit`) makes it RUNNING again. The experiment is marked as a
    model-training one (:data:`activescale.schema.TAG_EXPERIMENT_KIND`)."""
    row = store.sweep(sweep.name)
    client = client_for(sweep.tracking_uri)
    if row is not None and row.mlflow_parent_run_id and row.mlflow_experiment_id:
        try:
            client.get_run(row.mlflow_parent_run_id)
        except Exception:  # the tracking store was moved or wiped: make a new parent
            pass
        else:
            client.update_run(row.mlflow_parent_run_id, status="RUNNING")
            for key, value in source_tags(code_version).items():
                client.set_tag(row.mlflow_parent_run_id, key, value)
            return row.mlflow_experiment_id, row.mlflow_parent_run_id
    experiment = client.get_experiment_by_name(sweep.experiment)
    if experiment is None:
        artifacts = None
        if sweep.tracking_uri.startswith("sqlite:"):
            artifacts = (sweep.workdir / "mlartifacts").as_uri()
        experiment_id = client.create_experiment(
            sweep.experiment,
            artifact_location=artifacts,
            tags={TAG_EXPERIMENT_KIND: EXPERIMENT_KIND_TRAINING},
        )
    else:
        experiment_id = experiment.experiment_id
        client.set_experiment_tag(experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND_TRAINING)
    parent = client.create_run(
        experiment_id,
        run_name=f"sweep:{sweep.name}",
        tags={TAG_SWEEP: sweep.name, TAG_ROLE: ROLE_SWEEP, **source_tags(code_version)},
    )
    client.log_param(parent.info.run_id, PARAM_SWEEP_RUNS, len(sweep.runs))
    store.set_mlflow_parent(sweep.name, experiment_id, parent.info.run_id)
    return experiment_id, parent.info.run_id


def end_parent(tracking_uri: str, parent_run_id: str, status: str) -> None:
    """End the sweep's parent run with the sweep's outcome (FINISHED, FAILED or KILLED)."""
    client_for(tracking_uri).set_terminated(parent_run_id, status=status)


def experiment_url(tracking_uri: str, experiment_id: str) -> str | None:
    """The experiment's page in the MLflow UI, opening on its runs (None without a server)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}?{EXPERIMENT_VIEW_QUERY}"


def find_child(client: Any, experiment_id: str, tags: dict[str, str]) -> str | None:
    """The child run carrying all these tags, if one exists."""
    query = " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
    found = client.search_runs([experiment_id], filter_string=query, max_results=1)
    return found[0].info.run_id if found else None


def create_child(
    client: Any, experiment_id: str, parent_run_id: str, name: str, tags: dict[str, str]
) -> str:
    """A new child run of the sweep's parent run."""
    run = client.create_run(experiment_id, run_name=name, tags={TAG_PARENT: parent_run_id, **tags})
    return str(run.info.run_id)


def _failed(_: BaseException) -> str | None:
    return "FAILED"


@contextlib.contextmanager
def tracked(client: Any, run_id: str, end_status: EndStatus = _failed) -> Iterator[None]:
    """Mark the child RUNNING for the block; FINISHED if it ends normally, else
    ``end_status(error)`` (FAILED by default; None leaves the run RUNNING)."""
    client.update_run(run_id, status="RUNNING")
    try:
        yield
    except BaseException as err:
        status = end_status(err)
        if status is not None:
            client.set_terminated(run_id, status=status)
        raise
    client.set_terminated(run_id, status="FINISHED")

"""Where metrics go. The training loop talks to a :class:`MetricLogger` and nothing else.

``MetricLogger`` is the no-op base (used by tests and benchmarks); ``MLflowLogger`` buffers
metrics and sends them with ``MlflowClient.log_batch`` (one request per flush, at most 1000
metrics each, MLflow's limit), so logging costs a few requests per run, not one per value.
It also logs error, accuracy and loss a second time with the total compute (MFLOPs) as
MLflow's step (``activescale.schema.BY_COMPUTE_PREFIX``), so the MLflow UI charts them
against compute without configuration.
"""

from __future__ import annotations

import math
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from activescale import schema
from activescale.visible import one_line


class TrackingConfig(BaseModel):
    """MLflow tracking settings."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    uri: str | None = Field(
        None,
        min_length=1,
        description=(
            "MLflow tracking URI. null: sqlite:///<workdir>/mlflow.db (one machine only); "
            "on a cluster use an `mlflow server` URL (http://host:5000) backed by PostgreSQL."
        ),
    )
    experiment: str | None = Field(
        None, min_length=1, description="MLflow experiment; null: the sweep name."
    )

    @field_validator("uri")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        return one_line(value)


class MetricLogger:
    """No-op logger; subclasses send params and metrics somewhere."""

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def flush(self) -> None:
        pass


class MemoryLogger(MetricLogger):
    """Keeps everything in memory (tests, benchmarks, and the inline executor's summaries)."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.history: list[tuple[int, dict[str, float]]] = []

    def log_params(self, params: dict[str, Any]) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.history.append((step, dict(metrics)))


class MLflowLogger(MetricLogger):
    """Batched logging into one existing MLflow run."""

    MAX_METRICS_PER_BATCH = 1000
    MAX_PARAMS_PER_BATCH = 100

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.run_id = run_id
        self._pending: list[Any] = []

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        items = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
        for i in range(0, len(items), self.MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + self.MAX_PARAMS_PER_BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), timestamp, step) for k, v in metrics.items()]
        flops = metrics.get(schema.METRIC_FLOPS)
        if flops is not None and math.isfinite(flops):  # the same values, indexed by compute
            compute_step = round(flops / schema.FLOPS_PER_COMPUTE_STEP)
            self._pending += [
                Metric(schema.by_compute_metric(k), float(metrics[k]), timestamp, compute_step)
                for k in schema.BY_COMPUTE_METRICS
                if k in metrics
            ]
        if len(self._pending) >= self.MAX_METRICS_PER_BATCH:
            self.flush()

    def flush(self) -> None:
        while self._pending:
            batch = self._pending[: self.MAX_METRICS_PER_BATCH]
            self.client.log_batch(self.run_id, metrics=batch)
            self._pending = self._pending[self.MAX_METRICS_PER_BATCH :]


class FlushingMLflowLogger(MLflowLogger):
    """Sends each evaluation at once: the trainer checkpoints right after logging, so a run
    killed later and resumed from that checkpoint has lost none of its metric history."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        super().log_metrics(metrics, step)
        self.flush()

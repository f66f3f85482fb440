"""Cost of a sweep before anything runs (``activescale plan``; ``submit`` prints the same).

Each run's FLOPs come from the trainers' ledger estimate (``trainers.loop.estimate_flops``:
one measured step times the step count, plus the reference pretraining it is charged).
GPU-hours assume one sustained throughput for every run: ``FLOPs / flops_per_second / 3600``.
Runs that differ only in what cannot change their cost (seed, learning rate, evaluation
cadence) share one estimate, so a 10k-run sweep costs a handful of measurements.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from trainers.config import RunConfig
    from trainers.loop import FlopEstimate

# Settings that change neither the step cost nor the step count.
COST_FREE_KEYS = ("seed", "optimizer", "eval", "device", "checkpoint_every")


class PlanConfig(BaseModel):
    """How `plan` turns FLOPs into time."""

    model_config = ConfigDict(extra="forbid")

    flops_per_second: float = Field(
        1e14,
        gt=0,
        description=(
            "Sustained training throughput per GPU assumed for GPU-hours (FLOP/s); "
            "e.g. ~4e14 for bf16 on an H100 at 40% utilisation."
        ),
    )


@dataclass(frozen=True)
class PlanSummary:
    runs: int
    distinct_costs: int  # how many estimates were measured
    total_flops: float
    flops_per_second: float

    @property
    def gpu_hours(self) -> float:
        return self.total_flops / self.flops_per_second / 3600

    def line(self) -> str:
        return (
            f"{self.runs} runs, {self.total_flops:.3g} FLOPs in total, "
            f"~{self.gpu_hours:.3g} GPU-hours at {self.flops_per_second:.3g} FLOP/s"
        )


def cost_key(config: dict[str, Any]) -> str:
    """Configs with equal keys have equal FLOP estimates."""
    return json.dumps(
        {k: v for k, v in config.items() if k not in COST_FREE_KEYS}, sort_keys=True, default=str
    )


def plan(
    configs: Sequence[RunConfig],
    flops_per_second: float,
    estimate: Callable[[RunConfig], FlopEstimate] | None = None,
) -> PlanSummary:
    """Total estimated FLOPs and GPU-hours of these runs (one estimate per distinct cost key)."""
    if estimate is None:
        from trainers.loop import estimate_flops

        estimate = estimate_flops
    cache: dict[str, float] = {}
    total = 0.0
    for config in configs:
        key = cost_key(config.model_dump(mode="json"))
        if key not in cache:
            cache[key] = estimate(config).total
        total += cache[key]
    return PlanSummary(len(configs), len(cache), total, flops_per_second)

"""Planning: what a sweep's runs need and cost, known before anything runs.

:func:`preflight` makes the checks a config cannot make alone (data files readable, models
that fit the data); ``orchestrator.launch.prepare`` calls it on every loaded sweep before
anything is written.

Cost (``activescale plan``; ``submit`` prints the same): each run's FLOPs come from
:func:`estimate_flops` (one measured step times the step count, plus the reference
pretraining it is charged, all measured by the trainers' FLOP meter).
GPU-hours count every device a run holds: a run's training FLOPs (the sum over its processes)
at ``flops_per_second`` per process take ``FLOPs / (processes x flops_per_second)`` seconds of
wall time (perfect data-parallel scaling), plus its charged reference pretraining on one
process, during which it holds ``nodes x gpus_per_node`` devices (one per process where no
GPUs are asked for): GPU-hours = devices x wall time. With one process per GPU the training
part is ``FLOPs / flops_per_second / 3600`` whatever the number of GPUs; GPUs a run holds but
does not use (more GPUs than tasks) count too.
Runs that differ only in what cannot change their cost (seed, learning rate, evaluation
cadence) share one estimate, so a 10k-run sweep costs a handful of measurements.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from activescale.errors import ActivescaleError, ConfigError
from orchestrator.sbatch import SlurmResources
from trainers.cooldown import branch_steps
from trainers.data import dataset_config, dataset_facts
from trainers.data.checks import check_facts
from trainers.flops import FlopLedger, measure_train_flops
from trainers.loop import Models, plan_schedule
from trainers.reference import reference_data
from trainers.tasks import DataSpec, task_for

if TYPE_CHECKING:
    from torch import nn

    from trainers.config import RunConfig
    from trainers.models import ModelConfig

# Settings that change neither the step cost nor the step count.
COST_FREE_KEYS = ("seed", "optimizer", "eval", "device", "checkpoint_every")


class PlanConfig(BaseModel):
    """How `plan` turns FLOPs into time."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

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
    gpu_hours: float  # devices held x wall time, summed over runs (module docstring)

    @classmethod
    def combined(cls, parts: Sequence[PlanSummary], flops_per_second: float) -> PlanSummary:
        """The summary of runs with disjoint cost keys (e.g. one part per learner size)."""
        return cls(
            sum(p.runs for p in parts),
            sum(p.distinct_costs for p in parts),
            sum(p.total_flops for p in parts),
            flops_per_second,
            sum(p.gpu_hours for p in parts),
        )

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
    resources: Callable[[RunConfig], SlurmResources] | None = None,
) -> PlanSummary:
    """Total estimated FLOPs and GPU-hours of these runs (one estimate per distinct cost key);
    ``resources``: what each run holds (default: one process on one device)."""
    estimate = estimate or estimate_flops
    cache: dict[str, FlopEstimate] = {}
    total = device_seconds = 0.0
    for config in configs:
        key = cost_key(config.model_dump(mode="json"))
        if key not in cache:
            cache[key] = estimate(config)
        found = cache[key]
        total += found.total
        held = resources(config) if resources else None
        # Steps, the cooldowns' included, spread over the processes; the rest, the
        steps = (found.steps + found.cooldown_steps) * found.step_flops
        pretrain = found.total - steps  # charged reference pretraining, runs on one of them
        wall_s = (steps / (held.processes if held else 1) + pretrain) / flops_per_second
        device_seconds += (held.devices if held else 1) * wall_s
    return PlanSummary(len(configs), len(cache), total, flops_per_second, device_seconds / 3600)


# ---------------------------------------------------------------------------------------------
# Before anything runs: tuned values, preflight checks, FLOP estimates


@dataclass(frozen=True)
class FlopEstimate:
    """A run's FLOPs before it runs (``activescale plan``): measured per step, times steps."""

    step_flops: float
    steps: int
    reference_pretrain: float  # full pretraining cost (what `include` charges)
    total: float  # what the run spends: its ledger total, and its cooldown branches' (wsd)
    cooldown_steps: int = 0  # wsd: learner steps in cooldown branches, beyond ``steps``


@functools.lru_cache(maxsize=64)
def _dataset_facts(data_json: str) -> tuple[DataSpec, int]:
    """Shapes of a dataset and the size of its clean split, from the dataset's entry (which
    loads files when it cannot say without, so a missing or malformed file fails here)."""
    cfg = dataset_config(data_json)
    facts = dataset_facts(cfg)
    check_facts(cfg.name, facts.input_shape, facts.num_classes)  # before any model is built
    spec = DataSpec(facts.input_shape, facts.num_classes, facts.target_shape, facts.vocab_size)
    return spec, facts.clean_size


def _dataset_spec(data_json: str) -> DataSpec:
    return _dataset_facts(data_json)[0]


def data_spec_of(cfg: RunConfig) -> DataSpec:
    """The shapes of a run's data (each distinct dataset is read once)."""
    return _dataset_spec(cfg.dataset.model_dump_json())


def preflight(configs: Iterable[RunConfig]) -> None:
    """Fail before anything runs on what a config cannot know alone: data files that are
    missing or malformed, models that do not fit the data's shape, transferred references
    whose data differ in shape. Each distinct dataset is read, and each model built, once, on
    torch's meta device: shapes are checked, no memory is allocated (a model too large for
    the machine is caught by ``orchestrator.plausibility``, not by building it)."""
    checked: set[tuple[str, str, DataSpec]] = set()
    for cfg in configs:
        # Errors start with the key they are about ("dataset: ..."), for file:line.
        spec = _at("dataset", _dataset_spec, cfg.dataset.model_dump_json())
        if cfg.uses_reference and cfg.reference and cfg.reference.dataset is not None:
            other = _at("reference.dataset", _dataset_spec, cfg.reference.dataset.model_dump_json())
            if other != spec:
                raise ConfigError(
                    f"reference.dataset: gives inputs {other.input_shape} with "
                    f"{other.num_classes} classes, but dataset gives {spec.input_shape} with "
                    f"{spec.num_classes}; a transferred reference must match the target's shapes"
                )
        for role, model_cfg in _roles_used(cfg):
            key = (cfg.task, model_cfg.model_dump_json(include={"arch", "size", "patch"}), spec)
            if key not in checked:
                checked.add(key)
                with torch.device("meta"):
                    _at(role, task_for(cfg).build, model_cfg, spec, 0)


_T = TypeVar("_T")


def _at(key: str, function: Callable[..., _T], *args: Any) -> _T:
    """``function(*args)``; a named error it raises gets ``key: `` in front of its message."""
    try:
        return function(*args)
    except ActivescaleError as err:
        raise type(err)(f"{key}: {err}") from None


def _roles_used(cfg: RunConfig) -> list[tuple[str, ModelConfig]]:
    used: list[tuple[str, ModelConfig]] = [("learner", cfg.learner)]
    if cfg.uses_scorer and cfg.scorer:
        used.append(("scorer", cfg.scorer))
    if cfg.uses_reference and cfg.reference:
        used.append(("reference", cfg.reference))
    return used


def estimate_flops(cfg: RunConfig, device: str = "cpu") -> FlopEstimate:
    """The run's ledger total without training: one measured step x steps, plus the reference.

    ``device="meta"`` counts the same FLOPs on tensors without memory (shapes only), so a run
    of any size can be priced (``orchestrator.plausibility``)."""
    if device != "cpu":
        with torch.device(device):
            return _estimate_flops(cfg, torch.device(device))
    return _estimate_flops(cfg, torch.device("cpu"))


def _estimate_flops(cfg: RunConfig, device: torch.device) -> FlopEstimate:
    task, spec = task_for(cfg), _dataset_spec(cfg.dataset.model_dump_json())

    def build(model_cfg: ModelConfig | None, used: bool) -> nn.Module | None:
        return task.build(model_cfg, spec, 0) if used and model_cfg is not None else None

    reference = build(cfg.reference, cfg.uses_reference)
    pretrain = 0.0
    if cfg.reference is not None and reference is not None and cfg.reference.mode == "pretrained":
        # as trainers.reference.pretrain: batches never larger than the clean split it trains on
        clean = _dataset_facts(reference_data(cfg).model_dump_json())[1]
        batch = min(cfg.reference.batch_size, clean)
        x, y = task.dummy_batch(batch, spec, device)
        pretrain = cfg.reference.steps * float(measure_train_flops(reference, x, y, task.loss))
    models = Models(
        learner=task.build(cfg.learner, spec, 0),
        scorer=build(cfg.scorer, cfg.uses_scorer),
        reference=reference,
        reference_pretrain_flops=pretrain,
    )
    schedule = plan_schedule(cfg, models, spec)
    ledger = FlopLedger(cfg.reference_cost)
    ledger.add("reference_pretrain", pretrain)
    cooldowns = branch_steps(schedule.branches)
    steps = schedule.total_steps + cooldowns
    total = ledger.reference_pretrain_charged + steps * schedule.step_flops
    return FlopEstimate(schedule.step_flops, schedule.total_steps, pretrain, total, cooldowns)

"""Is a run plausible on its machine? Memory and length from the plan, before anything runs.

``batch_size: 1000000000000`` or a model with two billion outputs passes every type check and
fails only when memory is allocated (or the machine starts swapping); ``budget.steps:
1000000000000000`` runs for years. Both are caught here from the plan alone, with models built
and FLOPs counted on torch's meta device (shapes, no memory):

- **memory**: the model state (weights, gradients and AdamW moments of every trained model:
  16 bytes a parameter, 4 for a frozen reference), the activations of the largest step
  (every module output of the training forward, twice for the backward; the largest output of
  the scoring and evaluation passes), the generated data and the interpreter, against the
  machine's RAM (``local`` runs ``max_parallel`` of them at once), the GPU's memory when a
  run uses CUDA here, or a SLURM job's ``mem_gb`` (else the largest node of its partition).
  The estimate is rough on purpose: it catches what cannot fit, not what barely fits.
- **length**: planned steps x batch (plus the reference's pretraining) over
  :data:`MAX_EXAMPLES` needs ``--allow-long``; the message gives the FLOPs and the time at
  ``plan.flops_per_second``.

One estimate per distinct cost (``orchestrator.plan.cost_key``), so a 10k-run sweep costs a
few. Problems are :class:`activescale.errors.ConfigError` naming the run, the key and what to
change.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from activescale.errors import ConfigError
from orchestrator.plan import FlopEstimate, cost_key, data_spec_of, estimate_flops
from trainers.lookahead import lookahead_steps
from trainers.models import count_params
from trainers.reference import reference_data
from trainers.tasks import DataSpec, task_for

if TYPE_CHECKING:
    from trainers.config import RunConfig

MAX_EXAMPLES = 1e9  # learner examples per run (steps x batch) without --allow-long
PROCESS_BYTES = 0.5e9  # a worker process before its data and models (torch, MLflow)
TRAINED_BYTES = 16  # per parameter: fp32 weight, gradient, two AdamW moments
FROZEN_BYTES = 4  # per parameter: a frozen reference's fp32 weights


@dataclass(frozen=True)
class Capacity:
    """Where a run's memory goes: host bytes (and GPU bytes when it uses one), as named in
    messages, and how many runs share them at once."""

    host: float
    host_name: str
    gpu: float | None = None
    gpu_name: str = ""
    parallel: int = 1


@dataclass(frozen=True)
class Footprint:
    """A run's estimated peak memory, in bytes, by what it is spent on."""

    state: float  # trained models' weights + gradients + moments, frozen ones' weights
    activations: float  # the largest step's intermediates
    data: float  # generated datasets held in memory
    params: dict[str, int]  # parameters per role
    culprit: str  # the dotted key to change first

    @property
    def device(self) -> float:
        return self.state + self.activations

    @property
    def host(self) -> float:
        return PROCESS_BYTES + self.data + self.state + self.activations


def check_runs(
    runs: list[tuple[str, dict[str, Any], RunConfig]],
    capacity_for: Callable[[RunConfig], Capacity],
    flops_per_second: float,
    allow_long: bool,
    where: Callable[[str], str],
) -> None:
    """Every run's memory against its capacity, and its length against MAX_EXAMPLES (unless
    ``allow_long``). ``runs``: (run id, grid values, config); ``where(key)``: file:line."""
    seen: set[str] = set()
    for run_id, label, cfg in runs:
        key = cost_key(cfg.model_dump(mode="json")) + repr(capacity_for(cfg))
        if key in seen:
            continue
        seen.add(key)
        footprint = estimate_footprint(cfg)
        _check_memory(run_id, label, cfg, footprint, capacity_for(cfg), where)
        if not allow_long:
            _check_length(run_id, label, cfg, flops_per_second, where)


def estimate_footprint(cfg: RunConfig) -> Footprint:
    """The run's peak memory, estimated on the meta device (nothing allocated)."""
    task, spec = task_for(cfg), data_spec_of(cfg)
    batch, super_batch = cfg.batch_size, cfg.selection.super_batch_size(cfg.batch_size)
    with torch.device("meta"):
        configs = dict(_models(cfg))
        models = {role: task.build(m, spec, 0) for role, m in configs.items()}

        params = {role: count_params(model) for role, model in models.items()}

        def activations_of(role: str, rows: int) -> tuple[float, float]:
            key = (cfg.task, type(configs[role]).__name__, configs[role].model_dump_json(), spec)
            if key not in PER_EXAMPLE:
                PER_EXAMPLE[key] = _per_example(task, configs[role], models[role], spec)
            total, largest = PER_EXAMPLE[key]
            return total * rows, largest * rows

        frozen = _frozen_reference(cfg)
        state: float = sum(
            (FROZEN_BYTES if role == "reference" and frozen else TRAINED_BYTES) * n
            for role, n in params.items()
        )
        parts = {"batch_size": 0.0, "selection.keep": 0.0, "eval.batch_size": 0.0}
        for role in models:
            if role == "reference" and frozen:
                continue
            parts["batch_size"] += 2 * activations_of(role, batch)[0]
        block = lookahead_steps(super_batch, spec.input_shape) * super_batch
        inputs = block * math.prod(spec.input_shape) * 4
        for role in _scoring_roles(cfg):
            rows = block if role == "reference" and frozen else super_batch
            largest = activations_of(role, rows)[1]
            parts["selection.keep"] = max(parts["selection.keep"], 3 * largest + inputs)
        largest = activations_of("learner", cfg.eval.batch_size)[1]
        parts["eval.batch_size"] = 3 * largest
        activations = parts["batch_size"] + max(parts["selection.keep"], parts["eval.batch_size"])
        largest_model = f"{max(params, key=lambda r: params[r])}.size"
        if frozen and cfg.reference is not None:  # pretraining comes first, alone
            ref_batch = min(cfg.reference.batch_size, max(1, _clean_size(cfg)))
            pretrain_state = TRAINED_BYTES * params["reference"]
            pretrain = 2 * activations_of("reference", ref_batch)[0]
            if pretrain_state + pretrain > state + activations:
                state, activations = pretrain_state, pretrain
                parts, largest_model = {"reference.batch_size": pretrain}, "reference.size"
    data = _data_bytes(cfg, spec)
    if data > max(state, activations):
        culprit = "dataset.train_size"
    elif state >= activations:
        culprit = largest_model
    else:
        culprit = max(parts, key=lambda k: parts[k])
    return Footprint(state, activations, data, params, culprit)


def _check_memory(
    run_id: str,
    label: dict[str, Any],
    cfg: RunConfig,
    footprint: Footprint,
    capacity: Capacity,
    where: Callable[[str], str],
) -> None:
    detail = (
        f"model state {_gb(footprint.state)} for "
        + ", ".join(f"{n:.3g} {role} parameters" for role, n in footprint.params.items())
        + f"; activations {_gb(footprint.activations)} (batch_size {cfg.batch_size}, "
        f"super-batch {cfg.selection.super_batch_size(cfg.batch_size)}, eval.batch_size "
        f"{cfg.eval.batch_size}); data {_gb(footprint.data)}"
    )
    problem = None
    if capacity.gpu is not None and footprint.device > capacity.gpu:
        problem = f"needs ~{_gb(footprint.device)} of GPU memory, more than {capacity.gpu_name}"
    needed = footprint.host * capacity.parallel
    if problem is None and needed > capacity.host:
        at_once = f" x {capacity.parallel} runs at once" if capacity.parallel > 1 else ""
        problem = f"needs ~{_gb(footprint.host)} of memory{at_once}, more than {capacity.host_name}"
    if problem is None:
        return
    fix = (
        "Lower executor.max_parallel, or the sizes above."
        if capacity.parallel > 1 and footprint.host <= capacity.host
        else f"Lower {footprint.culprit} (or the other sizes named)."
    )
    raise ConfigError(
        f"{where(footprint.culprit)}: run {run_id}{_label(label)} {problem} ({detail}). {fix}"
    )


def _check_length(
    run_id: str,
    label: dict[str, Any],
    cfg: RunConfig,
    flops_per_second: float,
    where: Callable[[str], str],
) -> None:
    key = "budget.flops" if cfg.budget.flops is not None else "budget.steps"
    pretraining = 0.0
    if cfg.reference is not None and _frozen_reference(cfg):
        pretraining = float(cfg.reference.steps) * cfg.reference.batch_size
    steps = cfg.budget.steps if cfg.budget.flops is None else None
    if steps is not None and steps * cfg.batch_size + pretraining <= MAX_EXAMPLES:
        return  # a step budget within the limit: no FLOPs to count (the meta pass costs ~1 s)
    try:
        estimate: FlopEstimate = estimate_flops(cfg, device="meta")
    except ConfigError as err:  # e.g. a FLOP budget below one step
        raise ConfigError(f"{where(key)}: run {run_id}{_label(label)}: {err}") from None
    examples = float(estimate.steps) * cfg.batch_size + pretraining
    if examples <= MAX_EXAMPLES:
        return
    hours = estimate.total / flops_per_second / 3600
    raise ConfigError(
        f"{where(key)}: run {run_id}{_label(label)} plans {estimate.steps:,} steps x batch_size "
        f"{cfg.batch_size} = {examples:.3g} examples, more than the {MAX_EXAMPLES:.0e} a run may "
        f"train without --allow-long: {estimate.total:.3g} FLOPs, ~{_duration(hours)} at "
        f"plan.flops_per_second {flops_per_second:.3g} FLOP/s. Lower {key}, or pass "
        "--allow-long if the run is meant to be this long."
    )


def _models(cfg: RunConfig) -> Iterator[tuple[str, Any]]:
    yield "learner", cfg.learner
    if cfg.uses_scorer and cfg.scorer is not None:
        yield "scorer", cfg.scorer
    if cfg.uses_reference and cfg.reference is not None:
        yield "reference", cfg.reference


def _frozen_reference(cfg: RunConfig) -> bool:
    return bool(cfg.uses_reference and cfg.reference and cfg.reference.mode == "pretrained")


def _scoring_roles(cfg: RunConfig) -> list[str]:
    from trainers.selection import POLICIES

    return list(POLICIES[cfg.selection.policy].needs)


# Bytes per example of a model's forward pass, by (task, model config, data spec): measured
# once per process on PROBE_ROWS examples and scaled (every leaf module's output has one row
# per example, so its size is linear in the rows), instead of a meta-device pass per run.
PER_EXAMPLE: dict[tuple[str, str, str, DataSpec], tuple[float, float]] = {}
PROBE_ROWS = 4
CPU_PROBE_PARAMS = 4_000_000  # 16 MB of fp32 weights: probed on the CPU


def _per_example(task: Any, cfg: Any, meta_model: nn.Module, spec: DataSpec) -> tuple[float, float]:
    """(sum, largest) bytes per example of the model's forward pass.

    A model of at most :data:`CPU_PROBE_PARAMS` parameters is copied to the CPU with zero
    weights and run there on one thread (a few milliseconds): a meta-device forward costs a
    second on first use (torch's meta kernels import its compiler). Larger models, or any
    that the CPU pass cannot run, are probed on the meta device, which allocates nothing."""
    if count_params(meta_model) <= CPU_PROBE_PARAMS:
        threads = torch.get_num_threads()
        try:
            with torch.device("cpu"):
                model = copy.deepcopy(meta_model).to_empty(device="cpu")
                with torch.no_grad():
                    for tensor in (*model.parameters(), *model.buffers()):
                        tensor.zero_()
                # One thread: no OpenMP region, which would hang in a process forked from
                # one that had used OpenMP.
                torch.set_num_threads(1)
                total, largest = forward_bytes(task, model, spec, PROBE_ROWS, torch.device("cpu"))
            return total / PROBE_ROWS, largest / PROBE_ROWS
        except Exception:  # a plugin's forward may need its real weights: probe on meta
            pass
        finally:
            torch.set_num_threads(threads)
    total, largest = forward_bytes(task, meta_model, spec, PROBE_ROWS, torch.device("meta"))
    return total / PROBE_ROWS, largest / PROBE_ROWS


def forward_bytes(
    task: Any, model: nn.Module, spec: DataSpec, rows: int, device: torch.device
) -> tuple[float, float]:
    """(sum, largest) bytes of the outputs of every leaf module in a forward pass of ``rows``
    examples: what a training forward keeps for its backward, and a no-grad pass's peak."""
    total, largest = 0.0, 0.0

    def record(module: nn.Module, inputs: Any, output: Any) -> None:
        nonlocal total, largest
        if next(module.children(), None) is not None:  # containers: their leaves count
            return
        for tensor in _tensors(output):
            size = float(tensor.numel()) * tensor.element_size()
            total, largest = total + size, max(largest, size)

    x, y = task.dummy_batch(rows, spec, device)
    handle = nn.modules.module.register_module_forward_hook(record)
    try:
        with torch.no_grad():
            task.loss(model, x, y)
    finally:
        handle.remove()
    return total, largest


def _tensors(output: Any) -> Iterator[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        yield output
    elif isinstance(output, tuple | list):
        for item in output:
            yield from _tensors(item)
    elif isinstance(output, dict):
        for item in output.values():
            yield from _tensors(item)


def _clean_size(cfg: RunConfig) -> int:
    return int(getattr(reference_data(cfg), "clean_size", 0) or 0)


def _data_bytes(cfg: RunConfig, spec: DataSpec) -> float:
    """Generated pools held in memory (files were checked against memory when read)."""
    datasets = [cfg.dataset]
    if _frozen_reference(cfg) and cfg.reference is not None and cfg.reference.dataset:
        datasets.append(cfg.reference.dataset)
    total = 0.0
    example = math.prod(spec.input_shape) * 4 + 8 * max(1, math.prod(spec.target_shape))
    for data in datasets:
        sizes = [getattr(data, "test_size", 0), getattr(data, "clean_size", 0)]
        if data.regime == "fixed":
            sizes.append(getattr(data, "train_size", 0))
        total += sum(int(s or 0) for s in sizes) * example
    return total


def _gb(size: float) -> str:
    return f"{size / 1e9:.3g} GB"


def _duration(hours: float) -> str:
    if hours < 1:
        return f"{hours * 60:.2g} minutes"
    if hours < 48:
        return f"{hours:.3g} hours"
    if hours < 24 * 365 * 2:
        return f"{hours / 24:.3g} days"
    return f"{hours / 24 / 365:.3g} years"


def _label(label: dict[str, Any]) -> str:
    return f" ({', '.join(f'{k}={v}' for k, v in label.items())})" if label else ""

"""The training loop: online batch selection from super-batches, with a FLOP ledger.

Each learner step (Evans et al. 2023, Algorithm 1; Mindermann et al. 2022, Algorithm 1):

1. draw a super-batch of B / rho examples (``trainers/lookahead.py`` draws a block of steps'
   super-batches at once, and a pretrained reference scores them in one pass);
2. score every example with the models the policy needs (learner, online scorer, reference);
3. keep B of them (top-k or softmax sampling);
4. train the learner on the B kept examples, and the online scorer on the same B;
5. charge every pass to the FLOP ledger.

All state needed to resume lives in :class:`TrainState`; a run resumed from a checkpoint
produces exactly the metrics of an uninterrupted one (bitwise on CPU).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from orchestrator.errors import ConfigError
from trainers.config import RunConfig
from trainers.data import DataConfig, Splits, load_splits, make_source
from trainers.flops import FlopLedger, FlopMeter, measure_train_flops
from trainers.lookahead import BlockScorer, Lookahead, lookahead_steps
from trainers.models import ModelConfig, count_params
from trainers.optim import Trainee
from trainers.reference import REFERENCE_SEED_OFFSET, load_or_pretrain, reference_data
from trainers.selection import POLICIES, Losses, select
from trainers.tasks import TASKS, DataSpec, Task, data_spec, task_for
from trainers.tracking import MetricLogger

SCORER_SEED_OFFSET = 1_000_003
# Raised when the checkpoint layout changes (2: the learner and scorer share one Trainee).
CHECKPOINT_FORMAT = 2


@dataclass
class RunContext:
    """Where a run keeps its files, and facts about its sweep the config cannot know."""

    workdir: Path  # reference cache lives in workdir / "references"
    checkpoint_path: Path | None = None
    reference_share: int = 1  # runs of the sweep sharing this run's pretrained reference
    # Asked between steps; True: checkpoint now and raise Interrupted (a job about to be requeued).
    stop_requested: Callable[[], bool] | None = None


class Interrupted(Exception):
    """Training stopped between two steps because ``RunContext.stop_requested`` said so; the
    state at that step is in the checkpoint, so a resumed run loses no work."""

    def __init__(self, step: int) -> None:
        super().__init__(f"stopped at step {step} on request; checkpoint saved")
        self.step = step


@dataclass
class TrainState:
    """Everything a resumed run needs: models, optimizers, data position, RNGs, ledger."""

    step: int
    trainee: Trainee  # the learner, and the online scorer if the policy has one: updated together
    reference: nn.Module | None
    reference_trainee: Trainee | None  # a parallel reference trains; a pretrained one does not
    draws: Lookahead  # super-batches, and a pretrained reference's losses on them
    ledger: FlopLedger
    generator: torch.Generator  # selection sampling and parallel-reference batches
    # Corrupted examples among those kept (B a step), counted on the device: no sync a step.
    corrupted_kept: torch.Tensor

    @property
    def device(self) -> torch.device:
        return self.trainee.device

    @property
    def learner(self) -> nn.Module:
        return self.trainee.models["learner"]

    def scoring_models(self) -> dict[str, nn.Module]:
        models = dict(self.trainee.models)
        if self.reference is not None:
            models["reference"] = self.reference
        return models

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "trainee": self.trainee.state_dict(),
            "reference": self.reference_trainee.state_dict() if self.reference_trainee else None,
            "draws": self.draws.state_dict(),
            "ledger": self.ledger.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "corrupted_kept": int(self.corrupted_kept),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(
                f"checkpoint format {state.get('format', 1)!r} is not {CHECKPOINT_FORMAT}: it was "
                "written by another version of activescale; finish the run with that version, or "
                "delete the checkpoint to start the run again"
            )
        self.step = state["step"]
        self.trainee.load_state_dict(state["trainee"])
        if self.reference_trainee:
            self.reference_trainee.load_state_dict(state["reference"])
        self.draws.load_state_dict(state["draws"])
        self.ledger.load_state_dict(state["ledger"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.corrupted_kept.fill_(state["corrupted_kept"])


@dataclass(frozen=True)
class Schedule:
    """Step count and evaluation steps, fixed before training from the measured step cost."""

    total_steps: int
    eval_steps: tuple[int, ...]
    step_flops: float
    # What one step adds to each ledger counter, measured once: every step has the same shapes.
    step_charges: tuple[tuple[str, float], ...]


def pick_device(cfg: RunConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def autocast_for(device: torch.device) -> Any:
    if device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def per_example_loss(
    task: Task, model: nn.Module, x: torch.Tensor, y: torch.Tensor, autocast: Any
) -> torch.Tensor:
    with torch.no_grad(), autocast():
        return task.per_example_loss(model, x, y).float()


@dataclass
class Models:
    """The run's three models before optimizers exist (the step count is not known yet)."""

    learner: nn.Module
    scorer: nn.Module | None
    reference: nn.Module | None
    reference_pretrain_flops: float = 0.0

    def by_role(self) -> dict[str, nn.Module | None]:
        return {"learner": self.learner, "scorer": self.scorer, "reference": self.reference}


def build_models(cfg: RunConfig, splits: Splits, ctx: RunContext, device: torch.device) -> Models:
    task, spec = TASKS[cfg.task], data_spec(splits)
    learner = task.build(cfg.learner, spec, cfg.seed).to(device)
    scorer = None
    if cfg.uses_scorer:
        assert cfg.scorer is not None
        scorer = task.build(cfg.scorer, spec, cfg.seed + SCORER_SEED_OFFSET).to(device)
    if not cfg.uses_reference:
        return Models(learner, scorer, None)
    assert cfg.reference is not None
    if cfg.reference.mode == "parallel":
        seed = cfg.seed + REFERENCE_SEED_OFFSET
        return Models(learner, scorer, task.build(cfg.reference, spec, seed).to(device))
    reference, flops, _ = load_or_pretrain(cfg, splits, ctx.workdir / "references", device)
    return Models(learner, scorer, reference, flops)


def block_scorer(task: Task, model: nn.Module, super_batch: int, autocast: Any) -> BlockScorer:
    """A frozen model's per-example losses on a block of super-batches: in one pass where an
    example's loss does not depend on the rest of its super-batch, else one super-batch at a time."""
    if task.independent_rows:
        return lambda x, y: per_example_loss(task, model, x, y, autocast)
    return lambda x, y: torch.cat(
        [
            per_example_loss(task, model, x[i : i + super_batch], y[i : i + super_batch], autocast)
            for i in range(0, len(x), super_batch)
        ]
    )


def build_state(
    cfg: RunConfig,
    models: Models,
    splits: Splits,
    schedule: Schedule,
    ctx: RunContext,
    *,
    lookahead: int | None = None,
) -> TrainState:
    """A fresh train state. ``lookahead``: steps of super-batches drawn at once (default: as
    many as fit in ``trainers.lookahead.LOOKAHEAD_BYTES``)."""

    def trainee(named: dict[str, tuple[nn.Module, float | None]]) -> Trainee:
        return Trainee.build(named, cfg.optimizer, schedule.total_steps, TASKS[cfg.task].loss)

    ledger = FlopLedger(cfg.reference_cost, ctx.reference_share)
    ledger.add("reference_pretrain", models.reference_pretrain_flops)
    parallel = cfg.reference is not None and cfg.reference.mode == "parallel"
    device = next(models.learner.parameters()).device
    size = cfg.selection.super_batch_size(cfg.batch_size)
    scores_reference = "reference" in POLICIES[cfg.selection.policy].needs
    frozen = models.reference if scores_reference and not parallel else None
    draws = Lookahead(
        make_source(cfg.dataset, splits, cfg.seed),
        size,
        schedule.total_steps,
        device,
        block=lookahead or lookahead_steps(size, splits.input_shape),
        reference=(
            block_scorer(task_for(cfg), frozen, size, autocast_for(device))
            if frozen is not None
            else None
        ),
    )
    on_kept = {"learner": (models.learner, cfg.learner.lr)}  # trained on the kept batch
    if models.scorer is not None and cfg.scorer is not None:
        on_kept["scorer"] = (models.scorer, cfg.scorer.lr)
    return TrainState(
        step=0,
        trainee=trainee(on_kept),
        reference=models.reference,
        reference_trainee=(
            trainee({"reference": (models.reference, cfg.reference.lr)})
            if parallel and models.reference is not None and cfg.reference
            else None
        ),
        draws=draws,
        ledger=ledger,
        generator=torch.Generator().manual_seed(cfg.seed),
        corrupted_kept=torch.zeros((), dtype=torch.long, device=device),
    )


def train_step(
    state: TrainState, cfg: RunConfig, schedule: Schedule, splits: Splits, autocast: Any
) -> torch.Tensor:
    """One learner step: super-batch -> scores -> selection -> learner and scorer updates.
    Returns the learner's loss on the selected batch."""
    policy, task = POLICIES[cfg.selection.policy], task_for(cfg)
    B = cfg.batch_size
    draw = state.draws.next()  # on the device already
    x, y, corrupted = draw.x, draw.y, draw.corrupted

    if policy.needs:
        scoring_models = state.scoring_models()
        losses: Losses = dict(draw.losses)  # a pretrained reference's, computed for the block
        for role in policy.needs:
            if role not in losses:
                losses[role] = per_example_loss(task, scoring_models[role], x, y, autocast)
        keep = select(
            policy.score(losses),
            B,
            cfg.selection.method,
            cfg.selection.temperature,
            state.generator,
        )
        # index_select: a row gather with a third of advanced indexing's overhead on CPU.
        x, y = x.index_select(0, keep), y.index_select(0, keep)
        corrupted = corrupted.index_select(0, keep)

    # The learner and the online scorer train on the kept batch, in one update (see Trainee).
    loss = state.trainee.train_step(x, y, autocast)["learner"]
    if state.reference_trainee:  # parallel reference: IID batches of the clean split
        idx = torch.randint(len(splits.clean_y), (B,), generator=state.generator)
        rx, ry = splits.clean_x[idx].to(state.device), splits.clean_y[idx].to(state.device)
        state.reference_trainee.train_step(rx, ry, autocast)

    for counter, flops in schedule.step_charges:
        state.ledger.add(counter, flops)
    state.corrupted_kept += corrupted.sum()
    state.step += 1
    return loss


def plan_schedule(cfg: RunConfig, models: Models, spec: DataSpec) -> Schedule:
    """Measure one step's FLOPs per ledger counter (the passes ``train_step`` makes, on batches
    of its shapes), then fix the step count and the log-spaced evaluation steps."""
    device = next(models.learner.parameters()).device
    task, B = task_for(cfg), cfg.batch_size
    x, y = task.dummy_batch(cfg.selection.super_batch_size(B), spec, device)
    roles = models.by_role()
    probe, meter = FlopLedger(cfg.reference_cost), FlopMeter()
    for role in POLICIES[cfg.selection.policy].needs:
        model = roles[role]
        assert model is not None
        probe.add(f"{role}_forward", meter.scoring(role, model, x, y, task.per_example_loss))
    xb, yb = x[:B], y[:B]
    probe.add("learner_train", meter.train("learner", models.learner, xb, yb, task.loss))
    if models.scorer is not None:
        probe.add("scorer_train", meter.train("scorer", models.scorer, xb, yb, task.loss))
    if cfg.reference is not None and cfg.reference.mode == "parallel" and models.reference:
        probe.add("reference_train", meter.train("reference", models.reference, xb, yb, task.loss))
    step_flops = probe.total
    step_charges = tuple((k, v) for k, v in probe.counters.items() if v)
    # Evaluation points are log-spaced in *total* FLOPs, which start at the charged reference cost.
    probe.add("reference_pretrain", models.reference_pretrain_flops)
    offset = probe.reference_pretrain_charged
    if cfg.budget.flops is not None:
        total_steps = math.floor((cfg.budget.flops - offset) / step_flops)
        if total_steps < 1:
            raise ConfigError(
                f"budget.flops = {cfg.budget.flops:.3g} does not cover one step "
                f"({step_flops:.3g} FLOPs) after the reference's {offset:.3g}; raise budget.flops"
            )
    else:
        assert cfg.budget.steps is not None
        total_steps = cfg.budget.steps
    first = max(1, math.ceil(cfg.eval.first * total_steps))
    points = np.geomspace(
        offset + first * step_flops, offset + total_steps * step_flops, cfg.eval.points
    )
    steps = {min(total_steps, max(1, math.ceil((p - offset) / step_flops - 1e-9))) for p in points}
    return Schedule(total_steps, tuple(sorted(steps | {total_steps})), step_flops, step_charges)


def save_checkpoint(state: TrainState, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state.state_dict(), tmp)
    os.replace(tmp, path)  # atomic: a job killed mid-save keeps the previous checkpoint


def run_params(cfg: RunConfig, models: Models, schedule: Schedule) -> dict[str, Any]:
    params: dict[str, Any] = flatten(cfg.model_dump(mode="json"))
    for role, model in models.by_role().items():
        params[f"{role}.params"] = count_params(model) if model is not None else 0
    params["schedule.total_steps"] = schedule.total_steps
    params["schedule.step_flops"] = schedule.step_flops
    params["super_batch"] = cfg.selection.super_batch_size(cfg.batch_size)
    return params


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def train(cfg: RunConfig, ctx: RunContext, logger: MetricLogger | None = None) -> dict[str, float]:
    """Train one run to its budget; returns the final metrics. Resumes from ctx.checkpoint_path."""
    logger = logger or MetricLogger()
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg)
    autocast = autocast_for(device)
    splits = load_splits(cfg.dataset)
    task = TASKS[cfg.task]
    models = build_models(cfg, splits, ctx, device)
    schedule = plan_schedule(cfg, models, data_spec(splits))
    state = build_state(cfg, models, splits, schedule, ctx)
    if ctx.checkpoint_path and ctx.checkpoint_path.exists():
        state.load_state_dict(torch.load(ctx.checkpoint_path, weights_only=False))
        print(f"activescale: resumed at step {state.step} from {ctx.checkpoint_path}", flush=True)
    else:
        logger.log_params(run_params(cfg, models, schedule))
    metrics: dict[str, float] = {}
    while state.step < schedule.total_steps:
        train_loss = train_step(state, cfg, schedule, splits, autocast)
        evaluate = state.step in schedule.eval_steps
        if evaluate:
            metrics = task.evaluate(state.learner, splits, cfg.eval.batch_size, autocast)
            metrics |= state.ledger.metrics() | {
                "train_loss": float(train_loss),
                "step": state.step,
                "selected_corrupted": float(state.corrupted_kept) / (state.step * cfg.batch_size),
            }
            logger.log_metrics(metrics, step=state.step)
        stop = bool(
            ctx.stop_requested and state.step < schedule.total_steps and ctx.stop_requested()
        )
        periodic = cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0
        if ctx.checkpoint_path and (evaluate or periodic or stop):
            save_checkpoint(state, ctx.checkpoint_path)
        if stop:
            logger.flush()
            print(f"activescale: stop requested; checkpoint saved at step {state.step}", flush=True)
            raise Interrupted(state.step)
    logger.flush()
    return metrics


@dataclass(frozen=True)
class FlopEstimate:
    """A run's FLOPs before it runs (``activescale plan``): measured per step, times steps."""

    step_flops: float
    steps: int
    reference_pretrain: float  # full pretraining cost (what `include` charges)
    total: float  # the ledger total the run will reach


@functools.lru_cache(maxsize=64)
def _dataset_facts(data_json: str) -> tuple[DataSpec, int]:
    """Shapes of a dataset and the size of its clean split; loads files, so a missing or
    malformed file fails here."""
    data = DataConfig.model_validate_json(data_json)
    if data.name == "mnist1d":  # known without generating any data
        return DataSpec(input_shape=(40,), num_classes=10), data.clean_size
    splits = load_splits(data)
    return data_spec(splits), len(splits.clean_y)


def _dataset_spec(data_json: str) -> DataSpec:
    return _dataset_facts(data_json)[0]


def preflight(configs: Iterable[RunConfig]) -> None:
    """Fail before anything runs on what a config cannot know alone: data files that are
    missing or malformed, models that do not fit the data's shape, transferred references
    whose data differ in shape. Each distinct dataset is read, and each model built, once."""
    checked: set[tuple[str, str, DataSpec]] = set()
    for cfg in configs:
        spec = _dataset_spec(cfg.dataset.model_dump_json())
        if cfg.uses_reference and cfg.reference and cfg.reference.dataset is not None:
            other = _dataset_spec(cfg.reference.dataset.model_dump_json())
            if other != spec:
                raise ConfigError(
                    f"reference.dataset gives inputs {other.input_shape} with "
                    f"{other.num_classes} classes, but dataset gives {spec.input_shape} with "
                    f"{spec.num_classes}; a transferred reference must match the target's shapes"
                )
        for model_cfg in _models_used(cfg):
            key = (cfg.task, model_cfg.model_dump_json(include={"arch", "size", "patch"}), spec)
            if key not in checked:
                checked.add(key)
                TASKS[cfg.task].build(model_cfg, spec, seed=0)


def _models_used(cfg: RunConfig) -> list[ModelConfig]:
    used = [cfg.learner]
    used += [cfg.scorer] if cfg.uses_scorer and cfg.scorer else []
    used += [cfg.reference] if cfg.uses_reference and cfg.reference else []
    return used


def estimate_flops(cfg: RunConfig) -> FlopEstimate:
    """The run's ledger total without training: one measured step x steps, plus the reference."""
    task, spec = TASKS[cfg.task], _dataset_spec(cfg.dataset.model_dump_json())

    def build(model_cfg: ModelConfig | None, used: bool) -> nn.Module | None:
        return task.build(model_cfg, spec, 0) if used and model_cfg is not None else None

    reference = build(cfg.reference, cfg.uses_reference)
    pretrain = 0.0
    if cfg.reference is not None and reference is not None and cfg.reference.mode == "pretrained":
        # as trainers.reference.pretrain: batches never larger than the clean split it trains on
        clean = _dataset_facts(reference_data(cfg).model_dump_json())[1]
        batch = min(cfg.reference.batch_size, clean)
        x, y = task.dummy_batch(batch, spec, torch.device("cpu"))
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
    total = ledger.reference_pretrain_charged + schedule.total_steps * schedule.step_flops
    return FlopEstimate(schedule.step_flops, schedule.total_steps, pretrain, total)

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

Under ``optimizer.schedule: wsd`` an evaluation point short of the budget is a cooldown branch
(:func:`cool_down`, ``trainers/cooldown.py``): the run keeps its state, cools down, evaluates,
and goes back to the kept state.

A run may train on several processes (``trainers/distributed.py``): the step then asks its
:class:`~trainers.distributed.StepShares` which rows of the super-batch this process holds
(all of them, or only its share where each rank reads its own shards), scores and trains on;
rank 0 evaluates, logs and writes the checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from activescale import schema
from activescale.errors import ConfigError, PluginError
from trainers.config import RunConfig
from trainers.cooldown import Branch, plan_branches
from trainers.data import Splits, load_splits, make_source, reads_per_rank
from trainers.distributed import Ranks, StepShares, check_data_parallel
from trainers.flops import FlopLedger, FlopMeter
from trainers.lookahead import (
    Lookahead,
    block_scorer,
    lookahead_steps,
    per_example_loss,
)
from trainers.models import check_batch_norm, count_params, evaluating
from trainers.optim import Trainee, branch_factor
from trainers.reference import REFERENCE_SEED_OFFSET, load_or_pretrain
from trainers.selection import POLICIES, Losses
from trainers.tasks import DataSpec, data_spec, task_for
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
    ranks: Ranks = field(default_factory=Ranks)  # the processes training the run together
    # Told (step, total steps) at most every PROGRESS_SECONDS and at the end: progress lines and
    # a heartbeat for whoever watches the run. Nothing it does changes the run's results.
    progress: Callable[[int, int], None] | None = None


PROGRESS_SECONDS = 2.0


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
    shares: StepShares  # not state: which rows of each super-batch this process holds
    ranks: Ranks = field(default_factory=Ranks)  # not state: who trains with this process
    # False once a draw came without a corruption mask (the data cannot say): no fraction then.
    corruption_known: bool = True
    cooldown_flops: float = 0.0  # spent in cooldown branches (wsd), on this rank

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

    def totals(self, train_loss: torch.Tensor) -> RunTotals:
        """The run's counts and data position at this step, over every rank (one process: its
        own)."""
        source = self.shares.source_metrics(
            self.draws.source_metrics(), self.draws.averaged_metrics
        )
        draws = self.shares.gathered(self.draws.state_dict())
        if self.ranks.world_size == 1:
            return RunTotals(
                self.ledger,
                int(self.corrupted_kept),
                float(train_loss),
                source,
                draws,
                self.cooldown_flops,
            )
        own = [
            *self.ledger.counters.values(),
            float(self.corrupted_kept),
            float(train_loss),
            self.cooldown_flops,
        ]
        summed = self.ranks.sum(torch.tensor(own, dtype=torch.float64))
        *counters, corrupted, loss, cooldowns = map(float, summed)
        ledger = FlopLedger(self.ledger.reference_cost, self.ledger.reference_share)
        ledger.counters = dict(zip(self.ledger.counters, counters, strict=True))
        mean_loss = loss / self.ranks.world_size
        return RunTotals(ledger, round(corrupted), mean_loss, source, draws, cooldowns)

    def state_dict(self, totals: RunTotals | None = None) -> dict[str, Any]:
        """The state to resume from; with ``totals``, the run's counts summed over ranks."""
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "trainee": self.trainee.state_dict(),
            "reference": self.reference_trainee.state_dict() if self.reference_trainee else None,
            "draws": totals.draws if totals else self.draws.state_dict(),
            "ledger": (totals.ledger if totals else self.ledger).state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "corrupted_kept": totals.corrupted_kept if totals else int(self.corrupted_kept),
            "cooldown_flops": totals.cooldown_flops if totals else self.cooldown_flops,
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
        self.draws.load_state_dict(self.shares.own(state["draws"]))
        self.ledger.load_state_dict(state["ledger"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.corrupted_kept.fill_(state["corrupted_kept"])
        self.cooldown_flops = state.get("cooldown_flops", 0.0)  # absent: written before wsd
        if not self.ranks.is_main:  # the checkpoint's counts are the run's: rank 0 carries them
            self.ledger.load_state_dict({})
            self.corrupted_kept.zero_()
            self.cooldown_flops = 0.0

    def snapshot(self) -> dict[str, Any]:
        """A copy of this rank's state (its own counts), for :meth:`restore` after a branch."""
        return copy.deepcopy(self.state_dict()) | {"corruption_known": self.corruption_known}

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Back to a :meth:`snapshot`: every model, optimizer, RNG, data position and count."""
        self.load_state_dict(snapshot)
        self.ledger.load_state_dict(snapshot["ledger"])  # this rank's own, on every rank
        self.corrupted_kept.fill_(snapshot["corrupted_kept"])
        self.cooldown_flops = snapshot["cooldown_flops"]
        self.corruption_known = snapshot["corruption_known"]


@dataclass(frozen=True)
class RunTotals:
    """What the run has counted so far: every rank's FLOPs and kept corrupted examples summed,
    the learner's loss on the last kept batch averaged over ranks, the source's metrics over
    ranks (``StepShares.source_metrics``), and the data position to checkpoint (every rank's
    where each reads its own stream)."""

    ledger: FlopLedger
    corrupted_kept: int
    train_loss: float
    source_metrics: dict[str, float]
    draws: dict[str, Any]
    cooldown_flops: float = 0.0  # spent in cooldown branches before this point (wsd)

    @property
    def run_flops(self) -> float:
        """What the run itself has spent: the ledger's total and every cooldown so far."""
        return self.ledger.total + self.cooldown_flops


@dataclass(frozen=True)
class Schedule:
    """Step count and evaluation steps, fixed before training from the measured step cost."""

    total_steps: int
    eval_steps: tuple[int, ...]
    step_flops: float
    # What one step adds to each ledger counter, measured once: every step has the same shapes.
    step_charges: tuple[tuple[str, float], ...]
    # wsd: the cooldown branches that give the evaluation points short of the budget.
    branches: tuple[Branch, ...] = ()

    def main_eval_steps(self) -> frozenset[int]:
        """Steps at which the main branch itself is evaluated (the rest are branches')."""
        return frozenset(self.eval_steps) - {branch.budget for branch in self.branches}


def pick_device(cfg: RunConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def autocast_for(device: torch.device) -> Any:
    if device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


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
    task, spec = task_for(cfg), data_spec(splits)
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
    with ctx.ranks.main_first():  # rank 0 pretrains it (once, cached); the others load it
        reference, flops, _ = load_or_pretrain(cfg, splits, ctx.workdir / "references", device)
    return Models(learner, scorer, reference, flops)


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

    ranks = ctx.ranks

    def trainee(named: dict[str, tuple[nn.Module, float | None]]) -> Trainee:
        built = Trainee.build(named, cfg.optimizer, schedule.total_steps, task_for(cfg).loss)
        built.parallelize(ranks.wrap)
        return built

    ledger = FlopLedger(cfg.reference_cost, ctx.reference_share)
    # Every rank charges its own passes; the reference was pretrained once, charged on rank 0.
    ledger.add("reference_pretrain", models.reference_pretrain_flops if ranks.is_main else 0.0)
    parallel = cfg.reference is not None and cfg.reference.mode == "parallel"
    device = next(models.learner.parameters()).device
    size = cfg.selection.super_batch_size(cfg.batch_size)
    shares = StepShares(ranks, size, per_rank=reads_per_rank(cfg.dataset, ranks.world_size))
    scores_reference = "reference" in POLICIES[cfg.selection.policy].needs
    frozen = models.reference if scores_reference and not parallel else None
    draws = Lookahead(
        make_source(cfg.dataset, splits, cfg.seed, rank=ranks.rank, world_size=ranks.world_size),
        shares.draw_size,
        schedule.total_steps,
        device,
        block=lookahead or lookahead_steps(shares.draw_size, splits.input_shape),
        reference=(
            block_scorer(task_for(cfg), frozen, shares.draw_size, autocast_for(device))
            if frozen is not None
            else None
        ),
        # A rank that draws only its share scores all of it.
        share=ranks.share if ranks.world_size > 1 and not shares.per_rank else None,
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
        shares=shares,
        ranks=ranks,
    )


def train_step(
    state: TrainState, cfg: RunConfig, schedule: Schedule, splits: Splits, autocast: Any
) -> torch.Tensor:
    """One learner step: super-batch -> scores -> selection -> learner and scorer updates.
    Returns the learner's loss on the selected batch (this rank's part of it).

    On several processes every rank holds the whole super-batch or only its share of it (a
    stream read per rank), scores its share, and trains on its rows of the kept batch
    (``state.shares``; one process: all of them)."""
    policy, task, shares = POLICIES[cfg.selection.policy], task_for(cfg), state.shares
    B = cfg.batch_size
    draw = state.draws.next()  # on the device already
    x, y, corrupted = draw.x, draw.y, draw.corrupted

    if policy.needs:
        scoring_models = state.scoring_models()
        xs, ys = shares.scored(x), shares.scored(y)
        losses: Losses = dict(draw.losses)  # a pretrained reference's, computed for the block
        for role in policy.needs:
            if role not in losses:
                losses[role] = per_example_loss(task, scoring_models[role], xs, ys, autocast)
        x, y, corrupted = shares.kept(
            policy.score(losses), B, cfg.selection, state.generator, x, y, corrupted
        )
    else:  # iid: the super-batch is the batch
        x, y = shares.scored(x), shares.scored(y)
        corrupted = None if corrupted is None else shares.scored(corrupted)

    # The learner and the online scorer train on the kept batch, in one update (see Trainee).
    loss = state.trainee.train_step(x, y, autocast)["learner"]
    if state.reference_trainee:  # parallel reference: IID batches of the clean split
        idx = state.ranks.share(torch.randint(len(splits.clean_y), (B,), generator=state.generator))
        rx, ry = splits.clean_x[idx].to(state.device), splits.clean_y[idx].to(state.device)
        state.reference_trainee.train_step(rx, ry, autocast)

    for counter, flops in schedule.step_charges:
        state.ledger.add(counter, flops)
    if corrupted is None:
        state.corruption_known = False
    else:
        state.corrupted_kept += corrupted.sum()
    state.step += 1
    return loss


def measure_step(
    cfg: RunConfig, models: Models, x: torch.Tensor, y: torch.Tensor, batch: int
) -> FlopLedger:
    """The FLOPs of the passes ``train_step`` makes, per ledger counter: scoring the rows
    ``(x, y)``, training on ``batch`` of them."""
    task, roles = task_for(cfg), models.by_role()
    probe, meter = FlopLedger(cfg.reference_cost), FlopMeter()
    for role in POLICIES[cfg.selection.policy].needs:
        model = roles[role]
        assert model is not None
        probe.add(f"{role}_forward", meter.scoring(role, model, x, y, task.per_example_loss))
    xb, yb = x[:batch], y[:batch]
    probe.add("learner_train", meter.train("learner", models.learner, xb, yb, task.loss))
    if models.scorer is not None:
        probe.add("scorer_train", meter.train("scorer", models.scorer, xb, yb, task.loss))
    if cfg.reference is not None and cfg.reference.mode == "parallel" and models.reference:
        probe.add("reference_train", meter.train("reference", models.reference, xb, yb, task.loss))
    return probe


def plan_schedule(
    cfg: RunConfig, models: Models, spec: DataSpec, ranks: Ranks | None = None
) -> Schedule:
    """Measure one step's FLOPs per ledger counter (the passes ``train_step`` makes, on batches
    of its shapes), then fix the step count and the log-spaced evaluation steps.

    The schedule is the run's, whatever the number of processes; ``step_charges`` are what
    this rank's share of a step costs (its rows of the super-batch and of the batch)."""
    ranks = ranks or Ranks()
    device = next(models.learner.parameters()).device
    task, B = task_for(cfg), cfg.batch_size
    x, y = task.dummy_batch(cfg.selection.super_batch_size(B), spec, device)
    probe = measure_step(cfg, models, x, y, B)
    step_flops = probe.total
    if step_flops <= 0:  # every FLOP axis and budget would divide by it
        raise PluginError(
            f"the FLOP meter counts no FLOPs in a step of learner arch {cfg.learner.arch!r}: "
            "it counts matmuls, convolutions and attention (torch.utils.flop_counter); build "
            "the model from such layers (nn.Linear, nn.Conv1d, ...)"
        )
    own = probe
    if ranks.world_size > 1:
        own = measure_step(cfg, models, ranks.share(x), ranks.share(y), B // ranks.world_size)
    step_charges = tuple((k, v) for k, v in own.counters.items() if v)
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
    eval_steps = tuple(sorted(steps | {total_steps}))
    branches = plan_branches(eval_steps, total_steps, cfg.optimizer)
    return Schedule(total_steps, eval_steps, step_flops, step_charges, branches)


def save_checkpoint(state: TrainState, path: Path, totals: RunTotals | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state.state_dict(totals), tmp)
    os.replace(tmp, path)  # atomic: a job killed mid-save keeps the previous checkpoint


def run_params(
    cfg: RunConfig, models: Models, schedule: Schedule, world_size: int = 1
) -> dict[str, Any]:
    params: dict[str, Any] = flatten(cfg.model_dump(mode="json"))
    for role, model in models.by_role().items():
        params[schema.params_key(role)] = count_params(model) if model is not None else 0
    params[schema.PARAM_TOTAL_STEPS] = schedule.total_steps
    params[schema.PARAM_STEP_FLOPS] = schedule.step_flops
    params[schema.PARAM_SUPER_BATCH] = cfg.selection.super_batch_size(cfg.batch_size)
    params[schema.PARAM_WORLD_SIZE] = world_size
    return params


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def evaluation(
    state: TrainState, cfg: RunConfig, splits: Splits, autocast: Any, totals: RunTotals
) -> dict[str, float]:
    """The learner's metrics on the test split now, with the run's counts (rank 0)."""
    with evaluating(state.learner):  # batch norm: running statistics
        metrics = task_for(cfg).evaluate(state.learner, splits, cfg.eval.batch_size, autocast)
    metrics |= totals.ledger.metrics() | totals.source_metrics
    metrics |= {"train_loss": totals.train_loss, "step": state.step}
    if cfg.optimizer.schedule == "wsd":  # cosine: the same as flops, not logged
        metrics[schema.METRIC_RUN_FLOPS] = totals.run_flops
    if state.corruption_known:  # absent, not 0, where the data cannot say
        metrics["selected_corrupted"] = totals.corrupted_kept / (state.step * cfg.batch_size)
    return metrics


def cool_down(
    state: TrainState,
    cfg: RunConfig,
    schedule: Schedule,
    splits: Splits,
    autocast: Any,
    branch: Branch,
) -> dict[str, float]:
    """One evaluation point of a WSD run: train ``branch.steps`` more steps from the state at
    ``branch.at_step`` with the rate cooling down, on the data the stream gives next, evaluate,
    and go back to the kept state. Returns the cooled model's metrics on rank 0 ({} elsewhere).

    The branch's steps are the run's steps (all ranks take them together), charged as steps are:
    its ledger is the sized run's; ``cooldown_flops`` keeps what the run spent on it."""
    kept = state.snapshot()
    factor = branch_factor(cfg.optimizer, schedule.total_steps, branch.at_step, branch.steps)
    trainees = [t for t in (state.trainee, state.reference_trainee) if t is not None]
    followed = [trainee.follow(factor) for trainee in trainees]
    train_loss = torch.zeros(())
    for _ in range(branch.steps):
        train_loss = train_step(state, cfg, schedule, splits, autocast)
    totals = state.totals(train_loss)  # over ranks: collective
    metrics = evaluation(state, cfg, splits, autocast, totals) if state.ranks.is_main else {}
    for trainee, factors in zip(trainees, followed, strict=True):
        trainee.scheduler.lr_lambdas = factors
    state.restore(kept)
    state.cooldown_flops += branch.steps * sum(flops for _, flops in schedule.step_charges)
    return metrics


def train(cfg: RunConfig, ctx: RunContext, logger: MetricLogger | None = None) -> dict[str, float]:
    """Train one run to its budget; returns the final metrics. Resumes from ctx.checkpoint_path.

    On several processes (``ctx.ranks``) every rank calls this; rank 0 evaluates, logs and
    writes the checkpoint, and returns the metrics (the others return ``{}``)."""
    logger = logger or MetricLogger()
    ranks = ctx.ranks
    check_data_parallel(
        cfg.batch_size, task_for(cfg).independent_rows, ranks.world_size, "processes per run"
    )
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg)
    autocast = autocast_for(device)
    splits = load_splits(cfg.dataset)
    models = build_models(cfg, splits, ctx, device)
    check_batch_norm(models.by_role(), ranks.world_size)
    schedule = plan_schedule(cfg, models, data_spec(splits), ranks)
    state = build_state(cfg, models, splits, schedule, ctx)
    if ctx.checkpoint_path and ctx.checkpoint_path.exists():
        state.load_state_dict(torch.load(ctx.checkpoint_path, weights_only=False))
        print(f"activescale: resumed at step {state.step} from {ctx.checkpoint_path}", flush=True)
    else:
        logger.log_params(run_params(cfg, models, schedule, ranks.world_size))
    metrics: dict[str, float] = {}
    reported = -math.inf
    main_evals = schedule.main_eval_steps()
    branches_at: dict[int, list[Branch]] = {}
    for branch in schedule.branches:
        branches_at.setdefault(branch.at_step, []).append(branch)
    while state.step < schedule.total_steps:
        if ctx.progress is not None and time.monotonic() - reported >= PROGRESS_SECONDS:
            ctx.progress(state.step, schedule.total_steps)
            reported = time.monotonic()
        train_loss = train_step(state, cfg, schedule, splits, autocast)
        evaluate = state.step in main_evals
        branches = branches_at.get(state.step, [])
        stop = ranks.agree_to_stop(
            state.step,
            bool(ctx.stop_requested and state.step < schedule.total_steps and ctx.stop_requested()),
        )
        periodic = cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0
        save = ctx.checkpoint_path is not None and bool(evaluate or branches or periodic or stop)
        totals = state.totals(train_loss) if evaluate or save else None  # over ranks: collective
        if evaluate and totals and ranks.is_main:
            metrics = evaluation(state, cfg, splits, autocast, totals)
            logger.log_metrics(metrics, step=state.step)
        for branch in branches:  # every rank: a branch trains like steps do
            cooled = cool_down(state, cfg, schedule, splits, autocast, branch)
            if ranks.is_main:
                logger.log_metrics(cooled, step=branch.budget)
        if branches and save:  # the checkpoint counts the cooldowns just spent
            totals = state.totals(train_loss)
        if save and ctx.checkpoint_path and ranks.is_main:
            save_checkpoint(state, ctx.checkpoint_path, totals)
        if stop:
            logger.flush()
            if ranks.is_main:
                print(
                    f"activescale: stop requested; checkpoint saved at step {state.step}",
                    flush=True,
                )
            raise Interrupted(state.step)
    logger.flush()
    if ctx.progress is not None:
        ctx.progress(state.step, schedule.total_steps)
    return metrics

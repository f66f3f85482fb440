"""Training-step cost against its baselines, measured in the same process.

1. IID step throughput of ``trainers.loop.train_step`` vs a bare PyTorch loop of the same
   model, batch and optimizer (target: >= 0.95x).
2. A prioritized (learnability) step vs the sum of its parts timed separately: learner step on
   B + scorer forward on B/rho + reference forward on B/rho + scorer step on B (target:
   <= 1.10x). The step draws super-batches a block of steps ahead and its pretrained reference
   scores a block in one pass (trainers/lookahead.py), and the learner and scorer take one
   update together (trainers/optim.py, Trainee). For comparison, the last two columns are the
   same step with the two updates taken one after the other, and with one draw and one
   reference pass per step.
3. A learner step with fused AdamW (the default) vs AdamW's per-tensor loop.

    python benchmarks/bench_step.py [--threads 2] [--steps 300]

Timings are medians over interleaved repetitions, so drift on a shared machine hits both sides.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import torch
import torch.nn.functional as F

from trainers.config import RunConfig
from trainers.data import Splits, load_splits
from trainers.loop import (
    RunContext,
    Schedule,
    TrainState,
    autocast_for,
    build_models,
    build_state,
    plan_schedule,
    train_step,
)
from trainers.models import build_model
from trainers.optim import Trainee, build_optimizer
from trainers.tasks import Classification, data_spec


def timed(fn: Callable[[], object], steps: int) -> float:
    """Seconds per call of fn, over ``steps`` calls."""
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def bench_config(learner: str, batch: int, policy: str, keep: float) -> RunConfig:
    return RunConfig.model_validate(
        {
            "dataset": {
                "train_size": 20000,
                "test_size": 500,
                "clean_size": 500,
                "label_noise": 0.5,
            },
            "learner": {"size": learner},
            "scorer": {"size": "xxs"},
            "reference": {"size": "s", "steps": 50},
            "selection": {"policy": policy, "keep": keep},
            "batch_size": batch,
            "budget": {"steps": 100_000},
        }
    ).resolved()


def prepared(cfg: RunConfig, lookahead: int | None = None) -> tuple[Splits, TrainState, Schedule]:
    """Data and a fresh train state for ``cfg`` (the reference, if any, pretrained in a tmp dir)."""
    splits = load_splits(cfg.dataset)
    with TemporaryDirectory() as tmp:
        ctx = RunContext(workdir=Path(tmp))
        models = build_models(cfg, splits, ctx, torch.device("cpu"))
        schedule = plan_schedule(cfg, models, data_spec(splits))
        state = build_state(cfg, models, splits, schedule, ctx, lookahead=lookahead)
        return splits, state, schedule


def iid_vs_bare(learner: str, batch: int, steps: int, reps: int) -> tuple[float, float]:
    cfg = bench_config(learner, batch, "iid", 1.0)
    splits, state, schedule = prepared(cfg)
    autocast = autocast_for(torch.device("cpu"))

    bare = build_model(cfg.learner, splits.input_shape, splits.num_classes, 0)
    optimizer, scheduler = build_optimizer([(bare, None)], cfg.optimizer, schedule.total_steps)
    # The baseline shuffles too (a random permutation per epoch), as any real training loop does.
    x_all, y_all = splits.train_x, splits.train_y
    order = torch.randperm(len(y_all))
    position = [0]

    def bare_step() -> None:
        i = position[0] % (len(y_all) - batch)
        position[0] += batch
        idx = order[i : i + batch]
        x, y = x_all[idx], y_all[idx]
        loss = F.cross_entropy(bare(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()

    def ours() -> None:
        train_step(state, cfg, schedule, splits, autocast)

    ours_t, bare_t = [], []
    for _ in range(reps):
        ours_t.append(timed(ours, steps))
        bare_t.append(timed(bare_step, steps))
    return statistics.median(ours_t), statistics.median(bare_t)


class Separately:
    """Stands in for a state's Trainee: each model updated on its own, one after the other."""

    def __init__(self, trainee: Trainee, cfg: RunConfig, total_steps: int) -> None:
        self.models = trainee.models
        groups = zip(trainee.models.items(), trainee.optimizer.param_groups, strict=True)
        self.trainees = [
            Trainee.build(
                {name: (model, group["initial_lr"])}, cfg.optimizer, total_steps, trainee.loss_fn
            )
            for (name, model), group in groups
        ]

    def train_step(
        self, x: torch.Tensor, y: torch.Tensor, autocast: Any
    ) -> dict[str, torch.Tensor]:
        return {k: v for t in self.trainees for k, v in t.train_step(x, y, autocast).items()}


def prioritized_vs_parts(
    learner: str, batch: int, keep: float, steps: int, reps: int
) -> tuple[float, dict[str, float], float, dict[str, float]]:
    """Seconds per step; its ratio to the sum of the parts, and that ratio for the variants
    (two updates one after the other; one draw a step); seconds for the sum of parts and for each
    part. A ratio is the median over repetitions of a step's time over its parts' times in the
    same repetition, so that a slow spell of a shared machine hits both."""
    cfg = bench_config(learner, batch, "learnability", keep)
    splits, state, schedule = prepared(cfg)
    _, separate_state, _ = prepared(cfg)
    separate_state.trainee = Separately(separate_state.trainee, cfg, schedule.total_steps)  # type: ignore[assignment]
    _, single_state, _ = prepared(cfg, lookahead=1)
    autocast = autocast_for(torch.device("cpu"))
    scorer, reference = state.trainee.models["scorer"], state.reference
    assert reference is not None
    super_batch = cfg.selection.super_batch_size(batch)
    xs, ys = splits.train_x[:super_batch], splits.train_y[:super_batch]
    xb, yb = xs[:batch], ys[:batch]
    # The parts: each model's update on its own, as a run without the other would take it.
    learner_alone, scorer_alone = Separately(state.trainee, cfg, schedule.total_steps).trainees

    def learner_step() -> None:
        learner_alone.train_step(xb, yb, autocast)

    def scorer_forward() -> None:
        with torch.no_grad():
            F.cross_entropy(scorer(xs), ys, reduction="none")

    def reference_forward() -> None:
        with torch.no_grad():
            F.cross_entropy(reference(xs), ys, reduction="none")

    def scorer_step() -> None:
        scorer_alone.train_step(xb, yb, autocast)

    steps_of = {
        "ours": lambda: train_step(state, cfg, schedule, splits, autocast),
        "separate": lambda: train_step(separate_state, cfg, schedule, splits, autocast),
        "single": lambda: train_step(single_state, cfg, schedule, splits, autocast),
    }

    parts = {
        "learner_step": learner_step,
        "scorer_forward": scorer_forward,
        "reference_forward": reference_forward,
        "scorer_step": scorer_step,
    }
    step_t: dict[str, list[float]] = {k: [] for k in steps_of}
    ratios: dict[str, list[float]] = {k: [] for k in steps_of}
    part_t: dict[str, list[float]] = {k: [] for k in parts}
    for _ in range(reps):
        for name, fn in steps_of.items():
            step_t[name].append(timed(fn, steps))
        for name, fn in parts.items():
            part_t[name].append(timed(fn, steps))
        summed = sum(times[-1] for times in part_t.values())
        for name, times in step_t.items():
            ratios[name].append(times[-1] / summed)
    medians = {k: statistics.median(v) for k, v in part_t.items()}
    return (
        statistics.median(step_t["ours"]),
        {k: statistics.median(v) for k, v in ratios.items()},
        sum(medians.values()),
        medians,
    )


def fused_vs_loop(learner: str, batch: int, steps: int, reps: int) -> tuple[float, float]:
    """Seconds per learner step with fused AdamW and with AdamW's per-tensor Python loop."""
    cfg = bench_config(learner, batch, "iid", 1.0)
    splits = load_splits(cfg.dataset)
    x, y = splits.train_x[:batch], splits.train_y[:batch]

    def stepper(fused: bool) -> Callable[[], object]:
        model = build_model(cfg.learner, splits.input_shape, splits.num_classes, 0)
        learner = Trainee.build(
            {"learner": (model, None)},
            cfg.optimizer,
            steps * reps,
            Classification().loss,
            fused=fused,
        )
        autocast = autocast_for(torch.device("cpu"))
        return lambda: learner.train_step(x, y, autocast)

    fused, loop = stepper(True), stepper(False)
    fused_t, loop_t = [], []
    for _ in range(reps):
        fused_t.append(timed(fused, steps))
        loop_t.append(timed(loop, steps))
    return statistics.median(fused_t), statistics.median(loop_t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} threads, {args.steps} steps x {args.reps} reps (medians)\n"
    )
    print("IID step vs a bare PyTorch loop (target: throughput ratio >= 0.95)")
    print(f"{'learner':>8} {'B':>5} {'ours ms':>9} {'bare ms':>9} {'throughput ratio':>17}")
    for learner, batch in [("s", 64), ("l", 256), ("xl", 256), ("xxl", 512)]:
        ours, bare = iid_vs_bare(learner, batch, args.steps, args.reps)
        print(f"{learner:>8} {batch:>5} {ours * 1e3:9.3f} {bare * 1e3:9.3f} {bare / ours:17.3f}")
    print("\nLearnability step vs the sum of its parts (target: ratio <= 1.10)")
    print(
        f"{'learner':>8} {'B':>5} {'keep':>5} {'ours ms':>9} {'parts ms':>9} {'ratio':>7}"
        f" {'2 updates':>10} {'1-step draws':>13}   parts"
    )
    for learner, batch, keep in [("l", 64, 0.25), ("xl", 256, 0.25), ("xxl", 256, 0.1)]:
        ours, ratios, total, parts = prioritized_vs_parts(
            learner, batch, keep, args.steps, args.reps
        )
        detail = ", ".join(f"{k} {v * 1e3:.3f}" for k, v in parts.items())
        print(
            f"{learner:>8} {batch:>5} {keep:>5} {ours * 1e3:9.3f} {total * 1e3:9.3f}"
            f" {ratios['ours']:7.3f} {ratios['separate']:10.3f} {ratios['single']:13.3f}   {detail}"
        )
    print("\nLearner step: fused AdamW (default) vs AdamW's per-tensor loop")
    print(f"{'learner':>8} {'B':>5} {'fused ms':>9} {'loop ms':>9} {'speed-up':>9}")
    for learner, batch in [("s", 64), ("l", 64), ("xl", 256), ("xxl", 512)]:
        fused, loop = fused_vs_loop(learner, batch, args.steps, args.reps)
        print(f"{learner:>8} {batch:>5} {fused * 1e3:9.3f} {loop * 1e3:9.3f} {loop / fused:9.2f}")


if __name__ == "__main__":
    main()

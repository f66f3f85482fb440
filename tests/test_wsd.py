"""The warmup-stable-decay schedule and its cooldown branches (trainers/cooldown.py): the rate
at given steps, branches that leave the main branch bitwise alone, that equal a run sized for
their budget, that are charged, priced and resumed exactly; cosine configs keep their ids."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from activescale import schema
from tests.conftest import tiny_run_config
from trainers.config import RunConfig
from trainers.cooldown import Branch, plan_branches
from trainers.loop import Interrupted, RunContext, train
from trainers.optim import OptimConfig, branch_factor, cooldown_steps, schedule_factor
from trainers.tracking import MemoryLogger

WSD = {"schedule": "wsd", "cooldown": 0.2}
# A learnability run on a stream with a pretrained reference: every branch draws fresh data,
# samples its selection and scores with all three models.
STREAM = {
    "dataset": {
        "train_size": 512,
        "test_size": 256,
        "clean_size": 128,
        "label_noise": 0.3,
        "regime": "stream",
    },
    "selection": {"policy": "learnability", "keep": 0.5, "method": "sample"},
    "reference": {"size": "xxs", "mode": "pretrained", "steps": 20},
}


def config(**overrides: Any) -> RunConfig:
    return RunConfig.model_validate(tiny_run_config(**overrides)).resolved()


def run(
    workdir: Path, cfg: RunConfig, checkpoint: bool = False, logger: MemoryLogger | None = None
) -> MemoryLogger:
    logger = logger or MemoryLogger()
    ckpt = workdir / "ckpt.pt" if checkpoint else None
    train(cfg, RunContext(workdir=workdir, checkpoint_path=ckpt), logger)
    return logger


def test_wsd_rate_at_given_steps() -> None:
    cfg = OptimConfig(lr=1e-3, warmup=0.05, min_lr_ratio=0.1, **WSD)  # type: ignore[arg-type]
    main = schedule_factor(cfg, 100)  # warmup 5 steps, stable to 79, cooldown 80..99
    assert [main(s) for s in (0, 2, 4, 5, 50, 79)] == [0.2, 0.6, 1.0, 1.0, 1.0, 1.0]
    assert main(80) == pytest.approx(0.1 + 0.9 * (1 - math.sqrt(1 / 20)))
    assert main(89) == pytest.approx(0.1 + 0.9 * (1 - math.sqrt(10 / 20)))
    assert main(99) == pytest.approx(0.1)
    branch = branch_factor(cfg, 100, at_step=40, steps=10)  # the run's warmup, then 40..49
    assert branch(39) == 1.0
    assert branch(40) == pytest.approx(0.1 + 0.9 * (1 - math.sqrt(1 / 10)))
    assert branch(49) == pytest.approx(0.1)
    early = branch_factor(cfg, 100, at_step=2, steps=2)  # inside the warmup: from its rate
    assert [early(2), early(3)] == pytest.approx([0.6 * (0.1 + 0.9 * (1 - math.sqrt(0.5))), 0.06])
    cosine = schedule_factor(OptimConfig(warmup=0.05), 100)
    assert cosine(50) < 1.0 and cosine(4) == 1.0


def test_cooldown_steps_and_branches() -> None:
    assert [cooldown_steps(n, 0.2) for n in (1, 2, 3, 10, 100)] == [0, 0, 1, 2, 20]
    assert cooldown_steps(1, 0.9) == 0  # at least one step before the cooldown
    cfg = OptimConfig(**WSD)  # type: ignore[arg-type]
    assert plan_branches([1, 3, 10, 100], 100, cfg) == (Branch(2, 1), Branch(8, 2))
    assert plan_branches([1, 3, 10, 100], 100, OptimConfig()) == ()


def test_cosine_configs_dump_and_hash_as_before() -> None:
    plain = RunConfig()
    assert "schedule" not in plain.model_dump()["optimizer"]
    assert "cooldown" not in plain.model_dump()["optimizer"]
    explicit = RunConfig.model_validate({"optimizer": {"schedule": "cosine", "cooldown": 0.3}})
    assert explicit.run_id() == plain.run_id()
    wsd = RunConfig.model_validate({"optimizer": WSD})
    assert wsd.model_dump()["optimizer"]["schedule"] == "wsd"
    assert wsd.run_id() != plain.run_id()
    assert RunConfig.model_validate(wsd.model_dump()) == wsd  # a stored dump loads back


def test_branches_leave_the_main_branch_bitwise_alone(tmp_path: Path) -> None:
    """The run's last point (its main branch) is the same with eight cooldown branches as with
    none (one evaluation): branches restore models, optimizers, data, RNGs and counts."""
    budget = {"budget": {"steps": 60}, "optimizer": WSD}
    branched = run(tmp_path / "a", config(**STREAM, **budget, eval={"points": 8}))
    alone = run(tmp_path / "b", config(**STREAM, **budget, eval={"points": 2, "first": 1.0}))
    assert len(alone.history) == 1 and len(branched.history) >= 6
    final = dict(branched.history[-1][1])
    spent = final.pop(schema.METRIC_RUN_FLOPS)
    only = dict(alone.history[-1][1])
    assert only.pop(schema.METRIC_RUN_FLOPS) == only["flops"]
    assert final == only
    assert spent > final["flops"]  # the branches cost something


def test_a_branch_equals_a_run_sized_for_its_budget(tmp_path: Path) -> None:
    """Without warmup, a branch's point at n steps is bitwise a WSD run of n steps: the same
    stable steps, the same cooldown, the same data after the branch point, the same FLOPs."""
    shared = {**STREAM, "optimizer": {**WSD, "warmup": 0.0}, "eval": {"points": 5}}
    long = run(tmp_path / "long", config(**shared, budget={"steps": 60}))
    points = {step: metrics for step, metrics in long.history}
    budget = sorted(points)[-2]
    assert cooldown_steps(budget, 0.2) > 0  # a branch, not a main-branch evaluation
    short_cfg = config(**shared, budget={"steps": budget})
    short = run(tmp_path / "short", short_cfg).history[-1][1]
    branch = dict(points[budget])
    assert branch.pop(schema.METRIC_RUN_FLOPS) > branch["flops"]  # earlier branches spent too
    short.pop(schema.METRIC_RUN_FLOPS)
    assert branch == short


def test_cooldowns_are_charged_and_priced(tmp_path: Path) -> None:
    """run_flops at the end is the ledger total plus every branch's steps at the step's
    measured cost (counted from the plan here, not from the loop); plans price the same."""
    from orchestrator.plan import estimate_flops

    cfg = config(**STREAM, budget={"steps": 60}, eval={"points": 8}, optimizer=WSD)
    logger = run(tmp_path, cfg)
    step_flops = logger.params[schema.PARAM_STEP_FLOPS]
    steps = [step for step, _ in logger.history]
    extra = sum(cooldown_steps(n, 0.2) for n in steps if n < 60)
    assert extra > 0
    final = logger.history[-1][1]
    assert final[schema.METRIC_RUN_FLOPS] == pytest.approx(final["flops"] + extra * step_flops)
    for step, metrics in logger.history:  # a point's compute: its sized run's
        assert metrics["flops"] == pytest.approx(
            final["flops/reference_pretrain"] + step * step_flops
        )
    estimate = estimate_flops(cfg)
    assert estimate.cooldown_steps == extra
    assert estimate.total == pytest.approx(final[schema.METRIC_RUN_FLOPS])


@pytest.mark.parametrize("stop_after", [13, "branch"])
def test_resume_is_exact_mid_stable_and_across_a_branch(
    tmp_path: Path, stop_after: int | str
) -> None:
    """Stopped mid-stable-phase (step 13, no branch there) or right at a branch point (the
    branch runs, then the checkpoint), the resumed run logs what an uninterrupted one does."""
    cfg = config(
        **STREAM, budget={"steps": 60}, eval={"points": 8}, optimizer=WSD, checkpoint_every=5
    )
    full = run(tmp_path / "full", cfg, checkpoint=True)
    if stop_after == "branch":
        budgets = [step for step, _ in full.history if step < 60]
        stop = max(n - cooldown_steps(n, 0.2) for n in budgets)
    else:
        stop = int(stop_after)
    workdir = tmp_path / "part"
    ckpt = workdir / "ckpt.pt"
    asked = iter(range(1000))  # asked after each step but the last: True after step `stop`
    first = MemoryLogger()
    with pytest.raises(Interrupted):
        train(cfg, RunContext(workdir, ckpt, stop_requested=lambda: next(asked) == stop - 1), first)
    assert torch.load(ckpt, weights_only=False)["step"] == stop
    resumed = run(workdir, cfg, checkpoint=True)
    assert first.history + resumed.history == full.history


def test_a_grid_over_the_schedule_hashes_as_the_configs_do(tmp_path: Path) -> None:
    """The sweep's fast grid dumper (orchestrator/spec.py) agrees with the config's own dump,
    and a cosine point has the id of the same sweep without a schedule key."""
    from orchestrator.spec import load_sweep

    base = "dataset: {name: mnist1d, train_size: 512, test_size: 256, clean_size: 128}\n"
    plain = tmp_path / "plain.yaml"
    plain.write_text(f"name: plain\n{base}")
    gridded = tmp_path / "gridded.yaml"
    gridded.write_text(f"name: gridded\n{base}grid:\n  optimizer.schedule: [cosine, wsd]\n")
    runs = load_sweep(str(gridded)).runs
    assert [r.run_id for r in runs] == [r.config.run_id() for r in runs]
    assert runs[0].run_id == load_sweep(str(plain)).runs[0].run_id != runs[1].run_id


def test_runs_tuned_to_other_rates_share_a_reference_with_its_own_rate() -> None:
    """reference.lr set: the learner's optimizer.lr (tuned per size) does not enter the
    reference's cache key, so amortize can share it; unset, the reference follows the rate."""
    from trainers.reference import reference_key

    def key(lr: float, reference_lr: float | None, schedule: str = "cosine") -> str:
        return reference_key(
            RunConfig.model_validate(
                {
                    "scorer": {"arch": "mlp", "size": "xxs"},
                    "reference": {"arch": "mlp", "size": "xxs", "lr": reference_lr},
                    "selection": {"policy": "learnability"},
                    "optimizer": {"lr": lr, "schedule": schedule},
                }
            )
        )

    assert key(1e-3, 3e-3) == key(2e-2, 3e-3) == key(2e-2, 3e-3, "wsd")
    assert key(1e-3, None) != key(2e-2, None)
    assert key(1e-3, None) == key(1e-3, None, "wsd")

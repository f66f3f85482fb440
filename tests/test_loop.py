"""The training loop: every policy runs, determinism, exact resume, reference caching."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from activescale.errors import ConfigError
from tests.conftest import tiny_run_config
from trainers.config import RunConfig
from trainers.loop import Interrupted, RunContext, train
from trainers.tracking import MemoryLogger


def run(tmp_path: Path, checkpoint: bool = False, **overrides: object) -> MemoryLogger:
    cfg = RunConfig.model_validate(tiny_run_config(**overrides)).resolved()
    logger = MemoryLogger()
    ckpt = tmp_path / "ckpt.pt" if checkpoint else None
    train(cfg, RunContext(workdir=tmp_path, checkpoint_path=ckpt), logger)
    return logger


@pytest.mark.parametrize(
    "policy", ["iid", "hard_learner", "hard_scorer", "easy_reference", "learnability", "rho_loss"]
)
def test_every_policy_trains_and_charges_its_passes(tmp_path: Path, policy: str) -> None:
    logger = run(tmp_path, selection={"policy": policy, "keep": 0.5})
    final = logger.history[-1][1]
    assert final["step"] == 30
    charged = {
        k.removeprefix("flops/") for k, v in final.items() if k.startswith("flops/") and v > 0
    }
    expected = {
        "iid": {"learner_train"},
        "hard_learner": {"learner_train", "learner_forward"},
        "hard_scorer": {"learner_train", "scorer_forward", "scorer_train"},
        "easy_reference": {"learner_train", "reference_forward", "reference_pretrain"},
        "learnability": {
            "learner_train",
            "scorer_forward",
            "scorer_train",
            "reference_forward",
            "reference_pretrain",
        },
        "rho_loss": {"learner_train", "learner_forward", "reference_forward", "reference_pretrain"},
    }[policy]
    assert charged - {"scoring"} == expected


def test_evaluations_are_log_spaced_in_flops(tmp_path: Path) -> None:
    flops = [
        m["flops"] for _, m in run(tmp_path, budget={"steps": 200}, eval={"points": 6}).history
    ]
    ratios = [b / a for a, b in itertools.pairwise(flops)]
    assert len(flops) >= 5 and max(ratios) / min(ratios) < 2.5


def test_same_seed_same_metrics(tmp_path: Path) -> None:
    a = run(tmp_path / "a", seed=3)
    b = run(tmp_path / "b", seed=3)
    c = run(tmp_path / "c", seed=4)
    assert a.history == b.history
    assert a.history != c.history


@pytest.mark.parametrize(
    ("regime", "method", "reference"),
    [
        ("fixed", "topk", "parallel"),
        ("fixed", "sample", "parallel"),
        ("stream", "topk", "parallel"),
        ("stream", "sample", "parallel"),
        # a pretrained reference scores blocks of super-batches ahead (trainers/lookahead.py)
        ("fixed", "topk", "pretrained"),
        ("stream", "sample", "pretrained"),
    ],
)
def test_resume_equals_uninterrupted_bitwise(
    tmp_path: Path, regime: str, method: str, reference: str
) -> None:
    overrides = {
        "dataset": {
            "train_size": 512,
            "test_size": 256,
            "clean_size": 128,
            "label_noise": 0.3,
            "regime": regime,
        },
        "selection": {"policy": "learnability", "keep": 0.5, "method": method},
        "reference": {"size": "xxs", "mode": reference},
        "budget": {"steps": 40},
        "checkpoint_every": 7,
    }
    full = run(tmp_path / "full", checkpoint=True, **overrides)

    # Interrupt: train to step 21 (checkpoint at 21), then resume from the checkpoint.
    part_dir = tmp_path / "part"
    first = RunConfig.model_validate(tiny_run_config(**overrides))
    ckpt = part_dir / "ckpt.pt"
    logger = MemoryLogger()
    with pytest.raises(_Stop):
        train(
            first,
            RunContext(workdir=part_dir, checkpoint_path=ckpt),
            _StoppingLogger(logger, ckpt, 21),
        )
    saved_step = torch.load(ckpt, weights_only=False)["step"]
    assert 0 < saved_step < 40
    resumed = MemoryLogger()
    train(first, RunContext(workdir=part_dir, checkpoint_path=ckpt), resumed)
    before = [h for h in logger.history if h[0] <= saved_step]
    assert before + resumed.history == full.history


def test_stop_request_checkpoints_that_step_and_resume_loses_nothing(tmp_path: Path) -> None:
    """A stop asked for mid-run (a job about to be requeued) saves the state of the step reached,
    not of the last periodic checkpoint, and the resumed run ends where an uninterrupted one does."""
    overrides = {
        "selection": {"policy": "learnability", "keep": 0.5},
        "budget": {"steps": 40},
        "eval": {"points": 3},
    }
    full = run(tmp_path / "full", checkpoint=True, **overrides)
    cfg = RunConfig.model_validate(tiny_run_config(**overrides))
    ckpt = tmp_path / "part" / "ckpt.pt"
    asked = iter(range(100))  # asked once after each step: True after step 23
    ctx = RunContext(tmp_path / "part", ckpt, stop_requested=lambda: next(asked) == 22)
    with pytest.raises(Interrupted) as stopped:
        train(cfg, ctx, MemoryLogger())
    assert stopped.value.step == 23 == torch.load(ckpt, weights_only=False)["step"]
    resumed = MemoryLogger()
    train(cfg, RunContext(tmp_path / "part", ckpt), resumed)
    assert resumed.history[-1] == full.history[-1]


def test_checkpoint_of_an_older_format_is_a_named_error(tmp_path: Path) -> None:
    """A checkpoint laid out by an older version stops the run before any step, saying what to
    do, instead of failing on a missing key."""
    overrides = {"selection": {"policy": "learnability", "keep": 0.5}, "budget": {"steps": 10}}
    run(tmp_path, checkpoint=True, **overrides)
    ckpt = tmp_path / "ckpt.pt"
    state = torch.load(ckpt, weights_only=False)
    del state["format"]  # as version 1 wrote it (it had no format key)
    torch.save(state, ckpt)
    cfg = RunConfig.model_validate(tiny_run_config(**overrides))
    logger = MemoryLogger()
    with pytest.raises(
        ConfigError, match=r"checkpoint format 1 is not 2: .*another version.*delete the checkpoint"
    ):
        train(cfg, RunContext(workdir=tmp_path, checkpoint_path=ckpt), logger)
    assert logger.history == []


class _Stop(Exception):
    pass


class _StoppingLogger(MemoryLogger):
    """Records like MemoryLogger, then kills the run once a checkpoint past ``step`` exists."""

    def __init__(self, inner: MemoryLogger, ckpt: Path, step: int) -> None:
        super().__init__()
        self.inner, self.ckpt, self.step = inner, ckpt, step

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.inner.log_metrics(metrics, step)
        if step >= self.step and self.ckpt.exists():
            raise _Stop


def test_pretrained_reference_is_cached_and_reused(tmp_path: Path) -> None:
    first = run(tmp_path, learner={"size": "xs"})
    cache = sorted((tmp_path / "references").glob("reference-*.pt"))
    assert len(cache) == 1
    stamp = cache[0].stat().st_mtime_ns
    second = run(tmp_path, learner={"size": "s"})  # another learner, same reference
    assert [p.stat().st_mtime_ns for p in (tmp_path / "references").glob("reference-*.pt")] == [
        stamp
    ]
    pretrain = [h[1]["flops/reference_pretrain"] for h in (first.history[-1], second.history[-1])]
    assert pretrain[0] == pretrain[1] > 0
    run(tmp_path, reference={"size": "xs", "steps": 20})  # another reference: a second file
    assert len(list((tmp_path / "references").glob("reference-*.pt"))) == 2


def test_reference_cost_exclude_drops_pretraining(tmp_path: Path) -> None:
    include = run(tmp_path / "a").history[-1][1]
    exclude = run(tmp_path / "b", reference_cost="exclude").history[-1][1]
    assert include["flops"] - exclude["flops"] == pytest.approx(include["flops/reference_pretrain"])


def test_flop_budget_sets_the_step_count(tmp_path: Path) -> None:
    steps_run = run(tmp_path, budget={"steps": 30}).history[-1][1]
    pretrain = steps_run["flops/reference_pretrain"]
    step_flops = (steps_run["flops"] - pretrain) / 30
    budget = pretrain + 70.5 * step_flops
    flops_run = run(tmp_path, budget={"steps": None, "flops": budget}).history[-1][1]
    assert flops_run["step"] == 70
    assert flops_run["flops"] <= budget


def test_flop_budget_below_one_step_is_a_named_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"budget\.flops"):
        run(tmp_path, budget={"steps": None, "flops": 10.0})


def test_policy_transfer_reference_on_another_dataset(tmp_path: Path) -> None:
    other = {"train_size": 512, "test_size": 256, "clean_size": 128, "seed": 7}
    logger = run(tmp_path, reference={"size": "xxs", "steps": 20, "dataset": other})
    assert logger.history[-1][1]["flops/reference_pretrain"] > 0


def test_transfer_reference_with_other_shapes_fails_before_training(tmp_path: Path) -> None:
    import numpy as np

    path = tmp_path / "other.npz"
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x=rng.normal(size=(300, 12)).astype("float32"),
        y=rng.integers(0, 10, 300),
        x_test=rng.normal(size=(50, 12)).astype("float32"),
        y_test=rng.integers(0, 10, 50),
    )
    with pytest.raises(ConfigError, match="shapes"):
        run(
            tmp_path,
            reference={
                "size": "xxs",
                "dataset": {"name": "npz", "path": str(path), "clean_size": 50},
            },
        )


@pytest.mark.parametrize(
    ("policy", "clean_size"),
    [("iid", 128), ("learnability", 128), ("rho_loss", 128), ("learnability", 40)],
)
def test_estimate_matches_the_ledger(tmp_path: Path, policy: str, clean_size: int) -> None:
    """Also when the clean split (40) is smaller than the reference's batch (64), so that
    pretraining takes batches of the whole split."""
    from orchestrator.plan import estimate_flops

    data = {"train_size": 512, "test_size": 256, "clean_size": clean_size, "label_noise": 0.3}
    overrides = {"selection": {"policy": policy, "keep": 0.5}, "dataset": data}
    cfg = RunConfig.model_validate(tiny_run_config(**overrides)).resolved()
    final = run(tmp_path, **overrides).history[-1][1]
    assert estimate_flops(cfg).total == pytest.approx(final["flops"])

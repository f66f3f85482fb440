"""Super-batches drawn ahead in blocks give exactly what step-by-step draws give."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_run_config
from trainers import loop
from trainers.config import RunConfig
from trainers.contrastive import Contrastive
from trainers.data import BatchSource, DataConfig, load_splits, make_source
from trainers.lookahead import (
    BlockScorer,
    Draw,
    Lookahead,
    block_scorer,
    lookahead_steps,
    per_example_loss,
)
from trainers.loop import RunContext, train
from trainers.models import ModelConfig, build_model
from trainers.tasks import Classification, data_spec
from trainers.tracking import MemoryLogger

CPU = torch.device("cpu")
SIZE = 48  # examples per super-batch
DATA = {"train_size": 200, "test_size": 64, "clean_size": 64, "label_noise": 0.3}


def source_for(regime: str) -> BatchSource:
    cfg = DataConfig.model_validate(DATA | {"regime": regime})
    return make_source(cfg, load_splits(cfg), seed=3)


def reference_scorer() -> BlockScorer:
    task = Classification()
    model = build_model(ModelConfig(arch="mlp", size="s"), (40,), 10, seed=0)
    return block_scorer(task, model, SIZE, loop.autocast_for(CPU))


def draws(lookahead: Lookahead, steps: int) -> list[Draw]:
    return [lookahead.next() for _ in range(steps)]


def assert_same(a: list[Draw], b: list[Draw]) -> None:
    assert len(a) == len(b)
    for u, v in zip(a, b, strict=True):
        assert torch.equal(u.x, v.x) and torch.equal(u.y, v.y)
        assert torch.equal(u.corrupted, v.corrupted)
        assert u.losses.keys() == v.losses.keys()
        assert all(torch.equal(u.losses[k], v.losses[k]) for k in u.losses)


def roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("regime", ["fixed", "stream"])
@pytest.mark.parametrize("block", [3, 8])
def test_blocks_draw_the_examples_and_scores_of_step_by_step_draws(regime: str, block: int) -> None:
    # 10 steps of 48 from a pool of 200 cross epochs; 10 is not a multiple of either block;
    # the 2 steps past the last one are drawn one at a time.
    score = reference_scorer()
    step_by_step = Lookahead(source_for(regime), SIZE, 10, CPU, block=1, reference=score)
    blocked = Lookahead(source_for(regime), SIZE, 10, CPU, block=block, reference=score)
    expected = draws(step_by_step, 12)
    assert_same(draws(blocked, 12), expected)
    # ... and step_by_step itself is what the bare source gives, with losses of each super-batch.
    bare = source_for(regime)
    for d in expected:
        x, y, corrupted = bare.next(SIZE)
        assert torch.equal(d.x, x) and torch.equal(d.y, y) and torch.equal(d.corrupted, corrupted)
        assert torch.equal(d.losses["reference"], score(x, y))


def test_no_block_reaches_past_the_last_step() -> None:
    """Passes past the last step would be real compute the ledger never charges."""
    calls: list[int] = []
    score = reference_scorer()

    def counted(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls.append(len(y))
        return score(x, y)

    lookahead = Lookahead(source_for("fixed"), SIZE, 10, CPU, block=8, reference=counted)
    draws(lookahead, 10)
    assert lookahead.source.examples_seen == 10 * SIZE and calls == [8 * SIZE, 2 * SIZE]


@pytest.mark.parametrize("stop", [0, 2, 3, 7, 10])
def test_a_lookahead_resumed_from_its_state_goes_on_identically(stop: int) -> None:
    # block 3: stops before any draw (0), mid-block (2, 7), at a block's end (3), at the end (10)
    score = reference_scorer()
    full = draws(Lookahead(source_for("stream"), SIZE, 12, CPU, block=3, reference=score), 12)
    first = Lookahead(source_for("stream"), SIZE, 12, CPU, block=3, reference=score)
    assert_same(draws(first, stop), full[:stop])
    resumed = Lookahead(source_for("stream"), SIZE, 12, CPU, block=3, reference=score)
    resumed.load_state_dict(roundtrip(first.state_dict()))
    assert_same(draws(resumed, 12 - stop), full[stop:])


def test_a_frozen_model_scores_a_block_of_super_batches_as_it_scores_each() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(8 * SIZE, 40), torch.randint(10, (8 * SIZE,))
    task = Classification()
    for arch in ("mlp", "cnn1d"):
        model = build_model(ModelConfig(arch=arch, size="m"), (40,), 10, seed=0)
        one_pass = block_scorer(task, model, SIZE, loop.autocast_for(CPU))(x, y)
        each = [
            per_example_loss(task, model, x[i : i + SIZE], y[i : i + SIZE], loop.autocast_for(CPU))
            for i in range(0, len(y), SIZE)
        ]
        assert torch.equal(one_pass, torch.cat(each))


def test_contrastive_scores_are_taken_one_super_batch_at_a_time() -> None:
    """A pair's contrastive loss has the other pairs of its chunk as negatives, so one pass over
    a block would give other scores: the block scorer goes one super-batch at a time."""
    cfg = DataConfig.model_validate(
        {"name": "mnist1d_pairs", "train_size": 200, "test_size": 64, "clean_size": 64}
    )
    splits = load_splits(cfg)
    task = Contrastive(chunk=16)
    model = task.build(ModelConfig(arch="mlp", size="s"), data_spec(splits), seed=0)
    x, y = splits.train_x[:120], splits.train_y[:120]  # 3 super-batches of 40: chunks 16, 16, 8
    autocast = loop.autocast_for(CPU)
    blocked = block_scorer(task, model, 40, autocast)(x, y)
    each = torch.cat(
        [per_example_loss(task, model, x[i : i + 40], y[i : i + 40], autocast) for i in (0, 40, 80)]
    )
    assert torch.equal(blocked, each)
    assert not torch.equal(per_example_loss(task, model, x, y, autocast), each)


def test_lookahead_size_follows_the_input_bytes() -> None:
    assert lookahead_steps(256, (40,)) == 32  # 40 KB a step: capped at 32 steps
    assert lookahead_steps(2560, (40,)) == 10  # 400 KB a step: 4 MiB in all
    assert lookahead_steps(1024, (3, 32, 32)) == 1  # 12 MB a step: never under one step


def test_training_with_blocks_equals_training_step_by_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole run (learnability, pretrained reference, fixed pool over many epochs) logs the
    same metrics, bitwise, whether its super-batches are drawn 1 or 32 steps at a time."""
    cfg = RunConfig.model_validate(
        tiny_run_config(budget={"steps": 90}, selection={"policy": "learnability", "keep": 0.3})
    ).resolved()
    assert lookahead_steps(cfg.selection.super_batch_size(cfg.batch_size), (40,)) == 32

    def history() -> list[tuple[int, dict[str, float]]]:
        logger = MemoryLogger()
        train(cfg, RunContext(workdir=tmp_path), logger)
        return logger.history

    blocked = history()
    monkeypatch.setattr(loop, "lookahead_steps", lambda *args: 1)
    assert history() == blocked

"""Data-parallel runs on a shard set: each rank reads its own shards (trainers/distributed.py,
``StepShares``), on a real gloo process group of 2 processes (``tests.test_distributed``'s
harness).

What must hold: the ranks draw disjoint samples whose union over an epoch is the shard set; a
run stopped and resumed on 2 ranks trains on exactly the samples of the uninterrupted run and
logs the same metrics; the checkpoint holds every rank's stream position; counts of skipped
samples are the run's (summed over ranks); the kept rows a global selection needs from another
rank arrive in the kept batch's order.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from activescale.errors import ConfigError, PluginError
from tests.conftest import tiny_run_config
from tests.images import write_npz
from tests.test_distributed import on_ranks
from tests.test_shards import rewrite_shard
from tests.traced import (
    NAME,
    SOURCES,
    TRACE,
    TracedShardsConfig,
    register_traced,
    traced_dataset,
    trained_keys,
)
from trainers.config import RunConfig
from trainers.data import register_dataset, registered_datasets
from trainers.data.manifest import read_manifest
from trainers.data.pack import pack
from trainers.data.shardfile import index_shard
from trainers.data.shards import ShardsConfig, ShardSource, shard_splits
from trainers.distributed import Ranks, shard_rows
from trainers.loop import Interrupted, RunContext, train
from trainers.tracking import MemoryLogger

TRAIN = 270  # training samples of the packed set (300, a tenth carved as clean), 7 shards
STEPS = 40
SUPER_BATCH = 64  # batch 32, keep 0.5: each of 2 ranks draws 32 a step


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dpshards")
    pack(write_npz(root / "data.npz"), root / "out", shard_size=40, clean_fraction=0.1)
    return root / "out"


@pytest.fixture(autouse=True, scope="module")
def traced() -> Iterator[None]:
    """The traced dataset in this process (a rank's own process registers it itself)."""
    with traced_dataset():
        yield


def run_config(folder: Path, selection: dict[str, Any] | None = None, **dataset: Any) -> str:
    overrides = tiny_run_config(
        dataset={"name": NAME, "path": str(folder), "shuffle_buffer": 64}
        | {"workers": 0, "label_noise": 0.2}
        | dataset,
        learner={"arch": "mlp", "size": "xxs"},
        scorer={"arch": "mlp", "size": "xxs"},
        selection={"policy": "learnability", "keep": 0.5} | (selection or {}),
        budget={"steps": STEPS},
        eval={"points": 3, "batch_size": 256},
    )
    return RunConfig.model_validate(overrides).model_dump_json()


def traced_run(ranks: Ranks, config: str, workdir: str, stop_on_rank: int | None = None) -> dict:
    """Train ``config`` on this rank with a checkpoint (``stop_on_rank``: that rank alone is
    asked to stop after its 5th step); what it logged, where it stopped, what it drew."""
    register_traced()
    TRACE.clear()
    asked = {"steps": 0}

    def stop_requested() -> bool:
        asked["steps"] += 1
        return ranks.rank == stop_on_rank and asked["steps"] >= 5

    logger = MemoryLogger()
    ctx = RunContext(
        workdir=Path(workdir),
        checkpoint_path=Path(workdir) / "checkpoint.pt",
        stop_requested=stop_requested if stop_on_rank is not None else None,
        ranks=ranks,
    )
    stopped = None
    try:
        train(RunConfig.model_validate_json(config), ctx, logger)
    except Interrupted as stop:
        stopped = stop.step
    source = SOURCES[-1]
    return {
        "history": logger.history,
        "stopped_at": stopped,
        "keys": trained_keys(),
        "skipped": source.skipped,
        "epoch_lengths": [source.order.epoch(e).total for e in range(3)],
    }


def all_training_keys(folder: Path) -> set[str]:
    cfg = TracedShardsConfig(path=str(folder), workers=0)
    return set(ShardSource(cfg, 0).next_with_keys(TRAIN)[3])


# ---------------------------------------------------------------------------------------------


def test_ranks_train_on_disjoint_samples_whose_union_over_an_epoch_is_the_shard_set(
    packed: Path, tmp_path: Path
) -> None:
    by_rank = on_ranks(traced_run, run_config(packed), str(tmp_path / "run"), out=tmp_path)
    assert by_rank[1]["history"] == []  # only rank 0 logs
    per_rank = [len(r["keys"]) for r in by_rank]
    assert per_rank == [STEPS * SUPER_BATCH // 2] * 2  # each rank draws only its share
    every = all_training_keys(packed)
    for epoch in range(2):  # 40 steps x 32 = 1280 draws a rank: 9 epochs of its ~135 samples
        read = []
        for result in by_rank:
            start = sum(result["epoch_lengths"][:epoch])
            stop = start + result["epoch_lengths"][epoch]
            read.append({result["keys"][q] for q in range(start, stop)})
        assert read[0].isdisjoint(read[1])
        assert read[0] | read[1] == every
    assert sum(by_rank[0]["epoch_lengths"][:1] + by_rank[1]["epoch_lengths"][:1]) == TRAIN


def test_a_run_resumed_on_two_ranks_reads_and_logs_what_the_uninterrupted_run_does(
    packed: Path, tmp_path: Path
) -> None:
    cfg = run_config(packed)
    whole = on_ranks(traced_run, cfg, str(tmp_path / "whole"), out=tmp_path / "a")
    # Only rank 1 is asked to stop; both stop at the next agreement step (16), in a block of 32.
    first = on_ranks(traced_run, cfg, str(tmp_path / "cut"), 1, out=tmp_path / "b")
    assert [r["stopped_at"] for r in first] == [16, 16]
    saved = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)["draws"]
    assert saved["world_size"] == 2
    positions = [state["source"] for state in saved["ranks"]]
    assert [p["rank"] for p in positions] == [0, 1] and positions[0] != positions[1]
    shutil.copytree(tmp_path / "cut", tmp_path / "alone")
    rest = on_ranks(traced_run, cfg, str(tmp_path / "cut"), out=tmp_path / "c")
    for rank in (0, 1):
        # What the resumed rank drew again (its block from the checkpoint on) agrees with its
        # first part, and together they are the uninterrupted rank's draws.
        resumed = first[rank]["keys"] | rest[rank]["keys"]
        assert all(first[rank]["keys"].get(q, key) == key for q, key in rest[rank]["keys"].items())
        assert resumed == whole[rank]["keys"]
    assert first[0]["history"] + rest[0]["history"] == whole[0]["history"]  # bitwise
    # One process cannot go on: it would read another stream.
    with pytest.raises(ConfigError, match=r"2 processes that each read their own shards.*resume"):
        traced_run(Ranks(), cfg, str(tmp_path / "alone"))


def test_skipped_samples_are_counted_over_every_rank(packed: Path, tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    shutil.copytree(packed, folder)
    for shard in read_manifest(folder).splits["train"].shards:  # 2 bad samples in every shard
        bad = {sample.key for sample in index_shard(folder / shard.name).samples[:2]}
        rewrite_shard(
            folder, shard.name, lambda k, f, bad=bad: f | {"png": b"junk"} if k in bad else f
        )
    cfg = run_config(folder, selection={"scope": "local"}, skip_bad=True)
    by_rank = on_ranks(traced_run, cfg, str(tmp_path / "run"), out=tmp_path / "ranks")
    skipped = [r["skipped"] for r in by_rank]
    assert all(count > 0 for count in skipped)
    last = by_rank[0]["history"][-1][1]
    assert last["data/skipped"] == sum(skipped)
    # epochs: each rank's share of its own epochs, averaged (not summed)
    assert 0 < last["data/epoch"] < 2 * STEPS * SUPER_BATCH / TRAIN


def exchanged(ranks: Ranks, super_batch: int, keep: list[int]) -> list[torch.Tensor]:
    """Rank r holds rows shard_rows(S, r, W) of a known super-batch; what it gets of ``keep``."""
    rows = torch.arange(super_batch * 3, dtype=torch.float32).reshape(super_batch, 3)
    flags = torch.arange(super_batch) % 3 == 0
    labels = torch.arange(super_batch) * 10
    mine = shard_rows(super_batch, ranks.rank, ranks.world_size)
    index = torch.tensor(keep)
    return [ranks.exchange_kept(t[mine], index, super_batch) for t in (rows, flags, labels)]


@pytest.mark.parametrize(("super_batch", "keep"), [(8, [6, 1, 7, 0, 2, 5]), (7, [0, 1, 2, 3])])
def test_kept_rows_held_by_another_rank_arrive_in_the_kept_order(
    tmp_path: Path, super_batch: int, keep: list[int]
) -> None:
    """(7, [0..3]): uneven shares (3 and 4 rows), and rank 1 holds none of the kept rows."""
    by_rank = on_ranks(exchanged, super_batch, keep, out=tmp_path)
    rows = torch.arange(super_batch * 3, dtype=torch.float32).reshape(super_batch, 3)
    flags = torch.arange(super_batch) % 3 == 0
    labels = torch.arange(super_batch) * 10
    for rank, got in enumerate(by_rank):
        part = torch.tensor(keep)[shard_rows(len(keep), rank, 2)]
        for expected, tensor in zip((rows, flags, labels), got, strict=True):
            assert tensor.dtype == expected.dtype
            assert torch.equal(tensor, expected[part])


def test_a_per_rank_dataset_needs_a_stream_that_takes_the_rank() -> None:
    def no_rank(cfg: ShardsConfig, seed: int) -> ShardSource:
        return ShardSource(cfg, seed)

    for stream, message in (
        (None, r"per_rank=True needs a stream"),
        (
            no_rank,
            r"stream must take \(cfg, seed, \*, rank, world_size\); its signature is no_rank",
        ),
    ):
        with pytest.raises(PluginError, match=message):
            register_dataset(
                "rankless_shards",
                config=TracedShardsConfig,
                splits=shard_splits,
                stream=stream,
                per_rank=True,
            )
    assert "rankless_shards" not in registered_datasets()

"""The shards dataset's training stream: epochs, shard order, ranks, workers, exact resume
(through the training loop), label noise and whether corruption is known."""

from __future__ import annotations

import gc
import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from activescale.errors import ConfigError
from tests.conftest import tiny_run_config
from tests.images import write_npz
from tests.traced import NAME, SOURCES, TRACE, traced_dataset, trained_keys
from trainers.config import RunConfig
from trainers.data import dataset_config, load_splits
from trainers.data import shards as shards_module
from trainers.data.corruptions import hashed_label_noise
from trainers.data.manifest import read_manifest
from trainers.data.pack import pack
from trainers.data.shard_reader import ReadSettings, crop_images, images_to_tensor, normalise
from trainers.data.shardfile import index_shard
from trainers.data.shards import ShardsConfig, ShardSource, describe_shards, shard_splits
from trainers.loop import Interrupted, RunContext, train
from trainers.tracking import MemoryLogger

TRAIN = 270  # training samples of the packed set below (300, a tenth carved as clean)


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shards")
    pack(write_npz(root / "data.npz"), root / "out", shard_size=40, clean_fraction=0.1)
    return root / "out"


@pytest.fixture(autouse=True)
def units_of_a_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers decode units of one draw here (UNIT_BYTES 0), so that these small streams
    cross many unit boundaries; test_units_of_any_size_give_the_same_stream checks that the
    default (units of several draws) serves the same."""
    monkeypatch.setattr(shards_module, "UNIT_BYTES", 0)


def config(folder: Path, **fields: Any) -> ShardsConfig:
    base = {"name": "shards", "path": str(folder), "workers": 0, "shuffle_buffer": 64}
    return dataset_config(base | fields)  # type: ignore[return-value]


def source(folder: Path, run_seed: int = 0, **fields: Any) -> ShardSource:
    return ShardSource(config(folder, **fields), run_seed)


def keys(src: ShardSource, n: int) -> list[str]:
    return src.next_with_keys(n)[3]


def test_an_epoch_serves_every_training_sample_once_in_a_new_order(packed: Path) -> None:
    src = source(packed)
    first, second = keys(src, TRAIN), keys(src, TRAIN)
    assert len(set(first)) == TRAIN and set(first) == set(second)
    assert first != second  # another shard order and other windows in epoch 1
    assert src.epoch == 2.0
    assert keys(source(packed, run_seed=1), TRAIN) != first  # the run seed orders the stream


def test_the_shuffle_buffer_mixes_within_a_window_only(packed: Path) -> None:
    """Window 0 of epoch 0 holds the first 64 samples of the rank's shard sequence."""
    src = source(packed)
    shards, offsets = src.order.epoch(0).locate(np.arange(64))
    names = src.settings.shard_names
    expected = {
        index_shard(packed / names[shard]).samples[offset].key
        for shard, offset in zip(shards, offsets, strict=True)
    }
    assert set(keys(src, 64)) == expected


def test_workers_change_nothing_but_speed(packed: Path) -> None:
    """Decoding in 2 worker processes gives the same tensors, labels and keys as in the main
    process, augmentation and label noise included, across units and epochs."""
    fields = {"augment": "crop_flip", "label_noise": 0.3}
    inline, workers = source(packed, **fields), source(packed, workers=2, prefetch=1, **fields)
    for n in (100, 37, 300):
        a, b = inline.next_with_keys(n), workers.next_with_keys(n)
        assert a[3] == b[3] and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert a[2] is not None and b[2] is not None and torch.equal(a[2], b[2])
    workers.close()


def test_units_of_any_size_give_the_same_stream(
    packed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's unit is UNIT_BYTES of decoded images (several draws of small images) or one
    draw, whichever is larger, at most MAX_UNIT samples: the samples, tensors and state are
    those of units of one draw, with and without workers."""
    fields = {"augment": "crop_flip", "label_noise": 0.3}

    def stream(**more: Any) -> tuple[list[Any], dict[str, Any], int]:
        src = source(packed, **fields, **more)
        draws = [src.next_with_keys(n) for n in (37, 100, 300)]
        src.close()
        return draws, src.state_dict(), src._unit_size

    expected, state, unit = stream()  # units of one draw (the fixture)
    streams = [stream(workers=2)]
    monkeypatch.setattr(shards_module, "UNIT_BYTES", 6 * 2**20)
    streams += [stream(), stream(workers=2)]
    assert unit == 37 and [s[2] for s in streams] == [37, shards_module.MAX_UNIT, 4096]
    for draws, got_state, _ in streams:
        assert got_state == state
        for got, want in zip(draws, expected, strict=True):
            assert got[3] == want[3] and torch.equal(got[0], want[0])
            assert torch.equal(got[1], want[1]) and torch.equal(got[2], want[2])


def test_augmentation_crops_and_flips_deterministically(packed: Path) -> None:
    plain = source(packed).next_with_keys(TRAIN)
    augmented = source(packed, augment="crop_flip").next_with_keys(TRAIN)
    again = source(packed, augment="crop_flip").next_with_keys(TRAIN)
    assert plain[3] == augmented[3] and torch.equal(augmented[0], again[0])
    changed = (plain[0] != augmented[0]).flatten(1).any(dim=1).float().mean()
    assert changed > 0.8  # 1 in 9 x 9 crops is the identity, half of those flip
    assert augmented[0].shape == plain[0].shape


def test_images_become_normalised_crops_and_flips_of_the_padded_image() -> None:
    """images_to_tensor against the definition, sample by sample: zero-pad by `pad`, take the
    (dy, dx) window, mirror it when flip is 1, then (x / 255 - mean) / std in float32."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    settings = ReadSettings(
        folder=Path("."),
        shard_names=(),
        counts=(),
        image_shape=(16, 16, 3),
        size=None,
        mean=(0.3, 0.5, 0.7),
        std=(0.2, 0.25, 0.3),
        num_classes=10,
    )
    pad = settings.pad
    draws = np.stack(
        [rng.integers(0, 2 * pad + 1, 40), rng.integers(0, 2 * pad + 1, 40), np.arange(40) % 2],
        axis=1,
    )
    mean = torch.tensor(settings.mean).view(3, 1, 1)
    std = torch.tensor(settings.std).view(3, 1, 1)
    for out, crops in (
        (images_to_tensor(pixels, settings), None),
        (images_to_tensor(pixels, settings, draws), draws),
    ):
        assert out.shape == (40, 3, 16, 16) and out.dtype == torch.float32 and out.is_contiguous()
        for i in range(40):
            image = torch.from_numpy(pixels[i]).permute(2, 0, 1)
            if crops is not None:
                dy, dx, flip = crops[i].tolist()
                image = torch.nn.functional.pad(image, (pad, pad, pad, pad))[
                    :, dy : dy + 16, dx : dx + 16
                ]
                image = image.flip(2) if flip else image
            assert torch.equal(out[i], (image.float() / 255 - mean) / std)
    # What a worker hands over: the same crops as uint8, already in shared memory (pickling
    # it for the main process then copies nothing), normalised by the main process.
    crops = crop_images(pixels, settings, draws, shared=True)
    assert crops.dtype == torch.uint8 and crops.is_shared()
    assert torch.equal(normalise(crops, settings), images_to_tensor(pixels, settings, draws))


def test_a_worker_indexes_each_shard_once_an_epoch_and_keeps_only_what_it_reads_next(
    packed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two consecutive units read from the shards their windows span: those indexes stay
    while they are read (no shard indexed twice in an epoch), and no more (the memory does
    not grow with the dataset)."""
    import trainers.data.shard_reader as shard_reader

    calls: list[Path] = []

    def counted(path: Path) -> object:
        calls.append(path)
        return index_shard(path)

    monkeypatch.setattr(shard_reader, "index_shard", counted)
    src = source(packed, shuffle_buffer=16)
    assert sorted(set(src.settings.counts)) == [30, 40] and len(src.settings.counts) == 7
    dataset = shard_reader.UnitDataset(src.settings, src.order, unit=12)
    assert dataset.reader.keep_indexes == 3  # (2 x 12 + 2 x 16) / 30 + 1: two units' windows
    kept = []
    for start in range(0, TRAIN, 12):  # units of 12 cross the windows of 16
        dataset[(0, start, min(start + 12, TRAIN))]
        kept.append(len(dataset.reader._indexes))
    assert sorted(calls) == sorted(set(calls)) and len(calls) == 7
    assert max(kept) == 3


def test_ranks_read_disjoint_shards_whose_union_is_the_epoch(packed: Path) -> None:
    cfg = config(packed)
    whole = source(packed)
    ranks = [ShardSource(cfg, 0, rank=r, world_size=2) for r in (0, 1)]
    for epoch in range(2):
        mine = [src.order.epoch(epoch) for src in ranks]
        assert set(mine[0].shards).isdisjoint(mine[1].shards)
        assert sorted([*mine[0].shards, *mine[1].shards]) == list(range(len(cfg_counts(packed))))
        served = [keys(src, mine[r].total) for r, src in enumerate(ranks)]
        assert set(served[0]).isdisjoint(served[1])
        assert set(served[0]) | set(served[1]) == set(keys(whole, TRAIN))


def cfg_counts(folder: Path) -> list[int]:
    return [s.count for s in read_manifest(folder).splits["train"].shards]


def test_more_ranks_than_shards_is_a_named_error(packed: Path) -> None:
    with pytest.raises(Exception, match=r"has 7 shards \(0 empty\) for 8 ranks"):
        ShardSource(config(packed), 0, rank=0, world_size=8)


def test_the_source_resumes_exactly_from_its_state(packed: Path) -> None:
    src = source(packed, augment="crop", label_noise=0.2)
    keys(src, 200)
    state = src.state_dict()
    ahead = src.next_with_keys(500)  # crosses into the next epoch
    resumed = source(packed, workers=2, augment="crop", label_noise=0.2)  # workers: not state
    resumed.load_state_dict(state)
    again = resumed.next_with_keys(500)
    assert ahead[3] == again[3] and torch.equal(ahead[0], again[0])
    assert resumed.examples_seen == src.examples_seen == 700
    resumed.close()


def test_a_state_of_another_stream_is_refused(packed: Path) -> None:
    state = source(packed).state_dict()
    with pytest.raises(ConfigError, match="cannot resume a shards source"):
        source(packed, run_seed=1).load_state_dict(state)
    with pytest.raises(ConfigError, match="cannot resume a shards source"):
        source(packed, label_noise=0.1).load_state_dict(state)


def test_label_noise_is_a_property_of_the_sample(packed: Path) -> None:
    src = source(packed, label_noise=0.4, seed=5)  # seed: the data seed
    clean = source(packed, seed=5)
    _, y, corrupted, ids = src.next_with_keys(TRAIN)
    _, y_clean, unknown, ids_clean = clean.next_with_keys(TRAIN)
    assert ids == ids_clean and unknown is None and corrupted is not None
    assert torch.equal(corrupted, y != y_clean)  # flipped to a different class, and marked
    assert 0.3 < corrupted.float().mean() < 0.5
    # the same samples, in another epoch's order, get the same labels
    _, y2, _, ids2 = src.next_with_keys(TRAIN)
    by_key = dict(zip(ids, y.tolist(), strict=True))
    assert all(by_key[k] == label for k, label in zip(ids2, y2.tolist(), strict=True))
    assert hashed_label_noise("00000001", 2, 0.0, 4, 0) == (2, False)


def test_corruption_carried_by_the_samples_is_known(tmp_path: Path) -> None:
    corrupted = np.arange(300) % 5 == 0
    pack(write_npz(tmp_path / "d.npz", corrupted=corrupted), tmp_path / "out", shard_size=64)
    flags = source(tmp_path / "out").next_with_keys(TRAIN)[2]
    assert (
        flags is not None
        and int(flags.sum()) == read_manifest(tmp_path / "out").splits["train"].corrupted
    )


def test_splits_and_facts_come_from_the_manifest(packed: Path) -> None:
    splits = shard_splits(config(packed))
    facts = describe_shards(config(packed))
    assert splits.facts() == facts and facts.input_shape == (3, 8, 8) and facts.clean_size == 30
    assert len(splits.train_y) == 0 and splits.test_x.shape == (40, 3, 8, 8)
    assert abs(float(splits.test_x.mean())) < 0.1  # normalised with the train split stats
    assert describe_shards(config(packed, image_size=4)).input_shape == (3, 4, 4)


def test_config_rules(packed: Path) -> None:
    with pytest.raises(ValidationError, match="regime='fixed' is not allowed with name='shards'"):
        config(packed, regime="fixed")
    with pytest.raises(ValidationError, match="path=None is not allowed with name='shards'"):
        dataset_config({"name": "shards"})
    with pytest.raises(ValidationError, match="label_noise"):
        config(packed, label_noise=1.5)
    with pytest.raises(Exception, match=r"no split 'holdout' \(dataset\.clean\)"):
        shard_splits(config(packed, clean="holdout"))
    assert all(f.description for f in ShardsConfig.model_fields.values())


# ---------------------------------------------------------------------------------------------
# Through the training loop: the samples a resumed run trains on are the uninterrupted run's


@pytest.fixture(scope="module")
def traced() -> Iterator[None]:
    with traced_dataset():
        yield


def run_config(folder: Path, **dataset: Any) -> RunConfig:
    overrides = tiny_run_config(
        dataset={"name": NAME, "path": str(folder), "shuffle_buffer": 64} | dataset,
        learner={"arch": "mlp", "size": "xxs"},
        scorer={"arch": "mlp", "size": "xxs"},
        budget={"steps": 40},
        eval={"points": 3, "batch_size": 256},
    )
    return RunConfig.model_validate(overrides)


@pytest.mark.usefixtures("traced")
@pytest.mark.parametrize(
    ("stop_after", "workers"),
    [
        (5, 0),  # mid-block (a block holds 32 steps: 2048 samples, 7.6 epochs of 270)
        (33, 1),  # mid-block again, the checkpoint mid-epoch; the resumed block crosses an epoch
        (20, 2),
    ],
)
def test_a_resumed_run_trains_on_exactly_the_samples_of_an_uninterrupted_one(
    packed: Path, tmp_path: Path, stop_after: int, workers: int
) -> None:
    cfg = run_config(packed, workers=workers, label_noise=0.2, augment="crop")
    TRACE.clear()
    full = MemoryLogger()
    train(cfg, RunContext(tmp_path / "full", tmp_path / "full" / "ckpt.pt"), full)
    uninterrupted = trained_keys()
    assert len(uninterrupted) == 40 * 64  # every step's super-batch, B / rho = 32 / 0.5

    TRACE.clear()
    ckpt = tmp_path / "part" / "ckpt.pt"
    asked = iter(range(1000))
    ctx = RunContext(tmp_path / "part", ckpt, stop_requested=lambda: next(asked) == stop_after - 1)
    first = MemoryLogger()
    with pytest.raises(Interrupted):
        train(cfg, ctx, first)
    state = torch.load(ckpt, weights_only=False)
    assert state["step"] == stop_after
    source_state = state["draws"]["source"]
    assert source_state["position"] > 0 or stop_after < 32  # mid-epoch where a block starts
    resumed = MemoryLogger()
    train(cfg, RunContext(tmp_path / "part", ckpt), resumed)
    assert trained_keys() == uninterrupted
    before = [h for h in first.history if h[0] <= stop_after]
    assert before + resumed.history == full.history  # and so the metrics, bitwise
    SOURCES.clear()  # the trace's references to the sources
    gc.collect()
    assert not multiprocessing.active_children()  # no worker process outlives its run


@pytest.mark.usefixtures("traced")
def test_selected_corrupted_is_absent_where_corruption_is_unknown(
    packed: Path, tmp_path: Path
) -> None:
    unknown = MemoryLogger()
    train(run_config(packed), RunContext(tmp_path / "a"), unknown)
    assert all("selected_corrupted" not in m for _, m in unknown.history)
    assert unknown.history[-1][1]["data/skipped"] == 0.0
    known = MemoryLogger()
    train(run_config(packed, label_noise=0.3), RunContext(tmp_path / "b"), known)
    assert all(0 < m["selected_corrupted"] < 1 for _, m in known.history)
    assert known.history[-1][1]["data/epoch"] == pytest.approx(40 * 64 / TRAIN)


def test_a_run_config_names_the_shards_dataset(packed: Path) -> None:
    cfg = RunConfig.model_validate(
        tiny_run_config(dataset={"name": "shards", "path": str(packed), "label_noise": 0.1})
    )
    assert isinstance(cfg.dataset, ShardsConfig) and cfg.dataset.regime == "stream"
    assert load_splits(cfg.dataset).input_shape == (3, 8, 8)

"""Tests for trainers/data/registry.py: built-in entries, registration rules, dispatch, facts,
and a dataset registered from outside with its own config model (as a plugin will)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel, Field, ValidationError

from activescale.errors import ConfigError, DataError, PluginError
from tests.conftest import datasets_restored
from trainers.data import (
    BUILT_IN,
    DataConfig,
    DatasetConfig,
    DatasetFacts,
    FixedSource,
    Splits,
    dataset_entry,
    dataset_facts,
    load_splits,
    make_source,
    register_dataset,
    registered_datasets,
)
from trainers.data.shards import ShardsConfig
from trainers.data.splits import splits_from_arrays
from trainers.tasks import DataSpec, data_spec

SMALL = {"train_size": 300, "test_size": 40, "clean_size": 30}


def test_built_ins_are_registered_with_what_they_allow() -> None:
    names = [entry.name for entry in BUILT_IN]
    assert names == ["mnist1d", "mnist1d_pairs", "npz", "cifar10", "imagefolder", "shards"]
    assert list(registered_datasets())[: len(names)] == names
    for entry in BUILT_IN:
        assert dataset_entry(entry.name) is entry
        assert entry.config is (ShardsConfig if entry.name == "shards" else DataConfig)
    assert [e.name for e in BUILT_IN if e.can_stream] == ["mnist1d", "mnist1d_pairs", "shards"]
    assert {e.source for e in BUILT_IN} == {"built-in"} and all(e.description for e in BUILT_IN)
    assert {e.name: e.path for e in BUILT_IN if e.path} == {
        "npz": "the .npz file",
        "cifar10": "the dataset's root folder",
        "imagefolder": "the dataset's root folder",
        "shards": "the folder written by `activescale data pack`",
    }


def test_a_name_can_be_registered_once() -> None:
    with pytest.raises(PluginError, match=r"'mnist1d' is already registered \(by built-in\)"):
        register_dataset("mnist1d", config=DataConfig, splits=load_splits)
    assert dataset_entry("mnist1d") is BUILT_IN[0]


@pytest.mark.parametrize("name", ["", "Blobs", "1blobs", "my-blobs", "blobs "])
def test_a_dataset_name_must_be_a_lower_case_identifier(name: str) -> None:
    with pytest.raises(PluginError, match="use a lower-case identifier"):
        register_dataset(name, config=DataConfig, splits=load_splits)
    assert name not in registered_datasets()


class Unrelated(BaseModel):
    name: str = "unrelated"
    path: str | None = None
    regime: str = "fixed"


@pytest.mark.parametrize("config", [dict, Unrelated])
def test_a_dataset_config_must_subclass_the_base(config: type) -> None:
    with pytest.raises(PluginError, match="must be a subclass of DatasetConfig"):
        register_dataset("not_a_dataset_config", config=config, splits=load_splits)
    assert "not_a_dataset_config" not in registered_datasets()


def test_an_unknown_name_says_what_is_registered() -> None:
    built_in = "mnist1d, mnist1d_pairs, npz, cifar10, imagefolder, shards"
    with pytest.raises(
        ConfigError, match=rf"'nope' is not a registered dataset; built-in: {built_in};"
    ):
        dataset_entry("nope")


def test_stream_message_names_the_datasets_that_can_stream() -> None:
    with pytest.raises(ValidationError) as err:
        DataConfig(name="npz", path="x.npz", regime="stream")
    assert (
        "regime='stream' is not allowed with name='npz': only mnist1d, mnist1d_pairs or shards "
        "can stream training examples; use regime='fixed'"
    ) in str(err.value)


def test_make_source_refuses_a_stream_the_dataset_cannot_give() -> None:
    unchecked = DataConfig.model_construct(name="npz", path="x.npz", regime="stream")
    with pytest.raises(ConfigError, match="the dataset has no stream source"):
        make_source(unchecked, load_splits(DataConfig(**SMALL)), seed=0)


# ---------------------------------------------------------------------------------------------
# Facts for planning
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"name": "mnist1d"},
        {"name": "mnist1d", "regime": "stream", "label_noise": 0.2},
        {"name": "mnist1d_pairs"},
        {"name": "mnist1d_pairs", "regime": "stream"},
        {"name": "mnist1d_pairs", "captions": {"vocabulary": "basic", "length": 9}},
    ],
)
def test_describe_agrees_with_the_splits(settings: dict[str, object]) -> None:
    cfg = DataConfig.model_validate(SMALL | settings)
    splits = load_splits(cfg)
    facts = dataset_facts(cfg)
    assert facts == splits.facts()
    # What planning builds models from (trainers.tasks.DataSpec), and the clean-split size.
    spec = DataSpec(facts.input_shape, facts.num_classes, facts.target_shape, facts.vocab_size)
    assert spec == data_spec(splits) and facts.clean_size == len(splits.clean_y)


@pytest.mark.parametrize("name", ["mnist1d", "mnist1d_pairs"])
def test_generated_datasets_are_described_without_generating(name: str) -> None:
    # A test split of 2**40 examples cannot be generated (terabytes); describing it is free.
    cfg = DataConfig(name=name, test_size=2**40)
    assert dataset_facts(cfg).input_shape == (40,)
    with pytest.raises(MemoryError):
        load_splits(cfg)


def test_file_datasets_are_described_by_loading_them(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        dataset_facts(DataConfig(name="npz", path=str(tmp_path / "missing.npz")))
    rng = np.random.default_rng(0)
    path = tmp_path / "data.npz"
    np.savez(
        path,
        x=rng.normal(size=(60, 2, 3)),
        y=rng.integers(0, 3, 60),
        x_test=rng.normal(size=(10, 2, 3)),
        y_test=rng.integers(0, 3, 10),
    )
    facts = dataset_facts(DataConfig(name="npz", path=str(path), clean_size=15))
    assert facts == DatasetFacts(input_shape=(2, 3), num_classes=3, clean_size=15)


# ---------------------------------------------------------------------------------------------
# A dataset registered from outside, with its own config model
# ---------------------------------------------------------------------------------------------


class BlobsConfig(DatasetConfig):
    """Gaussian blobs in a few dimensions; a plugin's own config, validated like DataConfig."""

    name: str = "test_blobs"
    size: int = Field(200, ge=1)
    seed: int = 0


def blobs_splits(cfg: BlobsConfig) -> Splits:
    rng = np.random.default_rng(cfg.seed)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 3, n)
        return (rng.normal(size=(n, 4)) + y[:, None]).astype(np.float32), y

    x, y = draw(cfg.size)
    return splits_from_arrays((x, y, np.zeros(len(y), bool)), draw(50), draw(20), num_classes=3)


@pytest.fixture(scope="module")
def blobs() -> Iterator[None]:
    with datasets_restored():
        register_dataset(
            "test_blobs", config=BlobsConfig, splits=blobs_splits, path="the blobs file"
        )
        yield


@pytest.mark.usefixtures("blobs")
def test_a_registered_dataset_runs_through_the_registry() -> None:
    cfg = BlobsConfig(path="blobs.txt")
    splits = load_splits(cfg)
    assert splits.input_shape == (4,) and len(splits.train_y) == 200
    source = make_source(cfg, splits, seed=3)
    assert isinstance(source, FixedSource) and source.next(500)[0].shape == (500, 4)
    assert dataset_facts(cfg) == DatasetFacts(input_shape=(4,), num_classes=3, clean_size=20)
    entry = dataset_entry("test_blobs")
    assert entry.config is BlobsConfig and entry.source == __name__  # the registering module
    with pytest.raises(ConfigError, match=r"from plugins: test_blobs\. Fix the name"):
        dataset_entry("nope")


@pytest.mark.usefixtures("blobs")
def test_a_registered_dataset_gets_the_registry_checks() -> None:
    missing_path = (
        r"path=None is not allowed with name='test_blobs': set dataset\.path to the blobs"
    )
    with pytest.raises(ValidationError, match=missing_path):
        BlobsConfig()
    with pytest.raises(ValidationError, match=r"only mnist1d, mnist1d_pairs or shards can stream"):
        BlobsConfig(path="blobs.txt", regime="stream")


@pytest.mark.usefixtures("blobs")
def test_a_run_config_validates_its_dataset_with_the_registered_model() -> None:
    from trainers.config import RunConfig

    run = RunConfig.model_validate({"dataset": {"name": "test_blobs", "path": "b.txt", "size": 9}})
    assert isinstance(run.dataset, BlobsConfig) and run.dataset.size == 9
    dumped = run.model_dump(mode="json")["dataset"]
    assert dumped == {
        "name": "test_blobs",
        "path": "b.txt",
        "regime": "fixed",
        "size": 9,
        "seed": 0,
    }
    assert RunConfig.model_validate(run.model_dump(mode="json")) == run
    with pytest.raises(ValidationError) as err:  # the plugin's own field, at its dotted key
        RunConfig.model_validate({"dataset": {"name": "test_blobs", "path": "b", "size": 0}})
    assert err.value.errors()[0]["loc"] == ("dataset", "size")
    with pytest.raises(ValidationError) as err:  # a key of the built-in config is unknown here
        RunConfig.model_validate({"dataset": {"name": "test_blobs", "path": "b", "label_noise": 0}})
    assert err.value.errors()[0]["loc"] == ("dataset", "label_noise")
    assert err.value.errors()[0]["type"] == "extra_forbidden"
    with pytest.raises(ValidationError) as err:  # an unknown name, at dataset.name, listed
        RunConfig.model_validate({"dataset": {"name": "nope"}})
    first = err.value.errors()[0]
    assert first["loc"] == ("dataset", "name") and "from plugins: test_blobs" in first["msg"]

"""The dataset registry: a dataset's name -> its config model, its splits, its stream, its facts.

Every dataset a run can name is an entry here, built-in ones (``trainers.data.catalog``)
registered through the same :func:`register_dataset` a plugin calls. The training loop and
the planner never branch on a dataset's name; they ask its entry:

- :func:`load_splits`: the train pool (with its corruption mask), clean split and test split;
- :func:`make_source`: where training batches come from, the entry's ``stream``
  (regime ``stream``) or shuffled epochs over the pool (regime ``fixed``);
- :func:`dataset_facts`: shapes and clean-split size for planning, from the entry's cheap
  ``describe`` when it has one, else from the loaded splits (which also checks the files);
- :func:`check_dataset_settings`: the config checks that depend on the dataset (``path``
  required, ``regime: stream`` allowed), run by the config model's validator.

Adding a dataset::

    register_dataset("shards", config=ShardsConfig, splits=load_shard_splits,
                     stream=ShardStream, describe=describe_shards, path="the shard folder")

Every dataset's config model subclasses :class:`DatasetConfig` (``name``, ``path``,
``regime``, and the dataset's own fields); a run config's ``dataset:`` section is validated by
the model its ``name`` registered (:data:`DatasetField`), so a plugin dataset's fields get the
same checks and messages as the built-in ones.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    TypeAdapter,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)

from activescale.errors import ConfigError, PluginError
from activescale.visible import one_line
from trainers.data.sources import BatchSource, FixedSource
from trainers.data.splits import DatasetFacts, Splits
from trainers.models import caller_module, check_arity

__all__ = [
    "DatasetConfig",
    "DatasetEntry",
    "DatasetField",
    "check_dataset_settings",
    "config_model_for",
    "dataset_config",
    "dataset_entry",
    "dataset_facts",
    "load_splits",
    "make_source",
    "reads_per_rank",
    "register_dataset",
    "registered_datasets",
]


class DatasetConfig(BaseModel):
    """The base of every dataset's config model: the fields every dataset has. A dataset adds
    its own (sizes, files, noise...) in a subclass, which it registers with
    :func:`register_dataset`; unknown keys are errors, as everywhere in a run config."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    name: str = Field(description="The dataset's registered name.")
    path: str | None = Field(
        None, min_length=1, description="The file or folder the dataset reads, if any."
    )
    regime: Literal["fixed", "stream"] = Field(
        "fixed",
        description="fixed: one training pool reused over epochs; stream: fresh examples.",
    )

    @classmethod
    def model_for(cls, data: Any) -> type[DatasetConfig] | None:
        """The registered model that validates this raw section (None: unknown name)."""
        return config_model_for(data)

    @field_validator("path")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        return one_line(value)

    @model_validator(mode="after")
    def _registry_checks(self) -> DatasetConfig:
        check_dataset_settings(self)  # path and regime, as the dataset's entry allows
        return self


ConfigT = TypeVar("ConfigT", bound=DatasetConfig)


@dataclass(frozen=True)
class DatasetEntry(Generic[ConfigT]):
    """One registered dataset (not a torch Dataset: what the project knows of one). Build it
    with :func:`register_dataset`."""

    name: str  # what ``dataset.name`` says in a run config
    config: type[DatasetConfig]  # the pydantic model that validates this dataset's config
    splits: Callable[[ConfigT], Splits]  # train (with corrupted mask), clean and test splits
    # A fresh training source for ``regime: stream`` from (config, run seed); None: the
    # dataset cannot stream, only ``regime: fixed`` (shuffled epochs over the pool) is allowed.
    stream: Callable[[ConfigT, int], BatchSource] | None = None
    # True: ``stream`` also takes ``rank=`` and ``world_size=`` and gives that rank a stream of
    # its own (disjoint shards), so each process of a data-parallel run reads only its share;
    # False: every process draws the same stream and keeps its rows (trainers/distributed.py).
    per_rank: bool = False
    # The facts without building the splits (cheap, for planning); None: load the splits.
    describe: Callable[[ConfigT], DatasetFacts] | None = None
    # What ``dataset.path`` must name, for the error when it is missing ("the .npz file");
    # None: the dataset needs no path.
    path: str | None = None
    # What an example's target is: a task learns from one kind (trainers.tasks, ``targets``),
    # and a run config pairs a task only with datasets of that kind.
    targets: str = "class labels"
    description: str = ""  # one line for listings and docs
    source: str = "built-in"  # or the module that registered it (named in error messages)

    @property
    def can_stream(self) -> bool:
        """Whether the dataset allows ``regime: stream``."""
        return self.stream is not None


_REGISTRY: dict[str, DatasetEntry[Any]] = {}
_NAME = re.compile(r"[a-z][a-z0-9_]*")


def register_dataset(
    name: str,
    *,
    config: type[DatasetConfig],
    splits: Callable[[ConfigT], Splits],
    stream: Callable[[ConfigT, int], BatchSource] | None = None,
    describe: Callable[[ConfigT], DatasetFacts] | None = None,
    path: str | None = None,
    targets: str = "class labels",
    description: str = "",
    source: str | None = None,
    per_rank: bool = False,
) -> DatasetEntry[ConfigT]:
    """Register a dataset under `name` and return its entry (the arguments are those of
    :class:`DatasetEntry`; ``source`` defaults to the calling module).

    Raises PluginError if `name` is taken by another module (names are global: a run config
    says only the name; the module that registered it may register it again, which replaces
    the entry), or is not a lower-case identifier (it appears in YAML files, run ids and file
    names), if `config` is not a subclass of :class:`DatasetConfig`, or if a function does
    not take the arguments it will be given.
    """
    source = source or caller_module()
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise PluginError(
            f"dataset name {name!r} is not allowed: use a lower-case identifier "
            "(letters, digits, underscores; starting with a letter), e.g. 'my_shards'"
        )
    taken = _REGISTRY.get(name)
    if taken is not None and taken.source != source:
        raise PluginError(
            f"dataset name {name!r} is already registered (by {taken.source}); {source} "
            "registers it again: register it once, or choose another name"
        )
    if not (isinstance(config, type) and issubclass(config, DatasetConfig)):
        raise PluginError(
            f"config={config!r} is not allowed for dataset {name!r}: it must be a subclass of "
            "DatasetConfig (activescale.plugins.DatasetConfig), the pydantic model that "
            "validates the dataset's settings"
        )
    for function, count, what, signature in (
        (splits, 1, "splits", "(cfg)"),
        (stream, 2, "stream", "(cfg, seed)"),
        (describe, 1, "describe", "(cfg)"),
    ):
        if function is None:
            continue
        if not callable(function):
            raise PluginError(f"dataset {name!r}: {what} must be a function, got {function!r}")
        check_arity(function, count, f"dataset {name!r}: {what}", signature)
    if per_rank:
        _check_per_rank_stream(name, stream)
    entry = DatasetEntry(
        name=name,
        config=config,
        splits=splits,
        stream=stream,
        describe=describe,
        path=path,
        targets=targets,
        description=description,
        source=source,
        per_rank=per_rank,
    )
    _REGISTRY[name] = entry
    return entry


def _check_per_rank_stream(name: str, stream: Callable[..., BatchSource] | None) -> None:
    """A ``per_rank`` dataset's stream must take the rank (PluginError at registration)."""
    if stream is None:
        raise PluginError(
            f"dataset {name!r}: per_rank=True needs a stream (each rank streams its own share); "
            "pass stream=, or leave per_rank False"
        )
    try:
        inspect.signature(stream).bind(0, 0, rank=0, world_size=1)
    except TypeError:
        raise PluginError(
            f"dataset {name!r}: with per_rank=True, stream must take (cfg, seed, *, rank, "
            f"world_size); its signature is {getattr(stream, '__name__', stream)}"
            f"{inspect.signature(stream)}"
        ) from None
    except ValueError:  # no signature to read: trust the caller
        return


def registered_datasets() -> Mapping[str, DatasetEntry[Any]]:
    """Every registered dataset by name (a read-only view, in registration order)."""
    return MappingProxyType(_REGISTRY)


def dataset_entry(name: str) -> DatasetEntry[Any]:
    """The entry registered under `name`; a named error listing every dataset otherwise."""
    entry = _REGISTRY.get(name)
    if entry is None:
        builtin = [n for n, e in _REGISTRY.items() if e.source == "built-in"]
        plugins = [n for n, e in _REGISTRY.items() if e.source != "built-in"]
        raise ConfigError(
            f"dataset.name {name!r} is not a registered dataset; built-in: {', '.join(builtin)}; "
            f"from plugins: {', '.join(plugins) or '(none loaded)'}. Fix the name, or list the "
            "plugin that registers it under `plugins:` in the sweep (docs/plugins.md)"
        )
    return entry


def check_dataset_settings(cfg: DatasetConfig) -> None:
    """The checks that depend on the dataset; for a config model's validator (so raises
    ValueError, which pydantic reports with the dotted key)."""
    try:
        entry = dataset_entry(cfg.name)
    except ConfigError as err:
        raise ValueError(str(err)) from None
    if entry.path is not None and cfg.path is None:
        raise ValueError(
            f"path=None is not allowed with name={cfg.name!r}: set dataset.path to {entry.path}"
        )
    if cfg.regime == "stream" and not entry.can_stream:
        streaming = [name for name, other in _REGISTRY.items() if other.can_stream]
        raise ValueError(
            f"regime='stream' is not allowed with name={cfg.name!r}: only "
            f"{_either(streaming)} can stream training examples; "
            "use regime='fixed'"
        )


def _either(names: list[str]) -> str:
    """Names for a message: "mnist1d(_pairs)" for a name and one extension of it, else
    "a, b or c"."""
    if len(names) == 2 and names[1].startswith(names[0]):
        return f"{names[0]}({names[1][len(names[0]) :]})"
    if len(names) < 2:
        return names[0] if names else "no registered dataset"
    return ", ".join(names[:-1]) + " or " + names[-1]


def load_splits(cfg: DatasetConfig) -> Splits:
    """Build or load the train pool, test split and clean split described by `cfg`.

    The test and clean splits are never corrupted; in the stream regime the train pool is
    empty (examples come from :func:`make_source`).
    """
    return dataset_entry(cfg.name).splits(cfg)


def reads_per_rank(cfg: DatasetConfig, world_size: int) -> bool:
    """Whether each of a run's ``world_size`` processes reads a stream of its own (a ``per_rank``
    dataset streaming on more than one process) rather than all drawing the same one."""
    return world_size > 1 and cfg.regime == "stream" and dataset_entry(cfg.name).per_rank


def make_source(
    cfg: DatasetConfig, splits: Splits, seed: int, *, rank: int = 0, world_size: int = 1
) -> BatchSource:
    """The training source for `cfg`: the dataset's stream (regime="stream") or shuffled
    epochs over ``splits``' training pool, ordered by the run `seed`. Where
    :func:`reads_per_rank`, the stream of process ``rank`` of ``world_size``; otherwise every
    rank gets the same source."""
    entry = dataset_entry(cfg.name)
    if cfg.regime == "stream":
        if entry.stream is None:  # the config's validator refuses this; guards later changes
            raise ConfigError(
                f"regime='stream' is not allowed with name={cfg.name!r}: the dataset has no "
                "stream source; use regime='fixed'"
            )
        if reads_per_rank(cfg, world_size):
            stream: Callable[..., BatchSource] = entry.stream
            return stream(cfg, seed, rank=rank, world_size=world_size)
        return entry.stream(cfg, seed)
    return FixedSource(splits.train_x, splits.train_y, splits.train_corrupted, seed)


def dataset_facts(cfg: DatasetConfig) -> DatasetFacts:
    """Shapes of a dataset and the size of its clean split, for planning. Generated datasets
    answer without generating data; the others are loaded, so a missing or malformed file
    fails here."""
    entry = dataset_entry(cfg.name)
    if entry.describe is not None:
        return entry.describe(cfg)
    return entry.splits(cfg).facts()


# ---------------------------------------------------------------------------------------------
# A run config's ``dataset:`` section: validated by the model its name registered


DEFAULT_DATASET = "mnist1d"


class _DatasetName(BaseModel):
    """Only the name of a dataset section, checked first, so that an unknown name is reported
    at ``dataset.name`` with the list of datasets (the rest cannot be checked without it)."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    name: str = DEFAULT_DATASET

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        try:
            dataset_entry(name)
        except ConfigError as err:
            raise ValueError(str(err)) from None
        return name


def config_model_for(data: Any) -> type[DatasetConfig] | None:
    """The config model that validates this raw ``dataset:`` mapping (None: no such name)."""
    name = data.get("name", DEFAULT_DATASET) if isinstance(data, dict) else None
    entry = _REGISTRY.get(name) if isinstance(name, str) else None
    return entry.config if entry is not None else None


def _dispatch(value: Any, handler: ValidatorFunctionWrapHandler) -> DatasetConfig:
    if isinstance(value, DatasetConfig):
        return value
    if not isinstance(value, dict):
        raise ValueError(
            f"a dataset section is a mapping with a name, e.g. {{name: {DEFAULT_DATASET}}}; "
            f"got {type(value).__name__}"
        )
    _DatasetName.model_validate(value)  # unknown name: the error, at dataset.name
    model = config_model_for(value)
    assert model is not None  # the name was checked just above
    return model.model_validate({"name": DEFAULT_DATASET, **value})


DatasetField = Annotated[SerializeAsAny[DatasetConfig], WrapValidator(_dispatch)]
"""The type of a run config's dataset section: a registered dataset's own config model."""
_DATASET_FIELD: TypeAdapter[DatasetConfig] = TypeAdapter(DatasetField)


def dataset_config(data: Any) -> DatasetConfig:
    """Validate a raw ``dataset:`` mapping (or its JSON text) with its dataset's model."""
    if isinstance(data, str | bytes):
        return _DATASET_FIELD.validate_json(data)
    return _DATASET_FIELD.validate_python(data)

"""Sweep specifications: YAML -> validated run configs.

A sweep YAML holds the sweep's own settings (``name``, ``workdir``, ``store``, ``tracking``,
``executor``, ``max_attempts``, ``tune``, ``from_tuning``: see ``orchestrator/tune/``;
``plugins``: see ``orchestrator/plugins.py``), the base run config at the top level (``dataset``, ``learner``, ``scorer``, ``reference``,
``selection``, ``optimizer``, ``budget``, ``eval``, ``seed``, ...),
and a ``grid`` of dotted run-config keys to lists, expanded as a cartesian product::

    name: demo
    learner: {arch: mlp, size: s}
    grid:
      learner.size: [xs, s, m]
      selection.policy: [iid, learnability]
      seed: [0, 1]

One loading order: defaults -> YAML -> dotted CLI overrides (``-o learner.lr=3e-4``) -> the
plugins the result names are imported -> everything else is validated (against the built-in
names and the plugins'). Every error names the dotted key, the value, what is allowed, and
the file and line it came from.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from activescale.errors import SweepSpecError
from activescale.visible import one_line
from orchestrator.executors import ExecutorConfig
from orchestrator.keys import (
    Lines,
    deep_copy,
    explain,
    fail,
    override_path,
    parse_override,
    set_dotted,
)
from orchestrator.plan import PlanConfig
from orchestrator.plugins import PluginRef, load_sweep_plugins
from orchestrator.sweep_yaml import decode, load_text
from orchestrator.tune.config import DISTRIBUTION_TAGS, TuneConfig, check_tuning
from trainers.config import OMITTED_WHEN_NONE, USER_INPUT, RunConfig
from trainers.tracking import TrackingConfig


class SweepSettings(BaseModel):
    """The sweep's own keys (everything else at the top level is the base run config)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        max_length=100,
        description="Sweep name: letters, digits, '.', '_' and '-'; names the work directory.",
    )
    description: str = Field("", description="Free text shown by `status` and the report.")
    workdir: str | None = Field(
        None,
        min_length=1,
        description="Where the store, references, checkpoints and report go; null: runs/NAME.",
    )
    store: str | None = Field(
        None,
        min_length=1,
        description=(
            "SQLAlchemy URL of the run store; null: sqlite:///WORKDIR/store.db. "
            "On a cluster: postgresql+psycopg2://user:pass@host/db."
        ),
    )
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="MLflow.")
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig, description="Where runs go.")
    max_attempts: int = Field(
        3, ge=1, description="Attempts (job starts) per run before `retry` gives up on it."
    )
    plan: PlanConfig = Field(default_factory=PlanConfig, description="Cost estimate (`plan`).")
    tune: TuneConfig | None = Field(
        None, description="Optuna studies run by `activescale tune` (see orchestrator/tune/)."
    )
    from_tuning: bool = Field(
        False, description="Runs take their study's best tuned values (run `tune` first)."
    )
    plugins: list[str] = Field(
        default_factory=list,
        description=(
            "Plugins imported before the runs are validated: module names, or paths to .py "
            "files or package folders relative to this file (docs/plugins.md)."
        ),
    )

    @field_validator("workdir", "store")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        return one_line(value)


SWEEP_KEYS = frozenset(SweepSettings.model_fields) | {"grid"}
MAX_GRID_POINTS = 1_000_000  # runs of one sweep: beyond, a store and a report stop being useful
# Names pydantic puts into error locations that are not keys (union members, tagged unions).
HIDDEN = frozenset({"MLPSize", "DataConfig", "ModelConfig", "ReferenceConfig", *DISTRIBUTION_TAGS})


@dataclass(frozen=True)
class PlannedRun:
    """One expanded grid point: its resolved config, id, and the grid values that made it."""

    run_id: str
    config: RunConfig
    label: dict[str, Any]
    config_json: str = ""  # canonical JSON of the config (what the run id hashes)
    tuned: dict[str, Any] = field(default_factory=dict)  # from_tuning: the study's best values

    def config_text(self) -> str:
        return self.config_json or canonical_json(self.config.model_dump(mode="json"))


def canonical_json(data: Any) -> str:
    """The JSON text ``trainers.config.config_hash`` hashes (sorted keys, no spaces)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


@dataclass
class Sweep:
    settings: SweepSettings
    base: dict[str, Any]
    grid: dict[str, list[Any]]
    source: str  # the YAML file, for messages
    runs: list[PlannedRun] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    # The plugins its `plugins:` list named, loaded before its configs were validated; every
    # job of the sweep loads them again (orchestrator/plugins.py).
    plugins: tuple[PluginRef, ...] = ()
    lines: Lines | None = None  # where each key is written (for checks after loading)

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def workdir(self) -> Path:
        return Path(self.settings.workdir or os.path.join("runs", self.settings.name)).resolve()

    @property
    def store_url(self) -> str:
        return self.settings.store or f"sqlite:///{self.workdir / 'store.db'}"

    @property
    def tracking_uri(self) -> str:
        return self.settings.tracking.uri or f"sqlite:///{self.workdir / 'mlflow.db'}"

    @property
    def experiment(self) -> str:
        return self.settings.tracking.experiment or self.settings.name


# ---------------------------------------------------------------------------------------------
# Loading


def load_sweep(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Sweep:
    """Read, override, validate and expand a sweep; nothing else (no data read, no store,
    no tuning storage opened). Raises SweepSpecError with file:line.

    What a config cannot know alone (data files, models that fit the data) and the tuned
    values of a ``from_tuning`` sweep come after, in :func:`orchestrator.plan.prepare`."""
    path = Path(path)
    if path.is_dir():
        raise SweepSpecError(f"{str(path)!r} is a folder; pass the path of a sweep's YAML file")
    if not path.is_file():
        raise SweepSpecError(f"sweep file {str(path)!r} does not exist; pass a path to a YAML file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SweepSpecError(f"cannot read the sweep file {str(path)!r}: {err.strerror}") from None
    return parse_sweep(decode(data, str(path)), str(path), overrides, folder=path.resolve().parent)


def parse_sweep(
    text: str,
    source: str,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    folder: Path | None = None,
) -> Sweep:
    """:func:`load_sweep` of YAML ``text``; ``source`` names it in messages, ``folder`` is
    where its plugin paths are relative to (default: the folder of ``source``)."""
    document = load_text(text, source)  # YAML 1.2 scalars, limits, no duplicate keys
    raw, lines = document.data, Lines(source, text, document.node)
    if not isinstance(raw, dict):
        raise SweepSpecError(
            f"{source}: a sweep is a YAML mapping with at least `name:`; got {type(raw).__name__}"
        )

    for text_override in overrides:
        key, value = parse_override(text_override)
        grid: dict[str, Any] = raw["grid"] if isinstance(raw.get("grid"), dict) else {}
        if key.startswith("grid."):
            raw.setdefault("grid", {})[key.removeprefix("grid.")] = value
        elif key in grid:  # overriding a grid axis pins it to one value
            grid[key] = [value]
        else:
            set_dotted(raw, override_path(key), value)
        lines.lines[("override", key)] = 0

    # Plugins first: they register the archs, sizes and datasets the rest is validated against.
    plugins = load_sweep_plugins(
        raw.get("plugins"),
        folder or Path(source).resolve().parent,
        lines.where(("plugins",)),
    )
    settings_raw = {k: v for k, v in raw.items() if k in SweepSettings.model_fields}
    try:
        settings = SweepSettings.model_validate(settings_raw)
    except ValidationError as err:
        first = err.errors()[0]
        key_path, problem, fix = explain(first, SweepSettings, (), HIDDEN)
        value = first.get("input")
        raise fail(lines.where(key_path), ".".join(key_path), value, problem, fix) from None

    grid = raw.get("grid") or {}
    if not isinstance(grid, dict):
        raise fail(
            lines.where(("grid",)),
            "grid",
            grid,
            "grid must be a mapping of dotted keys to lists",
            "Write e.g. `grid: {seed: [0, 1]}`.",
        )
    base = {k: v for k, v in raw.items() if k not in SWEEP_KEYS}
    sweep = Sweep(
        settings=settings,
        base=base,
        grid=grid,
        source=source,
        raw=raw,
        plugins=plugins,
        lines=lines,
    )
    points = 1
    for key, values in grid.items():
        where = lines.where(("grid", key))
        if not isinstance(values, list) or not values:
            raise fail(
                where,
                f"grid.{key}",
                values,
                "a grid axis must be a non-empty list",
                "Give at least one value, e.g. [0, 1].",
            )
        if key.split(".")[0] in SWEEP_KEYS:
            raise fail(
                where,
                f"grid.{key}",
                values,
                "only run-config keys can be gridded",
                "Move sweep settings out of the grid.",
            )
        points *= len(values)
    if points > MAX_GRID_POINTS:  # before expanding: itertools.product would run for ever
        sizes = " x ".join(str(len(v)) for v in grid.values())
        raise fail(
            lines.where(("grid",)),
            "grid",
            "{...}",
            f"{points:,} grid points ({sizes}), more than the {MAX_GRID_POINTS:,} a sweep may have",
            "Split the study into several sweeps, or grid fewer values.",
        )
    check_tuning(sweep, lines, HIDDEN, SWEEP_KEYS)
    sweep.runs = list(_expand(sweep, lines))
    return sweep


def _expand(sweep: Sweep, lines: Lines) -> Iterator[PlannedRun]:
    """Grid points -> resolved configs, deduplicated by run id.

    The base is validated once. A grid point re-validates only the top-level sections its
    grid keys touch (cached per distinct section value), then the cheap top-level checks;
    100k points take seconds. A point that fails the fast path is validated again from
    scratch, so its error message is exactly the one a plain validation would give.
    """
    keys = list(sweep.grid)
    seen: set[str] = set()
    # Validate the base once, so its errors point at the base's lines rather than a grid point.
    base_config = _validate(sweep.base, lines, grid_keys=set())
    fast = _FastValidator(sweep.base, base_config, keys)
    for values in itertools.product(*(sweep.grid[k] for k in keys)):
        point_values = dict(zip(keys, values, strict=True))
        config = fast.validate(point_values)
        if config is None:  # slow path: the error message a full validation gives
            point = deep_copy(sweep.base)
            for key, value in point_values.items():
                set_dotted(point, key, value)
            config = _validate(point, lines, grid_keys=set(keys))
        resolved = config.resolved()
        text = fast.dump(resolved)
        run_id = config_hash_text(text)
        if run_id in seen:  # e.g. iid runs that differ only in an unused scorer size
            continue
        seen.add(run_id)
        yield PlannedRun(run_id, resolved, point_values, text)


def config_hash_text(text: str, length: int = 16) -> str:
    """``trainers.config.config_hash`` of data whose canonical JSON is ``text``."""
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:length]


class _FastValidator:
    """Validates grid points section by section, reusing validated sub-models."""

    def __init__(self, base: dict[str, Any], base_config: RunConfig, keys: list[str]) -> None:
        self.base = base
        self.fields = RunConfig.model_fields
        self.base_values = {name: getattr(base_config, name) for name in self.fields}
        self.adapters: dict[str, TypeAdapter[Any]] = {}
        self.sections: dict[tuple[str, tuple[str, ...]], Any] = {}
        self.fragments: dict[int, tuple[Any, str]] = {}
        self.scalars: dict[tuple[type, Any], str] = {}
        self.by_content: dict[Any, str] = {}
        self.template: list[str | None] | None = None
        self.prefixes = [(name, json.dumps(name) + ":") for name in sorted(self.fields)]
        # Grid keys grouped by the top-level field they change.
        self.by_section: dict[str, list[str]] = {}
        for key in keys:
            self.by_section.setdefault(key.split(".")[0], []).append(key)
        # What a grid point can change: its grid sections, and what resolved() clears.
        self.dynamic = (
            set(self.by_section)
            | {"scorer", "reference", "selection", "reference_cost"}
            | OMITTED_WHEN_NONE
        )

    def validate(self, point: dict[str, Any]) -> RunConfig | None:
        values = dict(self.base_values)
        for section, keys in self.by_section.items():
            if section not in self.fields:
                return None
            if keys == [section]:  # a whole field: validated with the top level below
                values[section] = point[section]
                continue
            if section in keys:  # a whole field and its sub-keys: the slow path sorts it out
                return None
            cache_key = (section, tuple(repr(point[key]) for key in keys))
            if cache_key not in self.sections:
                raw = deep_copy(self.base.get(section))
                raw = raw if isinstance(raw, dict) else {}
                for key in keys:
                    set_dotted(raw, key.split(".", 1)[1], point[key])
                adapter = self.adapters.get(section)
                if adapter is None:
                    annotation: Any = self.fields[section].annotation
                    adapter = self.adapters[section] = TypeAdapter(annotation)
                try:
                    self.sections[cache_key] = adapter.validate_python(raw, context=USER_INPUT)
                except ValidationError:
                    return None
            values[section] = self.sections[cache_key]
        try:
            return RunConfig.model_validate(values, context=USER_INPUT)
        except ValidationError:
            return None

    def dump(self, config: RunConfig) -> str:
        """Canonical JSON of ``config.model_dump(mode="json")``, from cached per-field pieces.

        Fields neither the grid nor ``resolved()`` can change are serialized once."""
        if self.template is None:
            self.template = [
                None if name in self.dynamic else prefix + self.fragment(getattr(config, name))
                for name, prefix in self.prefixes
            ]
        parts = list(self.template)
        for i, (name, prefix) in enumerate(self.prefixes):
            if parts[i] is None:
                value = getattr(config, name)
                # Mirrors RunConfig's serializer, which leaves these out when unset.
                parts[i] = (
                    ""
                    if value is None and name in OMITTED_WHEN_NONE
                    else prefix + self.fragment(value)
                )
        return "{" + ",".join(p for p in parts if p) + "}"

    def fragment(self, value: Any) -> str:
        if isinstance(value, BaseModel):
            cached = self.fragments.get(id(value))
            if cached is not None and cached[0] is value:
                return cached[1]
            try:  # equal flat models (e.g. every iid run's selection) share one fragment
                key: Any = (type(value), tuple(value.__dict__.items()))
                text = self.by_content.get(key)
            except TypeError:  # unhashable (nested) fields
                key, text = None, None
            if text is None:
                text = canonical_json(value.model_dump(mode="json"))
                if key is not None:
                    self.by_content[key] = text
            self.fragments[id(value)] = (value, text)
            return text
        if isinstance(value, int | float | str | bool | None):
            scalar = (type(value), value)
            text = self.scalars.get(scalar)
            if text is None:
                text = self.scalars[scalar] = canonical_json(value)
            return text
        return canonical_json(RunConfig.__pydantic_serializer__.to_python(value, mode="json"))


def _validate(data: dict[str, Any], lines: Lines, grid_keys: set[str]) -> RunConfig:
    try:
        return RunConfig.model_validate(data, context=USER_INPUT)
    except ValidationError as err:
        first = err.errors()[0]
        key_path, problem, fix = explain(first, RunConfig, (), HIDDEN, SWEEP_KEYS, data)
        dotted = ".".join(key_path)
        gridded = next(
            (g for g in grid_keys if dotted in (g, *_prefixes(g)) or dotted.startswith(g + ".")),
            None,
        )
        where = lines.where(("grid", gridded)) if gridded else lines.where(key_path)
        value = first.get("input")
        if isinstance(value, dict) and not key_path:
            value = "{...}"
        raise fail(where, dotted or "(top level)", value, problem, fix) from None


def _prefixes(key: str) -> list[str]:
    """``a.b.c`` -> [``a``, ``a.b``]: a grid key that sets inside a value it replaced."""
    parts = key.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts))]

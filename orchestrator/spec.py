"""Sweep specifications: YAML -> validated run configs.

A sweep YAML holds the sweep's own settings (``name``, ``workdir``, ``store``, ``tracking``,
``executor``, ``max_attempts``, ``tune``, ``from_tuning``: see ``orchestrator/tune.py``), the
base run config at the top level (``dataset``, ``learner``, ``scorer``, ``reference``,
``selection``, ``optimizer``, ``budget``, ``eval``, ``seed``, ...),
and a ``grid`` of dotted run-config keys to lists, expanded as a cartesian product::

    name: demo
    learner: {arch: mlp, size: s}
    grid:
      learner.size: [xs, s, m]
      selection.policy: [iid, learnability]
      seed: [0, 1]

One loading order: defaults -> YAML -> dotted CLI overrides (``-o learner.lr=3e-4``). Every
error names the dotted key, the value, what is allowed, and the file and line it came from.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from orchestrator.errors import SweepSpecError
from orchestrator.executors import ExecutorConfig
from orchestrator.plan import PlanConfig
from orchestrator.tune import DISTRIBUTION_TAGS, TuneConfig, apply_best_params, check_tuning
from trainers.config import OMITTED_WHEN_NONE, RunConfig
from trainers.loop import preflight
from trainers.tracking import TrackingConfig


class SweepSettings(BaseModel):
    """The sweep's own keys (everything else at the top level is the base run config)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        max_length=100,
        description="Sweep name: letters, digits, '.', '_' and '-'; names the work directory.",
    )
    description: str = Field("", description="Free text shown by `status` and the report.")
    workdir: str | None = Field(
        None, description="Where the store, references, checkpoints and report go; null: runs/NAME."
    )
    store: str | None = Field(
        None,
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
        None, description="Optuna studies run by `activescale tune` (see orchestrator/tune.py)."
    )
    from_tuning: bool = Field(
        False, description="Runs take their study's best tuned values (run `tune` first)."
    )


SWEEP_KEYS = set(SweepSettings.model_fields) | {"grid"}


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
# YAML with line numbers


class Lines:
    """Maps a key path in the YAML document to its line number."""

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.lines: dict[tuple[str, ...], int] = {}
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            node = None
        if node is not None:
            self._walk(node, ())

    def _walk(self, node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = (*path, str(key_node.value))
                self.lines[key] = key_node.start_mark.line + 1
                self._walk(value_node, key)

    def where(self, path: tuple[str, ...]) -> str:
        """``file:line`` of the deepest known prefix of ``path``."""
        for n in range(len(path), 0, -1):
            if path[:n] in self.lines:
                return f"{self.source}:{self.lines[path[:n]]}"
        return self.source


def _fail(where: str, key: str, value: Any, problem: str, fix: str) -> SweepSpecError:
    shown = repr(value) if not isinstance(value, dict | list) or len(repr(value)) < 80 else "..."
    return SweepSpecError(f"{where}: {key} = {shown}: {problem}. {fix}")


def _allowed_keys(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """Field names of the model found by following ``loc`` (for 'unknown key' messages)."""
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            return []
        annotation = fields[part].annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next((c for c in candidates if hasattr(c, "model_fields")), None)
    return sorted(getattr(current, "model_fields", {}))


def _explain(
    error: Any, model: type[BaseModel], prefix: tuple[str, ...] = ()
) -> tuple[tuple[str, ...], str, str]:
    """(key path, problem, fix) for one pydantic error."""
    loc = tuple(str(p) for p in error["loc"] if not str(p).startswith("function-after"))
    hidden = {"MLPSize", "DataConfig", "ModelConfig", "ReferenceConfig", *DISTRIBUTION_TAGS}
    loc = tuple(p for p in loc if p not in hidden)
    path = prefix + loc
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1])
        if not loc[:-1] and model is RunConfig:
            allowed = sorted(set(allowed) | SWEEP_KEYS)
        return path, "unknown key", f"Allowed keys here: {', '.join(allowed)}."
    message = str(error["msg"]).removeprefix("Value error, ")
    # Cross-field rules (RunConfig._consistent) name their key first: "scorer: ...".
    head, sep, rest = message.partition(": ")
    if sep and " " not in head and head.split(".")[0] in model.model_fields:
        path, message = (*prefix, *loc, *head.split(".")), rest
    return path, message, "Fix it in the YAML, or override it with -o KEY=VALUE."


# ---------------------------------------------------------------------------------------------
# Loading


def parse_override(text: str) -> tuple[str, Any]:
    """``learner.lr=3e-4`` -> ("learner.lr", 0.0003); values are parsed as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SweepSpecError(
            f"override {text!r} is not KEY=VALUE; write e.g. -o learner.lr=3e-4 or -o grid.seed=[0,1]"
        )
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise SweepSpecError(f"override {text!r}: the value is not valid YAML ({err})") from None


# Fields of a tune.space distribution (orchestrator/tune.py), which an override may set alone.
_DISTRIBUTION_FIELDS = frozenset({"type", "low", "high", "log", "step", "choices"})


def override_path(key: str) -> list[str]:
    """Where ``-o key=value`` goes. Keys split at dots, except in ``tune.space``, whose keys
    are dotted run-config keys themselves: ``tune.space.optimizer.lr.high`` sets ``high`` of
    the ``optimizer.lr`` entry, ``tune.space.optimizer.lr`` the whole entry."""
    parts = key.split(".")
    if parts[:2] != ["tune", "space"] or len(parts) < 3:
        return parts
    rest = parts[2:]
    if len(rest) > 1 and rest[-1] in _DISTRIBUTION_FIELDS:
        return ["tune", "space", ".".join(rest[:-1]), rest[-1]]
    return ["tune", "space", ".".join(rest)]


def _set_dotted(data: dict[str, Any], key: str | list[str], value: Any) -> None:
    parts = key.split(".") if isinstance(key, str) else key
    for part in parts[:-1]:
        child = data.get(part)
        if not isinstance(child, dict):
            child = data[part] = {}
        data = child
    data[parts[-1]] = value


def load_sweep(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), apply_tuning: bool = True
) -> Sweep:
    """Read, override, validate and expand a sweep. Raises SweepSpecError with file:line.

    With ``from_tuning: true`` the runs take their study's best values, unless
    ``apply_tuning`` is false (`activescale tune` itself)."""
    path = Path(path)
    if not path.is_file():
        raise SweepSpecError(f"sweep file {str(path)!r} does not exist; pass a path to a YAML file")
    text = path.read_text()
    return parse_sweep(text, str(path), overrides, apply_tuning)


def parse_sweep(
    text: str,
    source: str,
    overrides: list[str] | tuple[str, ...] = (),
    apply_tuning: bool = True,
) -> Sweep:
    lines = Lines(source, text)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise SweepSpecError(f"{where}: not valid YAML: {err}. Fix the syntax.") from None
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
            _set_dotted(raw, override_path(key), value)
        lines.lines[("override", key)] = 0

    settings_raw = {k: v for k, v in raw.items() if k in SweepSettings.model_fields}
    try:
        settings = SweepSettings.model_validate(settings_raw)
    except ValidationError as err:
        first = err.errors()[0]
        key_path, problem, fix = _explain(first, SweepSettings)
        value = first.get("input")
        raise _fail(lines.where(key_path), ".".join(key_path), value, problem, fix) from None

    grid = raw.get("grid") or {}
    if not isinstance(grid, dict):
        raise _fail(
            lines.where(("grid",)),
            "grid",
            grid,
            "grid must be a mapping of dotted keys to lists",
            "Write e.g. `grid: {seed: [0, 1]}`.",
        )
    base = {k: v for k, v in raw.items() if k not in SWEEP_KEYS}
    sweep = Sweep(settings=settings, base=base, grid=grid, source=source, raw=raw)
    for key, values in grid.items():
        where = lines.where(("grid", key))
        if not isinstance(values, list) or not values:
            raise _fail(
                where,
                f"grid.{key}",
                values,
                "a grid axis must be a non-empty list",
                "Give at least one value, e.g. [0, 1].",
            )
        if key.split(".")[0] in SWEEP_KEYS:
            raise _fail(
                where,
                f"grid.{key}",
                values,
                "only run-config keys can be gridded",
                "Move sweep settings out of the grid.",
            )
    check_tuning(sweep, lines)
    sweep.runs = list(_expand(sweep, lines))
    if settings.from_tuning and apply_tuning:
        sweep.runs = apply_best_params(sweep)
    preflight(r.config for r in sweep.runs)  # data files readable, models fit the data
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
            point = _deep_copy(sweep.base)
            for key, value in point_values.items():
                _set_dotted(point, key, value)
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
            set(self.by_section) | {"scorer", "reference", "selection"} | OMITTED_WHEN_NONE
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
                raw = _deep_copy(self.base.get(section))
                raw = raw if isinstance(raw, dict) else {}
                for key in keys:
                    _set_dotted(raw, key.split(".", 1)[1], point[key])
                adapter = self.adapters.get(section)
                if adapter is None:
                    annotation: Any = self.fields[section].annotation
                    adapter = self.adapters[section] = TypeAdapter(annotation)
                try:
                    self.sections[cache_key] = adapter.validate_python(raw)
                except ValidationError:
                    return None
            values[section] = self.sections[cache_key]
        try:
            return RunConfig.model_validate(values)
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
        return RunConfig.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        key_path, problem, fix = _explain(first, RunConfig)
        dotted = ".".join(key_path)
        gridded = next((g for g in grid_keys if dotted == g or dotted.startswith(g + ".")), None)
        where = lines.where(("grid", gridded)) if gridded else lines.where(key_path)
        value = first.get("input")
        if isinstance(value, dict) and not key_path:
            value = "{...}"
        raise _fail(where, dotted or "(top level)", value, problem, fix) from None


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data

"""The ``tune:`` section of a sweep: what to search, how, and its checks against the sweep.

See ``orchestrator/tune/__init__.py`` for how tuning works as a whole.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from activescale.visible import one_line
from orchestrator.keys import deep_copy, explain, fail, set_dotted

if TYPE_CHECKING:
    from orchestrator.keys import Lines
    from orchestrator.spec import Sweep


class FloatDistribution(BaseModel):
    """A float between ``low`` and ``high`` (log-uniform with ``log: true``)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    type: Literal["float"] = Field(description="float: a real number in [low, high].")
    low: float = Field(description="Smallest value.")
    high: float = Field(description="Largest value (must exceed low).")
    log: bool = Field(False, description="Sample log-uniformly (low must be > 0).")
    step: float | None = Field(
        None, gt=0, description="Grid spacing (needed by sampler grid; not with log)."
    )

    @model_validator(mode="after")
    def _valid_range(self) -> FloatDistribution:
        check_range(self.low, self.high, self.log, self.step)
        return self


class IntDistribution(BaseModel):
    """An integer between ``low`` and ``high`` inclusive."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    type: Literal["int"] = Field(description="int: an integer in [low, high].")
    low: int = Field(description="Smallest value.")
    high: int = Field(description="Largest value (must exceed low).")
    log: bool = Field(False, description="Sample log-uniformly (low must be > 0).")
    step: int = Field(1, ge=1, description="Spacing between values (1 with log).")

    @model_validator(mode="after")
    def _valid_range(self) -> IntDistribution:
        check_range(self.low, self.high, self.log, None if self.step == 1 else self.step)
        return self


class CategoricalDistribution(BaseModel):
    """One of a list of values."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    type: Literal["categorical"] = Field(description="categorical: one of `choices`.")
    choices: list[str | int | float | bool | None] = Field(
        min_length=1, description="The values to choose from (scalars)."
    )


def check_range(low: float, high: float, log: bool, step: float | None) -> None:
    if not low < high:
        raise ValueError(f"low ({low}) must be smaller than high ({high})")
    if log and low <= 0:
        raise ValueError(f"log-uniform needs low > 0 (got low = {low}); use e.g. 1e-5")
    if log and step is not None:
        raise ValueError("log and step cannot be combined; drop one")


Distribution = Annotated[
    FloatDistribution | IntDistribution | CategoricalDistribution, Field(discriminator="type")
]
# Names pydantic puts into error locations for the tagged union (left out of messages).
DISTRIBUTION_TAGS = frozenset({"float", "int", "categorical"})


class SamplerConfig(BaseModel):
    """How the next trial's values are chosen."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    kind: Literal["tpe", "random", "grid"] = Field(
        "tpe",
        description="tpe: Bayesian (TPE); random; grid: every combination (floats need step).",
    )
    seed: int = Field(0, description="Sampler seed; worker i on study j uses seed + i + 1000 j.")


class PrunerConfig(BaseModel):
    """When a trial is stopped early, from its accuracy at the FLOP checkpoints."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    kind: Literal["median", "hyperband", "none"] = Field(
        "median",
        description=(
            "median: stop a trial below the median of earlier trials at the same evaluation; "
            "hyperband: successive halving over evaluations; none: never prune."
        ),
    )
    startup_trials: int = Field(
        5, ge=0, description="median: trials that complete before any is pruned."
    )
    warmup_evals: int = Field(
        1, ge=0, description="median: evaluations of a trial before it can be pruned."
    )


class TuneConfig(BaseModel):
    """The ``tune:`` section: what to search, how, and how many trials per study."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    space: dict[str, Distribution] = Field(
        min_length=1,
        description="Dotted run-config keys -> distributions, e.g. optimizer.lr: {type: float, "
        "low: 1e-4, high: 1e-1, log: true}.",
    )
    sampler: SamplerConfig = Field(default_factory=SamplerConfig, description="Sampler.")
    pruner: PrunerConfig = Field(default_factory=PrunerConfig, description="Pruner.")
    trials: int = Field(20, ge=1, description="Finished (completed or pruned) trials per study.")
    per: list[str] = Field(
        default_factory=list,
        description="Grid axes that get a study each (e.g. [learner.size, selection.policy]); "
        "the other axes take their first value while tuning.",
    )
    objective: Literal["final", "best"] = Field(
        "final", description="Maximise the final test accuracy, or the best one seen."
    )
    storage: str | None = Field(
        None,
        min_length=1,
        description="A journal file path (null: WORKDIR/tune/optuna.journal), or a URL: "
        "sqlite:///... (one process) or postgresql+psycopg2://... (many nodes).",
    )
    workers: int = Field(2, ge=1, description="Worker processes (local) or array tasks (slurm).")
    heartbeat_interval: int = Field(
        10, ge=1, description="URL storages: seconds between a running trial's heartbeats."
    )
    grace_period: int | None = Field(
        None, ge=1, description="URL storages: a trial silent this long fails (null: 2x beat)."
    )
    max_retry: int = Field(2, ge=0, description="Retries of a trial whose worker died.")

    @field_validator("storage")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        return one_line(value)

    @model_validator(mode="after")
    def _grid_is_finite(self) -> TuneConfig:
        if self.sampler.kind == "grid":
            for key, dist in self.space.items():
                if isinstance(dist, FloatDistribution) and dist.step is None:
                    raise ValueError(
                        f"sampler grid needs a step for float {key}; add step: or use kind tpe"
                    )
        return self


# ---------------------------------------------------------------------------------------------
# Validation against the sweep (called when the sweep is loaded)


def check_tuning(
    sweep: Sweep, lines: Lines, hidden: frozenset[str], top_level_keys: Iterable[str]
) -> None:
    """Tuned keys exist in the run config and their ranges are valid values; ``per`` axes are
    grid axes; ``from_tuning`` has a ``tune`` section. Errors name file:line and dotted key.
    ``hidden`` and ``top_level_keys``: as for :func:`orchestrator.keys.explain`."""
    from pydantic import ValidationError

    from trainers.config import RunConfig

    tune = sweep.settings.tune
    if tune is None:
        if sweep.settings.from_tuning:
            raise fail(
                lines.where(("from_tuning",)),
                "from_tuning",
                True,
                "there is no tune: section to take the parameters from",
                "Add a tune: section, or remove from_tuning.",
            )
        return
    for axis in tune.per:
        if axis not in sweep.grid:
            raise fail(
                lines.where(("tune", "per")),
                "tune.per",
                axis,
                "not a grid axis",
                f"Grid axes: {', '.join(sweep.grid) or '(none)'}.",
            )
    for key, dist in tune.space.items():
        where = lines.where(("tune", "space", key))
        if key in sweep.grid:
            raise fail(
                where,
                f"tune.space.{key}",
                key,
                "the key is also a grid axis",
                "Tune it or grid it, not both.",
            )
        if isinstance(dist, CategoricalDistribution):
            samples: list[Any] = list(dist.choices)
        else:
            samples = [dist.low, dist.high]
        for value in samples:
            point = deep_copy(sweep.base)
            set_dotted(point, key, value)
            try:
                RunConfig.model_validate(point)
            except ValidationError as err:
                error = next(
                    (e for e in err.errors() if ".".join(map(str, e["loc"])).startswith(key)),
                    err.errors()[0],
                )
                _, problem, fix = explain(error, RunConfig, (), hidden, top_level_keys, point)
                if error["type"] == "extra_forbidden":
                    problem = "not a run-config key"
                else:
                    fix = "Narrow the range to values the run config accepts."
                raise fail(where, f"tune.space.{key}", value, problem, fix) from None

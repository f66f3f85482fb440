"""What the sweep loader accepts, and means (what it refuses is tests/hostile/)."""

from __future__ import annotations

import math

import pytest

from activescale.errors import SweepSpecError
from orchestrator.spec import parse_sweep
from orchestrator.sweep_yaml import load_value

BASE = "name: t\nlearner: {arch: mlp, size: s}\n"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1e-3", 0.001),  # a string in YAML 1.1: no dot
        ("3E4", 30000.0),
        (".5", 0.5),
        ("-2.5e+2", -250.0),
        ("1_000", 1000),
        ("010", 10),  # decimal, not octal
        ("0x1f", 31),
        ("0o17", 15),
        ("true", True),
        ("False", False),
        ("yes", "yes"),  # a boolean in YAML 1.1
        ("off", "off"),
        ("1:30", "1:30"),  # 90 in YAML 1.1
        ("2024-01-01", "2024-01-01"),  # a date in YAML 1.1
        ("~", None),
        ("", None),
        ("[1, 2.0, x]", [1, 2.0, "x"]),
    ],
)
def test_scalars_are_read_as_yaml_1_2(text: str, value: object) -> None:
    assert load_value(text, "value") == value
    assert type(load_value(text, "value")) is type(value)


def test_infinity_and_nan_are_read_then_refused_by_the_models() -> None:
    assert load_value(".inf", "v") == math.inf and math.isnan(load_value(".nan", "v"))
    with pytest.raises(SweepSpecError, match="finite"):
        parse_sweep(BASE + "optimizer: {lr: .inf}\n", "s.yaml")


def test_a_learning_rate_without_a_dot_is_a_float_in_files_and_overrides() -> None:
    sweep = parse_sweep(BASE + "optimizer: {lr: 1e-3}\n", "s.yaml", ("optimizer.beta1=8e-1",))
    assert sweep.runs[0].config.optimizer.lr == 0.001
    assert sweep.runs[0].config.optimizer.beta1 == 0.8


def test_integers_are_accepted_for_floats() -> None:
    assert (
        parse_sweep(BASE + "budget: {flops: 1000000000000}\n", "s.yaml").runs[0].config.budget.flops
        == 1e12
    )


def test_aliases_and_merge_keys_work_and_copies_are_independent() -> None:
    text = (
        "name: t\nlearner: &small {arch: mlp, size: xxs}\nscorer: *small\n"
        "reference: {<<: *small, steps: 10}\nselection: {policy: learnability}\n"
    )
    sweep = parse_sweep(text, "s.yaml", ("learner.size=s",))  # the scorer keeps xxs
    config = sweep.runs[0].config
    assert config.scorer is not None and config.reference is not None
    assert (config.learner.size, config.scorer.size, config.reference.size) == ("s", "xxs", "xxs")
    assert config.reference.steps == 10


def test_a_flop_budget_dumps_as_before_and_a_dump_validates_again() -> None:
    from trainers.config import RunConfig

    sweep = parse_sweep(BASE + "budget: {flops: 1.0e+12}\n", "s.yaml")
    dump = sweep.runs[0].config.model_dump(mode="json")
    assert dump["budget"] == {"steps": 1000, "flops": 1e12}  # run ids predate the rule
    assert RunConfig.model_validate(dump).run_id() == sweep.runs[0].run_id  # a job's config


def config_models() -> set[type]:
    """Every pydantic model a sweep file is validated with (sweep settings, run config, and
    every registered dataset's config), found by walking field annotations."""
    import typing

    from pydantic import BaseModel

    from orchestrator.spec import SweepSettings
    from trainers.config import RunConfig
    from trainers.data import registered_datasets

    found: set[type] = set()
    todo: list[object] = [
        SweepSettings,
        RunConfig,
        *(e.config for e in registered_datasets().values()),
    ]
    while todo:
        item = todo.pop()
        if isinstance(item, type) and issubclass(item, BaseModel):
            if item in found:
                continue
            found.add(item)
            todo += [field.annotation for field in item.model_fields.values()]
        else:
            todo += list(typing.get_args(item))
    return found


def test_every_config_model_is_strict_finite_and_closed() -> None:
    models = config_models()
    assert len(models) >= 15  # the walk found the sections
    for model in models:
        config = model.model_config  # type: ignore[attr-defined]
        assert config.get("strict") is True, model
        assert config.get("allow_inf_nan") is False, model
        assert config.get("extra") == "forbid", model

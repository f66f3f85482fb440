"""Sweep spec: one test per validation rule, grid expansion, overrides, and the CLI's exit code."""

from __future__ import annotations

from pathlib import Path

import pytest

from activescale.errors import SweepSpecError
from orchestrator.cli import main
from orchestrator.spec import load_sweep, parse_sweep

BASE = """\
name: t
learner: {arch: mlp, size: s}
scorer: {arch: mlp, size: xxs}
reference: {arch: mlp, size: xxs}
selection: {policy: learnability}
"""


def error_of(text: str, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(SweepSpecError) as info:
        parse_sweep(text, "sweep.yaml", overrides)
    return str(info.value)


def test_grid_is_a_cartesian_product() -> None:
    sweep = parse_sweep(BASE + "grid:\n  learner.size: [xs, s, m]\n  seed: [0, 1]\n", "s.yaml")
    assert len(sweep.runs) == 6
    assert {(r.config.learner.size, r.config.seed) for r in sweep.runs} == {
        (size, seed) for size in ("xs", "s", "m") for seed in (0, 1)
    }


def test_run_ids_are_stable_and_distinct() -> None:
    text = BASE + "grid:\n  seed: [0, 1, 2]\n"
    first, second = parse_sweep(text, "a.yaml"), parse_sweep(text, "b.yaml")
    assert [r.run_id for r in first.runs] == [r.run_id for r in second.runs]
    assert len({r.run_id for r in first.runs}) == 3


def test_iid_runs_ignore_scorer_size_and_are_merged() -> None:
    text = BASE + "grid:\n  scorer.size: [xxs, xs]\n  selection.policy: [iid, learnability]\n"
    sweep = parse_sweep(text, "s.yaml")
    policies = sorted(r.config.selection.policy for r in sweep.runs)
    assert policies == ["iid", "learnability", "learnability"]


def test_override_sets_a_dotted_key() -> None:
    sweep = parse_sweep(BASE, "s.yaml", ("optimizer.lr=3e-4", "learner.size=m"))
    assert sweep.runs[0].config.optimizer.lr == pytest.approx(3e-4)
    assert sweep.runs[0].config.learner.size == "m"


def test_override_of_a_grid_axis_pins_it() -> None:
    sweep = parse_sweep(BASE + "grid:\n  seed: [0, 1, 2]\n", "s.yaml", ("seed=1",))
    assert [r.config.seed for r in sweep.runs] == [1]


def test_override_can_add_a_grid_axis() -> None:
    sweep = parse_sweep(BASE, "s.yaml", ("grid.seed=[0, 1]",))
    assert len(sweep.runs) == 2


def test_unknown_top_level_key_names_file_line_and_allowed_keys() -> None:
    message = error_of(BASE + "learnr: {size: s}\n")
    assert "sweep.yaml:6" in message
    assert "learnr" in message and "unknown key" in message
    assert "learner" in message  # the allowed keys are listed


def test_unknown_nested_key() -> None:
    message = error_of(BASE.replace("size: s}", "size: s, widht: 3}"))
    assert "sweep.yaml:2" in message and "learner.widht" in message
    assert "arch" in message  # allowed keys of the learner


def test_wrong_type() -> None:
    message = error_of(BASE + "batch_size: many\n")
    assert "sweep.yaml:6" in message and "batch_size" in message and "'many'" in message
    assert "integer" in message


def test_unknown_policy_lists_the_policies() -> None:
    message = error_of(BASE.replace("policy: learnability", "policy: clever"))
    assert "selection.policy" in message and "'clever'" in message
    assert "learnability" in message and "rho_loss" in message


def test_unknown_size_lists_the_ladder() -> None:
    message = error_of(BASE + "grid:\n  learner.size: [s, huge]\n")
    assert "sweep.yaml:7" in message and "huge" in message and "xxs" in message


def test_empty_grid_axis() -> None:
    message = error_of(BASE + "grid:\n  seed: []\n")
    assert "sweep.yaml:7" in message and "grid.seed" in message and "non-empty list" in message


def test_grid_axis_must_be_a_list() -> None:
    assert "non-empty list" in error_of(BASE + "grid:\n  seed: 3\n")


def test_filter_ratio_outside_unit_interval() -> None:
    message = error_of(BASE.replace("policy: learnability", "policy: learnability, keep: 1.5"))
    assert "selection.keep" in message and "1.5" in message


def test_policy_without_its_scorer() -> None:
    message = error_of(BASE.replace("scorer: {arch: mlp, size: xxs}\n", ""))
    assert "scorer" in message and "learnability" in message


def test_policy_without_its_reference() -> None:
    message = error_of(BASE.replace("reference: {arch: mlp, size: xxs}\n", ""))
    assert "reference" in message


def test_super_batch_larger_than_the_training_pool() -> None:
    message = error_of(BASE + "dataset: {train_size: 100}\nbatch_size: 64\n")
    assert "train_size" in message and "super-batch" in message


def test_bad_sweep_name() -> None:
    assert "name" in error_of(BASE.replace("name: t", "name: 'a b/c'"))


def test_missing_name() -> None:
    assert "name" in error_of(BASE.replace("name: t\n", ""))


def test_invalid_yaml_syntax_names_the_line() -> None:
    assert "sweep.yaml:3" in error_of("name: t\nlearner: {size: s\nseed: [\n")


def test_override_without_equals() -> None:
    assert "KEY=VALUE" in error_of(BASE, ("learner.lr",))


def test_override_error_names_the_key() -> None:
    message = error_of(BASE, ("optimizer.lr=-1",))
    assert "optimizer.lr" in message and "-1" in message


def test_only_run_keys_can_be_gridded() -> None:
    assert "only run-config keys" in error_of(BASE + "grid:\n  executor.kind: [local]\n")


def test_missing_file() -> None:
    with pytest.raises(SweepSpecError, match="does not exist"):
        load_sweep("/nonexistent/sweep.yaml")


def test_cli_validate_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(BASE + "grid:\n  seed: [0, 1]\n")
    assert main(["validate", str(good)]) == 0
    assert "2 runs" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE + "grid:\n  seed: []\n")
    assert main(["validate", str(bad)]) == 2
    assert "bad.yaml:7" in capsys.readouterr().err


def test_cli_run_on_bad_input_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE + f"workdir: {tmp_path / 'work'}\nlearner: {{size: huge}}\n")
    assert main(["run", str(bad)]) == 2
    assert not (tmp_path / "work").exists()


def test_quickstart_sweep_is_valid() -> None:
    root = Path(__file__).resolve().parents[1]
    sweep = load_sweep(root / "sweeps" / "quickstart.yaml")
    policies = {r.config.selection.policy for r in sweep.runs}
    assert {"iid", "learnability"} <= policies


SHIPPED = sorted((Path(__file__).resolve().parents[1] / "sweeps").rglob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_sweep_is_valid(path: Path) -> None:
    # from_tuning sweeps need their studies; validate them as written, without the tuning.
    sweep = load_sweep(path)
    assert sweep.runs and all(r.run_id == r.config.run_id() for r in sweep.runs)

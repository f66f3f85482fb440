"""Plugins (orchestrator/plugins.py, activescale/plugins.py): found by path, by module name or
by entry point; imported once, before validation; strict validation of what they register;
named errors (exit 2, nothing written); loaded again by jobs in fresh processes, which fail
named when a plugin is gone or broken; recorded per run; docs/plugins.md's examples verbatim.

The example package (examples/resnet1d_plugin) end to end, on every executor, is
tests/test_plugin_example.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import runpy
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn

import orchestrator.plan
import orchestrator.plugins
import trainers.data.registry
from activescale.errors import DataError, PluginError, SweepSpecError
from activescale.plugins import (
    LADDERS,
    TASKS,
    Classification,
    ModelConfig,
    register_model,
    register_task,
    splits_from_arrays,
)
from orchestrator.cli import main
from orchestrator.launch import execute_runs, prepare, register, runs_to_execute
from orchestrator.plugins import PATH_MODULE_PREFIX, digest_of, load_job_plugins
from orchestrator.spec import load_sweep
from orchestrator.store import COMPLETED, FAILED, RunStore
from trainers.models import build_model

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "plugins.md"
EXAMPLE = ROOT / "examples" / "resnet1d_plugin"


@pytest.fixture(autouse=True)
def isolated() -> Iterator[None]:
    """Each test's plugins register into registries that are restored afterwards (they live
    as long as the process), and their modules are forgotten."""
    registries = [LADDERS, TASKS, trainers.data.registry._REGISTRY, orchestrator.plugins.LOADED]
    saved = [dict(r) for r in registries]
    modules = set(sys.modules)
    try:
        yield
    finally:
        plugins = {ref.module.split(".")[0] for ref in orchestrator.plugins.LOADED.values()}
        for registry, before in zip(registries, saved, strict=True):
            registry.clear()
            registry.update(before)  # type: ignore[attr-defined]
        for name in set(sys.modules) - modules:  # the plugins' modules, not torch's lazy ones
            if name.split(".")[0] in plugins or name.startswith(PATH_MODULE_PREFIX):
                del sys.modules[name]
        orchestrator.plan._dataset_facts.cache_clear()


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:6]}"


# A plugin file: an MLP ladder `arch` of two sizes, and a dataset `name` of Gaussian blobs.
PLUGIN = """\
import numpy as np
from pydantic import Field
from torch import nn

from activescale.plugins import DatasetConfig, register_dataset, register_model, splits_from_arrays

WIDTHS = {{"narrow": 8, "wide": 64}}


def build(cfg, input_shape, num_outputs):
    width = WIDTHS[cfg.size]
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), width), nn.ReLU(),
                         nn.Linear(width, num_outputs))


register_model("{arch}", WIDTHS, build)


class Config(DatasetConfig):
    size: int = Field(300, ge=100, description="Training examples.")
    seed: int = 0


def splits(cfg):
    rng = np.random.default_rng(cfg.seed)

    def draw(n):
        y = rng.integers(0, 3, n)
        return (rng.normal(size=(n, 6)) + y[:, None]).astype(np.float32), y

    x, y = draw(cfg.size)
    return splits_from_arrays((x, y, np.zeros(len(y), bool)), draw(100), draw(60), num_classes=3)


register_dataset("{dataset}", config=Config, splits=splits)
"""


def write_plugin(folder: Path, file: str = "my_models.py") -> tuple[Path, str, str]:
    """A plugin file with a fresh arch and dataset name: (path, arch, dataset)."""
    arch, dataset = unique("mlp"), unique("blobs")
    path = folder / file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PLUGIN.format(arch=arch, dataset=dataset))
    return path, arch, dataset


def sweep_text(plugins: str, arch: str, dataset: str, extra: str = "", name: str = "") -> str:
    return (
        f"name: {name or unique('p')}\n"
        f"plugins: {plugins}\n"
        f"dataset: {{name: {dataset}}}\n"
        f"learner: {{arch: {arch}, size: narrow}}\n"
        f"scorer: {{arch: {arch}, size: narrow}}\n"
        f"reference: {{arch: {arch}, size: narrow, steps: 10}}\n"
        "selection: {policy: learnability, keep: 0.5}\n"
        "batch_size: 16\nbudget: {steps: 12}\neval: {points: 2, batch_size: 100}\n" + extra
    )


def write_sweep(folder: Path, text: str, file: str = "sweep.yaml") -> Path:
    path = folder / file
    path.write_text(text + f"workdir: {folder / 'work'}\n")
    return path


def plugin_error(path: Path, *overrides: str) -> str:
    with pytest.raises(PluginError) as info:
        load_sweep(path, overrides)
    return str(info.value)


# ---------------------------------------------------------------------------------------------
# Found, imported once, before validation


def test_a_path_plugin_registers_before_validation(tmp_path: Path) -> None:
    _, arch, dataset = write_plugin(tmp_path / "plugins")
    path = write_sweep(tmp_path, sweep_text("[plugins/my_models.py]", arch, dataset))
    sweep = load_sweep(path)
    assert [r.config.learner.arch for r in sweep.runs] == [arch]
    (ref,) = sweep.plugins
    assert ref.module.startswith(PATH_MODULE_PREFIX + "my_models_")
    assert ref.path == str(tmp_path / "plugins" / "my_models.py")
    assert ref.digest == digest_of(tmp_path / "plugins" / "my_models.py")
    assert LADDERS[arch].source == ref.module


def test_a_package_folder_plugin_imports_its_own_modules(tmp_path: Path) -> None:
    _, arch, dataset = write_plugin(tmp_path / "lab", "models.py")
    (tmp_path / "lab" / "__init__.py").write_text("from . import models\n")
    path = write_sweep(tmp_path, sweep_text("[lab/]", arch, dataset))
    (ref,) = load_sweep(path).plugins
    assert ref.path == str(tmp_path / "lab") and LADDERS[arch].source == ref.module + ".models"


def test_two_files_of_one_name_are_two_plugins_and_one_file_is_imported_once(
    tmp_path: Path,
) -> None:
    _, arch_a, data_a = write_plugin(tmp_path / "a")
    _, arch_b, _ = write_plugin(tmp_path / "b")
    text = sweep_text("[a/my_models.py, ./a/my_models.py, b/my_models.py]", arch_a, data_a)
    refs = load_sweep(write_sweep(tmp_path, text)).plugins
    assert refs[0] == refs[1] and refs[0].module != refs[2].module
    assert LADDERS[arch_a].source != LADDERS[arch_b].source
    again = load_sweep(write_sweep(tmp_path, text, "again.yaml"))  # no second registration
    assert again.plugins == refs


def test_a_module_on_the_path_is_a_plugin_the_jobs_import_from_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, arch, dataset = write_plugin(tmp_path / "site", "lab_models.py")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    (ref,) = load_sweep(write_sweep(tmp_path, sweep_text("[lab_models]", arch, dataset))).plugins
    # No distribution owns it: jobs import the file (and SLURM snapshots it), not the name.
    assert ref.module == "lab_models" and ref.path == str(tmp_path / "site" / "lab_models.py")
    assert ref.version is None and ref.digest.startswith("sha256:")


def test_plugin_names_are_validated_like_built_in_ones(tmp_path: Path) -> None:
    _, arch, dataset = write_plugin(tmp_path)
    path = write_sweep(tmp_path, sweep_text("[my_models.py]", arch, dataset))
    with pytest.raises(SweepSpecError) as info:
        load_sweep(path, ["learner.arch=resnet9"])
    assert re.search(
        rf"sweep\.yaml:4: learner\.arch = 'resnet9': arch 'resnet9' is not a registered model "
        rf"ladder; built-in: mlp, cnn1d, vit; from plugins: .*{arch}",
        str(info.value),
    )
    with pytest.raises(
        SweepSpecError, match=r"size 'm' is not in the .* ladder; allowed: narrow, wide"
    ):
        load_sweep(path, ["learner.size=m"])
    with pytest.raises(SweepSpecError, match=rf"sweep\.yaml:3: dataset\.name = 'blob'.*{dataset}"):
        load_sweep(path, ["dataset.name=blob"])


def test_a_plugin_datasets_own_fields_get_file_line_and_dotted_key_errors(tmp_path: Path) -> None:
    _, arch, dataset = write_plugin(tmp_path)
    text = sweep_text("[my_models.py]", arch, dataset).replace(
        f"{{name: {dataset}}}", f"{{name: {dataset}, size: 10}}"
    )
    path = write_sweep(tmp_path, text)
    with pytest.raises(SweepSpecError) as info:
        load_sweep(path)
    expected = f"{path}:3: dataset.size = 10: Input should be greater than or equal to 100"
    assert str(info.value).startswith(expected)
    with pytest.raises(SweepSpecError) as info:
        load_sweep(path, ["dataset.size=400", "dataset.sise=400"])
    assert (
        "dataset.sise = 400: unknown key. Allowed keys here: name, path, regime, seed, size"
        in str(info.value)
    )
    sweep = load_sweep(path, ["dataset.size=400"])
    assert sweep.runs[0].config.dataset.size == 400  # type: ignore[attr-defined]


def test_executor_resources_accept_plugin_sizes(tmp_path: Path) -> None:
    _, arch, dataset = write_plugin(tmp_path)
    slurm = "executor: {kind: slurm, resources: {wide: {mem_gb: 2}}}\n"
    path = write_sweep(tmp_path, sweep_text("[my_models.py]", arch, dataset, slurm))
    assert load_sweep(path).settings.executor.resources["wide"].mem_gb == 2
    with pytest.raises(SweepSpecError, match=r"'huge' is not a learner size; use one of .*narrow"):
        load_sweep(path, ["executor.resources={huge: {mem_gb: 2}}"])


# ---------------------------------------------------------------------------------------------
# Named errors: exit 2, nothing written


def test_a_missing_plugin_file(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, sweep_text("[nowhere.py]", "mlp", "mnist1d"))
    message = plugin_error(path)
    assert message == (
        f"{path}:2: plugins[0] = 'nowhere.py': {tmp_path / 'nowhere.py'} does not exist (paths "
        f"are relative to the sweep file's folder {tmp_path}); fix the path, or name an "
        "importable module"
    )


def test_a_module_that_cannot_be_imported(tmp_path: Path) -> None:
    (tmp_path / "lab_models.py").write_text("")
    path = write_sweep(tmp_path, sweep_text("[lab_models]", "mlp", "mnist1d"))
    message = plugin_error(path)
    assert "plugins[0] = 'lab_models': no module named 'lab_models' can be imported" in message
    assert f"{tmp_path / 'lab_models'}.py exists: write `./lab_models.py`" in message


def test_a_plugin_that_raises_names_the_exception_and_the_line(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("import torch\n\nlayer = nn.Linear(2, 2)\n")
    path = write_sweep(tmp_path, sweep_text("[bad.py]", "mlp", "mnist1d"))
    assert plugin_error(path) == (
        f"{path}:2: plugins[0] = 'bad.py': the plugin failed to import: NameError: name 'nn' is "
        f"not defined (at {tmp_path / 'bad.py'}:3). Fix the plugin, or remove it from `plugins:`"
    )
    (tmp_path / "bad.py").write_text("def f(:\n")
    assert f"SyntaxError: invalid syntax (at {tmp_path / 'bad.py'}:1)" in plugin_error(path)
    assert not any(m.startswith(PATH_MODULE_PREFIX + "bad_") for m in sys.modules)


def test_a_name_registered_by_two_plugins_names_both(tmp_path: Path) -> None:
    first, arch, dataset = write_plugin(tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "my_models.py").write_text(first.read_text())
    path = write_sweep(tmp_path, sweep_text("[a/my_models.py, b/my_models.py]", arch, dataset))
    message = plugin_error(path)
    a, b = (orchestrator.plugins.path_module_name(tmp_path / d / "my_models.py") for d in "ab")
    assert message.startswith(
        f"{path}:2: plugins[1] = 'b/my_models.py': the plugin cannot register: model arch "
        f"{arch!r} is already registered (by {a}); {b} registers it again: register it once, "
        "or choose another name"
    )
    assert f"{a} is plugin 'a/my_models.py' (module {a}, from {tmp_path / 'a'}" in message
    assert f"{b} is plugin 'b/my_models.py'" in message


def test_plugins_must_be_a_list_of_names(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, sweep_text("my_models.py", "mlp", "mnist1d"))
    assert "plugins = 'my_models.py': a list of module names or paths" in plugin_error(path)
    path = write_sweep(tmp_path, sweep_text("[3]", "mlp", "mnist1d"))
    assert "plugins[0] = 3: a plugin is an importable module name or a path" in plugin_error(path)


@pytest.mark.parametrize("command", ["validate", "plan", "run"])
def test_a_plugin_error_exits_2_and_writes_nothing(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.py").write_text("raise RuntimeError('no GPU here')\n")
    path = write_sweep(tmp_path, sweep_text("[bad.py]", "mlp", "mnist1d"))
    assert main([command, str(path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "plugins[0] = 'bad.py': the plugin failed to import: RuntimeError: no GPU here" in err
    assert not (tmp_path / "work").exists()


# ---------------------------------------------------------------------------------------------
# What the registration API refuses, and what it forgives


def build_ok(cfg: ModelConfig, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(40, num_outputs))


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (
            nn.Sequential(nn.Linear(40, 8), nn.Dropout(0.1), nn.Linear(8, 3)),
            "has dropout 0.1 at '1'",
        ),
        (nn.TransformerEncoderLayer(40, 2, batch_first=True), "has dropout 0.1"),
        (nn.Sequential(nn.Linear(40, 3)).requires_grad_(False), "has no trainable parameters"),
        (nn.Sequential(nn.LazyLinear(3)), "has a lazy LazyLinear at '0': its weights would be"),
    ],
)
def test_a_model_that_would_corrupt_results_is_refused(module: nn.Module, message: str) -> None:
    arch = unique("bad")
    register_model(arch, ["s"], lambda cfg, shape, n: module)
    with pytest.raises(PluginError, match=message):
        build_model(ModelConfig(arch=arch, size="s"), (40,), 3, seed=0)


def batch_norm_net(cfg: ModelConfig, input_shape: tuple[int, ...], n: int) -> nn.Module:
    width = {"s": 16, "m": 32}[str(cfg.size)]
    return nn.Sequential(
        nn.Flatten(), nn.Linear(40, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, n)
    )


def test_batch_norm_scores_with_running_statistics_and_trains_in_batches(
    tmp_path: Path,
) -> None:
    """A model with batch norm trains on batch statistics, but an example's score is the
    same whatever else is scored with it (running statistics), the model is back in training
    mode after scoring, and a run of it is deterministic."""
    from tests.conftest import tiny_run_config
    from trainers.config import RunConfig
    from trainers.lookahead import per_example_loss
    from trainers.loop import RunContext, train
    from trainers.tasks import task_for
    from trainers.tracking import MemoryLogger

    arch = unique("bn")
    register_model(arch, ["s", "m"], batch_norm_net)
    model = build_model(ModelConfig(arch=arch, size="s"), (40,), 10, seed=0)
    model(torch.randn(8, 40))  # the first pass: the output check; also moves running stats
    task = task_for(RunConfig.model_validate(tiny_run_config()))
    x, y = torch.randn(64, 40), torch.randint(10, (64,))
    noop = contextlib.nullcontext
    alone = torch.cat(
        [per_example_loss(task, model, x[i : i + 2], y[i : i + 2], noop) for i in range(0, 64, 2)]
    )
    together = per_example_loss(task, model, x, y, noop)
    # Equal up to float rounding: a matmul of 2 rows and one of 64 may sum in different orders
    # (they do on an AVX-512 CPU). Batch statistics would move every loss by far more.
    torch.testing.assert_close(alone, together, rtol=1e-5, atol=1e-6)
    assert model.training

    config = tiny_run_config(
        learner={"arch": arch, "size": "m"},
        scorer={"arch": arch, "size": "s"},
        reference={"arch": arch, "size": "s", "steps": 20},
    )
    histories = []
    for attempt in range(2):
        logger = MemoryLogger()
        train(RunConfig.model_validate(config), RunContext(workdir=tmp_path / str(attempt)), logger)
        histories.append(logger.history)
    assert histories[0] == histories[1]
    assert histories[0][-1][1]["error"] < 0.85  # it learns (10 classes: chance is 0.9)


def test_a_model_must_give_one_row_of_outputs_per_example() -> None:
    arch = unique("wide")
    register_model(arch, ["s"], lambda cfg, shape, n: nn.Sequential(nn.Linear(40, 5)))
    model = build_model(ModelConfig(arch=arch, size="s"), (40,), 3, seed=0)
    # At its first forward pass (a run's FLOP measurement, before any training).
    with pytest.raises(PluginError, match=r"maps a batch of 2 examples to shape \(2, 5\); it must"):
        model(torch.zeros(2, 40))


def test_a_model_the_flop_meter_cannot_see_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arch = unique("free")
    (tmp_path / "free.py").write_text(
        "import torch\nfrom torch import nn\nfrom activescale.plugins import register_model\n\n"
        "class Scale(nn.Module):  # elementwise only: no matmul, no convolution\n"
        "    def __init__(self, n):\n        super().__init__()\n"
        "        self.w = nn.Parameter(torch.ones(n))\n\n"
        "    def forward(self, x):\n        return x[:, : len(self.w)] * self.w\n\n"
        f"register_model({arch!r}, ['s'], lambda cfg, shape, n: Scale(n))\n"
    )
    text = f"name: free\nplugins: [free.py]\nlearner: {{arch: {arch}, size: s}}\n"
    path = write_sweep(tmp_path, text + "selection: {policy: iid}\n")
    assert main(["plan", str(path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"the FLOP meter counts no FLOPs in a step of learner arch {arch!r}" in err


def test_the_registration_api_forgives_what_costs_nothing() -> None:
    arch = unique("ok")
    entry = register_model(arch, (s for s in ["a", "b"]), build_ok)  # any iterable of names
    assert entry.sizes == ("a", "b")
    model = build_model(ModelConfig(arch=arch, size="b"), (40,), 3, seed=0)
    assert model(torch.zeros(5, 40)).shape == (5, 3)
    again = build_model(ModelConfig(arch=arch, size="b"), (40,), 3, seed=0)
    assert all(
        torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters(), strict=True)
    )
    task = unique("task")  # a task object instead of a function of the run config
    register_task(task, Classification())
    assert TASKS[task].make(None) is TASKS[task].make(None)  # type: ignore[arg-type]


def test_the_registration_api_refuses_wrong_shapes_at_registration() -> None:
    with pytest.raises(
        PluginError, match=r"sizes must be a list of size names, got the string 's'"
    ):
        register_model(unique("m"), "s", build_ok)  # type: ignore[arg-type]
    with pytest.raises(PluginError, match=r"build must take \(cfg, input_shape, num_outputs\)"):
        register_model(unique("m"), ["s"], lambda cfg: nn.Linear(1, 1))  # type: ignore[arg-type,return-value]
    with pytest.raises(PluginError, match=r"make must take \(run_config\)"):
        register_task(unique("t"), lambda: None)  # type: ignore[arg-type,return-value]


def test_splits_from_arrays_converts_what_is_safe_and_refuses_what_is_wrong() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 4)), rng.integers(0, 3, 20).astype(np.int32)  # float64, int32
    splits = splits_from_arrays((x, y, np.zeros(20, int)), (x[:5], y[:5]), (x[:4], y[:4]), 3)
    assert splits.train_x.dtype == torch.float32 and splits.train_y.dtype == torch.int64
    assert splits.train_corrupted.dtype == torch.bool and splits.input_shape == (4,)
    same = x.astype(np.float32), y.astype(np.int64)
    shared = splits_from_arrays((*same, np.zeros(20, bool)), same, same, 3)
    assert np.shares_memory(shared.train_x.numpy(), same[0])  # no copy when nothing changes
    with pytest.raises(DataError, match=r"the test split has 5 inputs but 4 targets"):
        splits_from_arrays((x, y, np.zeros(20, bool)), (x[:5], y[:4]), (x, y), 3)
    with pytest.raises(DataError, match=r"class labels from 0 to 2, outside \[0, num_classes=2\)"):
        splits_from_arrays((x, y, np.zeros(20, bool)), (x, y), (x, y), 2)
    with pytest.raises(DataError, match=r"targets are float64; class labels .* must be integers"):
        splits_from_arrays((x, y * 1.0, np.zeros(20, bool)), (x, y), (x, y), 3)
    with pytest.raises(DataError, match=r"has 20 examples but a corrupted mask of 19"):
        splits_from_arrays((x, y, np.zeros(19, bool)), (x, y), (x, y), 3)


# ---------------------------------------------------------------------------------------------
# Jobs load the plugins again; a plugin gone or broken since validation is named in the store


@pytest.mark.slow
def test_a_plugin_removed_or_broken_after_validate_fails_its_run_named(tmp_path: Path) -> None:
    plugin, arch, dataset = write_plugin(tmp_path)
    extra = "executor: {kind: local, max_parallel: 2, threads_per_run: 1}\ngrid: {seed: [0, 1]}\n"
    path = write_sweep(tmp_path, sweep_text("[my_models.py]", arch, dataset, extra))
    sweep = prepare(load_sweep(path))
    store = RunStore(sweep.store_url)
    registration = register(sweep, store)
    rows, _ = runs_to_execute(sweep, store)
    text = plugin.read_text()
    plugin.unlink()  # after validate: the local jobs (fresh processes) cannot load it
    execute_runs(sweep, store, registration, rows[:1])
    plugin.write_text(text + "\nraise RuntimeError('broken on purpose')\n")
    execute_runs(sweep, store, registration, rows[1:])
    (module,) = [ref.module for ref in sweep.plugins]
    gone, broken = (store.run(sweep.name, row.id) for row in rows)
    assert gone is not None and broken is not None
    assert gone.status == broken.status == FAILED
    last = (gone.error_tail or "").strip().splitlines()[-1]
    assert last.startswith(
        f"activescale.errors.PluginError: plugin 'my_models.py' (module {module}, from {plugin}), "
        f"validated with the sweep, cannot be loaded in this job: FileNotFoundError: {plugin} no "
        "longer exists. Restore or fix the plugin"
    )
    assert "pydantic" not in (gone.error_tail or "") and "ValidationError" not in (
        gone.error_tail or ""
    )
    last = (broken.error_tail or "").strip().splitlines()[-1]
    assert f"(module {module}, from {plugin}), validated with the sweep, cannot be loaded" in last
    assert f"RuntimeError: broken on purpose (at {plugin}:" in last


def test_a_job_records_the_plugins_it_loaded(tmp_path: Path) -> None:
    plugin, arch, dataset = write_plugin(tmp_path)
    path = write_sweep(
        tmp_path, sweep_text("[my_models.py]", arch, dataset, "executor: {kind: inline}\n")
    )
    assert main(["run", str(path), "--no-report"]) == 0
    sweep = load_sweep(path)
    (row,) = RunStore(sweep.store_url).runs(sweep.name)
    assert row.status == COMPLETED
    (recorded,) = json.loads(row.plugins or "[]")
    assert recorded["digest"] == digest_of(plugin) and recorded["path"] == str(plugin)
    assert recorded["module"] == sweep.plugins[0].module and recorded["version"] is None
    client = MlflowClient(tracking_uri=sweep.tracking_uri)
    params = client.get_run(row.mlflow_run_id).data.params
    assert params["plugin.my_models.py"] == digest_of(plugin)
    assert params["learner.arch"] == arch and int(params["learner.params"]) == 6 * 8 + 8 + 8 * 3 + 3
    # The same refs loaded again in this process: nothing imported twice.
    assert load_job_plugins(sweep.plugins)[-1] == sweep.plugins[0]


def test_a_store_from_before_plugins_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "old.db"
    with sqlite3.connect(db) as connection:
        connection.execute(
            "CREATE TABLE runs (sweep VARCHAR(100), id VARCHAR(32), config TEXT, label TEXT, status VARCHAR(16), attempts INTEGER, created_at DATETIME, submitted_at DATETIME, started_at DATETIME, finished_at DATETIME, job_id VARCHAR(64), submission VARCHAR(64), error_tail TEXT, mlflow_run_id VARCHAR(64), code_version VARCHAR(64), final_metrics TEXT, PRIMARY KEY (sweep, id))"
        )
    store = RunStore(f"sqlite:///{db}")
    store.upsert_sweep("s", {})
    store.register("s", [("r1", {}, {})])
    store.set_plugins("s", "r1", [{"module": "m", "digest": "sha256:0"}])
    row = store.run("s", "r1")
    assert row is not None and json.loads(row.plugins or "") == [
        {"digest": "sha256:0", "module": "m"}
    ]


@pytest.mark.slow
def test_tuning_workers_load_the_plugins(tmp_path: Path) -> None:
    plugin, arch, dataset = write_plugin(tmp_path)
    tune = (
        "executor: {kind: local, threads_per_run: 1}\n"
        "tune:\n  space:\n    optimizer.lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}\n"
        "  trials: 2\n  workers: 1\n  pruner: {kind: none}\n"
    )
    path = write_sweep(tmp_path, sweep_text("[my_models.py]", arch, dataset, tune))
    assert main(["tune", str(path)]) == 0
    sweep = load_sweep(path)
    client = MlflowClient(tracking_uri=sweep.tracking_uri)
    experiment = client.get_experiment_by_name(sweep.experiment)
    assert experiment is not None
    trials = [
        r
        for r in client.search_runs([experiment.experiment_id])
        if r.data.tags.get("activescale.role") == "trial"
    ]
    assert len(trials) >= 2 and {r.info.status for r in trials} == {"FINISHED"}
    assert {r.data.params["plugin.my_models.py"] for r in trials} == {digest_of(plugin)}
    assert {r.data.params["learner.arch"] for r in trials} == {arch}


# ---------------------------------------------------------------------------------------------
# Entry points: an installed package's plugin loads for every command, in every process


def install_example_metadata(site: Path) -> None:
    """What `pip install -e examples/resnet1d_plugin` leaves for importlib.metadata: a
    dist-info folder with the example's own name, version and entry points (read from its
    pyproject.toml; a few lines of it, as tomllib needs Python 3.11)."""
    text = (EXAMPLE / "pyproject.toml").read_text()
    name = re.search(r'^name = "(.+)"$', text, re.MULTILINE)
    version = re.search(r'^version = "(.+)"$', text, re.MULTILINE)
    section = re.search(
        r'^\[project\.entry-points\."activescale\.plugins"\]\n((?:.+\n)+)', text, re.MULTILINE
    )
    assert name and version and section
    info = site / f"{name[1].replace('-', '_')}-{version[1]}.dist-info"
    info.mkdir(parents=True)
    info.joinpath("METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name[1]}\nVersion: {version[1]}\n"
    )
    points = [line.replace('"', "") for line in section[1].splitlines() if "=" in line]
    info.joinpath("entry_points.txt").write_text(
        "[activescale.plugins]\n" + "\n".join(points) + "\n"
    )


def run_cli(args: list[str], pythonpath: list[Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(str(p) for p in pythonpath),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=False,
        timeout=600,
    )


@pytest.mark.slow
def test_an_installed_plugin_loads_for_every_command_without_a_plugins_entry(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    install_example_metadata(site)
    write_csv = runpy.run_path(str(EXAMPLE / "activescale_resnet1d" / "make_csv.py"))["write_csv"]
    data = write_csv(tmp_path / "signals.csv", n=400)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        f"name: installed\nworkdir: {tmp_path / 'work'}\n"
        f"dataset: {{name: csv_signals, path: {data}}}\n"
        "learner: {arch: resnet1d, size: xs}\nselection: {policy: iid}\nbatch_size: 16\n"
        "budget: {steps: 5}\neval: {points: 2, batch_size: 100}\nexecutor: {kind: local}\n"
    )
    result = run_cli(["run", str(sweep), "--no-report"], [site, EXAMPLE, ROOT], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    store = RunStore(f"sqlite:///{tmp_path / 'work' / 'store.db'}")
    (row,) = store.runs("installed")
    (recorded,) = json.loads(row.plugins or "[]")
    assert recorded["entry_point"] and recorded["version"] == "0.1.0"
    assert recorded["module"] == "activescale_resnet1d" and recorded["path"] is None
    params = (
        MlflowClient(f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}")
        .get_run(row.mlflow_run_id)
        .data.params
    )
    assert params["plugin.activescale_resnet1d"] == f"0.1.0 {recorded['digest']}"

    # The example sweep names the same package by path: with it installed editable (the same
    # files), it is the installed plugin, not a second registration of resnet1d.
    result = run_cli(
        ["validate", str(EXAMPLE / "sweep.yaml"), "-o", f"dataset.path={data}"],
        [site, EXAMPLE, ROOT],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4 runs from 4 grid points; valid." in result.stdout

    # A broken installed plugin stops every command, named (here `status`, which trains nothing).
    broken = tmp_path / "broken"
    install_example_metadata(broken)
    (broken / "activescale_resnet1d").mkdir()
    (broken / "activescale_resnet1d" / "__init__.py").write_text("import no_such_module\n")
    result = run_cli(["status", "installed"], [broken, ROOT], tmp_path)
    assert result.returncode == 2
    err = " ".join(result.stderr.split())
    assert (
        "error: the installed plugin 'resnet1d' (entry point 'activescale_resnet1d' of "
        "activescale-resnet1d 0.1.0) failed to import: ModuleNotFoundError: No module named "
        "'no_such_module'"
    ) in err
    assert "Fix it, or pip uninstall activescale-resnet1d" in err


# ---------------------------------------------------------------------------------------------
# docs/plugins.md: its examples, verbatim


def doc_files() -> dict[str, str]:
    """The files docs/plugins.md shows, each after a ``<!-- file: NAME -->`` marker."""
    text = DOCS.read_text()
    found = re.findall(r"<!-- file: (\S+) -->\n```\w+\n(.*?)```", text, re.DOTALL)
    return {name: body for name, body in found}


@pytest.mark.slow
def test_the_docs_example_runs_as_written(tmp_path: Path) -> None:
    files = doc_files()
    assert set(files) == {"my_plugin.py", "sweep.yaml", "smoothed_task.py"}
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    sweep_file = tmp_path / "sweep.yaml"
    workdir = f"workdir={tmp_path / 'work'}"
    assert main(["validate", str(sweep_file), "-o", workdir]) == 0
    assert main(["run", str(sweep_file), "-o", workdir, "--executor", "inline"]) == 0
    sweep = load_sweep(sweep_file, [workdir])
    rows = RunStore(sweep.store_url).runs(sweep.name)
    assert len(rows) == 4 and {r.status for r in rows} == {COMPLETED}
    client = MlflowClient(tracking_uri=sweep.tracking_uri)
    params = [client.get_run(r.mlflow_run_id).data.params for r in rows]
    assert {p["learner.arch"] for p in params} == {"tiny_mlp"}
    by_size = {p["learner.size"]: int(p["learner.params"]) for p in params}
    assert by_size == {"narrow": 8 * 16 + 16 + 16 * 4 + 4, "wide": 8 * 256 + 256 + 256 * 4 + 4}
    assert {p["plugin.my_plugin.py"] for p in params} == {digest_of(tmp_path / "my_plugin.py")}
    assert (tmp_path / "work" / "report" / "report.html").is_file()

    # The task example: a plugin of its own, next to the first one.
    task = ["-o", "plugins=[my_plugin.py, smoothed_task.py]", "-o", "task=smoothed"]
    one = ["-o", "grid.learner.size=[narrow]", "-o", "grid.selection.policy=[iid]"]
    assert (
        main(
            [
                "run",
                str(sweep_file),
                "-o",
                workdir,
                *task,
                *one,
                "--executor",
                "inline",
                "--no-report",
            ]
        )
        == 0
    )
    assert TASKS["smoothed"].description == "cross-entropy with label smoothing 0.1"


def test_the_docs_list_the_registration_signatures() -> None:
    text = DOCS.read_text()
    for signature in (
        "register_model(arch: str, sizes: Iterable[str], build: ModelBuilder, *, description",
        "register_dataset(\n    name: str, *,\n    config: type[DatasetConfig],",
        "register_task(name: str, make: Callable[[RunConfig], Task] | Task, *,",
    ):
        assert signature in text
    for member in ("independent_rows", "per_example_loss", "dummy_batch", "evaluate"):
        assert f"`{member}" in text

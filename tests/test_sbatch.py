"""The sbatch text user values become: golden files, and proof that no value reaches a shell."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from activescale.errors import SweepSpecError
from orchestrator.executors import ExecutorConfig
from orchestrator.sbatch import SlurmResources, sbatch_text, submitit_parameters
from orchestrator.spec import parse_sweep

GOLDEN = Path(__file__).parent / "golden"
HOSTILE = "a'b\"c $(touch PWNED) `touch PWNED2` ; touch PWNED3 #"


def hostile_executor() -> ExecutorConfig:
    return ExecutorConfig(
        kind="slurm",
        partition="debug",
        cpus_per_task=2,
        mem_gb=1.5,
        timeout_min=30,
        account=HOSTILE,
        qos=HOSTILE,
        additional_parameters={"comment": HOSTILE, "constraint": "x&y|z", "exclusive": True},
        setup=["module load cuda/12.1", "export A='it''s'"],
        array_parallelism=4,
        resources={
            "xl": {"gpus_per_node": 1, "mem_gb": 32, "additional_parameters": {"comment": "big"}}
        },
    )


def render(cfg: ExecutorConfig, size: str, snapshot: Path | None) -> str:
    params = submitit_parameters(
        cfg.resources_for(size),
        job_name="as-demo-0123456789abcdef",
        setup=cfg.setup,
        array_parallelism=cfg.array_parallelism,
        snapshot=snapshot,
        signal_delay_s=cfg.signal_delay_s,
    )
    folder = "/shared/work/w $(touch PWNED4) `x` 'q\"/jobs/%j"
    return sbatch_text(params, folder, "/venv/bin/python -u -m submitit.core._submit FOLDER", 6)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; rerun with UPDATE_GOLDEN=1 and review"


def test_sbatch_text_golden() -> None:
    cfg = hostile_executor()
    check_golden("sbatch_small.sh", render(cfg, "s", Path("/shared/snap $(x)/abc")))
    check_golden("sbatch_xl.sh", render(cfg, "xl", None))


def test_data_parallel_sbatch_golden() -> None:
    """A run on 2 nodes x 4 tasks, one per GPU: srun starts all eight processes."""
    big = SlurmResources(nodes=2, tasks_per_node=4, gpus_per_node=4, cpus_per_task=8)
    cfg = hostile_executor().model_copy(update={"resources": {"xxl": big}})
    text = render(cfg, "xxl", None)
    assert "#SBATCH --nodes=2\n" in text and "#SBATCH --ntasks-per-node=4\n" in text
    check_golden("sbatch_data_parallel.sh", text)


def test_hostile_values_never_run(tmp_path: Path) -> None:
    """bash runs the rendered script (srun stubbed): no value executes, every value arrives
    verbatim (the stub prints its arguments; #SBATCH lines are comments to bash)."""
    text = render(hostile_executor(), "s", Path("/shared/snap $(x)/abc"))
    # Replace the setup lines (shell by design) to test only the values.
    text = text.replace("module load cuda/12.1", "true").replace("export A='it''s'", "true")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    (bin_dir / "srun").chmod(0o755)
    script = tmp_path / "job.sh"
    script.write_text(text)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    out = subprocess.run(
        ["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert not list(tmp_path.glob("PWNED*"))
    assert "/shared/work/w $(touch PWNED4) `x` 'q\"/jobs/%A_%a/%A_%a_%t_log.out" in out.splitlines()
    # sbatch reads the #SBATCH lines itself; what a shell would make of each value is the value.
    for line in text.splitlines():
        if line.startswith("#SBATCH --comment="):
            value = line.removeprefix("#SBATCH --comment=")
            echoed = subprocess.run(
                ["bash", "-c", f"printf %s {value}"], cwd=tmp_path, capture_output=True, text=True
            ).stdout
            assert echoed == HOSTILE
    assert not list(tmp_path.glob("PWNED*"))


@pytest.mark.parametrize(
    "executor, problem",
    [
        ('{kind: slurm, partition: "debug\\nrm -rf /"}', "must be one line"),
        ('{kind: slurm, account: "a\\rb"}', "must be one line"),
        ('{kind: slurm, setup: ["echo a\\necho b"]}', "must be one line"),
        ('{kind: slurm, additional_parameters: {comment: "x\\ny"}}', "must be one line"),
        ('{kind: slurm, additional_parameters: {"bad name": 1}}', "not a plain name"),
        ("{kind: slurm, additional_parameters: {array: 0-3}}", "set by activescale"),
        ("{kind: slurm, resources: {huge: {mem_gb: 8}}}", "not a learner size"),
        ("{kind: slurm, mem_gb: -1}", "greater than 0"),
    ],
)
def test_bad_slurm_settings_are_named_errors(executor: str, problem: str) -> None:
    text = f"name: x\nbudget: {{steps: 5}}\nexecutor: {executor}\n"
    with pytest.raises(SweepSpecError, match=problem) as err:
        parse_sweep(text, "bad.yaml")
    assert "bad.yaml:3" in str(err.value) and "executor" in str(err.value)


def test_per_size_resources_merge() -> None:
    cfg = hostile_executor()
    xl = cfg.resources_for("xl")
    assert xl.gpus_per_node == 1 and xl.mem_gb == 32 and xl.partition == "debug"
    assert xl.additional_parameters is not None
    assert xl.additional_parameters["comment"] == "big" and xl.additional_parameters["exclusive"]
    assert cfg.resources_for("s").gpus_per_node is None

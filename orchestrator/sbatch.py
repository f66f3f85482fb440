"""SLURM resources and the sbatch text they become: pure functions, checked by golden files.

User values reach an sbatch script in exactly three places, and none reaches a shell
unquoted:

- ``#SBATCH --key=value`` lines (partition, account, qos, additional parameters, ...): submitit
  shell-quotes every value; ``#SBATCH`` lines are comments to bash and are parsed by sbatch
  itself. A newline would end the comment and start a shell line, so values with newlines
  (or carriage returns, or NUL) are rejected, and parameter names must be plain identifiers.
- paths (the job folder, the code snapshot): shell-quoted by submitit / here; newlines rejected.
- ``setup`` lines: shell commands by design (e.g. ``module load cuda``), one per list item;
  a newline inside an item is rejected, so one item cannot smuggle a second command in.

Everything else a run needs (its config, the store URL, the tracking URI) travels in the job's
pickle, never in the script.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from activescale.errors import SubmissionError

FORBIDDEN_CHARS = ("\n", "\r", "\x00")
PARAMETER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
# submitit's own keys that additional_parameters must not silently override, and `hold`, which
# every submission uses (orchestrator/slurm.py: arrays are released once their files exist).
RESERVED = {"array", "output", "error", "open-mode", "signal", "job-name", "wckey", "hold"}
# Options that have a field of their own: set there, they are checked against the cluster.
SHADOWED = {
    "partition": "partition",
    "account": "account",
    "qos": "qos",
    "time": "timeout_min",
    "mem": "mem_gb",
    "cpus-per-task": "cpus_per_task",
    "gpus-per-node": "gpus_per_node",
}


def check_single_line(value: str, what: str) -> str:
    for char in FORBIDDEN_CHARS:
        if char in value:
            raise ValueError(
                f"{what} {value!r} contains {char!r}; SLURM values must be one line "
                "(a newline would end the #SBATCH comment and start a shell command)"
            )
    return value


class SlurmResources(BaseModel):
    """What one job asks SLURM for. In ``executor.resources`` every field is optional."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    partition: str | None = Field(
        None, min_length=1, description="slurm: partition (null: the default)."
    )
    nodes: int | None = Field(
        None, ge=1, description="slurm: nodes per run, its processes spread over them (null: 1)."
    )
    tasks_per_node: int | None = Field(
        None,
        ge=1,
        description=(
            "Processes per node that train one run together (torch.distributed, data "
            "parallel; one per GPU); slurm and local (null: 1)."
        ),
    )
    gpus_per_node: int | None = Field(None, ge=0, description="slurm: GPUs per node.")
    cpus_per_task: int | None = Field(
        None, ge=1, description="slurm: CPU cores per process (torch uses this many threads)."
    )
    mem_gb: float | None = Field(None, gt=0, description="slurm: memory per job in GB.")
    timeout_min: int | None = Field(
        None, ge=1, description="slurm: time limit in minutes (the job requeues when it hits it)."
    )
    account: str | None = Field(None, min_length=1, description="slurm: --account.")
    qos: str | None = Field(None, min_length=1, description="slurm: --qos.")
    additional_parameters: dict[str, str | int | float | bool] | None = Field(
        None,
        description=(
            "slurm: extra sbatch options, e.g. {constraint: a100, comment: 'x'}; values are "
            "shell-quoted, names must be plain identifiers."
        ),
    )

    @field_validator("partition", "account", "qos")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        return None if value is None else check_single_line(value, "value")

    @field_validator("additional_parameters")
    @classmethod
    def _plain_parameters(
        cls, params: dict[str, str | int | float | bool] | None
    ) -> dict[str, str | int | float | bool] | None:
        for key, value in (params or {}).items():
            if not PARAMETER_NAME.match(key):
                raise ValueError(
                    f"sbatch option name {key!r} is not a plain name (letters, digits, '-', '_')"
                )
            if key.replace("_", "-") in RESERVED:
                raise ValueError(f"sbatch option {key!r} is set by activescale; remove it")
            if key.replace("_", "-") in SHADOWED:
                field = SHADOWED[key.replace("_", "-")]
                raise ValueError(
                    f"sbatch option {key!r} has its own setting: use executor.{field} (checked "
                    "against the cluster before anything is submitted)"
                )
            if isinstance(value, str):
                check_single_line(value, f"additional_parameters.{key}")
        return params

    @property
    def processes(self) -> int:
        """Processes that train one run together: nodes x tasks per node."""
        return (self.nodes or 1) * (self.tasks_per_node or 1)

    @property
    def devices(self) -> int:
        """Devices a run holds (GPU-hours count them): nodes x GPUs per node, or one per
        process where no GPUs are asked for."""
        return (self.nodes or 1) * self.gpus_per_node if self.gpus_per_node else self.processes

    def one_process(self) -> SlurmResources:
        """These resources for a job that runs as one process (a tuning worker)."""
        return self.model_copy(update={"nodes": None, "tasks_per_node": None})

    def merged(self, override: SlurmResources | None) -> SlurmResources:
        """These resources with every field the override sets replaced."""
        if override is None:
            return self
        changes = override.model_dump(exclude_none=True)
        if "additional_parameters" in changes:
            changes["additional_parameters"] = {
                **(self.additional_parameters or {}),
                **changes["additional_parameters"],
            }
        return self.model_copy(update=changes)


def submitit_parameters(
    resources: SlurmResources,
    *,
    job_name: str,
    setup: list[str],
    array_parallelism: int | None,
    snapshot: Path | None,
    signal_delay_s: int,
) -> dict[str, Any]:
    """Keyword arguments for ``submitit.SlurmExecutor.update_parameters`` (SLURM names)."""
    check_single_line(job_name, "job name")
    params: dict[str, Any] = {
        "job_name": job_name,
        "time": resources.timeout_min or 60,
        "signal_delay_s": signal_delay_s,
        "stderr_to_stdout": True,
    }
    for name, key in (
        ("partition", "partition"),
        ("nodes", "nodes"),
        ("tasks_per_node", "ntasks_per_node"),
        ("gpus_per_node", "gpus_per_node"),
        ("cpus_per_task", "cpus_per_task"),
        ("account", "account"),
        ("qos", "qos"),
    ):
        value = getattr(resources, name)
        if value is not None:
            params[key] = value
    if resources.mem_gb is not None:
        mem = resources.mem_gb
        params["mem"] = f"{int(mem)}GB" if mem == int(mem) else f"{int(mem * 1024)}MB"
    if array_parallelism is not None:
        params["array_parallelism"] = array_parallelism
    lines = []
    for line in setup:
        check_single_line(line, "setup line")
        lines.append(line)
    if snapshot is not None:
        # The job starts in the snapshot (sbatch --chdir), so `python -m` puts the snapshot's
        # packages first on sys.path; the worker then returns to the submission directory.
        check_single_line(str(snapshot), "snapshot path")
        params["additional_parameters"] = {"chdir": str(snapshot)}
    if resources.additional_parameters:
        params["additional_parameters"] = {
            **params.get("additional_parameters", {}),
            **{k.replace("_", "-"): v for k, v in resources.additional_parameters.items()},
        }
    if lines:
        params["setup"] = lines
    return params


def sbatch_text(params: dict[str, Any], folder: str, command: str, map_count: int | None) -> str:
    """The sbatch script submitit writes for these parameters (for golden tests and review)."""
    from submitit.slurm.slurm import _make_sbatch_string

    check_single_line(folder, "job folder")
    try:
        return str(
            _make_sbatch_string(command=command, folder=folder, map_count=map_count, **params)
        )
    except (TypeError, ValueError) as err:
        raise SubmissionError(f"invalid SLURM parameters: {err}") from None

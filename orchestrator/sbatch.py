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

from orchestrator.errors import SubmissionError

FORBIDDEN_CHARS = ("\n", "\r", "\x00")
PARAMETER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
# submitit's own keys that additional_parameters must not silently override.
RESERVED = {"array", "output", "error", "open-mode", "signal", "job-name", "wckey"}


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

    model_config = ConfigDict(extra="forbid")

    partition: str | None = Field(None, description="slurm: partition (null: the default).")
    gpus_per_node: int | None = Field(None, ge=0, description="slurm: GPUs per job.")
    cpus_per_task: int | None = Field(None, ge=1, description="slurm: CPU cores per job.")
    mem_gb: float | None = Field(None, gt=0, description="slurm: memory per job in GB.")
    timeout_min: int | None = Field(
        None, ge=1, description="slurm: time limit in minutes (the job requeues when it hits it)."
    )
    account: str | None = Field(None, description="slurm: --account.")
    qos: str | None = Field(None, description="slurm: --qos.")
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
            if isinstance(value, str):
                check_single_line(value, f"additional_parameters.{key}")
        return params

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

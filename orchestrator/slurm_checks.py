"""A sweep's SLURM settings checked against the cluster, with read-only client calls only.

Before anything is written (``orchestrator.checks``): for every resource set the sweep's runs
ask for (``executor`` and its per-size ``resources``), the partition exists, the account is one
of the user's associations and the QoS exists and is allowed (when the cluster keeps
accounting), the CPUs, memory and GPUs fit the partition's largest node, the time limit fits
the partition's, and the requeue signal comes after the job starts. Calls: ``scontrol show
config``, ``sinfo``, ``sacctmgr show``: never ``sbatch``.
"""

from __future__ import annotations

import getpass
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from activescale.errors import SubmissionError
from orchestrator.executors import ExecutorConfig
from orchestrator.keys import fail
from orchestrator.sbatch import SlurmResources
from orchestrator.slurm import ClusterInfo, check_resources, cluster_info, run_command

DEFAULT_TIMEOUT_MIN = 60  # submitit_parameters' default time limit


@dataclass(frozen=True)
class PartitionLimits:
    """The largest node of a partition, and its time limit (None: unlimited)."""

    cpus: int
    memory_mb: int
    gpus: int
    max_minutes: int | None


def parse_time_limit(text: str) -> int | None:
    """sinfo's ``%l`` (``infinite``, ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``) ->
    whole minutes; None: no limit, or a form this does not know."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    try:
        days, _, clock = text.rpartition("-")
        fields = [int(f) for f in clock.split(":")]
    except ValueError:
        return None
    if days:  # D-HH, D-HH:MM, D-HH:MM:SS
        hours, minutes = [*fields, 0, 0][:2]
    elif len(fields) == 3:  # HH:MM:SS
        hours, minutes = fields[:2]
    else:  # MM or MM:SS
        hours, minutes = 0, fields[0]
    return (int(days or 0) * 24 + hours) * 60 + minutes


def parse_gpus(gres: str) -> int:
    """GPUs per node in sinfo's ``%G`` (``gpu:a100:4(S:0-1),shard:8`` -> 4)."""
    total = 0
    for item in gres.split(","):
        match = re.match(r"gpu(?::[^:(]+)?:(\d+)", item.strip())
        if match:
            total += int(match.group(1))
    return total


def partition_limits() -> dict[str, PartitionLimits]:
    """Per partition, the largest CPU count, memory and GPU count of its nodes."""
    out = run_command(["sinfo", "-h", "-o", "%P|%c|%m|%G|%l"], "read the partitions' limits")
    limits: dict[str, PartitionLimits] = {}
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) != 5:
            continue
        name = parts[0].rstrip("*")
        cpus = _int(parts[1])
        memory = _int(parts[2])
        gpus = parse_gpus(parts[3])
        minutes = parse_time_limit(parts[4])
        old = limits.get(name)
        if old is not None:
            cpus, memory, gpus = (
                max(cpus, old.cpus),
                max(memory, old.memory_mb),
                max(gpus, old.gpus),
            )
        limits[name] = PartitionLimits(cpus, memory, gpus, minutes)
    return limits


def _int(text: str) -> int:
    digits = re.match(r"\d+", text.strip())
    return int(digits.group(0)) if digits else 0


@dataclass(frozen=True)
class Accounting:
    """The user's associations (accounts, the QoS they allow) and the cluster's QoS names."""

    accounts: frozenset[str]
    allowed_qos: frozenset[str]  # empty: the associations list none (anything known goes)
    known_qos: frozenset[str]


def accounting(config_text: str) -> Accounting | None:
    """None when the cluster keeps no accounting (then account and QoS are not checked)."""
    if "accounting_storage/slurmdbd" not in config_text or shutil.which("sacctmgr") is None:
        return None
    user = getpass.getuser()
    assoc = run_command(
        ["sacctmgr", "-n", "-P", "show", "assoc", f"user={user}", "format=account,qos"],
        "read your SLURM associations",
    )
    accounts, allowed = set(), set()
    for line in assoc.splitlines():
        account, _, qos = line.partition("|")
        if account.strip():
            accounts.add(account.strip())
        allowed |= {q.strip() for q in qos.split(",") if q.strip()}
    known = run_command(["sacctmgr", "-n", "-P", "show", "qos", "format=name"], "list the QoS")
    return Accounting(
        frozenset(accounts), frozenset(allowed), frozenset(n.strip() for n in known.split())
    )


@dataclass(frozen=True)
class ClusterLimits:
    info: ClusterInfo
    partitions: dict[str, PartitionLimits]

    def partition_of(self, resources: SlurmResources) -> str | None:
        return resources.partition or self.info.default_partition

    def memory_bytes(self, resources: SlurmResources) -> tuple[float, str]:
        """What a job of these resources may use, and how a message names it."""
        if resources.mem_gb is not None:
            return resources.mem_gb * 2**30, f"its executor.mem_gb of {resources.mem_gb:g} GB"
        name = self.partition_of(resources)
        limits = self.partitions.get(name or "")
        if limits is None or not limits.memory_mb:
            return float("inf"), "the cluster's nodes"
        return (
            limits.memory_mb * 2**20,
            f"the {limits.memory_mb / 1024:.3g} GB of the largest node of partition {name!r}",
        )


def check_cluster(
    cfg: ExecutorConfig, sizes: Iterable[str], where: Callable[[str], str]
) -> ClusterLimits:
    """Every resource set of these learner sizes against the cluster; ``where(key)`` gives a
    dotted key's file:line. Raises SubmissionError; returns the limits for memory checks."""
    info = cluster_info()
    sized = {size: cfg.resources_for(size) for size in sorted(set(sizes))}
    check_resources(info, [])  # sbatch and srun on PATH
    for size, res in sized.items():
        if res.partition is not None and res.partition not in info.partitions:
            key = _key(cfg, size, "partition")
            raise fail(
                where(key),
                key,
                res.partition,
                f"partition {res.partition!r} does not exist on this cluster (partitions: "
                f"{', '.join(info.partitions)})",
                "Use one of them.",
                SubmissionError,
            )
    limits = ClusterLimits(info, partition_limits())
    config_text = run_command(["scontrol", "show", "config"], "read the SLURM configuration")
    known = accounting(config_text)
    for size, res in sized.items():
        _check_one(cfg, size, res, limits, known, where)
    return limits


def _check_one(
    cfg: ExecutorConfig,
    size: str,
    res: SlurmResources,
    limits: ClusterLimits,
    known: Accounting | None,
    where: Callable[[str], str],
) -> None:
    def error(field: str, value: object, problem: str, fix: str) -> SubmissionError:
        key = _key(cfg, size, field)
        made = fail(where(key), key, value, problem, fix, SubmissionError)
        assert isinstance(made, SubmissionError)
        return made

    if known is not None and res.account is not None and res.account not in known.accounts:
        raise error(
            "account",
            res.account,
            f"not one of your SLURM accounts ({', '.join(sorted(known.accounts)) or 'none'})",
            "Use one of them (sacctmgr show assoc user=$USER), or remove executor.account.",
        )
    if known is not None and res.qos is not None:
        allowed = known.allowed_qos or known.known_qos
        if res.qos not in known.known_qos or res.qos not in allowed:
            raise error(
                "qos",
                res.qos,
                f"not a QoS your associations allow ({', '.join(sorted(allowed)) or 'none'})",
                "Use one of them, or remove executor.qos.",
            )
    name = limits.partition_of(res)
    part = limits.partitions.get(name or "")
    if part is not None:
        if res.cpus_per_task is not None and part.cpus and res.cpus_per_task > part.cpus:
            raise error(
                "cpus_per_task",
                res.cpus_per_task,
                f"the largest node of partition {name!r} has {part.cpus} CPUs",
                f"Ask for at most {part.cpus}.",
            )
        if res.mem_gb is not None and part.memory_mb and res.mem_gb * 1024 > part.memory_mb:
            raise error(
                "mem_gb",
                res.mem_gb,
                f"the largest node of partition {name!r} has {part.memory_mb / 1024:.3g} GB",
                f"Ask for at most {part.memory_mb // 1024} GB, or use another partition.",
            )
        if res.gpus_per_node and res.gpus_per_node > part.gpus:
            raise error(
                "gpus_per_node",
                res.gpus_per_node,
                f"the nodes of partition {name!r} have at most {part.gpus} GPUs",
                "Ask for fewer, or use a partition with GPUs.",
            )
        minutes = res.timeout_min or DEFAULT_TIMEOUT_MIN
        if part.max_minutes is not None and minutes > part.max_minutes:
            raise error(
                "timeout_min",
                minutes,
                f"partition {name!r} allows at most {part.max_minutes} minutes",
                f"Ask for at most {part.max_minutes}; runs longer than that requeue themselves.",
            )
    minutes = res.timeout_min or DEFAULT_TIMEOUT_MIN
    if cfg.signal_delay_s >= minutes * 60:
        raise error(
            "signal_delay_s",
            cfg.signal_delay_s,
            f"the requeue signal would come before the job starts (time limit {minutes} min)",
            "Make it well below executor.timeout_min x 60.",
        )


def _key(cfg: ExecutorConfig, size: str, field: str) -> str:
    """The dotted key that set this field for this size: its resources entry, else executor."""
    override = cfg.resources.get(size)
    if field != "signal_delay_s" and override is not None and getattr(override, field) is not None:
        return f"executor.resources.{size}.{field}"
    return f"executor.{field}"

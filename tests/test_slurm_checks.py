"""Parsing what SLURM's read-only commands say about a cluster (no cluster needed); the checks
themselves run against the real cluster in tests/hostile/ (cases slurm_*)."""

from __future__ import annotations

import pytest

from orchestrator.slurm_checks import parse_gpus, parse_time_limit


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("infinite", None),
        ("UNLIMITED", None),
        ("30", 30),
        ("30:00", 30),
        ("1:00:00", 60),
        ("2-00:00:00", 2880),
        ("1-12", 2160),
        ("1-12:30", 2190),
        ("soon", None),
    ],
)
def test_partition_time_limits(text: str, minutes: int | None) -> None:
    assert parse_time_limit(text) == minutes


@pytest.mark.parametrize(
    ("gres", "gpus"),
    [
        ("(null)", 0),
        ("gpu:4", 4),
        ("gpu:a100:8(S:0-1)", 8),
        ("gpu:a100:2,gpu:v100:2", 4),
        ("shard:8", 0),
    ],
)
def test_gpus_per_node_from_gres(gres: str, gpus: int) -> None:
    assert parse_gpus(gres) == gpus

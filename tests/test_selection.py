"""Selection policies on hand-made losses, and softmax-sampling frequencies."""

from __future__ import annotations

import math

import pytest
import torch

from trainers.selection import POLICIES, SelectionConfig, select

LOSSES = {
    "learner": torch.tensor([0.1, 2.0, 0.5, 3.0]),
    "scorer": torch.tensor([1.0, 3.0, 0.2, 2.5]),
    "reference": torch.tensor([0.9, 0.5, 0.1, 2.4]),
}


@pytest.mark.parametrize(
    ("policy", "expected_top2"),
    [
        ("hard_learner", {3, 1}),  # highest learner loss
        ("hard_scorer", {1, 3}),  # highest scorer loss
        ("easy_reference", {2, 1}),  # lowest reference loss
        ("learnability", {1, 2}),  # scorer - reference: [0.1, 2.5, 0.1, 0.1] -> 1, then a tie
        ("rho_loss", {1, 2}),  # learner - reference: [-0.8, 1.5, 0.4, 0.6] -> 1, 3
    ],
)
def test_topk_of_each_policy(policy: str, expected_top2: set[int]) -> None:
    scores = POLICIES[policy].score({k: LOSSES[k] for k in POLICIES[policy].needs})
    chosen = set(select(scores, 1, "topk").tolist())
    assert chosen <= expected_top2
    assert next(iter(chosen)) == max(range(4), key=lambda i: float(scores[i]))


def test_scores_are_the_documented_formulas() -> None:
    s, r, lrn = LOSSES["scorer"], LOSSES["reference"], LOSSES["learner"]
    assert torch.equal(POLICIES["learnability"].score(LOSSES), s - r)
    assert torch.equal(POLICIES["rho_loss"].score(LOSSES), lrn - r)
    assert torch.equal(POLICIES["easy_reference"].score(LOSSES), -r)
    assert POLICIES["iid"].needs == ()


def test_topk_keeps_exactly_the_k_best() -> None:
    scores = torch.tensor([0.3, -1.0, 5.0, 2.0, 0.0])
    assert set(select(scores, 2, "topk").tolist()) == {2, 3}


def test_sampling_is_without_replacement() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        chosen = select(torch.randn(20), 10, "sample", 1.0, g)
        assert len(set(chosen.tolist())) == 10


def test_softmax_sampling_frequencies() -> None:
    """k=1 sampling must pick index i with probability softmax(s / T)_i (Gumbel-max)."""
    scores = torch.tensor([0.0, 1.0, 2.0])
    temperature = 0.5
    g = torch.Generator().manual_seed(1)
    n = 20_000
    counts = torch.zeros(3)
    for _ in range(n):
        counts[select(scores, 1, "sample", temperature, g)] += 1
    expected = torch.softmax(scores / temperature, 0)
    # 5 binomial standard deviations: a false alarm is ~1e-6 likely.
    tolerance = 5 * torch.sqrt(expected * (1 - expected) / n)
    assert torch.all((counts / n - expected).abs() < tolerance)


def test_high_temperature_sampling_is_nearly_uniform() -> None:
    g = torch.Generator().manual_seed(2)
    scores = torch.tensor([0.0, 10.0])
    picks = sum(int(select(scores, 1, "sample", 1e6, g)) for _ in range(4000))
    assert abs(picks / 4000 - 0.5) < 5 * math.sqrt(0.25 / 4000)


def test_super_batch_size() -> None:
    assert SelectionConfig(policy="learnability", keep=0.25).super_batch_size(64) == 256
    assert SelectionConfig(policy="learnability", keep=0.1).super_batch_size(64) == 640
    assert SelectionConfig(policy="iid", keep=0.25).super_batch_size(64) == 64


@pytest.mark.parametrize("keep", [0.0, -0.1, 1.01])
def test_filter_ratio_must_be_in_unit_interval(keep: float) -> None:
    with pytest.raises(ValueError, match="keep"):
        SelectionConfig(policy="learnability", keep=keep)

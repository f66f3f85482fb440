"""Frontiers, seed aggregation, deduplication and multiplier intervals on synthetic data."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from analysis.compute_at import compute_at_targets, interpolate_compute_at
from analysis.curves import frontier_of, seed_runs, usable_points
from analysis.fit import fit_curve
from analysis.frontier import envelope_indices
from analysis.load import deduplicate
from analysis.multiplier import multiplier_rows, report_targets
from analysis.run_bootstrap import bootstrap_runs

SIZES = {"s": 1_000, "m": 4_000, "l": 16_000}


def law(compute: np.ndarray) -> np.ndarray:
    """error = 0.1 + 30 C^-0.3 (a known power law with offset)."""
    return 0.1 + 30.0 * compute**-0.3


def synthetic_frame(
    multiplier: float = 1.0,
    policy: str = "iid",
    seeds: int = 3,
    noise: float = 0.02,
    rng: np.random.Generator | None = None,
) -> pd.DataFrame:
    """Runs of 3 learner sizes on disjoint compute ranges, each following ``law`` at
    ``multiplier`` times its compute; each run has its own multiplicative offset."""
    rng = rng or np.random.default_rng(0)
    rows = []
    for k, (size, params) in enumerate(SIZES.items()):
        compute = np.geomspace(10.0 ** (4 + k), 10.0 ** (5 + k), 6, endpoint=False)
        for seed in range(seeds):
            offset = np.exp(rng.normal(0, noise))
            for step, c in enumerate(compute):
                rows.append(
                    {
                        "sweep": "synthetic",
                        "run": f"{policy}-{size}-{seed}",
                        "run_name": f"size={size} seed={seed} policy={policy}",
                        "policy": policy,
                        "learner_size": size,
                        "learner_params": params,
                        "scorer_size": None if policy == "iid" else "xxs",
                        "scorer_params": 0 if policy == "iid" else 100,
                        "seed": seed,
                        "eval_step": step,
                        "flops": c,
                        "error": float(law(np.array([c * multiplier]))[0] * offset),
                    }
                )
    return pd.DataFrame(rows)


def test_frontier_averages_seeds_and_keeps_their_spread() -> None:
    frame = synthetic_frame(noise=0.05)
    (runs,) = seed_runs(frame)
    frontier = frontier_of(runs)
    assert frontier.n_seeds == 3 and (frontier.point_seeds == 3).all()
    first = frame[(frame["learner_size"] == "s") & (frame["eval_step"] == 0)]["error"]
    assert frontier.error[0] == pytest.approx(first.mean())
    assert frontier.error_std[0] == pytest.approx(first.std(ddof=1))
    assert np.all(np.diff(frontier.error) < 0) and np.all(np.diff(frontier.compute) > 0)
    assert frontier.learner_size[0] == "s" and frontier.learner_size[-1] == "l"


def test_frontier_takes_the_lower_envelope_over_learner_sizes() -> None:
    frame = synthetic_frame(noise=0.0)
    # A bad large learner: everything it reaches is above the small one's best error.
    worse = frame[frame["learner_size"] == "l"].assign(
        learner_size="xl", learner_params=64_000, error=0.99, run="xl"
    )
    (runs,) = seed_runs(pd.concat([frame, worse]))
    assert "xl" not in frontier_of(runs).learner_size


def test_lower_envelope_keeps_strict_improvements() -> None:
    compute = np.array([10.0, 1.0, 5.0, 5.0, 20.0])
    error = np.array([0.3, 0.5, 0.6, 0.4, 0.3])
    keep = envelope_indices(compute, error)
    assert compute[keep].tolist() == [1.0, 5.0, 10.0]
    assert error[keep].tolist() == [0.5, 0.4, 0.3]


def test_a_seed_missing_in_one_size_counts_only_where_present() -> None:
    frame = synthetic_frame()
    frame = frame[~((frame["learner_size"] == "l") & (frame["seed"] == 2))]
    (runs,) = seed_runs(frame)
    frontier = frontier_of(runs)
    large = [i for i, s in enumerate(frontier.learner_size) if s == "l"]
    assert (frontier.point_seeds[large] == 2).all()


def test_one_curve_per_policy_and_scorer_size_iid_first() -> None:
    frame = pd.concat(
        [
            synthetic_frame(policy="learnability").assign(scorer_size="xs", scorer_params=400),
            synthetic_frame(policy="learnability").assign(scorer_size="xxs", scorer_params=100),
            synthetic_frame(policy="iid"),
        ]
    )
    labels = [r.label for r in seed_runs(frame)]
    assert labels == ["iid", "learnability (scorer xxs)", "learnability (scorer xs)"]


@pytest.mark.parametrize(
    ("value", "why"), [(np.nan, "NaN or infinite"), (0.0, "not positive"), (-1.0, "not positive")]
)
def test_unusable_evaluations_are_dropped_and_named(value: float, why: str) -> None:
    frame = synthetic_frame()
    frame.loc[3, "error"] = value
    usable, notes = usable_points(frame)
    assert len(usable) == len(frame) - 1
    assert len(notes) == 1 and why in notes[0] and frame.loc[3, "run_name"] in notes[0]


def test_non_positive_flops_are_dropped() -> None:
    frame = synthetic_frame()
    frame.loc[0, "flops"] = 0.0
    _, notes = usable_points(frame)
    assert notes and "flops not positive" in notes[0]


def _run(run_id: str, name: str, end: int, tag: str | None, **params: str) -> SimpleNamespace:
    tags = {} if tag is None else {"activescale.run_id": tag}
    return SimpleNamespace(
        info=SimpleNamespace(run_id=run_id, run_name=name, end_time=end),
        data=SimpleNamespace(tags=tags, params=params),
    )


def test_duplicates_keep_the_latest_finished_run() -> None:
    runs = [
        _run("old", "size=m seed=0", 1, "abc", lr="0.1"),
        _run("new", "size=m seed=0", 2, "abc", lr="0.1"),
        _run("other", "size=m seed=1", 1, "def", lr="0.1"),
    ]
    kept, dropped = deduplicate(runs)
    assert [r.info.run_id for r in kept] == ["new", "other"]
    assert [(r.info.run_id, by) for r, by in dropped] == [("old", "new")]


def test_same_config_under_a_new_run_id_is_a_duplicate() -> None:
    # A rerun after a code change: new tag, one more parameter logged at its default.
    old = _run("old", "size=m seed=0", 1, "abc", lr="0.1")
    new = _run("new", "size=m seed=0", 2, "xyz", lr="0.1", task="classification")
    changed = _run("changed", "size=m seed=0", 3, "qqq", lr="0.2")
    kept, dropped = deduplicate([old, new, changed])
    assert {r.info.run_id for r in kept} == {"new", "changed"}
    assert [r.info.run_id for r, _ in dropped] == ["old"]


def test_vectorised_interpolation_matches_the_scalar_one() -> None:
    compute = np.geomspace(1, 1e4, 9)
    error = law(compute)
    targets = np.array([error[0] * 1.1, error[3] * 0.97, error[-1], error[-1] * 0.9])
    got = compute_at_targets(compute, error, targets)
    for target, value in zip(targets, got, strict=True):
        expected = interpolate_compute_at(compute, error, float(target))
        assert (expected is None and np.isnan(value)) or value == pytest.approx(expected)


def _experiment(rng: np.random.Generator, seeds: int, n_resamples: int, fit: bool) -> list:
    """IID's law, and the prioritized curve = the same law at 2x compute (multiplier 2)."""
    frame = pd.concat(
        [
            synthetic_frame(1.0, "iid", seeds=seeds, rng=rng),
            synthetic_frame(2.0, "learnability", seeds=seeds, rng=rng),
        ]
    )
    runs = seed_runs(frame)
    curves = [frontier_of(r) for r in runs]
    fits = (
        {c.label: fit_curve(c.compute, c.error, "power_law_offset") for c in curves} if fit else {}
    )
    targets = report_targets(curves[0])
    boot = bootstrap_runs(runs, fits, targets, n_resamples=n_resamples, seed=int(rng.integers(1e9)))
    return multiplier_rows(curves, fits, boot, len(targets))


def test_data_multiplier_intervals_cover_a_known_multiplier() -> None:
    """Over 40 synthetic sweeps (6 seeds each) the 95% interval at the two easier targets
    covers the true multiplier 2 at least 80% of the time (the bootstrap over runs with few
    seeds under-covers a little: its variance is shrunk by (n - 1) / n). At IID's own best
    error a resampled IID frontier misses the target about half the time, so the data
    interval there is withheld when most resamples are undefined."""
    rng = np.random.default_rng(1)
    hits = np.zeros(2)
    for _ in range(40):
        hardest, *easier = _experiment(rng, seeds=6, n_resamples=200, fit=False)
        assert hardest.data == pytest.approx(2.0, rel=0.3)
        for j, row in enumerate(easier):
            assert row.data == pytest.approx(2.0, rel=0.2) and row.data_ci is not None
            hits[j] += row.data_ci[0] <= 2.0 <= row.data_ci[1]
    assert (hits / 40 >= 0.8).all(), hits


def test_fitted_multiplier_intervals_cover_a_known_multiplier() -> None:
    rng = np.random.default_rng(2)
    hits = 0
    for _ in range(8):
        rows = _experiment(rng, seeds=6, n_resamples=100, fit=True)
        middle = rows[1]
        assert middle.fitted == pytest.approx(2.0, rel=0.2) and middle.fitted_ci is not None
        hits += middle.fitted_ci[0] <= 2.0 <= middle.fitted_ci[1]
    assert hits >= 6


def test_single_seed_gives_estimates_without_intervals() -> None:
    frame = pd.concat(
        [synthetic_frame(1.0, "iid", seeds=1), synthetic_frame(2.0, "learnability", seeds=1)]
    )
    runs = seed_runs(frame)
    curves = [frontier_of(r) for r in runs]
    fits = {c.label: fit_curve(c.compute, c.error, "power_law_offset") for c in curves}
    targets = report_targets(curves[0])
    boot = bootstrap_runs(runs, fits, targets, n_resamples=1000)
    assert not boot.resampled and boot.n_resamples == 1
    rows = multiplier_rows(curves, fits, boot, len(targets))
    assert all(r.data_ci is None and r.fitted_ci is None for r in rows)
    assert rows[0].data == pytest.approx(2.0, rel=0.05)

"""Whether a curve's frontier is compute-optimal over learner sizes.

A scaling comparison needs a baseline whose larger sizes do better with more compute: a
larger size that ends worse than a smaller one at more compute is a sign of an untuned rate
or a schedule that does not suit it, not of the policy. The frontier read along compute
also says which size is best where; when every size's last point lies on it, every size is
still improving where its run stops, and the frontier is set by the run lengths rather than
by which size is compute-optimal.
"""

from __future__ import annotations

import numpy as np

from analysis.curves import Frontier, SeedRuns, SizeRuns


def frontier_sizes(frontier: Frontier) -> list[tuple[str, int, float]]:
    """The sizes along the frontier in order of compute: (size, points, largest compute)."""
    out: list[tuple[str, int, float]] = []
    for size, compute in zip(frontier.learner_size, frontier.compute, strict=True):
        if out and out[-1][0] == size:
            out[-1] = (size, out[-1][1] + 1, float(compute))
        else:
            out.append((size, 1, float(compute)))
    return out


def _final(size: SizeRuns) -> tuple[float, float] | None:
    """(compute, seed-averaged error) of a size's last evaluated point."""
    mean = size.mean_error()
    finite = np.flatnonzero(np.isfinite(mean))
    if not finite.size:
        return None
    return float(size.compute[finite[-1]]), float(mean[finite[-1]])


def worse_larger_sizes(runs: SeedRuns) -> list[str]:
    """Each larger size that ends worse than a smaller one at more compute, in words."""
    finals = []
    for size in runs.sizes:
        final = _final(size)
        if final is not None:
            finals.append((size.learner_size, *final))
    out = []
    for i, (small, c_small, e_small) in enumerate(finals):
        for large, c_large, e_large in finals[i + 1 :]:
            if c_large > c_small and e_large > e_small:
                out.append(
                    f"{runs.label}: {large} ends at error {e_large:.4g} after {c_large:.3g} "
                    f"FLOPs, worse than {small} at {e_small:.4g} after {c_small:.3g}: the "
                    f"frontier is not compute-optimal over sizes ({large} is likely untuned "
                    "or its schedule does not suit it; tune per size and policy: README, Tuning)."
                )
    return out


def still_improving(frontier: Frontier, runs: SeedRuns) -> list[str]:
    """The sizes whose last evaluated point lies on the frontier."""
    out = []
    for size in runs.sizes:
        final = _final(size)
        if final is None:
            continue
        on = [
            s == size.learner_size and np.isclose(c, final[0], rtol=1e-9)
            for s, c in zip(frontier.learner_size, frontier.compute, strict=True)
        ]
        if any(on):
            out.append(size.learner_size)
    return out


def frontier_line(frontier: Frontier, runs: SeedRuns) -> str:
    """The frontier's sizes in order of compute, and what their run ends say."""
    order = ", ".join(
        f"{size} ({points} point{'s' if points != 1 else ''}, to {top:.3g} FLOPs)"
        for size, points, top in frontier_sizes(frontier)
    )
    line = f"{frontier.label} frontier, sizes in order of compute: {order}."
    improving = still_improving(frontier, runs)
    if improving and len(improving) == len(runs.sizes):
        line += (
            " Every size's last point is on it: each is still improving where its run ends, "
            "so the frontier is set by the run lengths, not by a compute-optimal size (longer "
            "runs would show which size is best at each compute)."
        )
    elif improving:
        line += f" Still improving where their runs end: {', '.join(improving)}."
    return line

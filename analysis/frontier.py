"""The compute-efficient frontier of a set of runs.

Scaling laws are fitted to the lower envelope of error against compute: for each
compute budget, the best error any configuration reached with at most that budget
(Hoffmann et al. 2022, Sec. 3.1; Cherti et al. 2023, Sec. 3, "Pareto frontier").
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from activescale.errors import DataError


def envelope_indices(compute: ArrayLike, error: ArrayLike) -> NDArray[np.intp]:
    """Indices of the points whose error is lower than that of every point with less
    compute, in order of compute (so their error strictly decreases).

    Of several points with the same compute, only the one with the lowest error can be
    kept.
    """
    compute_arr = np.asarray(compute, dtype=np.float64)
    error_arr = np.asarray(error, dtype=np.float64)
    if compute_arr.ndim != 1 or compute_arr.shape != error_arr.shape:
        raise DataError(
            f"compute and error must be 1-D arrays of equal length, got shapes "
            f"{compute_arr.shape} and {error_arr.shape}; pass one value per run"
        )
    for name, values in (("compute", compute_arr), ("error", error_arr)):
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise DataError(
                f"{name}[{bad[0]}] = {values[bad[0]]} is not finite; drop unfinished runs first"
            )
    # Ties in compute are ordered best-first, so a tied worse point never counts as
    # an improvement.
    order = np.lexsort((error_arr, compute_arr))
    sorted_error = error_arr[order]
    best_before = np.minimum.accumulate(np.concatenate(([np.inf], sorted_error)))[:-1]
    return order[sorted_error < best_before]

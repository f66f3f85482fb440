"""Constructed sweeps for the analysis tests: frames of runs as analysis.load builds them,
from known error-vs-compute laws, with run-to-run noise."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

SIZES = {"s": 1_000, "m": 4_000, "l": 16_000}
Law = Callable[[np.ndarray], np.ndarray]


def iid_law(compute: np.ndarray) -> np.ndarray:
    return 0.1 + 3.0 * compute**-0.2


def frame(
    policy: str, law: Law, seeds: int = 4, noise: float = 0.01, seed: int = 0
) -> pd.DataFrame:
    """Runs of three learner sizes, budgets 10x apart, 8 evaluations each from 5% to 100%
    of the budget; every run has its own multiplicative offset (run-to-run noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, (size, params) in enumerate(SIZES.items()):
        compute = np.geomspace(0.05, 1.0, 8) * 10.0 ** (5 + k)
        for s in range(seeds):
            offset = np.exp(rng.normal(0, noise))
            for step, c in enumerate(compute):
                rows.append(
                    {
                        "run": f"{policy}-{size}-{s}",
                        "run_name": f"size={size} seed={s} policy={policy}",
                        "policy": policy,
                        "learner_size": size,
                        "learner_params": params,
                        "scorer_size": None if policy == "iid" else "xxs",
                        "scorer_params": 0 if policy == "iid" else 100,
                        "seed": s,
                        "eval_step": step,
                        "flops": c,
                        "error": float(law(np.array([c]))[0] * offset),
                    }
                )
    return pd.DataFrame(rows)

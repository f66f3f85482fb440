"""Write a CSV of synthetic labelled signals for the example sweep:

    python examples/resnet1d_plugin/activescale_resnet1d/make_csv.py signals.csv

Each class is a sum of two sinusoids at class-specific frequencies, with random phase,
amplitude jitter, a random shift and Gaussian noise: easy to tell apart with enough
capacity, hard for a tiny model. Needs only numpy (runs as a script or a module).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def make_signals(
    n: int = 3000, length: int = 64, classes: int = 6, seed: int = 0, noise: float = 0.6
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    t = np.arange(length) / length
    low, high = 1.0 + y, 3.0 + 2.0 * y  # cycles per signal, per class
    phase = rng.uniform(0, 2 * np.pi, (n, 2))
    x = np.sin(2 * np.pi * low[:, None] * t + phase[:, :1])
    x += rng.uniform(0.3, 0.8, (n, 1)) * np.sin(2 * np.pi * high[:, None] * t + phase[:, 1:])
    x = np.stack(
        [np.roll(row, int(s)) for row, s in zip(x, rng.integers(0, length, n), strict=True)]
    )
    x += noise * rng.standard_normal((n, length))
    return x.astype(np.float32), y


def write_csv(path: Path, n: int = 3000, length: int = 64, seed: int = 0) -> Path:
    x, y = make_signals(n, length, seed=seed)
    header = "label," + ",".join(f"t{i}" for i in range(length))
    rows = [
        f"{label}," + ",".join(f"{v:.4f}" for v in row) for label, row in zip(y, x, strict=True)
    ]
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="The CSV file to write.")
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write_csv(args.out, args.rows, args.length, args.seed))

"""Speed of the data path: MNIST-1D generation and batch draws.

    python benchmarks/bench_data.py [--examples 262144] [--baseline-examples 4000]

Compares `trainers.data.generate_mnist1d` with the baseline `mnist1d.data.make_dataset`
(per-example Python loop) in the same run, then times ``next(512)`` on a FixedSource (4000
example pool) and a StreamSource (amortised over chunk refills, and the refill itself).
Reports the best of a few repeats, to reduce noise from other processes on the machine.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np

from trainers.data import DataConfig, FixedSource, StreamSource, generate_mnist1d, load_splits
from trainers.data.mnist1d import operators


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=262144)
    parser.add_argument("--baseline-examples", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"cpus available: {len(os.sched_getaffinity(0))}, load average: {os.getloadavg()}")

    from mnist1d.data import get_dataset_args, make_dataset

    baseline_args = get_dataset_args()
    baseline_args.num_samples = args.baseline_examples
    saved = np.random.get_state()
    baseline = best_seconds(lambda: make_dataset(baseline_args), args.repeats)
    np.random.set_state(saved)
    baseline_rate = args.baseline_examples / baseline
    print(f"mnist1d.make_dataset   {args.baseline_examples:>8} examples  {baseline_rate:>12,.0f}/s")

    operators()  # one-off table build (~10 ms), not part of the steady state
    rng = np.random.default_rng(0)
    ours = best_seconds(lambda: generate_mnist1d(args.examples, rng), args.repeats)
    rate = args.examples / ours
    print(
        f"generate_mnist1d       {args.examples:>8} examples  {rate:>12,.0f}/s"
        f"  ({rate / baseline_rate:.0f}x baseline)"
    )

    batch = 512
    draws = 2000
    cfg = DataConfig(train_size=4000)
    splits = load_splits(cfg)
    fixed = FixedSource(splits.train_x, splits.train_y, splits.train_corrupted, seed=0)
    per_draw = best_seconds(lambda: [fixed.next(batch) for _ in range(draws)], args.repeats)
    print(f"FixedSource.next({batch})   {per_draw / draws * 1e6:>8.1f} us per draw")

    stream_cfg = DataConfig(regime="stream", label_noise=0.1)
    stream = StreamSource(stream_cfg, seed=0)
    per_draw = best_seconds(lambda: [stream.next(batch) for _ in range(draws)], args.repeats)
    print(
        f"StreamSource.next({batch})  {per_draw / draws * 1e6:>8.1f} us per draw "
        "(amortised, chunks of 16384)"
    )
    refill = best_seconds(lambda: stream.chunk(0), args.repeats)
    print(f"StreamSource chunk refill  {refill * 1e3:>8.1f} ms (16384 examples incl. corruption)")


if __name__ == "__main__":
    main()

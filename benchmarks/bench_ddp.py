"""Data parallel on CPU: 2 processes x 1 thread against 1 process x 2 threads, same global batch.

Each side runs ``trainers.loop.train_step`` of the same run config: the one process with two
torch threads, the two processes (gloo, ``trainers.distributed``) with one thread each, every
rank drawing the whole super-batch and training on half of the batch. Steps per second are
medians over interleaved repetitions (each a fresh set of processes), reported as the ratio
two-process / one-process, for a small and a large learner and the iid and learnability
policies.

    python benchmarks/bench_ddp.py [--sizes s xl] [--steps 200] [--reps 3]

On a machine with 2 cores both sides use both; what the ratio shows is the cost of the
collectives (a gradient all-reduce per step, and for learnability an all-gather of scores)
against the gain of two independent processes over two threads in one.
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from orchestrator.executors import free_port
from trainers.config import RunConfig
from trainers.data import load_splits
from trainers.distributed import ProcessGroupRanks
from trainers.loop import (
    RunContext,
    autocast_for,
    build_models,
    build_state,
    plan_schedule,
    train_step,
)
from trainers.tasks import data_spec

WARMUP = 20


def bench_config(size: str, policy: str, batch: int, steps: int) -> RunConfig:
    selection = {"policy": policy, "keep": 0.25} if policy != "iid" else {"policy": "iid"}
    return RunConfig.model_validate(
        {
            "dataset": {"name": "mnist1d", "regime": "stream", "clean_size": 512},
            "learner": {"arch": "mlp", "size": size},
            "scorer": {"arch": "mlp", "size": "xs"},
            "reference": {"arch": "mlp", "size": "xs", "steps": 50},
            "selection": selection,
            "batch_size": batch,
            "budget": {"steps": WARMUP + steps},
            "device": "cpu",
        }
    ).resolved()


def seconds_per_step(
    rank: int, world: int, threads: int, port: int, config: str, workdir: str, out: str
) -> None:
    """One process of a measurement: build the run's state, time its steps, write the result."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(threads)
    ranks = ProcessGroupRanks.join(torch.device("cpu"), timeout_s=300)
    cfg = RunConfig.model_validate_json(config)
    ctx = RunContext(workdir=Path(workdir), ranks=ranks)
    splits = load_splits(cfg.dataset)
    models = build_models(cfg, splits, ctx, torch.device("cpu"))
    schedule = plan_schedule(cfg, models, data_spec(splits), ranks)
    state = build_state(cfg, models, splits, schedule, ctx)
    autocast = autocast_for(torch.device("cpu"))
    barrier = torch.zeros(1)
    for _ in range(WARMUP):
        train_step(state, cfg, schedule, splits, autocast)
    ranks.sum(barrier)  # start together
    start = time.perf_counter()
    while state.step < schedule.total_steps:
        train_step(state, cfg, schedule, splits, autocast)
    ranks.sum(barrier)  # the slowest rank decides
    elapsed = (time.perf_counter() - start) / (schedule.total_steps - WARMUP)
    ranks.close()
    if rank == 0:
        Path(out).write_bytes(pickle.dumps(elapsed))


def measure(cfg: RunConfig, processes: int, threads: int, workdir: Path) -> float:
    out = workdir / f"result-{processes}x{threads}.pkl"
    args = (processes, threads, free_port(), cfg.model_dump_json(), str(workdir), str(out))
    mp.spawn(seconds_per_step, args=args, nprocs=processes)
    return float(pickle.loads(out.read_bytes()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["s", "xl"])
    parser.add_argument("--policies", nargs="+", default=["iid", "learnability"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {os.cpu_count()} cores, batch {args.batch}, "
        f"{args.steps} steps x {args.reps} reps (medians)\n"
    )
    print(
        f"{'learner':>8} {'policy':>13} {'1x2 steps/s':>12} {'2x1 steps/s':>12} {'2x1 / 1x2':>10}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            for policy in args.policies:
                cfg = bench_config(size, policy, args.batch, args.steps)
                one, two = [], []
                for _ in range(args.reps):  # interleaved: drift hits both sides
                    one.append(measure(cfg, 1, 2, Path(tmp)))
                    two.append(measure(cfg, 2, 1, Path(tmp)))
                rate_one, rate_two = 1 / statistics.median(one), 1 / statistics.median(two)
                print(
                    f"{size:>8} {policy:>13} {rate_one:12.1f} {rate_two:12.1f} "
                    f"{rate_two / rate_one:10.2f}"
                )


if __name__ == "__main__":
    main()

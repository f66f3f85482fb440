"""Data parallel on GPUs: MFU per GPU of the ViT ladder, the DDP step against the plain step on
one GPU, and scaling from 1 to N GPUs.

Like ``bench_mfu.py``: the learner's training step (``trainers.optim.Trainee``, fused AdamW,
bf16 autocast on CUDA), FLOPs per step from the ledger's meter, time the median of timed steps
after warm-up, MFU = FLOP/s per GPU over the GPU's peak (Chowdhery et al. 2022, App. B).

1. One GPU: the plain step and the same step wrapped in ``DistributedDataParallel`` in a
   process group of one (``trainers.distributed`` wraps the learner this way), interleaved;
   the ratio is DDP's own overhead (its hooks and the all-reduce of a single rank).
2. Scaling, for N = 1, 2, 4, ... up to the GPUs present: N processes (NCCL, one GPU each), each
   with ``--batch`` examples (weak scaling: the global batch grows with N); efficiency =
   throughput at N / (N x throughput at 1).

    python benchmarks/bench_ddp_gpu.py                    # CUDA, peak from the GPU name
    python benchmarks/bench_ddp_gpu.py --sizes s m l --gpus 1 2 4
    python benchmarks/bench_ddp_gpu.py --device cpu --peak 1.4e11 --sizes xxs xs --gpus 1 2
                                                         # the same code on CPU (gloo): a check
"""

from __future__ import annotations

import argparse
import datetime
import os
import pickle
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from bench_mfu import peak_for  # this directory's (run as a script)

from orchestrator.executors import free_port
from trainers.distributed import ProcessGroupRanks
from trainers.flops import measure_train_flops
from trainers.loop import autocast_for
from trainers.models import VIT_LADDER, ModelConfig, build_model, count_params
from trainers.optim import OptimConfig, Trainee
from trainers.tasks import Classification

WARMUP = 5


def join(rank: int, world: int, port: int, device_type: str) -> tuple[torch.device, Any]:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    timeout = datetime.timedelta(minutes=10)
    if device_type == "cuda":
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=timeout, device_id=device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(1)
        dist.init_process_group("gloo", timeout=timeout)
    return device, ProcessGroupRanks(dist.group.WORLD)


def timed_steps(trainee: Trainee, x: torch.Tensor, y: torch.Tensor, steps: int) -> list[float]:
    autocast = autocast_for(x.device)
    times = []
    for i in range(steps + WARMUP):
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        trainee.train_step(x, y, autocast)
        if x.device.type == "cuda":
            torch.cuda.synchronize()  # the step only queued its kernels
        if i >= WARMUP:
            times.append(time.perf_counter() - start)
    return times


def learner(size: str, shape: tuple[int, ...], device: torch.device, wrap: Any = None) -> Trainee:
    model = build_model(ModelConfig(arch="vit", size=size, patch=4), shape, 10, seed=0)
    trainee = Trainee.build(
        {"learner": (model.to(device), None)}, OptimConfig(), 10**6, Classification().loss
    )
    if wrap is not None:
        trainee.parallelize(wrap)
    return trainee


def batch(
    n: int, shape: tuple[int, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, *shape, generator=generator).to(device)
    return x, torch.randint(0, 10, (n,), generator=generator).to(device)


def worker(rank: int, world: int, port: int, args: argparse.Namespace, out: str) -> None:
    """One process: per size, seconds per step (``world`` = 1: plain and DDP, interleaved)."""
    device, ranks = join(rank, world, port, args.device)
    shape = (3, args.image, args.image)
    results: dict[str, dict[str, Any]] = {}
    for size in args.sizes:
        x, y = batch(args.batch, shape, device)
        ddp = learner(size, shape, device, ranks.wrap)
        flops = measure_train_flops(ddp.models["learner"], x, y, Classification().loss)
        row: dict[str, Any] = {"flops": flops, "params": count_params(ddp.models["learner"])}
        if world == 1:
            plain = learner(size, shape, device)
            plain_times, ddp_times = [], []
            for _ in range(args.reps):
                plain_times += timed_steps(plain, x, y, args.steps)
                ddp_times += timed_steps(ddp, x, y, args.steps)
            row |= {"plain": statistics.median(plain_times), "ddp": statistics.median(ddp_times)}
        else:
            row["ddp"] = statistics.median(timed_steps(ddp, x, y, args.steps * args.reps))
        results[size] = row
    dist.destroy_process_group()
    if rank == 0:
        Path(out).write_bytes(pickle.dumps(results))


def run(world: int, args: argparse.Namespace, tmp: str) -> dict[str, dict[str, Any]]:
    out = os.path.join(tmp, f"gpus-{world}.pkl")
    mp.spawn(worker, args=(world, free_port(), args, out), nprocs=world)
    return dict(pickle.loads(Path(out).read_bytes()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--peak", type=float, default=None, help="Peak FLOP/s of one device.")
    parser.add_argument("--sizes", nargs="+", default=list(VIT_LADDER))
    parser.add_argument("--batch", type=int, default=256, help="Examples per GPU.")
    parser.add_argument("--image", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--reps", type=int, default=3)
    available = torch.cuda.device_count() if torch.cuda.is_available() else 2
    doubling = [n for n in (1, 2, 4, 8, 16) if n <= available]
    parser.add_argument("--gpus", nargs="+", type=int, default=doubling)
    args = parser.parse_args()
    first = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
    peak = peak_for(first, args.peak)
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu (gloo)"
    print(f"{name}, peak {peak:.3g} FLOP/s, {args.batch} examples per GPU, images {args.image}px")
    with tempfile.TemporaryDirectory() as tmp:
        by_world = {world: run(world, args, tmp) for world in sorted(set(args.gpus) | {1})}
    one = by_world[1]
    print("\nOne GPU: plain step vs the DDP-wrapped step (process group of one)")
    header = ("size", "params", "GFLOP/step", "plain ms", "DDP ms", "DDP/plain", "MFU plain")
    widths = (5, 10, 11, 9, 8, 9, 9)
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)), f"{'MFU DDP':>8}")
    for size, row in one.items():
        print(
            f"{size:>5} {row['params']:>10,} {row['flops'] / 1e9:11.2f} {row['plain'] * 1e3:9.2f} "
            f"{row['ddp'] * 1e3:8.2f} {row['ddp'] / row['plain']:9.3f} "
            f"{row['flops'] / row['plain'] / peak:9.2%} {row['flops'] / row['ddp'] / peak:8.2%}"
        )
    if len(by_world) > 1:
        print("\nScaling (weak: the batch per GPU fixed): MFU per GPU, efficiency vs 1 GPU")
        print(f"{'size':>5} " + " ".join(f"{f'{n} GPU MFU':>10} {'eff':>5}" for n in by_world))
        for size in one:
            cells = []
            for results in by_world.values():
                seconds = results[size]["ddp"]
                efficiency = one[size]["ddp"] / seconds  # same work per GPU: time ratio
                cells.append(f"{one[size]['flops'] / seconds / peak:10.2%} {efficiency:5.2f}")
            print(f"{size:>5} " + " ".join(cells))


if __name__ == "__main__":
    main()

"""Learner MFU of the ViT ladder: measured training FLOP/s over the accelerator's peak.

FLOPs per step come from the ledger's own meter (``torch.utils.flop_counter``, forward +
backward); time is the median of timed steps after warm-up, with bf16 autocast on CUDA.
MFU = (FLOPs per step / seconds per step) / peak (Chowdhery et al. 2022, App. B).

    python benchmarks/bench_mfu.py                      # CUDA if present, peak from the GPU name
    python benchmarks/bench_mfu.py --device cpu --peak 1.4e11 --sizes xxs xs s

Peak dense bf16 FLOP/s defaults: H100 SXM / H200 9.89e14, A100 3.12e14 (vendor datasheets).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from trainers.flops import measure_train_flops
from trainers.loop import autocast_for
from trainers.models import VIT_LADDER, ModelConfig, build_model, count_params
from trainers.optim import OptimConfig, Trainee
from trainers.tasks import Classification

PEAKS = {"H100": 9.89e14, "H200": 9.89e14, "A100": 3.12e14}


def peak_for(device: torch.device, given: float | None) -> float:
    if given:
        return given
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in PEAKS.items():
            if key in name:
                return value
    raise SystemExit("unknown peak FLOP/s for this device: pass --peak")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--peak", type=float, default=None, help="Peak FLOP/s of the device.")
    parser.add_argument("--sizes", nargs="+", default=list(VIT_LADDER))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--image", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    device = torch.device(args.device)
    peak = peak_for(device, args.peak)
    autocast = autocast_for(device)
    task = Classification()
    shape = (3, args.image, args.image)
    print(
        f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
        f"peak {peak:.3g} FLOP/s, batch {args.batch}, images {shape}"
    )
    print(f"{'size':>5} {'params':>10} {'GFLOP/step':>11} {'ms/step':>9} {'TFLOP/s':>9} {'MFU':>7}")
    for size in args.sizes:
        cfg = ModelConfig(arch="vit", size=size, patch=4)
        model = build_model(cfg, shape, 10, seed=0).to(device)
        trainee = Trainee.build({"learner": (model, None)}, OptimConfig(), 10**6, task.loss)
        x = torch.randn(args.batch, *shape, device=device)
        y = torch.randint(0, 10, (args.batch,), device=device)
        flops = measure_train_flops(model, x, y, task.loss)
        times = []
        for i in range(args.steps + 5):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            trainee.train_step(x, y, autocast)
            if device.type == "cuda":
                torch.cuda.synchronize()  # the step only queued its kernels
            if i >= 5:
                times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        rate = flops / seconds
        print(
            f"{size:>5} {count_params(model):>10,} {flops / 1e9:11.2f} {seconds * 1e3:9.2f} "
            f"{rate / 1e12:9.3f} {rate / peak:7.2%}"
        )


if __name__ == "__main__":
    main()

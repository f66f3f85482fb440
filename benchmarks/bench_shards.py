"""The shards stream against the step that consumes it: throughput, step time, memory.

    python benchmarks/bench_shards.py [--images 20000] [--steps 10] [--reps 9] [--rss-images 5000]

On generated 32x32 RGB images packed as PNG shards (about CIFAR-10's PNG size per image):

1. loader throughput: samples/s of ``ShardSource.next(512)`` decoding and augmenting
   (crop_flip) with 0 (in the main process), 1 and 2 DataLoader workers, for PNG shards and
   for the same images packed as ``.npy`` (raw pixels, ``data pack --format npy``);
2. consumption: samples/s a prioritized step eats (learnability, learner ViT ``s``, online
   scorer ViT ``xxs``, pretrained reference ViT ``s``; B = 256, rho = 0.5: 512 a step);
3. the same steps drawing from the stream vs from the same images already decoded in memory,
   interleaved (stream reps and memory reps alternate, so machine load hits both), for each
   split of the CPUs between the step's torch threads and the decoding workers (PNG), and for
   the shared-core splits with .npy shards; with where the difference goes: the seconds a
   step spends drawing (waiting for and receiving the workers' slices), and the CPU seconds
   the workers use a step (what they take from the step's cores when they share them);
4. peak RSS of an IID run over one epoch of 1x and of 10x as many training samples
   (each in a fresh process: the run's own peak, read as VmHWM, which starts afresh at exec,
   so the benchmark's own memory is in neither; and its largest worker's, its own VmHWM).

Ratios are medians over the pairs of reps measured in this run, with 95% bootstrap intervals of
the median; absolute times depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from analysis.run_bootstrap import CONFIDENCE, interval
from orchestrator.recovery import descendants, stat_fields
from trainers.config import RunConfig
from trainers.data import FixedSource, load_splits
from trainers.data.manifest import read_manifest
from trainers.data.pack import pack
from trainers.data.shard_reader import ShardReader, images_to_tensor
from trainers.data.shards import ShardSource, read_settings
from trainers.lookahead import Lookahead
from trainers.loop import (
    RunContext,
    autocast_for,
    build_models,
    build_state,
    plan_schedule,
    train,
    train_step,
)
from trainers.tasks import data_spec
from trainers.tracking import MemoryLogger


def write_images(path: Path, train: int, test: int = 1000, clean: int = 500, seed: int = 0) -> Path:
    """Smooth random 32x32 RGB images (a 4x4 colour grid per class, upsampled, plus noise):
    ~2.3 KB as PNG, about what CIFAR-10's images take."""
    rng = np.random.default_rng(seed)
    grids = rng.integers(0, 256, (10, 4, 4, 3))

    def images(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 10, n)
        base = grids[labels].repeat(8, axis=1).repeat(8, axis=2)
        noisy = base + rng.normal(0, 12, base.shape)
        return np.clip(noisy, 0, 255).astype(np.uint8), labels

    x, y = images(train)
    x_test, y_test = images(test)
    x_clean, y_clean = images(clean)
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test, x_clean=x_clean, y_clean=y_clean)
    return path


def packed(root: Path, train: int, image_format: str = "png") -> Path:
    out = root / f"shards-{train}-{image_format}"
    if not out.exists():
        root.mkdir(parents=True, exist_ok=True)
        images = root / f"images-{train}.npz"
        if not images.exists():
            write_images(images, train)
        pack(images, out, shard_size=1000, image_format=image_format)
    return out


def _per_sample(folder: Path) -> float:
    """KiB per training sample in the tar shards."""
    split = read_manifest(folder).splits["train"]
    return sum(s.bytes for s in split.shards) / split.count / 1024


def shard_fields(folder: Path, workers: int, augment: str = "crop_flip") -> dict[str, object]:
    return {"name": "shards", "path": str(folder), "workers": workers, "augment": augment}


def run_config(folder: Path, workers: int) -> RunConfig:
    vit = {"arch": "vit", "patch": 4}
    return RunConfig.model_validate(
        {
            "dataset": shard_fields(folder, workers),
            "learner": vit | {"size": "s"},
            "scorer": vit | {"size": "xxs"},
            "reference": vit | {"size": "s", "steps": 20},
            "selection": {"policy": "learnability", "keep": 0.5},
            "batch_size": 256,
            "budget": {"steps": 100_000},
        }
    ).resolved()


def loader_throughput(folder: Path, workers: int, draws: int) -> float:
    """Samples/s of next(512) after the workers started (first draw not timed)."""
    cfg = RunConfig.model_validate({"dataset": shard_fields(folder, workers)}).dataset
    source = ShardSource(cfg, 0)  # type: ignore[arg-type]
    source.next(512)
    start = time.perf_counter()
    for _ in range(draws):
        source.next(512)
    rate = draws * 512 / (time.perf_counter() - start)
    source.close()
    return rate


def in_memory(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The training split decoded and normalised, as a fixed pool in memory."""
    cfg = RunConfig.model_validate({"dataset": shard_fields(folder, 0, "none")}).dataset
    settings = read_settings(cfg, read_manifest(folder), "train", train=False)  # type: ignore[arg-type]
    samples = ShardReader(settings).read_all()
    return images_to_tensor(samples.pixels, settings), torch.from_numpy(samples.labels)


@dataclass
class StepTimes:
    """Medians over reps, per step: the step from the stream and from memory, their ratio (with
    a 95% bootstrap interval of that median over the pairs of reps); the seconds the step spent
    drawing (waiting for the workers' units, or copying from memory); and the CPU seconds the
    workers spent during the stream's reps (what the stream takes from the step's cores) and
    during memory's (decoding ahead for the next stream rep: near 0, or memory's time carries
    part of the stream's cost and the ratio flatters the stream)."""

    stream_s: float
    memory_s: float
    ratio: float
    ratio_interval: tuple[float, float]
    stream_draw_s: float
    memory_draw_s: float
    worker_cpu_s: float
    memory_worker_cpu_s: float


class Timed:
    """Wraps a source's ``next``: the seconds spent in it, summed."""

    def __init__(self, source: object) -> None:
        self.seconds = 0.0
        self._next = source.next  # type: ignore[attr-defined]
        source.next = self  # type: ignore[attr-defined]

    def __call__(self, n: int) -> object:
        start = time.perf_counter()
        try:
            return self._next(n)
        finally:
            self.seconds += time.perf_counter() - start


def children_cpu_s() -> float:
    """User + system CPU seconds of this process's descendants (the DataLoader workers)."""
    ticks = 0
    for pid in descendants(os.getpid()):
        fields = stat_fields(pid)
        if fields:
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def stream_vs_memory(
    folder: Path,
    workers: int,
    threads: int,
    steps: int,
    reps: int,
    pool: tuple[torch.Tensor, torch.Tensor],
) -> StepTimes:
    """The same prioritized steps drawing from the stream and from memory, interleaved."""
    torch.set_num_threads(threads)
    cfg = run_config(folder, workers)
    splits = load_splits(cfg.dataset)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = RunContext(workdir=Path(tmp))
        models = build_models(cfg, splits, ctx, torch.device("cpu"))
        schedule = plan_schedule(cfg, models, data_spec(splits))
        state = build_state(cfg, models, splits, schedule, ctx)
    streamed = state.draws
    memory = Lookahead(
        FixedSource(pool[0], pool[1], torch.zeros(len(pool[1]), dtype=torch.bool), 0),
        streamed.size,
        streamed.total_steps,
        torch.device("cpu"),
        block=streamed.block,
        reference=streamed.reference,
    )
    waits = {id(streamed): Timed(streamed.source), id(memory): Timed(memory.source)}
    autocast = autocast_for(torch.device("cpu"))

    def timed(draws: Lookahead) -> tuple[float, float, float]:
        """Per step: seconds, seconds drawing, workers' CPU seconds."""
        state.draws = draws
        wait, cpu = waits[id(draws)], children_cpu_s()
        drawn = wait.seconds
        start = time.perf_counter()
        for _ in range(steps):
            train_step(state, cfg, schedule, splits, autocast)
        seconds = time.perf_counter() - start
        return (seconds / steps, (wait.seconds - drawn) / steps, (children_cpu_s() - cpu) / steps)

    timed(streamed), timed(memory)  # warm-up: workers start, first blocks
    pairs = [(timed(streamed), timed(memory)) for _ in range(reps)]
    streamed.source.close()  # type: ignore[attr-defined]
    median = statistics.median
    ratios = np.array([s[0] / m[0] for s, m in pairs])
    return StepTimes(
        stream_s=median(s[0] for s, _ in pairs),
        memory_s=median(m[0] for _, m in pairs),
        ratio=float(np.median(ratios)),
        ratio_interval=median_interval(ratios),
        stream_draw_s=median(s[1] for s, _ in pairs),
        memory_draw_s=median(m[1] for _, m in pairs),
        worker_cpu_s=median(s[2] for s, _ in pairs),
        memory_worker_cpu_s=median(m[2] for _, m in pairs),
    )


def median_interval(values: np.ndarray, resamples: int = 4000) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the median of `values` (seeded: reproducible)."""
    rng = np.random.default_rng(0)
    medians = np.median(rng.choice(values, size=(resamples, len(values))), axis=1)
    found = interval(medians, CONFIDENCE)
    assert found is not None  # medians of finite ratios are finite
    return found


def _rss_kib(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` memory field in KiB (0 once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class WorkerPeak:
    """The largest peak resident set (VmHWM) of any child process (a DataLoader worker), read
    every 20 ms while it lives. A forked child's VmHWM starts at its resident set at the fork
    and then tracks its own peak, between reads too. ``getrusage`` cannot say it: Linux keeps
    ``ru_maxrss`` across ``exec`` and reports children's only once they are reaped."""

    def __init__(self) -> None:
        self.kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            for pid in descendants(os.getpid()):
                self.kib = max(self.kib, _rss_kib(pid, "VmHWM"))

    def __enter__(self) -> WorkerPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def rss_run(folder: Path, workers: int) -> dict[str, float]:
    """One IID epoch over the folder's training split (ViT xxs, B=512) in this process: its own
    peak (VmHWM, which starts afresh at exec) and its largest worker's (sampled)."""
    train_count = read_manifest(folder).splits["train"].count
    cfg = RunConfig.model_validate(
        {
            "dataset": shard_fields(folder, workers),
            "learner": {"arch": "vit", "size": "xxs", "patch": 4},
            "selection": {"policy": "iid"},
            "batch_size": 512,
            "budget": {"steps": max(1, train_count // 512)},
            "eval": {"points": 2, "batch_size": 500},
        }
    ).resolved()
    with tempfile.TemporaryDirectory() as tmp, WorkerPeak() as worker:
        start = time.perf_counter()
        train(cfg, RunContext(workdir=Path(tmp)), MemoryLogger())
        seconds = time.perf_counter() - start
    return {
        "samples": float(train_count),
        "seconds": seconds,
        "main_mib": _rss_kib(os.getpid(), "VmHWM") / 1024,
        "worker_mib": worker.kib / 1024,
    }


def peak_rss(folder: Path, workers: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-run", str(folder), "--workers", str(workers)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000, help="Training images (1x).")
    parser.add_argument("--steps", type=int, default=10, help="Steps per timed rep.")
    parser.add_argument("--reps", type=int, default=9, help="Pairs of reps (stream, memory).")
    parser.add_argument("--draws", type=int, default=20, help="next(512) calls per throughput rep.")
    parser.add_argument(
        "--rss-images", type=int, default=5000, help="Training images of the 1x RSS run."
    )
    parser.add_argument("--workdir", help="Keep the packed shards here (default: a temp dir).")
    parser.add_argument("--rss-run", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_run:
        print(json.dumps(rss_run(Path(args.rss_run), args.workers)))
        return
    print(
        f"cpus available: {len(os.sched_getaffinity(0))}, load average: "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}, torch {torch.__version__}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.workdir or tmp)
        root.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        folder = packed(root, args.images)
        print(
            f"packed {args.images} 32x32 RGB PNGs in {time.perf_counter() - start:.1f} s: "
            f"{_per_sample(folder):.2f} KiB per sample in the tar shards"
        )

        torch.set_num_threads(2)
        raw = packed(root, args.images, "npy")
        print(f"packed the same images as .npy (raw pixels): {_per_sample(raw):.2f} KiB a sample")
        print("\nloader throughput, next(512) with decode + crop_flip (median of 3 reps):")
        for name, where in (("png", folder), ("npy", raw)):
            for workers in (0, 1, 2):
                rate = statistics.median(
                    loader_throughput(where, workers, args.draws) for _ in range(3)
                )
                print(f"  {name} workers={workers}: {rate:>8,.0f} samples/s")

        pool = in_memory(folder)
        print(
            f"\nprioritized ViT s step (learnability, B=256, rho=0.5: 512 samples a step), "
            f"{args.steps} steps x {args.reps} reps, stream and memory interleaved:"
        )
        splits = [("png", folder, 2, 1), ("png", folder, 2, 2), ("png", folder, 1, 1)]
        splits += [("npy", raw, 2, 1), ("npy", raw, 2, 2)]
        for name, where, threads, workers in splits:
            t = stream_vs_memory(where, workers, threads, args.steps, args.reps, pool)
            print(
                f"  {name}, torch threads={threads}, workers={workers}: memory "
                f"{t.memory_s * 1e3:6.1f} ms ({512 / t.memory_s:,.0f} samples/s consumed), stream "
                f"{t.stream_s * 1e3:6.1f} ms, stream/memory {t.ratio:.3f} "
                f"[{t.ratio_interval[0]:.3f}, {t.ratio_interval[1]:.3f}]\n"
                f"      a step drew for {t.stream_draw_s * 1e3:.1f} ms from the stream, "
                f"{t.memory_draw_s * 1e3:.1f} ms from memory; the workers used "
                f"{t.worker_cpu_s * 1e3:.1f} ms of CPU a step ({t.worker_cpu_s / 512 * 1e6:.0f} us "
                f"a sample), {t.memory_worker_cpu_s * 1e3:.1f} ms a step during memory's reps"
            )
        torch.set_num_threads(2)

        print("\npeak RSS of an IID run (ViT xxs, B=512, workers=2) over one epoch:")
        small = peak_rss(packed(root, args.rss_images), 2)
        big = peak_rss(packed(root, 10 * args.rss_images), 2)
        for name, result in (("1x", small), ("10x", big)):
            print(
                f"  {name:>3}: {result['samples']:>7,.0f} samples, {result['seconds']:6.1f} s, "
                f"main {result['main_mib']:6.1f} MiB, largest worker {result['worker_mib']:6.1f} MiB"
            )
        print(
            f"  10x / 1x: main {big['main_mib'] / small['main_mib']:.3f}, "
            f"worker {big['worker_mib'] / small['worker_mib']:.3f}"
        )


if __name__ == "__main__":
    main()

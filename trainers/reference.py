"""Reference models pretrained on a clean, curated split, cached on disk by config hash.

Every run of a sweep that names the same reference (architecture, size, training settings,
data it is trained on, seed) shares one trained model: the first run to need it trains it under
a file lock, the others wait and load it. Its training FLOPs are stored with the weights, so
each run's ledger can charge them (``reference_cost``).

Policy transfer: ``reference.dataset`` names another dataset or task to pretrain on (e.g. other
noise, other templates); shapes must match the run's data.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

import torch
from torch import nn

from activescale.errors import ConfigError
from trainers.config import ReferenceConfig, RunConfig, config_hash
from trainers.data import DatasetConfig, Splits, load_splits
from trainers.flops import FlopMeter
from trainers.optim import OptimConfig, Trainee
from trainers.tasks import Task, data_spec, task_for

# Seeds of the three models of a run are offset so that learner, scorer and reference never
# start from the same weights even when they share an architecture and size.
REFERENCE_SEED_OFFSET = 2_000_003


def reference_data(cfg: RunConfig) -> DatasetConfig:
    assert cfg.reference is not None
    return cfg.reference.dataset or cfg.dataset


def reference_key(cfg: RunConfig) -> str:
    """Cache key: everything that changes the trained reference, nothing that does not."""
    assert cfg.reference is not None
    ref = cfg.reference.model_dump(mode="json", exclude={"mode"})
    data = reference_data(cfg).model_dump(mode="json")
    optim = reference_optimizer(cfg).model_dump(mode="json")
    key = {"reference": ref, "data": data, "optimizer": optim, "seed": cfg.seed, "task": cfg.task}
    return config_hash(key)


def reference_optimizer(cfg: RunConfig) -> OptimConfig:
    """The optimizer the reference pretrains with: the run's, on the cosine schedule whatever the
    run's (cooldown branches buy a fixed-length pretraining nothing, and wsd and cosine runs
    share one cached model), at ``reference.lr`` where that is set. The cache key holds it, so
    runs whose learners were tuned to other rates share a reference with a rate of its own."""
    assert cfg.reference is not None
    update: dict[str, object] = {"schedule": "cosine"}
    if cfg.reference.lr is not None:
        update["lr"] = cfg.reference.lr
    return cfg.optimizer.model_copy(update=update)


def pretrain(
    task: Task,
    ref: ReferenceConfig,
    optim: OptimConfig,
    splits: Splits,
    seed: int,
    device: torch.device,
) -> tuple[nn.Module, float]:
    """Train a reference on the clean split; returns the model and the FLOPs it cost."""
    model = task.build(ref, data_spec(splits), seed + REFERENCE_SEED_OFFSET)
    model.to(device)
    trainee = Trainee.build({"reference": (model, ref.lr)}, optim, ref.steps, task.loss)
    generator = torch.Generator().manual_seed(seed + REFERENCE_SEED_OFFSET)
    meter = FlopMeter()
    flops = 0.0
    n = len(splits.clean_y)
    batch = min(ref.batch_size, n)
    for _ in range(ref.steps):
        idx = torch.randint(n, (batch,), generator=generator)
        x, y = splits.clean_x[idx].to(device), splits.clean_y[idx].to(device)
        flops += meter.train("reference", model, x, y, task.loss)
        trainee.train_step(x, y, contextlib.nullcontext)
    return model, flops


def load_or_pretrain(
    cfg: RunConfig, run_splits: Splits, cache_dir: Path, device: torch.device
) -> tuple[nn.Module, float, Path]:
    """The run's pretrained reference, from the cache or trained now (once per key)."""
    assert cfg.reference is not None
    data_cfg = reference_data(cfg)
    splits = run_splits if data_cfg == cfg.dataset else load_splits(data_cfg)
    if (splits.input_shape, splits.num_classes) != (run_splits.input_shape, run_splits.num_classes):
        raise ConfigError(
            f"reference.dataset gives inputs {splits.input_shape} with {splits.num_classes} "
            f"classes, but the run's dataset gives {run_splits.input_shape} with "
            f"{run_splits.num_classes}; a transferred reference must match the target's shapes"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"reference-{reference_key(cfg)}.pt"
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent runs wait for the first to train it
        try:
            if not path.exists():
                model, flops = pretrain(
                    task_for(cfg), cfg.reference, reference_optimizer(cfg), splits, cfg.seed, device
                )
                tmp = path.with_suffix(".tmp")
                torch.save({"state_dict": model.state_dict(), "flops": flops}, tmp)
                os.replace(tmp, path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    saved = torch.load(path, map_location=device, weights_only=True)
    model = task_for(cfg).build(cfg.reference, data_spec(splits), seed=0)
    model.load_state_dict(saved["state_dict"])
    return model.to(device), float(saved["flops"]), path

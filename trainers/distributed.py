"""Data parallelism: the processes (ranks) that train one run together, and what each does.

A run on W processes trains one learner with ``torch.distributed`` (NCCL on CUDA, gloo on
CPU). The training step (``trainers/loop.py``) talks to a :class:`Ranks` and nothing else; the
base class is the one-process no-op, so a run of one process computes exactly what it computed
before data parallelism existed.

What every rank does at a step (W ranks, super-batch of S examples, batch B, B divisible by W):

1. the global super-batch is drawn (:class:`StepShares`):

   - in-memory pools and generated streams: every rank draws the same global super-batch from
     its identically seeded source (drawing is cheap for these: each rank pays the whole draw,
     W times the single draw over the run, and keeps the source state that rank 0
     checkpoints);
   - a dataset read per rank (``shards``: ranks read disjoint shards): rank r draws only its
     share, ``share_size(S, r, W)`` examples, from its own stream, and the global super-batch
     is *defined* as the ranks' draws concatenated in rank order. Each rank decodes 1/W of the
     data; each rank's stream position goes into the checkpoint (:meth:`StepShares.gathered`);
2. rank r scores its share of it, rows ``shard_rows(S, r, W)``, with its replica of the scorer
   and reference (a pretrained reference scores its share of a block ahead, the same rows);
3. selection (``selection.scope``):

   - ``global`` (default): the per-example scores are all-gathered, every rank selects from
     the whole super-batch (same scores, same generator state, so ``method: sample`` agrees
     too) and trains on its slice of the kept batch, rows ``shard_rows(B, r, W)`` of it: the
     kept batch is the one a single process keeps from the same super-batch. Where each rank
     holds only its share, the kept rows another rank holds are sent to it
     (:meth:`Ranks.exchange_kept`: B rows a step, not the super-batch);
   - ``local``: rank r keeps B / W of its own share (cheaper: nothing is gathered; the JEST
     papers select per device). Sampling noise is drawn for the whole super-batch, so the
     generator stays the same on every rank;

4. the learner and the online scorer (and a parallel reference, on its slice of the same IID
   batch) are wrapped in ``DistributedDataParallel``: gradients of the local mean losses are
   averaged over ranks, which is the single-process batch mean up to float reduction order.

Models, optimizers, RNGs and (where every rank draws the same) the data position are therefore
the same on every rank, and rank 0's checkpoint restores all of them; a stream read per rank
has one position per rank, all of them in the checkpoint. Per-rank counts (the FLOP ledger, corrupted examples kept)
differ: each rank charges its own passes, and the run's figures are their sum
(:meth:`Ranks.sum`, at evaluations and checkpoints only), as are the skipped samples of
streams read per rank.

:func:`shard_rows` is the one place that decides which rows of a global batch a rank takes; a
source that reads its own shards per rank draws exactly those rows.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from activescale.errors import ConfigError
from trainers.selection import SelectionConfig, select

# Ranks agree on a stop request (SLURM's requeue signal) every this many steps: one all-reduce
# of a flag, instead of one a step. The signal comes minutes before the time limit.
STOP_CHECK_EVERY = 16
# How long ranks wait for rank 0 to pretrain a reference (the other collectives use the run's
# timeout): pretraining may take far longer than any one collective.
MAIN_FIRST_TIMEOUT = datetime.timedelta(hours=24)


def shard_rows(n: int, rank: int, world_size: int) -> slice:
    """The rows of a global batch of ``n`` that ``rank`` takes: contiguous, in rank order,
    sizes differing by at most one."""
    return slice(rank * n // world_size, (rank + 1) * n // world_size)


def share_size(n: int, rank: int, world_size: int) -> int:
    """How many rows of a global batch of ``n`` ``rank`` takes."""
    rows = shard_rows(n, rank, world_size)
    return rows.stop - rows.start


def check_data_parallel(
    batch_size: int, task_rows_independent: bool, world_size: int, where: str
) -> None:
    """What a run must satisfy to run on ``world_size`` processes; ``where`` names the setting
    that gave the process count (for the message)."""
    if world_size == 1:
        return
    if batch_size % world_size:
        raise ConfigError(
            f"batch_size: {batch_size} does not split evenly over the run's {world_size} "
            f"processes ({where}); set batch_size to a multiple of {world_size}, or ask for "
            "another number of processes"
        )
    if not task_rows_independent:
        raise ConfigError(
            f"task: a contrastive loss takes its negatives from the whole batch, which a run "
            f"on {world_size} processes ({where}) splits; run it on one process"
        )


class Ranks:
    """One process: every method is the identity (the default of ``RunContext``)."""

    rank = 0
    world_size = 1
    local_rank = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: evaluates, logs, writes checkpoints, talks to the run store."""
        return self.rank == 0

    def share(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch (:func:`shard_rows`)."""
        return batch

    def kept(
        self,
        scores: torch.Tensor,
        super_batch: int,
        k: int,
        selection: SelectionConfig,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Rows of the super-batch this rank trains on, from its share's ``scores``: its part
        of the ``k`` kept (see the module docstring for the scopes)."""
        return select(scores, k, selection.method, selection.temperature, generator)

    def selected(
        self,
        scores: torch.Tensor,
        super_batch: int,
        k: int,
        selection: SelectionConfig,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """The whole kept batch of scope ``global``, rows of the super-batch (the same on every
        rank), from this rank's share's ``scores``."""
        return select(scores, k, selection.method, selection.temperature, generator)

    def exchange_kept(
        self, held: torch.Tensor, keep: torch.Tensor, super_batch: int
    ) -> torch.Tensor:
        """This rank's rows of the kept batch ``keep`` (rows of the super-batch), where every
        rank holds only its share of the super-batch (``held``: rows ``shard_rows(super_batch,
        rank, W)``): each rank sends the kept rows it holds to all. One process holds all."""
        return held.index_select(0, keep)

    def gather_objects(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        return [value]

    def wrap(self, model: nn.Module) -> nn.Module:
        """The model as it takes training steps (DDP: gradients averaged over ranks)."""
        return model

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Elementwise sum over ranks of a CPU tensor (run totals, at evaluations)."""
        return values

    def agree_to_stop(self, step: int, requested: bool) -> bool:
        """True on every rank at the same step once any rank was asked to stop."""
        return requested

    def decide(self, go: bool) -> bool:
        """Rank 0's ``go``, on every rank (whether the run is still to be trained)."""
        return go

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (pretraining a cached reference), then the others."""
        yield

    def close(self) -> None:
        pass


class ProcessGroupRanks(Ranks):
    """The ranks of a ``torch.distributed`` process group (:meth:`join`)."""

    def __init__(self, control: Any) -> None:
        import torch.distributed as dist

        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.control = control  # a gloo group: CPU values, without syncing a GPU

    @classmethod
    def join(cls, device: torch.device, timeout_s: float) -> Ranks:
        """Join the process group that torchrun-style variables describe (RANK, WORLD_SIZE,
        LOCAL_RANK, MASTER_ADDR, MASTER_PORT); a lone process gets :class:`Ranks`. A collective
        that waits longer than ``timeout_s`` fails (a rank that died without closing its
        connections, e.g. on NCCL)."""
        import torch.distributed as dist

        if int(os.environ.get("WORLD_SIZE", "1")) == 1:
            return Ranks()
        timeout = datetime.timedelta(seconds=timeout_s)
        if device.type == "cuda":
            local = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(local)
            dist.init_process_group("nccl", timeout=timeout, device_id=local)
            control = dist.new_group(backend="gloo", timeout=timeout)
        else:
            dist.init_process_group("gloo", timeout=timeout)
            control = dist.group.WORLD
        return cls(control)

    def share(self, batch: torch.Tensor) -> torch.Tensor:
        return batch[shard_rows(len(batch), self.rank, self.world_size)]

    def kept(
        self,
        scores: torch.Tensor,
        super_batch: int,
        k: int,
        selection: SelectionConfig,
        generator: torch.Generator,
    ) -> torch.Tensor:
        mine = shard_rows(super_batch, self.rank, self.world_size)
        if selection.scope == "local":
            uniform = None
            if selection.method == "sample":  # the whole super-batch's noise: one draw per rank
                uniform = torch.rand(super_batch, generator=generator)[mine]
            local_k = k // self.world_size
            keep = select(scores, local_k, selection.method, selection.temperature, uniform=uniform)
            return keep + mine.start
        keep = self.selected(scores, super_batch, k, selection, generator)
        return keep[shard_rows(k, self.rank, self.world_size)]

    def selected(
        self,
        scores: torch.Tensor,
        super_batch: int,
        k: int,
        selection: SelectionConfig,
        generator: torch.Generator,
    ) -> torch.Tensor:
        sizes = [share_size(super_batch, r, self.world_size) for r in range(self.world_size)]
        every = self._gather_rows(scores, sizes)
        return select(every, k, selection.method, selection.temperature, generator)

    def exchange_kept(
        self, held: torch.Tensor, keep: torch.Tensor, super_batch: int
    ) -> torch.Tensor:
        starts = [shard_rows(super_batch, r, self.world_size).start for r in range(self.world_size)]
        # The rank holding each kept row: rank r holds rows starts[r] .. starts[r + 1] - 1.
        owner = torch.bucketize(keep, torch.tensor(starts[1:], device=keep.device), right=True)
        mine = keep[owner == self.rank] - starts[self.rank]  # in the kept batch's order
        sizes = torch.bincount(owner, minlength=self.world_size).tolist()
        by_owner = self._gather_rows(held.index_select(0, mine), sizes)
        # by_owner holds the kept rows grouped by rank, each group in kept order: put them back.
        batch = torch.empty_like(by_owner)
        batch[torch.argsort(owner, stable=True)] = by_owner
        return batch[shard_rows(len(keep), self.rank, self.world_size)]

    def _gather_rows(self, rows: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        """Every rank's ``rows`` (rank r has ``sizes[r]`` of them), concatenated in rank order."""
        import torch.distributed as dist

        sent = rows.to(torch.uint8) if rows.dtype == torch.bool else rows  # gloo has no bool
        padded = sent.new_zeros((max(sizes), *rows.shape[1:]))
        padded[: len(rows)] = sent
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        every = torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])
        return every.to(torch.bool) if rows.dtype == torch.bool else every

    def gather_objects(self, value: Any) -> list[Any]:
        import torch.distributed as dist

        every: list[Any] = [None] * self.world_size
        dist.all_gather_object(every, value, group=self.control)
        return every

    def wrap(self, model: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        summed = values.clone()
        dist.all_reduce(summed, group=self.control)
        return summed

    def agree_to_stop(self, step: int, requested: bool) -> bool:
        if step % STOP_CHECK_EVERY:
            return False
        return bool(self.sum(torch.tensor([int(requested)])).item())

    def decide(self, go: bool) -> bool:
        import torch.distributed as dist

        flag = torch.tensor([int(go)])
        dist.broadcast(flag, src=0, group=self.control)
        return bool(flag.item())

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        import torch.distributed as dist

        if not self.is_main:
            dist.monitored_barrier(group=self.control, timeout=MAIN_FIRST_TIMEOUT)
        yield
        if self.is_main:
            dist.monitored_barrier(group=self.control, timeout=MAIN_FIRST_TIMEOUT)

    def close(self) -> None:
        """After a run every rank completed: meet once more, then leave the group. Without the
        barrier rank 0 could tear down the group's store while another rank is still leaving,
        and that rank's gloo threads abort its process (SIGABRT at exit)."""
        import torch.distributed as dist

        if dist.is_initialized():
            with contextlib.suppress(RuntimeError):  # a peer already gone: leave anyway
                dist.barrier(group=self.control)
            dist.destroy_process_group()


class StepShares:
    """Which rows of each step's super-batch of ``super_batch`` examples this process holds,
    scores and trains on, for one of two ways of reading the data (docs/distributed.md):

    - every rank draws the whole super-batch (``per_rank`` False: in-memory pools and generated
      streams; cheap to draw) and takes its share of it, rows ``shard_rows(S, r, W)``;
    - rank r draws only its share, ``share_size(S, r, W)`` examples, from a stream of its own
      (``per_rank`` True: a shard set, whose ranks read disjoint shards). The global super-batch
      is defined as the ranks' draws concatenated in rank order, so rank r's draw is exactly
      rows ``shard_rows(S, r, W)`` of it and scoring and selection are as above; only the rows
      kept by a ``global`` selection that another rank holds are sent (:meth:`Ranks.exchange_kept`).

    Read per rank, the data position differs from rank to rank: :meth:`gathered` puts every rank's
    into the checkpoint and :meth:`own` gives each its own back; the source's metrics (skipped
    samples) are summed over ranks (:meth:`source_metrics`).
    """

    def __init__(self, ranks: Ranks, super_batch: int, *, per_rank: bool) -> None:
        self.ranks, self.super_batch, self.per_rank = ranks, super_batch, per_rank

    @property
    def draw_size(self) -> int:
        """Examples this process draws a step."""
        if not self.per_rank:
            return self.super_batch
        return share_size(self.super_batch, self.ranks.rank, self.ranks.world_size)

    def scored(self, held: torch.Tensor) -> torch.Tensor:
        """This rank's share of the super-batch, from the rows it holds."""
        return held if self.per_rank else self.ranks.share(held)

    def kept(
        self,
        scores: torch.Tensor,
        k: int,
        selection: SelectionConfig,
        generator: torch.Generator,
        x: torch.Tensor,
        y: torch.Tensor,
        corrupted: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """This rank's rows of the ``k`` kept examples (``scores``: of its share), from the rows
        it holds of the inputs, labels and corrupted mask (None: unknown, stays None)."""
        ranks, size = self.ranks, self.super_batch
        if self.per_rank and selection.scope == "global":
            keep = ranks.selected(scores, size, k, selection, generator)

            def take(held: torch.Tensor) -> torch.Tensor:
                return ranks.exchange_kept(held, keep, size)

        else:
            keep = ranks.kept(scores, size, k, selection, generator)
            if self.per_rank:  # scope local: rows of this rank's own share
                keep = keep - shard_rows(size, ranks.rank, ranks.world_size).start

            def take(held: torch.Tensor) -> torch.Tensor:
                # index_select: a row gather with a third of advanced indexing's overhead on CPU
                return held.index_select(0, keep)

        return take(x), take(y), None if corrupted is None else take(corrupted)

    def source_metrics(
        self, own: dict[str, float], averaged: frozenset[str] = frozenset()
    ) -> dict[str, float]:
        """The run's figures from every rank's source metrics ``own`` (a collective where each
        rank reads its own stream): summed over ranks, those named in ``averaged`` (epochs read)
        averaged. Otherwise every rank's are the same: this rank's."""
        if not self.per_rank or not own:
            return own
        names = sorted(own)
        summed = self.ranks.sum(torch.tensor([own[n] for n in names], dtype=torch.float64))
        world = self.ranks.world_size
        return {
            name: float(value) / (world if name in averaged else 1)
            for name, value in zip(names, summed, strict=True)
        }

    def gathered(self, state: dict[str, Any]) -> dict[str, Any]:
        """The data position to checkpoint, from this rank's ``state``: every rank's, where each
        reads its own stream (a collective), else this one (the same on every rank)."""
        if not self.per_rank:
            return state
        return {"world_size": self.ranks.world_size, "ranks": self.ranks.gather_objects(state)}

    def own(self, saved: dict[str, Any]) -> dict[str, Any]:
        """This rank's data position from a checkpoint's (what :meth:`gathered` wrote)."""
        world, per_rank = self.ranks.world_size, "ranks" in saved
        if per_rank and self.per_rank and saved["world_size"] == world:
            return saved["ranks"][self.ranks.rank]
        if not per_rank and not self.per_rank:
            return saved
        wrote = (
            f"{saved['world_size']} processes that each read their own shards"
            if per_rank
            else "processes that all read one stream"
        )
        raise ConfigError(
            f"the checkpoint's data position was written by a run on {wrote}; this run has "
            f"{world} process(es){' that each read their own shards' if self.per_rank else ''}. "
            "A shard set's ranks read disjoint streams, so resume the run on the number of "
            "processes that wrote the checkpoint (or delete the checkpoint to start again)"
        )

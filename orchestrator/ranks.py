"""A run on several processes, seen from its job: joining, who does what, failures.

The executor starts every process of a run with the same job: SLURM as the tasks of one job
(``srun``), the local executor as the tasks of one submitit job. Each process exports the
torchrun variables from submitit's job environment (:func:`export_torch_environment`) and joins
the run's process group (:func:`join`, ``trainers.distributed``).

- **Rank 0** does what a one-process run does (``orchestrator/worker.py``): it alone talks to
  the run store and MLflow, evaluates and writes checkpoints. After ``try_start`` it tells the
  others whether to train (``Ranks.decide``).
- **The other ranks** (:func:`follow`) train their share and log nothing.
- **A rank that raises** writes its traceback tail to ``WORKDIR/ranks/RUN_ID/rank-R.txt`` and
  exits; the collective rank 0 waits in then fails (gloo at once: the connection closes; NCCL
  after ``executor.collective_timeout_s``), and rank 0 records the run as failed with its own
  traceback and the other ranks' tails, the first failure last (:func:`failure_tail`). The
  tails of an earlier attempt are removed before a new one starts.
- **Requeue** (SLURM's signal reaches every task): the ranks stop at the same step, rank 0
  saves the checkpoint and requeues the job; the others return, and SLURM restarts every task.
"""

from __future__ import annotations

import os
import random
import shutil
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from trainers.distributed import ProcessGroupRanks, Ranks
from trainers.loop import RunContext

if TYPE_CHECKING:
    from orchestrator.executors import StopSignal
    from orchestrator.worker import RunJob

# How long rank 0 looks for the other ranks' tails once it has failed (a shared filesystem may
# show another node's new file a moment late).
PEER_TAIL_WAIT_S = 3.0
OWN_TAIL_CHARS = 1500  # of rank 0's traceback, in the store's error tail (4000 characters)
PEER_TAIL_CHARS = 1200  # of each other rank's


def export_torch_environment() -> int:
    """The number of processes of this job; when several, RANK, WORLD_SIZE, LOCAL_RANK,
    LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT are exported for ``torch.distributed``
    (``submitit.helpers.TorchDistributedEnvironment``: rank 0's host, or 127.0.0.1 when every
    task is on one node, and a port derived from the job id in [20000, 32767]; an address and
    port the executor set already are kept)."""
    if os.environ.get("SUBMITIT_EXECUTOR") not in ("slurm", "local"):
        return 1  # inline: this process is the run
    import submitit

    if submitit.JobEnvironment().num_tasks == 1:
        return 1
    job = submitit.JobEnvironment()
    # A port derived from the job id (every task derives the same) below Linux's ephemeral
    # range (32768-60999): submitit's own choice can fall on a port that a client connection
    # of the node holds, and rank 0 then cannot listen while the others wait for it.
    port = random.Random(job.job_id).randint(20000, 32767)
    os.environ.setdefault("MASTER_PORT", str(port))  # the executor's MASTER_PORT if it set one
    found = submitit.helpers.TorchDistributedEnvironment()
    # On one node the tasks meet at the loopback address: rank 0's host name need not resolve
    # (a node known to SLURM by name alone, a container's host name).
    one_node = found.world_size == found.local_world_size
    os.environ.update(
        MASTER_ADDR=os.environ.get("MASTER_ADDR", "127.0.0.1" if one_node else found.master_addr),
        MASTER_PORT=str(found.master_port),
        RANK=str(found.rank),
        WORLD_SIZE=str(found.world_size),
        LOCAL_RANK=str(found.local_rank),
        LOCAL_WORLD_SIZE=str(found.local_world_size),
    )
    return int(found.world_size)


def join(job: RunJob) -> Ranks:
    """This process's place in its run: :class:`Ranks` alone, or a rank of the process group
    (NCCL on CUDA, gloo on CPU)."""
    if export_torch_environment() == 1:
        return Ranks()
    from orchestrator.plugins import load_job_plugins
    from trainers.config import RunConfig

    # Every rank: the config names the plugins' archs and datasets (rank 0 records them later;
    # one that fails here fails the run through rank 0, see orchestrator.worker).
    load_job_plugins(job.plugins)
    from trainers.loop import pick_device

    device = pick_device(RunConfig.model_validate(job.config))
    return ProcessGroupRanks.join(device, job.collective_timeout_s)


def run_context(
    job: RunJob,
    ranks: Ranks,
    stop: StopSignal | None,
    progress: Callable[[int, int], None] | None = None,
) -> RunContext:
    """The trainer's context of one rank; ``progress`` (rank 0's store reports) where given."""
    workdir = Path(job.workdir)
    return RunContext(
        workdir=workdir,
        checkpoint_path=workdir / "checkpoints" / f"{job.run_id}.pt",
        reference_share=job.reference_share,
        stop_requested=stop.requested if stop else None,
        ranks=ranks,
        progress=progress,
    )


def follow(job: RunJob, ranks: Ranks, stop: StopSignal | None) -> str:
    """A rank other than 0: train this rank's share of the run if rank 0 starts it. Returns
    ``skipped``, ``interrupted`` (requeued by rank 0) or ``completed``."""
    from trainers.config import RunConfig
    from trainers.loop import Interrupted, train

    if not ranks.decide(False):  # rank 0 found the run completed, cancelled or resubmitted
        return "skipped"
    try:
        train(RunConfig.model_validate(job.config), run_context(job, ranks, stop))
    except Interrupted:
        if stop is not None:
            stop.hand_over()  # submitit requeues from rank 0 only: here it returns
        return "interrupted"
    except BaseException:
        path = tail_path(job, ranks.rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(traceback.format_exc()[-PEER_TAIL_CHARS:])
        raise
    ranks.close()
    return "completed"


def tail_path(job: RunJob, rank: int) -> Path:
    return Path(job.workdir) / "ranks" / job.run_id / f"rank-{rank}.txt"


def clear_tails(job: RunJob) -> None:
    """Remove the tails of an earlier attempt (rank 0, before the others start)."""
    shutil.rmtree(tail_path(job, 0).parent, ignore_errors=True)


def failure_tail(own: str, job: RunJob, ranks: Ranks) -> str:
    """Rank 0's traceback ``own`` with the tails the other ranks wrote, in the order they
    failed: the first failure (the cause) last, where the CLI's one-line summary reads."""
    if ranks.world_size == 1:
        return own
    failed_at = time.time()
    paths = [tail_path(job, rank) for rank in range(1, ranks.world_size)]
    deadline = time.monotonic() + PEER_TAIL_WAIT_S
    while not any(p.exists() for p in paths) and time.monotonic() < deadline:
        time.sleep(0.1)
    parts = [(failed_at, 0, own[-OWN_TAIL_CHARS:])]
    for rank, path in enumerate(paths, start=1):
        if path.exists():
            parts.append((path.stat().st_mtime, rank, path.read_text()))
    parts.sort(key=lambda part: -part[0])
    return "\n".join(
        f"--- rank {rank} of {ranks.world_size} ---\n{text}" for _, rank, text in parts
    )

"""Data-parallel runs: W processes (gloo on CPU) train what one process trains.

Three ways of starting the processes, all real: a direct harness (``torch.multiprocessing``
with torchrun variables, :func:`on_ranks`), the local executor (submitit tasks, via the CLI),
and the local SLURM cluster (2 tasks of one job on its one node).

Tolerance: a run on 2 processes averages two half-batch gradients where one process takes
one batch mean, so float32 sums differ in their last bits. Histories must agree to
``REL_TOL`` (losses, accuracies) and exactly in every FLOP counter and step; accuracies have
agreed exactly, and the largest relative difference measured in a loss was about 1e-7
(learnability, rho_loss with sampling and a parallel reference, 30-100 steps).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from mlflow.tracking import MlflowClient

from activescale.errors import ConfigError, SweepSpecError
from orchestrator.cli import main
from orchestrator.executors import free_port
from orchestrator.launch import make_executor, make_jobs, prepare, register, runs_to_execute
from orchestrator.spec import load_sweep, parse_sweep
from orchestrator.store import COMPLETED, FAILED, INTERRUPTED, RunStore
from orchestrator.worker import RunJob
from tests.conftest import TINY_RUN, tiny_run_config
from tests.test_slurm import slurm_state, slurm_up, wait_done
from trainers.config import RunConfig
from trainers.distributed import ProcessGroupRanks, Ranks, shard_rows
from trainers.loop import Interrupted, RunContext, train
from trainers.selection import SelectionConfig
from trainers.tracking import MemoryLogger

REL_TOL = 1e-5
History = list[tuple[int, dict[str, float]]]


# ---------------------------------------------------------------------------------------------
# The harness: a function run on every rank of a real gloo process group


def _rank_main(
    rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple[Any, ...], out: Path
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
    ranks = ProcessGroupRanks.join(torch.device("cpu"), timeout_s=60)
    try:
        result = fn(ranks, *args)
    except BaseException:
        # Leave the group before the exception ends the process: exiting inside it aborts
        # the process in gloo's threads (SIGABRT), and the traceback would be lost.
        torch.distributed.destroy_process_group()
        raise
    ranks.close()
    (out / f"rank-{rank}.pkl").write_bytes(pickle.dumps(result))
    # Done: leave without the interpreter's teardown, where gloo's threads can still abort a
    # finished process ("terminate called without an active exception", seen once in CI).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def on_ranks(fn: Callable[..., Any], *args: Any, out: Path, world: int = 2) -> list[Any]:
    """``fn(ranks, *args)`` on each of ``world`` processes; their return values, by rank."""
    out.mkdir(parents=True, exist_ok=True)
    mp.spawn(_rank_main, args=(world, free_port(), fn, args, out), nprocs=world)
    return [pickle.loads((out / f"rank-{r}.pkl").read_bytes()) for r in range(world)]


@dataclass
class Outcome:
    history: History
    stopped_at: int | None = None


def train_ranks(
    ranks: Ranks, config: str, workdir: str, stop_on_rank: int | None = None
) -> Outcome:
    """Train ``config`` (JSON) with a checkpoint; ``stop_on_rank``: that rank alone is asked to
    stop after its 5th step (the others must stop at the same step)."""
    asked = {"steps": 0}

    def stop_requested() -> bool:
        asked["steps"] += 1
        return ranks.rank == stop_on_rank and asked["steps"] >= 5

    logger = MemoryLogger()
    ctx = RunContext(
        workdir=Path(workdir),
        checkpoint_path=Path(workdir) / "checkpoint.pt",
        stop_requested=stop_requested if stop_on_rank is not None else None,
        ranks=ranks,
    )
    try:
        train(RunConfig.model_validate_json(config), ctx, logger)
    except Interrupted as stop:
        return Outcome(logger.history, stop.step)
    return Outcome(logger.history)


def one_process(config: RunConfig, workdir: Path) -> History:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        logger = MemoryLogger()
        train(config, RunContext(workdir=workdir), logger)
    finally:
        torch.set_num_threads(threads)
    return logger.history


def assert_same_history(one: History, many: History) -> float:
    """Equal steps and FLOP counters, other metrics to REL_TOL; returns the largest relative
    difference seen."""
    assert [step for step, _ in one] == [step for step, _ in many]
    worst = 0.0
    for (_, a), (_, b) in zip(one, many, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if key.startswith("flops") or key == "step":
                assert a[key] == b[key], key
            else:
                assert math.isclose(a[key], b[key], rel_tol=REL_TOL, abs_tol=1e-9), (key, a, b)
                worst = max(worst, abs(a[key] - b[key]) / max(abs(a[key]), 1e-12))
    return worst


def config(**overrides: object) -> RunConfig:
    return RunConfig.model_validate(tiny_run_config(**overrides)).resolved()


# ---------------------------------------------------------------------------------------------
# Same history as one process


@pytest.mark.parametrize(
    "overrides",
    [
        {"selection": {"policy": "iid"}},
        {"selection": {"policy": "learnability", "keep": 0.5}},  # pretrained reference
        {  # sampling (the generator must agree), a parallel reference trained data-parallel
            "selection": {"policy": "rho_loss", "keep": 0.3, "method": "sample"},
            "reference": {"arch": "mlp", "size": "xxs", "mode": "parallel"},
        },
        {  # wsd: cooldown branches are collective like steps, their FLOPs summed over ranks
            "selection": {"policy": "learnability", "keep": 0.5, "method": "sample"},
            "optimizer": {"schedule": "wsd", "cooldown": 0.2},
            "eval": {"points": 6, "batch_size": 256},
        },
    ],
    ids=["iid", "learnability", "rho_loss-sample-parallel", "learnability-wsd"],
)
def test_two_processes_train_what_one_trains(tmp_path: Path, overrides: dict[str, Any]) -> None:
    cfg = config(**overrides)
    one = one_process(cfg, tmp_path / "one")
    two = on_ranks(train_ranks, cfg.model_dump_json(), str(tmp_path / "two"), out=tmp_path)
    worst = assert_same_history(one, two[0].history)
    print(f"largest relative difference: {worst:.3g}")
    assert two[1].history == []  # only rank 0 logs


def test_resume_mid_run_equals_the_uninterrupted_two_process_run(tmp_path: Path) -> None:
    cfg = config().model_dump_json()
    whole = on_ranks(train_ranks, cfg, str(tmp_path / "whole"), out=tmp_path / "a")[0]
    # Only rank 1 is asked to stop; both stop at the next agreement step (16), rank 0 saves.
    first = on_ranks(train_ranks, cfg, str(tmp_path / "cut"), 1, out=tmp_path / "b")
    assert [o.stopped_at for o in first] == [16, 16]
    shutil.copytree(tmp_path / "cut", tmp_path / "alone")
    rest = on_ranks(train_ranks, cfg, str(tmp_path / "cut"), out=tmp_path / "c")[0]
    assert rest.stopped_at is None
    assert first[0].history + rest.history == whole.history  # bitwise
    # The checkpoint holds the run's totals and replicated state: one process can go on.
    alone = train_ranks(Ranks(), cfg, str(tmp_path / "alone"))
    assert_same_history(whole.history, first[0].history + alone.history)


def keep_rows(ranks: Ranks, scope: str, method: str) -> list[int]:
    selection = SelectionConfig(policy="learnability", keep=0.25, method=method, scope=scope)  # type: ignore[arg-type]
    scores = torch.arange(40, dtype=torch.float32).flip(0)  # the super-batch's scores
    mine = scores[shard_rows(40, ranks.rank, ranks.world_size)]
    generator = torch.Generator().manual_seed(0)
    return ranks.kept(mine, 40, 10, selection, generator).tolist()


@pytest.mark.parametrize("method", ["topk", "sample"])
def test_global_scope_keeps_what_one_process_keeps_local_keeps_per_rank(
    tmp_path: Path, method: str
) -> None:
    single = keep_rows(Ranks(), "global", method)
    by_rank = on_ranks(keep_rows, "global", method, out=tmp_path / "g")
    assert by_rank[0] + by_rank[1] == single  # rank r trains on its slice of the kept batch
    local = on_ranks(keep_rows, "local", method, out=tmp_path / "l")
    assert all(len(rows) == 5 for rows in local)
    assert all(0 <= i < 20 for i in local[0]) and all(20 <= i < 40 for i in local[1])
    if method == "topk":  # the best 5 of each rank's own 20
        assert sorted(local[0]) == [0, 1, 2, 3, 4] and sorted(local[1]) == [20, 21, 22, 23, 24]


def test_shares_cover_every_row_once() -> None:
    for n, world in [(10, 2), (7, 3), (64, 4), (3, 3)]:
        rows = [list(range(n))[shard_rows(n, r, world)] for r in range(world)]
        assert [i for share in rows for i in share] == list(range(n))
        assert max(map(len, rows)) - min(map(len, rows)) <= 1


def rank_zero_first(ranks: Ranks, seconds: float) -> list[str]:
    order = []
    with ranks.main_first():
        order.append(f"rank {ranks.rank} at {time.monotonic():.3f}")
        if ranks.is_main:
            time.sleep(seconds)
    return order


def test_rank_zero_pretrains_first_and_the_others_wait_beyond_the_timeout(tmp_path: Path) -> None:
    # The harness's collective timeout is 60 s; waiting for rank 0 may take longer (here 2 s
    # is enough to order them: rank 1 enters only after rank 0 left).
    zero, one = on_ranks(rank_zero_first, 2.0, out=tmp_path)
    assert float(one[0].split()[-1]) - float(zero[0].split()[-1]) >= 2.0


# ---------------------------------------------------------------------------------------------
# Settings that cannot run data parallel are named errors before anything runs


def test_a_batch_that_does_not_split_is_a_named_error(tmp_path: Path) -> None:
    text = f"name: odd\n{TINY_RUN}executor: {{kind: local, tasks_per_node: 3}}\n"
    with pytest.raises(
        ConfigError,
        match=r"batch_size: 32 does not split evenly over the run.s 3 processes \(executor.nodes x tasks_per_node\)",
    ):
        prepare(parse_sweep(text, "odd.yaml"))
    with pytest.raises(ConfigError, match="batch_size"):
        train(config(), RunContext(workdir=tmp_path, ranks=FakeWorld(3)))


class FakeWorld(Ranks):
    """A world size without processes: enough for the checks made before any collective."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size


def test_contrastive_on_several_processes_is_a_named_error() -> None:
    with pytest.raises(ConfigError, match="contrastive"):
        train(
            RunConfig.model_validate(
                tiny_run_config(
                    task="contrastive",
                    dataset={"name": "mnist1d_pairs", "train_size": 256, "test_size": 64},
                    selection={"policy": "iid"},
                )
            ),
            RunContext(workdir=Path("/nonexistent"), ranks=FakeWorld(2)),
        )


@pytest.mark.parametrize(
    ("executor", "problem"),
    [
        ("{kind: local, nodes: 2}", r"nodes: 2 nodes need kind slurm"),
        ("{kind: local, resources: {xl: {nodes: 2}}}", r"resources\.xl\.nodes"),
        ("{kind: inline, tasks_per_node: 2}", r"tasks_per_node: kind inline"),
    ],
)
def test_processes_the_executor_cannot_start_are_named_errors(executor: str, problem: str) -> None:
    with pytest.raises(SweepSpecError, match=problem):
        parse_sweep(f"name: p\n{TINY_RUN}executor: {executor}\n", "p.yaml")


def test_selection_scope_leaves_existing_run_ids_alone() -> None:
    default = config()
    assert "scope" not in default.model_dump(mode="json")["selection"]
    local = config(selection={"policy": "learnability", "keep": 0.5, "scope": "local"})
    assert local.model_dump(mode="json")["selection"]["scope"] == "local"
    assert local.run_id() != default.run_id()


# ---------------------------------------------------------------------------------------------
# The local executor: submitit tasks, the CLI, the store and MLflow


def sweep_file(tmp_path: Path, name: str, executor: str, extra: str = "") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nworkdir: {tmp_path / name}\n{TINY_RUN}"
        "budget: {steps: 40}\neval: {points: 4, batch_size: 256}\n"
        f"executor: {executor}\n{extra}"
    )
    return path


def mlflow_histories(path: Path) -> dict[str, tuple[History, dict[str, str]]]:
    """{run id: (history of every metric, params)} of a sweep's MLflow children."""
    sweep = load_sweep(path)
    client = MlflowClient(tracking_uri=sweep.tracking_uri)
    experiment = client.get_experiment_by_name(sweep.experiment)
    assert experiment is not None
    out = {}
    for run in client.search_runs([experiment.experiment_id]):
        if "activescale.run_id" not in run.data.tags:
            continue
        by_step: dict[int, dict[str, float]] = {}
        for key in run.data.metrics:
            if key.startswith(("by_mflops/", "system/")):  # other x-axes; the machine's load
                continue
            for m in client.get_metric_history(run.info.run_id, key):
                by_step.setdefault(m.step, {})[key] = m.value
        history = sorted(by_step.items())
        out[run.data.tags["activescale.run_id"]] = (history, run.data.params)
    return out


def test_local_executor_two_processes_match_one(tmp_path: Path) -> None:
    grid = "grid:\n  selection.policy: [iid, learnability]\n"
    one = sweep_file(tmp_path, "one", "{kind: inline}", grid)
    two = sweep_file(tmp_path, "two", "{kind: local, tasks_per_node: 2, threads_per_run: 2}", grid)
    assert main(["run", str(one), "--no-report"]) == 0
    assert main(["run", str(two), "--no-report"]) == 0
    single, double = mlflow_histories(one), mlflow_histories(two)
    assert single.keys() == double.keys() and len(single) == 2  # same run ids
    for run_id, (history, params) in double.items():
        worst = assert_same_history(single[run_id][0], history)
        print(f"run {run_id}: largest relative difference {worst:.3g}")
        assert params["distributed.world_size"] == "2"
        assert single[run_id][1]["distributed.world_size"] == "1"
    logs = list((load_sweep(two).workdir / "jobs").rglob("*_1_log.out"))
    assert len(logs) == 2  # each run had a task 1


@dataclass(frozen=True)
class RaisesOnRankOne(RunJob):
    """A run whose rank 1 raises at step 5 (test only: nothing else makes one rank fail)."""

    def __call__(self, job_id: str | None = None, stop: Any = None) -> str:
        if os.environ.get("SUBMITIT_LOCAL_GLOBALID", os.environ.get("SLURM_PROCID")) == "1":
            import trainers.loop

            step = trainers.loop.train_step

            def raising(state: Any, *args: Any) -> Any:
                if state.step == 5:
                    raise RuntimeError("rank 1 broke at step 5")
                return step(state, *args)

            trainers.loop.train_step = raising  # type: ignore[assignment]
        return super().__call__(job_id, stop)


def raising_jobs(
    path: Path, store: RunStore, monkeypatch: pytest.MonkeyPatch
) -> list[RaisesOnRankOne]:
    # The job's processes unpickle RaisesOnRankOne from this module, imported by pytest as a
    # top-level module of tests/ (they inherit this environment, locally and from sbatch).
    here = str(Path(__file__).parent)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    )
    sweep = prepare(load_sweep(path))
    registration = register(sweep, store)
    rows, _ = runs_to_execute(sweep, store)
    return [RaisesOnRankOne(**vars(job)) for job in make_jobs(sweep, rows, registration)]


def assert_failed_with_rank_one_tail(store: RunStore, sweep: str) -> None:
    (row,) = store.runs(sweep)
    assert row.status == FAILED, row
    tail = row.error_tail or ""
    assert "rank 1 of 2" in tail and "rank 1 broke at step 5" in tail
    # The cause comes last, where `activescale run` reads its one-line summary.
    assert tail.strip().splitlines()[-1] == "RuntimeError: rank 1 broke at step 5"


def test_a_rank_that_raises_fails_the_run_and_a_rerun_completes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = sweep_file(tmp_path, "boom", "{kind: local, tasks_per_node: 2, threads_per_run: 2}")
    sweep = load_sweep(path)
    store = RunStore(sweep.store_url)
    jobs = raising_jobs(path, store, monkeypatch)
    executor = make_executor(sweep.settings.executor, sweep.workdir, store=store)
    started = time.monotonic()
    (handle,) = executor.launch(jobs, lambda: None)  # returns: no rank hangs
    assert handle.done() and time.monotonic() - started < 120
    assert_failed_with_rank_one_tail(store, sweep.name)
    assert main(["run", str(path), "--no-report"]) == 0  # run again: the failed run reruns
    (row,) = store.runs(sweep.name)
    assert row.status == COMPLETED and row.attempts == 2
    assert not (sweep.workdir / "ranks" / row.id).exists()  # the old tails went with attempt 2


def test_a_group_rank_zero_cannot_form_fails_the_run_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank 0 of a 2-task job whose other task never comes (it could not start, or cannot
    reach rank 0): the run fails with the reason in the store instead of staying submitted.
    Rank 0 runs here, in this process, as submitit's local job environment describes it."""
    path = sweep_file(tmp_path, "alone", "{kind: local, collective_timeout_s: 3}")
    sweep = prepare(load_sweep(path))
    store = RunStore(sweep.store_url)
    registration = register(sweep, store)
    rows, _ = runs_to_execute(sweep, store)
    (job,) = make_jobs(sweep, rows, registration)
    for key, value in {
        "SUBMITIT_EXECUTOR": "local",
        "SUBMITIT_LOCAL_JOB_ID": "7",
        "SUBMITIT_LOCAL_NTASKS": "2",
        "SUBMITIT_LOCAL_JOB_NUM_NODES": "1",
        "SUBMITIT_LOCAL_NODEID": "0",
        "SUBMITIT_LOCAL_GLOBALID": "0",
        "SUBMITIT_LOCAL_LOCALID": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }.items():
        monkeypatch.setenv(key, value)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        # The job exports these into this process: set, then removed, they are undone after
        # the test (a WORLD_SIZE left behind makes later tests think they are distributed).
        monkeypatch.setenv(key, "0")
        monkeypatch.delenv(key)
    with pytest.raises(Exception):  # noqa: B017  (torch's store timeout: its own types)
        job()
    (row,) = store.runs(sweep.name)
    assert row.status == FAILED and row.attempts == 1
    assert "timeout" in (row.error_tail or "").lower(), row.error_tail


# ---------------------------------------------------------------------------------------------
# The real SLURM cluster: 2 tasks of one job on its one node


@pytest.fixture
def slurm() -> None:
    from tests.conftest import need_service

    need_service(slurm_up(), "the local SLURM cluster (scripts/local-slurm up)")


SLURM_TWO = "{kind: slurm, partition: debug, tasks_per_node: 2, cpus_per_task: 1, timeout_min: 10}"


@pytest.mark.slurm
def test_slurm_two_tasks_match_one_process(slurm: None, tmp_path: Path) -> None:
    path = sweep_file(tmp_path, "slurm2", SLURM_TWO)
    assert main(["submit", str(path)]) == 0
    sweep = load_sweep(path)
    store = RunStore(sweep.store_url)
    assert wait_done(store, sweep.name)[COMPLETED] == 1, store.runs(sweep.name)
    ((history, params),) = mlflow_histories(path).values()
    assert params["distributed.world_size"] == "2"
    worst = assert_same_history(one_process(sweep.runs[0].config, tmp_path / "one"), history)
    print(f"largest relative difference: {worst:.3g}")


def signal_rank_one(job_id: str) -> None:
    """USR2 to the processes of task 1 of the job alone (``scontrol listpids``: PID JOBID
    STEPID LOCALID GLOBALID)."""
    listing = subprocess.run(
        ["scontrol", "listpids", job_id], capture_output=True, text=True, check=True
    ).stdout
    pids = [int(f[0]) for f in (line.split() for line in listing.splitlines()[1:]) if f[-1] == "1"]
    assert pids, listing
    for pid in pids:
        os.kill(pid, signal.SIGUSR2)


@pytest.mark.slurm
@pytest.mark.parametrize("signalled", ["every task", "rank 1 only"])
def test_slurm_requeue_resumes_to_the_uninterrupted_run(
    slurm: None, tmp_path: Path, signalled: str
) -> None:
    path = sweep_file(tmp_path, "requeue2", SLURM_TWO)
    text = path.read_text().replace("budget: {steps: 40}", "budget: {steps: 3000}")
    path.write_text(
        text.replace("selection: {policy: learnability, keep: 0.5}", "selection: {policy: iid}")
    )
    sweep = load_sweep(path)
    store = RunStore(sweep.store_url)
    assert main(["submit", str(path)]) == 0
    (row,) = store.runs(sweep.name)
    checkpoint = sweep.workdir / "checkpoints" / f"{row.id}.pt"
    deadline = time.monotonic() + 180
    while not checkpoint.exists():
        assert time.monotonic() < deadline, "no checkpoint\n" + slurm_state(store, sweep.name)
        time.sleep(0.2)
    job = store.run(sweep.name, row.id)
    assert job is not None and job.job_id
    if signalled == "every task":  # what SLURM does on preemption: SIGTERM, then USR2
        subprocess.run(["scancel", "--signal=TERM", job.job_id], check=True)
        subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True)
    else:  # rank 0 stops and requeues the job because rank 1 was asked to
        signal_rank_one(job.job_id)

    assert wait_done(store, sweep.name, timeout_s=300)[COMPLETED] == 1, store.run(
        sweep.name, row.id
    )
    assert [a.status for a in store.attempts(sweep.name, row.id)] == [INTERRUPTED, COMPLETED]
    logs = "".join(p.read_text() for p in (sweep.workdir / "jobs").rglob("*_0_log.out"))
    saved = re.findall(r"stop requested; checkpoint saved at step (\d+)", logs)
    resumed = re.findall(r"resumed at step (\d+)", logs)
    assert len(saved) == 1 and resumed == saved and int(saved[0]) % 16 == 0, logs[-3000:]

    # The uninterrupted 2-process run, here, with the tasks' thread count (1).
    cfg = sweep.runs[0].config.model_dump_json()
    whole = on_ranks(train_ranks, cfg, str(tmp_path / "whole"), out=tmp_path / "ranks")[0]
    final = store.run(sweep.name, row.id)
    assert final is not None and json.loads(final.final_metrics or "{}") == whole.history[-1][1]


@pytest.mark.slurm
def test_slurm_rank_that_raises_fails_the_run_and_retry_reruns_it(
    slurm: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.slurm import SlurmExecutor, StoreLog

    # No snapshot: the job imports this checkout (and RaisesOnRankOne from its tests/).
    path = sweep_file(tmp_path, "boom2", SLURM_TWO.replace("}", ", snapshot: false}"))
    sweep = load_sweep(path)
    store = RunStore(sweep.store_url)
    jobs = raising_jobs(path, store, monkeypatch)
    SlurmExecutor(sweep.settings.executor, sweep.workdir, StoreLog(store)).launch(
        jobs, lambda: None
    )
    wait_done(store, sweep.name)
    assert_failed_with_rank_one_tail(store, sweep.name)
    assert main(["retry", str(path)]) == 0
    assert wait_done(store, sweep.name)[COMPLETED] == 1
    assert store.runs(sweep.name)[0].attempts == 2


def test_plan_counts_gpu_hours_over_every_device_a_run_holds() -> None:
    from orchestrator.plan import estimate_flops, plan

    resources = "{xs: {nodes: 2, tasks_per_node: 2, gpus_per_node: 4}}"
    sweep = parse_sweep(
        f"name: p\n{TINY_RUN}budget: {{steps: 100}}\n"
        f"executor: {{kind: slurm, resources: {resources}}}\n",
        "p.yaml",
    )
    (cfg,) = [r.config for r in sweep.runs]
    estimate = estimate_flops(cfg)
    summary = plan([cfg], 1e12, resources=lambda c: sweep.settings.executor.resources_for("xs"))
    # 4 processes share the steps' FLOPs, rank 0 alone pretrains the reference; 8 GPUs held.
    steps = estimate.steps * estimate.step_flops
    wall_s = (steps / 4 + (estimate.total - steps)) / 1e12
    assert summary.total_flops == estimate.total
    assert summary.gpu_hours == pytest.approx(8 * wall_s / 3600)
    assert plan([cfg], 1e12).gpu_hours == pytest.approx(estimate.total / 1e12 / 3600)

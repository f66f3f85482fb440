"""Speed of the orchestrator: expanding and registering big sweeps, submitting, status.

    python benchmarks/bench_orchestrator.py [--runs 100000] [--submit 10000] [--no-slurm]

1. Expand + register N runs (default 100k): the section-cached expansion against a full
   validation of every grid point (the baseline, timed on a sample and scaled), and bulk
   registration against one INSERT per run (sampled likewise).
2. Submit M runs (default 10k) to the local SLURM cluster as held job arrays, counted sbatch
   calls against the bound ceil(M / MaxArraySize), then cancel them. Baseline: one sbatch per
   run (timed on a sample and scaled).
3. ``status`` of that M-run sweep while in flight: one sacct for all runs against one sacct
   per run (sampled and scaled); and the whole ``activescale status NAME`` process.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from orchestrator.keys import deep_copy, set_dotted
from orchestrator.spec import parse_sweep
from orchestrator.store import RunStore
from trainers.config import RunConfig

BASE = """\
name: {name}
workdir: {workdir}
dataset: {{name: mnist1d, train_size: 512, test_size: 256, clean_size: 128, label_noise: 0.3}}
learner: {{arch: mlp, size: xs}}
scorer: {{arch: mlp, size: xxs}}
reference: {{arch: mlp, size: xxs, steps: 20}}
selection: {{policy: learnability, keep: 0.5}}
batch_size: 32
budget: {{steps: 30}}
eval: {{points: 3, batch_size: 256}}
executor: {{kind: slurm, partition: debug, cpus_per_task: 1, additional_parameters: {{hold: true}}}}
grid:
  learner.size: [xxs, xs, s, m, l]
  selection.policy: [iid, learnability]
  seed: [{seeds}]
  optimizer.lr: [{lrs}]
"""


def sweep_text(name: str, workdir: Path, runs: int) -> str:
    per_axis = runs // 10
    seeds = max(1, int(math.sqrt(per_axis)))
    lrs = per_axis // seeds
    return BASE.format(
        name=name,
        workdir=workdir,
        seeds=", ".join(str(i) for i in range(seeds)),
        lrs=", ".join(f"{1e-4 * (i + 1):.6g}" for i in range(lrs)),
    )


def naive_expand(text: str, sample: int) -> float:
    """Seconds per grid point when every point is validated in full (the old path)."""
    import yaml

    raw = yaml.safe_load(text)
    grid = raw.pop("grid")
    base = {k: v for k, v in raw.items() if k not in {"name", "workdir", "executor"}}
    keys = list(grid)
    points = itertools.islice(itertools.product(*(grid[k] for k in keys)), sample)
    start = time.perf_counter()
    for values in points:
        point = deep_copy(base)
        for key, value in zip(keys, values, strict=True):
            set_dotted(point, key, value)
        config = RunConfig.model_validate(point).resolved()
        config.run_id()
        json.dumps(config.model_dump(mode="json"), sort_keys=True)
    return (time.perf_counter() - start) / sample


def naive_register(url: str, rows: list[tuple[str, str, dict[str, object]]]) -> float:
    """Seconds per run when each run is one INSERT transaction."""
    store = RunStore(url)
    store.upsert_sweep("naive", {})
    start = time.perf_counter()
    for row in rows:
        store.register("naive", [row])
    return (time.perf_counter() - start) / len(rows)


def bench_expand_register(runs: int, tmp: Path, table: Table) -> None:
    text = sweep_text("bench", tmp / "work", runs)
    start = time.perf_counter()
    sweep = parse_sweep(text, "bench.yaml")
    expand_s = time.perf_counter() - start
    store = RunStore(f"sqlite:///{tmp / 'store.db'}")
    store.upsert_sweep(sweep.name, {})
    start = time.perf_counter()
    store.register(sweep.name, ((r.run_id, r.config_text(), r.label) for r in sweep.runs))
    register_s = time.perf_counter() - start
    n = len(sweep.runs)
    naive_point = naive_expand(text, 2000)
    sample = [(r.run_id, r.config_text(), r.label) for r in sweep.runs[:2000]]
    naive_row = naive_register(f"sqlite:///{tmp / 'naive.db'}", sample)
    table.add_row(f"expand {n} runs", f"{expand_s:.2f} s", f"{naive_point * n:.2f} s (scaled)")
    table.add_row(f"register {n} runs", f"{register_s:.2f} s", f"{naive_row * n:.2f} s (scaled)")
    table.add_row(
        f"expand + register {n} runs (target <= 10 s)",
        f"{expand_s + register_s:.2f} s",
        f"{(naive_point + naive_row) * n:.2f} s (scaled)",
    )


def bench_slurm(runs: int, tmp: Path, table: Table) -> None:
    from orchestrator.cli import reconciled_counts
    from orchestrator.launch import submit_sweep
    from orchestrator.slurm import cancel, cluster_info

    max_array = cluster_info().max_array_size
    name = f"bench{os.getpid()}"
    path = tmp / f"{name}.yaml"
    path.write_text(sweep_text(name, tmp / "slurm-work", runs))
    sweep = parse_sweep(path.read_text(), str(path))
    url = f"sqlite:///{tmp / 'slurm.db'}"
    start = time.perf_counter()
    outcome = submit_sweep(sweep, url)
    submit_s = time.perf_counter() - start
    store = RunStore(url)
    arrays = {r[2].split("_")[0] for r in store.run_states(name) if r[2]}
    bound = math.ceil(outcome.submitted / max_array)
    try:
        # Baseline: one sbatch per run (held, cancelled at once), on a sample.
        script = tmp / "one.sh"
        script.write_text("#!/bin/bash\n#SBATCH --hold\n#SBATCH --output=/dev/null\ntrue\n")
        sample = 30
        ids = []
        start = time.perf_counter()
        for _ in range(sample):
            out = subprocess.run(
                ["sbatch", str(script)], capture_output=True, text=True, check=True
            )
            ids.append(out.stdout.split()[-1])
        per_sbatch = (time.perf_counter() - start) / sample
        subprocess.run(["scancel", *ids], check=False)
        table.add_row(
            f"submit {outcome.submitted} runs (MaxArraySize {max_array})",
            f"{submit_s:.1f} s, {outcome.sbatch_calls} sbatch calls ({len(arrays)} arrays; "
            f"bound {bound})",
            f"{per_sbatch * outcome.submitted:.1f} s, {outcome.submitted} sbatch calls (scaled)",
        )

        start = time.perf_counter()
        counts = reconciled_counts(store, name)
        status_s = time.perf_counter() - start
        assert counts["submitted"] == outcome.submitted, counts
        job_ids = [r[2] for r in store.run_states(name)][:20]
        start = time.perf_counter()
        for job_id in job_ids:
            subprocess.run(
                ["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", str(job_id)],
                capture_output=True,
                check=True,
            )
        per_sacct = (time.perf_counter() - start) / len(job_ids)
        table.add_row(
            f"status of {outcome.submitted} in-flight runs (target <= 1 s)",
            f"{status_s:.2f} s (1 sacct call)",
            f"{per_sacct * outcome.submitted:.1f} s, one sacct per run (scaled)",
        )
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", "status", name, "--store", url],
            capture_output=True,
            check=True,
        )
        table.add_row(
            f"`activescale status` process, {outcome.submitted} runs",
            f"{time.perf_counter() - start:.2f} s (incl. interpreter start)",
            "",
        )
    finally:
        start = time.perf_counter()
        cancelled = cancel(store, name)
        table.add_row(f"cancel {cancelled} runs", f"{time.perf_counter() - start:.2f} s", "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--submit", type=int, default=10_000)
    parser.add_argument("--no-slurm", action="store_true")
    args = parser.parse_args()
    table = Table(title="orchestrator")
    for column in ("measure", "activescale", "baseline"):
        table.add_column(column)
    tmp = Path(tempfile.mkdtemp(prefix="bench-orchestrator-"))
    try:
        bench_expand_register(args.runs, tmp, table)
        if not args.no_slurm and shutil.which("sbatch"):
            bench_slurm(args.submit, tmp, table)
    finally:
        Console().print(table)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""What a plugin costs `activescale validate`: the example plugin's sweep against a built-in
sweep of the same size, both timed here, in this run.

    python benchmarks/bench_plugins.py [--seeds 5] [--repeats 7]

The plugin sweep is examples/resnet1d_plugin (arch resnet1d, dataset csv_signals from a CSV,
loaded by path); the baseline is the same grid on built-ins (arch cnn1d, the same data as an
.npz file, dataset npz): learner sizes xs, s, m, l x policies iid, learnability x seeds, with
the same scorer, reference, budget and evaluation. Each is timed two ways, the median of
``--repeats`` each, interleaved:

1. the whole `activescale validate` process (what a user waits for: Python, torch, the
   plugin's import, reading the data, expanding and checking every run, building each model);
2. the same work in this process (``load_sweep`` + ``prepare``), without the interpreter's
   start-up, which would otherwise hide a plugin's cost.

The acceptance bound is a ratio of at most 1.2 (plugin / built-in) for the command.
"""

from __future__ import annotations

import argparse
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "resnet1d_plugin"
GRID = """\
grid:
  learner.size: [xs, s, m, l]
  selection.policy: [iid, learnability]
  seed: [{seeds}]
"""
COMMON = """\
scorer: {{arch: {arch}, size: xs}}
reference: {{arch: {arch}, size: s, steps: 60}}
selection: {{policy: learnability, keep: 0.5}}
batch_size: 32
budget: {{steps: 80}}
eval: {{points: 4, batch_size: 600}}
executor: {{kind: local}}
"""


def write_sweeps(folder: Path, seeds: int) -> tuple[Path, Path]:
    write_csv = runpy.run_path(str(EXAMPLE / "activescale_resnet1d" / "make_csv.py"))["write_csv"]
    csv = write_csv(folder / "signals.csv", n=3000)
    data = np.loadtxt(csv, delimiter=",", skiprows=1, dtype=np.float32)
    x, y = data[:, 1:], data[:, 0].astype(np.int64)
    # The npz dataset holds out its test split as given; the CSV dataset draws 20% itself.
    np.savez(folder / "signals.npz", x=x[600:], y=y[600:], x_test=x[:600], y_test=y[:600])
    grid = GRID.format(seeds=", ".join(map(str, range(seeds))))
    plugin = folder / "plugin.yaml"
    plugin.write_text(
        f"name: bench_plugin\nworkdir: {folder / 'w1'}\nplugins: [{EXAMPLE / 'activescale_resnet1d'}/]\n"
        f"dataset: {{name: csv_signals, path: {csv}, label_noise: 0.2}}\n"
        "learner: {arch: resnet1d, size: xs}\n" + COMMON.format(arch="resnet1d") + grid
    )
    builtin = folder / "builtin.yaml"
    builtin.write_text(
        f"name: bench_builtin\nworkdir: {folder / 'w2'}\n"
        f"dataset: {{name: npz, path: {folder / 'signals.npz'}, clean_size: 300, label_noise: 0.2}}\n"
        "learner: {arch: cnn1d, size: xs}\n" + COMMON.format(arch="cnn1d") + grid
    )
    return plugin, builtin


def time_command(sweep: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "validate", str(sweep)],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"validate {sweep} failed:\n{done.stderr}")
    return elapsed


def time_in_process(sweep: Path) -> float:
    """load + prepare in a fresh interpreter that has imported everything first (so neither
    side pays the imports), timed inside it."""
    code = (
        "import sys, time\n"
        "import orchestrator.cli, orchestrator.launch, orchestrator.spec, trainers.loop\n"
        "start = time.perf_counter()\n"
        "orchestrator.launch.prepare(orchestrator.spec.load_sweep(sys.argv[1]))\n"
        "print(time.perf_counter() - start)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(sweep)], capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="Seeds per grid point (runs = 8x).")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        plugin, builtin = write_sweeps(Path(tmp), args.seeds)
        times: dict[str, dict[str, list[float]]] = {
            "command": {"plugin": [], "built-in": []},
            "in process": {"plugin": [], "built-in": []},
        }
        for _ in range(args.repeats):  # interleaved: machine load hits both alike
            for label, sweep in (("plugin", plugin), ("built-in", builtin)):
                times["command"][label].append(time_command(sweep))
                times["in process"][label].append(time_in_process(sweep))
    runs = 8 * args.seeds
    print(f"activescale validate, {runs} runs each, median of {args.repeats}:")
    for what, by_kind in times.items():
        plugin_s = statistics.median(by_kind["plugin"])
        builtin_s = statistics.median(by_kind["built-in"])
        print(
            f"  {what:>10}: plugin sweep {plugin_s:.3f} s, built-in sweep {builtin_s:.3f} s, "
            f"ratio {plugin_s / builtin_s:.3f}"
        )


if __name__ == "__main__":
    main()

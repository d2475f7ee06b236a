"""Accuracy of the default `fashion-mnist` preset over several seeds (issue: Fashion-MNIST accuracy).

Runs `scanlearn run --preset fashion-mnist --seed S` for each seed in a fresh run directory,
then prints, per stage, mean and std over seeds of: weighted-kNN accuracy of the pretext
features (k=100), neighbour precision at K, ACC/NMI/ARI of k-means on the pretext features,
of SCAN and of self-labelling (test split, never seen in training), plus wall time and peak
resident memory of each run. Writes benchmarks/results/fashion_mnist.json.

    .venv/bin/python benchmarks/fashion_mnist.py --seeds 0 1 2 [--set key=value ...] [--reuse]

With ``--reuse`` a seed whose run directory already holds a finished run of the same command
(same overrides) is read back instead of trained again, so seeds can be run one at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "fashion_mnist.json"
ROWS = [
    ("pretext features: weighted kNN (k=100)", "pretext", "knn_acc"),
    ("neighbour precision @K (train)", "mine", "precision_train"),
    ("k-means on pretext features: ACC", "pretext", "acc"),
    ("k-means on pretext features: NMI", "pretext", "nmi"),
    ("k-means on pretext features: ARI", "pretext", "ari"),
    ("SCAN: ACC", "scan", "acc"),
    ("SCAN: NMI", "scan", "nmi"),
    ("SCAN: ARI", "scan", "ari"),
    ("SCAN + self-label: ACC", "selflabel", "acc"),
    ("SCAN + self-label: NMI", "selflabel", "nmi"),
    ("SCAN + self-label: ARI", "selflabel", "ari"),
]


def run_seed(seed: int, run_root: Path, overrides: list[str], reuse: bool = False) -> dict:
    """One full pipeline run in a child process; returns its metrics, wall time and peak RSS."""
    run_dir = run_root / f"seed{seed}"
    record = run_dir / "benchmark.json"
    if reuse and record.exists():
        previous = json.loads(record.read_text())
        if previous["overrides"] == overrides:
            print(f"seed {seed}: reusing the finished run in {run_dir}")
            return previous["result"]
    command = [sys.executable, "-m", "scanlearn.cli", "run", "--preset", "fashion-mnist", "--run-dir", str(run_dir),
               "--restart", "--seed", str(seed), "--set", "runtime.progress=false"]
    for item in overrides:
        command += ["--set", item]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    metrics = json.loads((run_dir / "metrics.json").read_text())
    result = {"seed": seed, "wall_s": wall, "peak_rss_mib_so_far": peak_mib, "metrics": metrics}
    record.write_text(json.dumps({"overrides": overrides, "result": result}, indent=2))
    return result


def lookup(metrics: dict, stage: str, key: str) -> float:
    """A metric of one run; ``precision_train`` matches whatever K was used."""
    values = metrics.get(stage, {})
    if key in values:
        return float(values[key])
    matches = [v for k, v in values.items() if k.startswith(key)]
    return float(matches[0]) if matches else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--run-root", default="runs/bench-fashion-mnist")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--reuse", action="store_true", help="read back seeds already run with the same overrides")
    args = parser.parse_args()
    runs = [run_seed(seed, Path(args.run_root), args.overrides, args.reuse) for seed in args.seeds]
    table = {}
    print(f"\nFashion-MNIST, preset fashion-mnist, seeds {args.seeds}, {os.cpu_count()} cores, {date.today()}")
    print(f"{'':<42} {'mean':>7} {'std':>7}   per seed")
    for label, stage, key in ROWS:
        values = np.array([lookup(r["metrics"], stage, key) for r in runs])
        table[label] = {"mean": float(values.mean()), "std": float(values.std()), "values": values.tolist()}
        print(f"{label:<42} {values.mean():>7.4f} {values.std():>7.4f}   " + " ".join(f"{v:.4f}" for v in values))
    walls = np.array([r["wall_s"] for r in runs])
    peak = max(r["peak_rss_mib_so_far"] for r in runs)
    print(f"{'wall time per run (s)':<42} {walls.mean():>7.0f} {walls.std():>7.0f}   " + " ".join(f"{w:.0f}" for w in walls))
    print(f"{'peak resident memory (MiB, largest child)':<42} {peak:>7.0f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"date": str(date.today()), "cores": os.cpu_count(), "seeds": args.seeds,
                                   "overrides": args.overrides, "table": table, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()

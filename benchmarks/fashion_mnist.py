"""Accuracy of the default `fashion-mnist` preset over several seeds (issue: Fashion-MNIST accuracy).

Runs `scanlearn run --preset fashion-mnist --seed S` for each seed in a fresh run directory,
then prints, per stage, mean and std over seeds of: weighted-kNN accuracy of the pretext
features (k=100), neighbour precision at K, ACC/NMI/ARI of k-means on the pretext features,
of SCAN and of self-labelling (test split, never seen in training), plus wall time and peak
resident memory of each run. Writes benchmarks/results/fashion_mnist.json.

    .venv/bin/python benchmarks/fashion_mnist.py --seeds 0 1 2 [--set key=value ...] [--reuse]

With ``--reuse`` a seed whose run directory already holds a finished run of the same command
(same overrides) is read back instead of trained again, so seeds can be run one at a time.

With ``--label-free`` every seed follows the label-free protocol (issue 27): after its pretext
and mine stages, `scanlearn select` trains candidate SCAN heads on the frozen features for each
of ``--entropy-weights`` (2 heads each, that seed) and the default label-free criterion picks
the entropy weight the run then trains with; nothing is chosen with labels. Writes
benchmarks/results/fashion_mnist_label_free.json (``selflabel``: acc/nmi/ari mean and std over
seeds, ``seeds``, each seed's chosen weight and scores).

    .venv/bin/python benchmarks/fashion_mnist.py --label-free --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "fashion_mnist.json"
LABEL_FREE_RESULTS = Path(__file__).parent / "results" / "fashion_mnist_label_free.json"
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


def cli(command: str, run_dir: Path, seed: int, overrides: list[str], *extra: str) -> list[str]:
    """Arguments of one ``scanlearn`` command on the fashion-mnist preset."""
    args = [sys.executable, "-m", "scanlearn.cli", command, "--preset", "fashion-mnist", "--run-dir", str(run_dir),
            "--seed", str(seed), "--set", "runtime.progress=false", *extra]
    return args + [a for item in overrides for a in ("--set", item)]


def choose_label_free(seed: int, run_dir: Path, overrides: list[str], weights: list[float]) -> list[str]:
    """Pretext, mine and `scanlearn select` over ``weights`` in a fresh run; the chosen weight as an override."""
    from scanlearn.selection import chosen_params

    if run_dir.exists():
        shutil.rmtree(run_dir)
    seeds, listed = str(seed), ",".join(f"{w:g}" for w in weights)
    subprocess.run(cli("select", run_dir, seed, overrides, "--seeds", seeds, "--entropy-weights", listed), check=True)
    weight = chosen_params(run_dir)["entropy_weight"]
    print(f"seed {seed}: label-free choice (scanlearn select): scan.entropy_weight={weight:g}")
    return [f"scan.entropy_weight={weight:g}"]


def run_seed(seed: int, run_root: Path, overrides: list[str], reuse: bool = False,
             label_free_weights: list[float] | None = None) -> dict:
    """One full pipeline run in a child process (after the label-free choice, when asked); returns its
    metrics, wall time, peak RSS and the label-free choice."""
    run_dir = run_root / f"seed{seed}"
    record = run_dir / "benchmark.json"
    if reuse and record.exists():
        previous = json.loads(record.read_text())
        if previous["overrides"] == overrides and previous.get("label_free") == label_free_weights:
            print(f"seed {seed}: reusing the finished run in {run_dir}")
            return previous["result"]
    start = time.perf_counter()
    chosen = choose_label_free(seed, run_dir, overrides, label_free_weights) if label_free_weights else []
    restart = [] if label_free_weights else ["--restart"]
    subprocess.run(cli("run", run_dir, seed, overrides + chosen, *restart), check=True)
    wall = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    metrics = json.loads((run_dir / "metrics.json").read_text())
    result = {"seed": seed, "wall_s": wall, "peak_rss_mib_so_far": peak_mib, "metrics": metrics, "chosen": chosen}
    record.write_text(json.dumps({"overrides": overrides, "label_free": label_free_weights, "result": result}, indent=2))
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
    parser.add_argument("--label-free", action="store_true",
                        help="choose scan.entropy_weight per seed with `scanlearn select` (no labels)")
    parser.add_argument("--entropy-weights", type=float, nargs="+", default=[2.0, 3.0, 4.0, 5.0],
                        help="candidate entropy weights of --label-free")
    args = parser.parse_args()
    weights = args.entropy_weights if args.label_free else None
    run_root = Path(args.run_root + ("-label-free" if args.label_free else ""))
    runs = [run_seed(seed, run_root, args.overrides, args.reuse, weights) for seed in args.seeds]
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
    if args.label_free:
        write_label_free(runs, args, table)
        return
    RESULTS.write_text(json.dumps({"date": str(date.today()), "cores": os.cpu_count(), "seeds": args.seeds,
                                   "overrides": args.overrides, "table": table, "runs": runs}, indent=2))


def write_label_free(runs: list[dict], args: argparse.Namespace, table: dict) -> None:
    """``fashion_mnist_label_free.json``: self-label (and SCAN) ACC/NMI/ARI mean and std, seeds, choices."""
    summary = {}
    for stage in ("scan", "selflabel"):
        values = {key: np.array([lookup(r["metrics"], stage, key) for r in runs]) for key in ("acc", "nmi", "ari")}
        summary[stage] = {f"{key}_{what}": float(getattr(v, what)())
                          for key, v in values.items() for what in ("mean", "std")}
    LABEL_FREE_RESULTS.write_text(json.dumps({
        **summary, "seeds": args.seeds, "date": str(date.today()), "cores": os.cpu_count(),
        "protocol": "fashion-mnist preset; scan.entropy_weight chosen per seed among "
                    f"{args.entropy_weights} by `scanlearn select` (label-free); evaluated on the test split",
        "overrides": args.overrides, "chosen": {r["seed"]: r["chosen"] for r in runs}, "table": table, "runs": runs,
    }, indent=2))


if __name__ == "__main__":
    main()

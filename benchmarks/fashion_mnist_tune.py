"""Tune the later stages of the `fashion-mnist` preset on the TRAIN split only (issue: Fashion-MNIST accuracy).

Reuses the finished stages of existing runs (e.g. the pretext checkpoints written by
benchmarks/fashion_mnist.py), retrains the requested stages with overrides in a fresh directory,
and scores them on the 60k train images: Hungarian ACC, NMI, cluster sizes, and the label-free
SCAN loss of the kept head. The test split is never read, so the final test figure stays unseen.

    .venv/bin/python benchmarks/fashion_mnist_tune.py NAME --seeds 0 1 --stages scan \\
        [--base runs/bench-fashion-mnist] [--set key=value ...] [--stage-seed N]

Stages before the first requested one are copied from ``BASE/seed<S>``; with ``--stages mine,scan``
the pretext checkpoint is reused and neighbours are mined again under the new settings.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from scanlearn.config import resolve
from scanlearn.metrics import evaluate_clustering
from scanlearn.engine.run import Run
from scanlearn.engine.inference import predict_probabilities
from scanlearn.runs.rundir import claim_run_dir

STAGES = ("pretext", "mine", "scan", "selflabel")


def prepare_run(base: Path, target: Path, first_stage: str) -> None:
    """Fresh ``target`` holding copies of ``base``'s stages that come before ``first_stage``."""
    if target.exists():
        shutil.rmtree(target)
    claim_run_dir(target)
    for stage in STAGES[: STAGES.index(first_stage)]:
        shutil.copytree(base / stage, target / stage)


def train_stage(stage: str, run_dir: Path, seed: int, overrides: list[str]) -> float:
    """Run one stage through the CLI (log in RUN-<stage>.log beside it); returns its wall seconds."""
    command = [sys.executable, "-m", "scanlearn.cli", stage, "--preset", "fashion-mnist", "--run-dir", str(run_dir),
               "--seed", str(seed)]
    for item in overrides:
        command += ["--set", item]
    start = time.perf_counter()
    with open(run_dir.parent / f"{run_dir.name}-{stage}.log", "w") as log:
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=log)
    return time.perf_counter() - start


def train_split_scores(run_dir: Path, stage: str, overrides: list[str]) -> dict:
    """ACC / NMI / ARI and cluster sizes of ``stage`` on the train split."""
    config = resolve("fashion-mnist", None, overrides)
    run = Run(config, run_dir)
    images = run.split("train")
    probs = predict_probabilities(run, stage, images)
    scores = evaluate_clustering(probs, np.asarray(images.targets), 10)
    sizes = np.bincount(probs.argmax(1), minlength=probs.shape[1]).tolist()
    return {"acc": scores["acc"], "nmi": scores["nmi"], "ari": scores["ari"], "sizes": sizes}


def scan_losses(run_dir: Path) -> list[float]:
    """Label-free SCAN loss (entropy weight 1, all pairs) of every head SCAN trained."""
    return json.loads((run_dir / "scan" / "metrics.json").read_text())["head_losses"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="experiment name: results go to runs/tune/NAME/seed<S>")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--stages", default="scan", help="comma-separated stages to retrain, in pipeline order")
    parser.add_argument("--base", default="runs/bench-fashion-mnist", help="runs whose earlier stages are reused")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--stage-seed", type=int, default=None,
                        help="seed of the retrained stages (default: the base run's); another value reruns them "
                             "on the same inputs with other random draws")
    args = parser.parse_args()
    stages = args.stages.split(",")
    overrides = args.overrides + ["runtime.progress=false"]
    results: dict[int, dict] = {}
    for seed in args.seeds:
        run_dir = Path("runs/tune") / args.name / f"seed{seed}"
        prepare_run(Path(args.base) / f"seed{seed}", run_dir, stages[0])
        results[seed] = {}
        for stage in stages:
            wall = train_stage(stage, run_dir, seed if args.stage_seed is None else args.stage_seed, overrides)
            if stage in ("scan", "selflabel"):
                results[seed][stage] = {**train_split_scores(run_dir, stage, overrides), "wall_s": wall}
                if stage == "scan":
                    results[seed][stage]["kept_head_loss"] = min(scan_losses(run_dir))
            elif stage == "mine":
                results[seed][stage] = {**json.loads((run_dir / "mine" / "metrics.json").read_text()), "wall_s": wall}
            print(args.name, f"seed {seed}", stage, results[seed].get(stage, {"wall_s": wall}), flush=True)
    for stage in stages:
        if stage in ("scan", "selflabel"):
            acc = np.mean([results[s][stage]["acc"] for s in args.seeds])
            nmi = np.mean([results[s][stage]["nmi"] for s in args.seeds])
            print(f"{args.name} {stage}: train ACC {acc:.4f} NMI {nmi:.4f} (mean of seeds {args.seeds}) {args.overrides}")
    (Path("runs/tune") / args.name / "result.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

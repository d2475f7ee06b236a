"""Which of SCAN's frozen heads to answer with, without labels, when the heads' start decides the partition.

For each run directory (pretext and mine done) and each head seed, the frozen recipe the time budget gives SCAN is
trained on the mined space as ``head_spaces.py`` trains it (50 candidates for 10 epochs, the 5 with the lowest SCAN
loss trained ``--epochs`` more), and three label-free rules pick an answer from the 5 heads: ``loss``, the lowest
SCAN loss on the train split's ``val_k`` neighbours (the SCAN stage's rule); ``agreement``, the head whose partition
agrees most with the other heads' (mean NMI between heads); ``consensus``, every image's majority cluster over the
heads after aligning them to the lowest-loss head (``scanlearn.consensus``). The **train** split's labels only score
the answers (ACC / NMI / ARI); the test split is not read.

    .venv/bin/python benchmarks/head_choice.py RUN_DIR... --seeds 0 1 2 3 --epochs 40 \\
        --output benchmarks/results/head_choice_budget_avx2.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import normalized_mutual_info_score

from head_spaces import space_rows, trained_on
from provenance import measured
from scanlearn.budget import FREEZE
from scanlearn.clustering.heads import frozen_head_probabilities, head_losses
from scanlearn.config import load_config, with_values
from scanlearn.consensus import consensus
from scanlearn.engine.run import Run
from scanlearn.metrics import evaluate_clustering
from scanlearn.runs.artefacts import load_npy

RULES = ("loss", "agreement", "consensus")


def answers(labelings: list[np.ndarray], losses: list[float]) -> dict[str, np.ndarray]:
    """Each rule's answer (N,) from the heads' labelings and SCAN losses, without labels."""
    by_loss = int(np.argmin(losses))
    agreement = [statistics.mean(normalized_mutual_info_score(a, b) for j, b in enumerate(labelings) if j != i)
                 for i, a in enumerate(labelings)]
    return {"loss": labelings[by_loss], "agreement": labelings[int(np.argmax(agreement))],
            "consensus": consensus(labelings, reference=by_loss).labels}


def seed_case(run: Run, features: np.ndarray, neighbors: np.ndarray, targets: np.ndarray) -> dict:
    """One head seed: every head's loss and train scores, and each rule's answer scored."""
    started = time.perf_counter()
    probs = frozen_head_probabilities(trained_on(features, neighbors, run), features)
    losses = [float(v) for v in head_losses(probs, neighbors[:, : run.config.mine.val_k])]
    labelings = [p.argmax(-1).numpy() for p in probs]
    scored = {rule: scores(labels, targets, run.clusters) for rule, labels in answers(labelings, losses).items()}
    return {"seed": run.config.runtime.seed, "head_losses": [round(v, 4) for v in losses],
            "heads": [scores(labels, targets, run.clusters) for labels in labelings], "rules": scored,
            "seconds": round(time.perf_counter() - started, 1)}


def scores(labels: np.ndarray, targets: np.ndarray, clusters: int) -> dict[str, float]:
    """ACC / NMI / ARI of a hard labelling against the train split's classes."""
    onehot = np.eye(clusters, dtype=np.float32)[labels]
    return {k: round(v, 4) for k, v in evaluate_clustering(onehot, targets).items() if k in ("acc", "nmi", "ari")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories with pretext and mine done")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], help="head seeds")
    parser.add_argument("--epochs", type=int, default=40, help="SCAN epochs after the search")
    parser.add_argument("--output", type=Path, required=True, help="results JSON to write")
    args = parser.parse_args()
    cases = []
    for run_dir in args.runs:
        base = with_values(load_config(run_dir / "config.yaml"), FREEZE | {"scan.epochs": args.epochs})
        neighbors = load_npy(run_dir / "mine" / "neighbors_train.npy")
        features = space_rows(Run(base, run_dir), "mined")
        targets = np.asarray(Run(base, run_dir).split("train").targets)
        for seed in args.seeds:
            run = Run(with_values(base, {"runtime.seed": seed}), run_dir)
            case = {"run": str(run_dir), **seed_case(run, features, neighbors, targets)}
            print(run_dir, seed, {rule: case["rules"][rule]["acc"] for rule in RULES}, file=sys.stderr, flush=True)
            cases.append(case)
    summary = {rule: {k: round(statistics.mean(c["rules"][rule][k] for c in cases), 4) for k in ("acc", "nmi", "ari")}
               for rule in RULES}
    record = {"what": "label-free choice among SCAN's frozen heads on the mined space; train-split scores only",
              "command": " ".join(["benchmarks/head_choice.py", *sys.argv[1:]]), **measured(), "mean": summary,
              "cases": cases}
    args.output.write_text(json.dumps(record, indent=1) + "\n")
    print(args.output)


if __name__ == "__main__":
    main()

"""Frozen SCAN heads on the backbone's pooled features against heads on the mined space, on finished runs' features.

For each run directory (pretext and mine done: a `--time-budget 20m` run, or `fashion_mnist_tune.py NAME --stages
pretext,mine --set pretext.epochs=4`), both spaces get the frozen recipe the time budget gives SCAN (SGD 1.0 on
L2-normalised features, batch 256, entropy weight 3): the search's 50 candidate heads trained 10 epochs, the 5 with
the lowest SCAN loss trained 100 epochs more, the one with the lowest SCAN loss on the mined neighbours kept (no
labels). ``backbone``: the cached pooled backbone features; ``mined``: the train split's rows as mining searched them
(``clustering.kmeans.train_mined_space``: whitened multiscale rows), what ``scan.head_features=mined`` trains on. The
**train** split's labels only score the kept head (ACC / NMI / ARI); the test split is not read.

    .venv/bin/python benchmarks/head_spaces.py /tmp/budget/20m-seed3 runs/tune/budget4_seed1/seed1 \\
        --output benchmarks/results/head_spaces_budget_avx2.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from provenance import measured
from scanlearn.budget import FREEZE
from scanlearn.clustering.heads import clean_features, fit_linear_heads, frozen_head_probabilities, head_losses, pair_dataset
from scanlearn.clustering.kmeans import train_mined_space
from scanlearn.config import load_config, with_values
from scanlearn.engine.features import rows
from scanlearn.engine.loaders import batch_loader
from scanlearn.engine.run import Run
from scanlearn.engine.training import make_optimizer
from scanlearn.losses import scan_loss
from scanlearn.metrics import evaluate_clustering
from scanlearn.models import ClusterHeads
from scanlearn.runs.artefacts import load_npy

SEARCH, SEARCH_EPOCHS = 50, 10


def space_rows(run: Run, space: str) -> np.ndarray:
    """The train split's rows heads read in ``space``."""
    if space == "mined":
        return train_mined_space(run)
    return np.asarray(clean_features(run, run.split("train")), dtype=np.float32)


def trained_on(features: np.ndarray, neighbors: np.ndarray, run: Run) -> ClusterHeads:
    """The search's kept heads, then ``scan.epochs`` more epochs of the same loop on the same batches."""
    scan, seed = run.config.scan, run.config.runtime.seed
    heads = fit_linear_heads(features, neighbors, run.clusters, SEARCH, SEARCH_EPOCHS, scan, seed)
    heads.keep(head_losses(frozen_head_probabilities(heads, features), neighbors).argsort()[: scan.num_heads].tolist())
    heads.train()
    loader = batch_loader(pair_dataset(lambda idx: rows(features, idx), neighbors, scan.neighbor_includes_anchor),
                          scan.batch_size, shuffle=True, num_workers=0, seed=seed, drop_last=True, shard=False)
    optimizer = make_optimizer(heads.parameters(), scan.optim)
    for epoch in range(scan.epochs):
        loader.sampler.set_epoch(epoch)
        for anchors, partners, _ in loader:
            total = scan_loss(*heads(torch.cat([anchors, partners])).chunk(2, dim=1), scan.entropy_weight).total.sum()
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
    return heads.eval()


def score_space(run: Run, space: str, neighbors: np.ndarray) -> dict:
    """Train heads in ``space``; the kept head's train-split scores, every head's SCAN loss, the seconds taken."""
    started = time.perf_counter()
    features = space_rows(run, space)
    probs = frozen_head_probabilities(trained_on(features, neighbors, run), features)
    losses = [float(v) for v in head_losses(probs, neighbors[:, : run.config.mine.val_k])]
    best = int(np.argmin(losses))
    scores = evaluate_clustering(probs[best].numpy(), np.asarray(run.split("train").targets))
    return {"width": int(features.shape[1]), "train": {k: round(scores[k], 4) for k in ("acc", "nmi", "ari")},
            "kept_head": best, "head_losses": [round(v, 4) for v in losses],
            "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories with pretext and mine done")
    parser.add_argument("--output", type=Path, required=True, help="results JSON to write")
    args = parser.parse_args()
    cases = []
    for run_dir in args.runs:
        config = with_values(load_config(run_dir / "config.yaml"), FREEZE | {"scan.head_features": "backbone"})
        run = Run(config, run_dir)
        neighbors = load_npy(run_dir / "mine" / "neighbors_train.npy")
        case = {"run": str(run_dir), "seed": config.runtime.seed,
                "pretext_epochs": load_config(run_dir / "pretext" / "config.yaml").pretext.epochs}
        for space in ("backbone", "mined"):
            case[space] = score_space(run, space, neighbors)
            print(run_dir, space, case[space]["train"], file=sys.stderr, flush=True)
        cases.append(case)
    record = {"what": "frozen SCAN heads: pooled backbone features against the mined space; train-split scores only",
              "command": " ".join(["benchmarks/head_spaces.py", *sys.argv[1:]]), **measured(), "cases": cases}
    args.output.write_text(json.dumps(record, indent=1) + "\n")
    print(args.output)


if __name__ == "__main__":
    main()

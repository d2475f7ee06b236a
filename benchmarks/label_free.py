"""How well each label-free criterion ranks candidate clusterings by accuracy (issue 27).

Candidates share one pretext and mine stage (the run directory given): SCAN heads trained on its
frozen backbone features of Fashion-MNIST's train split, differing in seed, entropy weight,
number of mined neighbours and head (`scanlearn.selection.train_candidates`, what
`scanlearn select` trains). Each is scored by every criterion of `scanlearn.selection` without
labels; the train labels then score the criteria only: Spearman's rho between each criterion
(sign turned so that positive means "prefers the more accurate candidate") and ACC, and the
ACC of the candidate each criterion would choose. The consensus of the candidates (aligned to
the candidate the default criterion chooses) is scored as well, with and without a linear
classifier fitted to its unanimous images (self-labelling on frozen features).
Writes benchmarks/results/label_free_selection.json.

    .venv/bin/python benchmarks/label_free.py --run-dir RUN --seeds 0 1 --entropy-weights 2 3 4 5 --ks 10 20
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression

from scanlearn.config import load_config
from scanlearn.consensus import consensus
from scanlearn.metrics import evaluate_clustering
from scanlearn.selection import (
    DEFAULT_CRITERION, HIGHER_IS_BETTER, CandidateGrid, choose, score_candidates, shared_inputs, train_candidates,
)
from scanlearn.engine.run import Run

RESULTS = Path(__file__).parent / "results" / "label_free_selection.json"


def scores_of(labels: np.ndarray, targets: np.ndarray, clusters: int) -> dict[str, float]:
    """ACC / NMI / ARI of hard ``labels`` against the train labels."""
    probs = np.eye(clusters)[labels]
    return {k: v for k, v in evaluate_clustering(probs, targets, clusters).items() if k in ("acc", "nmi", "ari")}


def self_label(features: np.ndarray, labels: np.ndarray, keep: np.ndarray, seed: int,
               max_fit: int = 20_000) -> np.ndarray:
    """Labels of every image from a logistic regression fitted to ``labels`` on (up to ``max_fit``) ``keep`` images."""
    rng = np.random.default_rng(seed)
    fit = rng.permutation(np.flatnonzero(keep))[:max_fit]
    x = (features - features.mean(0)) / features.std(0).clip(1e-8)
    return LogisticRegression(max_iter=300).fit(x[fit], labels[fit]).predict(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, help="run with finished pretext (mine is run if missing)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--entropy-weights", type=float, nargs="+", default=[2.0, 3.0, 4.0, 5.0])
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=30, help="passes over the data per candidate")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: tiny linear heads on shared cores run faster than on 2)")
    parser.add_argument("--top", type=int, default=5,
                        help="also a consensus of the top candidates by the default criterion")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    run_dir = Path(args.run_dir)
    run = Run(load_config(run_dir / "config.yaml"), run_dir)
    config, images = run.config, run.split("train")
    features, neighbors, clusters = shared_inputs(run)
    grid = CandidateGrid(tuple(args.seeds), tuple(args.entropy_weights), tuple(args.ks), args.heads,
                         epochs=args.epochs, min_steps=args.steps)
    candidates = train_candidates(features, neighbors, clusters, grid)
    trained = time.perf_counter()
    scores = score_candidates(candidates, neighbors, features, seed=config.runtime.seed)
    scored = time.perf_counter()
    truth = [scores_of(c.labels, images.targets, clusters) for c in candidates]
    acc = np.array([t["acc"] for t in truth])

    criteria = {}
    for name, higher in HIGHER_IS_BETTER.items():
        preference = np.array([s[name] for s in scores]) * (1 if higher else -1)
        chosen = choose(scores, name)
        criteria[name] = {"spearman_rho": float(spearmanr(preference, acc).statistic),
                          "chosen": candidates[chosen].name, "chosen_acc": float(acc[chosen]),
                          "chosen_rank_by_acc": int((acc > acc[chosen]).sum()) + 1}

    best = choose(scores, DEFAULT_CRITERION)
    ranked = np.argsort([-s[DEFAULT_CRITERION] * (1 if HIGHER_IS_BETTER[DEFAULT_CRITERION] else -1) for s in scores])
    top = [int(i) for i in ranked[: args.top]]
    combined = {}
    for label, members in (("all", list(range(len(candidates)))), (f"top{args.top}", top)):
        reference = members.index(best)
        agreed = consensus([candidates[i].labels for i in members], reference=reference)
        relabelled = self_label(features, agreed.labels, agreed.unanimous, config.runtime.seed)
        combined[label] = {
            "members": len(members),
            "consensus": scores_of(agreed.labels, images.targets, clusters),
            "unanimous_fraction": float(agreed.unanimous.mean()),
            "acc_on_unanimous": float(scores_of(agreed.labels[agreed.unanimous], images.targets[agreed.unanimous],
                                                clusters)["acc"]),
            "self_labelled_on_unanimous": scores_of(relabelled, images.targets, clusters),
        }

    record = {
        "what": "label-free criteria vs ACC over candidates sharing one pretext + mine (Fashion-MNIST train split)",
        "command": "python benchmarks/label_free.py " + " ".join(
            [f"--run-dir {run_dir}", "--seeds", *map(str, args.seeds), "--entropy-weights",
             *map(str, args.entropy_weights), "--ks", *map(str, args.ks), f"--heads {args.heads}",
             f"--epochs {args.epochs}", f"--steps {args.steps}", f"--threads {args.threads}"]),
        "machine": f"{platform.processor() or platform.machine()}; AMD EPYC, 2 cores, AVX2 (no native bf16)",
        "date": date.today().isoformat(),
        "pretext": {"epochs": config.pretext.epochs, "train_images": len(images),
                    "mine_features": config.mine.features, "mine_k": int(neighbors.shape[1])},
        "n_candidates": len(candidates),
        "acc": {"min": float(acc.min()), "median": float(np.median(acc)), "max": float(acc.max())},
        "criteria": criteria,
        "default_criterion": DEFAULT_CRITERION,
        "consensus": combined,
        "candidates": [{"name": c.name, "params": c.params, "criteria": s, "train": t}
                       for c, s, t in zip(candidates, scores, truth)],
        "seconds": {"train": trained - started, "score": scored - trained, "total": time.perf_counter() - started},
    }
    Path(args.output).write_text(json.dumps(record, indent=2) + "\n")
    print(f"{len(candidates)} candidates, ACC {acc.min():.3f} .. {acc.max():.3f} (median {np.median(acc):.3f})")
    print("| criterion | Spearman rho vs ACC | ACC of its choice | its choice's rank by ACC |")
    print("|---|---|---|---|")
    for name, row in criteria.items():
        print(f"| {name} | {row['spearman_rho']:+.3f} | {row['chosen_acc']:.3f} | {row['chosen_rank_by_acc']} of "
              f"{len(candidates)} |")
    for label, row in combined.items():
        print(f"consensus of {label}: ACC {row['consensus']['acc']:.3f}, unanimous {row['unanimous_fraction']:.2f} "
              f"(ACC there {row['acc_on_unanimous']:.3f}), self-labelled on unanimous ACC "
              f"{row['self_labelled_on_unanimous']['acc']:.3f}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

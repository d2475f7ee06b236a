"""How close the two label-free estimates of the cluster sizes come to the true class sizes (issue 31).

For each finished run directory (pretext and mine done), on its train split: the class shares
(labels, used only to score), the shares of the run's k-means baseline (``scan.prior=estimated``) and
of k-means sub-clusters merged along the mined neighbours (``scan.prior=graph``,
``clustering.kmeans.graph_shares``). Reported per run: L1 distance of the sorted shares to the true
sorted shares, largest/smallest share, and ACC/NMI of the two partitions and their label-free
neighbour kappa. ``--subsample N`` scores N random train images instead, with their neighbours
mined again among them (for a large balanced run). Writes benchmarks/results/prior_estimates.json.

    .venv/bin/python benchmarks/prior_estimates.py RUN [RUN ...] [--subsample 6000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np

from scanlearn.config import load_config
from scanlearn.criteria import neighbour_kappa
from scanlearn.engine.run import Run
from scanlearn.engine.splits import num_clusters
from scanlearn.metrics import evaluate_clustering
from scanlearn.runs.artefacts import load_npy
from scanlearn.clustering.kmeans import feature_kmeans, graph_partition, mined_space, raw_mining_features

RESULTS = Path(__file__).parent / "results" / "prior_estimates.json"


def sorted_shares(assignments: np.ndarray, clusters: int) -> np.ndarray:
    """Cluster shares, largest first."""
    return np.sort(np.bincount(assignments, minlength=clusters) / len(assignments))[::-1]


def mined_again(x: np.ndarray, k: int) -> np.ndarray:
    """Each row's ``k`` nearest other rows by inner product (unit rows, as mining searches)."""
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    return index.search(x, k + 1)[1][:, 1:]


def score_run(run_dir: Path, subsample: int | None, seed: int) -> dict:
    """True, k-means and graph shares of one run's train split, with each partition's ACC/NMI and kappa."""
    run = Run(load_config(run_dir / "config.yaml"), run_dir)
    config, images = run.config, run.split("train")
    kmeans = feature_kmeans(run)
    neighbors = load_npy(run_dir / "mine" / "neighbors_train.npy")[:, :20]
    if subsample:
        keep = np.sort(np.random.default_rng(seed).choice(len(images), subsample, replace=False))
        images = images.subset(keep)
    raw = raw_mining_features(run, images)[0]
    x = np.ascontiguousarray(mined_space(raw, kmeans.whitening), np.float32)
    if subsample:
        neighbors = mined_again(x, neighbors.shape[1])
    labels = np.asarray(images.targets)
    clusters = num_clusters(config.num_clusters, run.spec, images)
    partitions = {"estimated (k-means)": kmeans.predict(raw) if subsample else kmeans.labels,
                  "graph": graph_partition(x, neighbors, clusters, config.runtime.seed)}
    truth = sorted_shares(labels, clusters)
    result = {"run": str(run_dir), "images": len(labels), "true_shares": truth.round(4).tolist()}
    for name, assigned in partitions.items():
        shares = sorted_shares(assigned, clusters)
        scores = evaluate_clustering(np.eye(clusters)[assigned], labels)
        result[name] = {"shares": shares.round(4).tolist(), "l1_to_true": float(np.abs(shares - truth).sum()),
                        "span": float(shares[0] / max(shares[-1], 1e-4)), "acc": scores["acc"], "nmi": scores["nmi"],
                        "neighbour_kappa": neighbour_kappa(assigned, neighbors)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--subsample", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0, help="which images --subsample draws")
    args = parser.parse_args()
    started = datetime.now(timezone.utc)
    rows = []
    for run in args.runs:
        row = score_run(run, args.subsample, args.seed)
        rows.append(row)
        truth = np.array(row["true_shares"])
        print(f"\n{run}: {row['images']} images, true span {truth[0] / truth[-1]:.1f}")
        for name in ("estimated (k-means)", "graph"):
            r = row[name]
            print(f"  {name:<20} L1 {r['l1_to_true']:.3f}  span {r['span']:5.1f}  ACC {r['acc']:.3f}  NMI {r['nmi']:.3f}"
                  f"  kappa {r['neighbour_kappa']:.3f}")
    RESULTS.parent.mkdir(exist_ok=True)
    previous = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"measurements": []}
    previous["measurements"].append({
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "started_utc": started.isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}", "runs": rows})
    RESULTS.write_text(json.dumps(previous, indent=2))
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()

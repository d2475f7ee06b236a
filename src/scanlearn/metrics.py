"""Clustering metrics: Hungarian and many-to-one accuracy, NMI, ARI, AMI, top-5, confusion."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn import metrics as skm

from .mining import knn_search


def contingency(clusters: np.ndarray, targets: np.ndarray, n_clusters: int, n_classes: int) -> np.ndarray:
    """Count table ``table[k, c]`` = number of samples in cluster k with true class c."""
    table = np.zeros((n_clusters, n_classes), dtype=np.int64)
    np.add.at(table, (clusters, targets), 1)
    return table


def hungarian_mapping(clusters: np.ndarray, targets: np.ndarray, n_clusters: int, n_classes: int) -> np.ndarray:
    """One-to-one cluster -> class map maximising matches (-1 for clusters left unmatched)."""
    table = contingency(clusters, targets, n_clusters, n_classes)
    rows, cols = linear_sum_assignment(table, maximize=True)
    mapping = np.full(n_clusters, -1, dtype=np.int64)
    mapping[rows] = cols
    return mapping


def majority_mapping(clusters: np.ndarray, targets: np.ndarray, n_clusters: int, n_classes: int) -> np.ndarray:
    """Many-to-one map: each cluster takes its most frequent class (for overclustering)."""
    table = contingency(clusters, targets, n_clusters, n_classes)
    mapping = table.argmax(axis=1)
    mapping[table.sum(axis=1) == 0] = -1
    return mapping


def confusion_matrix(predicted_classes: np.ndarray, targets: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion matrix normalised per true class: row c sums to 1 (rows with no sample are 0)."""
    table = np.zeros((n_classes, n_classes), dtype=np.float64)
    valid = predicted_classes >= 0
    np.add.at(table, (targets[valid], predicted_classes[valid]), 1)
    totals = np.bincount(targets, minlength=n_classes).astype(np.float64)
    return table / np.maximum(totals, 1)[:, None]


def evaluate_clustering(
    probs: np.ndarray, targets: np.ndarray, n_classes: int | None = None
) -> dict[str, float]:
    """All scores of a soft clustering ``probs`` (N, K) against ``targets`` (N,).

    acc: Hungarian accuracy; acc_many_to_one: majority-vote accuracy; nmi (arithmetic), ari, ami
    from scikit-learn; top5 (only with more than 5 clusters, else it is 1 by construction): the
    true class is among the classes of the 5 most probable clusters under the Hungarian map.
    """
    targets = np.asarray(targets, dtype=np.int64)
    n_clusters = probs.shape[1]
    n_classes = int(n_classes or targets.max() + 1)
    clusters = probs.argmax(axis=1)
    hungarian = hungarian_mapping(clusters, targets, n_clusters, n_classes)
    majority = majority_mapping(clusters, targets, n_clusters, n_classes)
    scores = {
        "acc": float((hungarian[clusters] == targets).mean()),
        "acc_many_to_one": float((majority[clusters] == targets).mean()),
        "nmi": float(skm.normalized_mutual_info_score(targets, clusters)),
        "ari": float(skm.adjusted_rand_score(targets, clusters)),
        "ami": float(skm.adjusted_mutual_info_score(targets, clusters)),
    }
    if n_clusters > 5:
        top_clusters = np.argsort(-probs, axis=1)[:, :5]
        scores["top5"] = float((hungarian[top_clusters] == targets[:, None]).any(axis=1).mean())
    return scores


def weighted_knn_accuracy(
    train_features: np.ndarray,
    train_targets: np.ndarray,
    test_features: np.ndarray,
    test_targets: np.ndarray,
    k: int = 100,
    temperature: float = 0.1,
    exclude_self: bool = False,
) -> float:
    """Weighted kNN accuracy: each of the k nearest (cosine) training samples votes exp(sim/t).

    ``exclude_self`` is for a bank that is the scored split itself (row i of both is one image):
    each image's own entry never votes, so its k voters are its k nearest other images.
    """
    sims, idx = knn_search(train_features, test_features, k + int(exclude_self))
    if exclude_self:
        sims, idx = drop_self(sims, idx)
    n_classes = int(train_targets.max() + 1)
    votes = np.zeros((len(test_features), n_classes))
    weights = np.exp(sims / temperature)
    np.add.at(votes, (np.repeat(np.arange(len(idx)), idx.shape[1]), train_targets[idx].ravel()), weights.ravel())
    return float((votes.argmax(axis=1) == test_targets).mean())


def drop_self(sims: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove from each row i of a (N, k+1) search its own index i (else its farthest entry): (N, k)."""
    own = idx == np.arange(len(idx))[:, None]
    own[~own.any(axis=1), -1] = True
    keep = ~own
    width = idx.shape[1] - 1
    return sims[keep].reshape(-1, width), idx[keep].reshape(-1, width)

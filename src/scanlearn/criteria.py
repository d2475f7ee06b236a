"""Label-free scores of a clustering, to choose between candidate clusterings without labels.

Each criterion needs only the assignments (or probabilities) and the mined neighbours
(indices ``(N, K)``, the image itself excluded, as `scanlearn.mining` writes them):
- ``neighbour_kappa``: how much more often mined neighbours share a cluster than chance
  would have them do, given the cluster sizes (Cohen's kappa of the pairs). Higher is better;
  unlike raw agreement it does not reward merging everything into one cluster.
- ``scan_objective``: the SCAN loss of saved probabilities on the mined pairs. Lower is
  better; comparable only between candidates scored with the same entropy weight.
- ``stability``: mean pairwise adjusted Rand index between candidates' assignments
  (``stability_each``: every candidate's mean ARI to the others).
- ``generalisation``: in the manner of TURTLE (Gadetsky et al., "Let Go of Your Labels with
  Unsupervised Transfer", ICML 2024, arXiv:2406.07236): a labelling a linear classifier on the
  features learns from one half of the images and reproduces on the other half is a good one.
  Scored as Cohen's kappa between the held-out predictions and the labelling, so that one
  cluster (trivially reproduced) scores 0.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score, cohen_kappa_score

from scanlearn.losses import scan_loss


def _check_pairs(assignments: np.ndarray, neighbors: np.ndarray) -> None:
    if neighbors.ndim != 2 or len(neighbors) != len(assignments):
        raise ValueError(
            f"neighbors must be (N, K) with N = {len(assignments)} assignments; got {tuple(neighbors.shape)}"
        )


def neighbour_agreement(assignments: np.ndarray, neighbors: np.ndarray) -> float:
    """Fraction of (image, mined neighbour) pairs whose two images share a cluster."""
    assignments = np.asarray(assignments)
    _check_pairs(assignments, neighbors)
    return float((assignments[:, None] == assignments[neighbors]).mean())


def chance_agreement(assignments: np.ndarray) -> float:
    """Agreement expected of random pairs given the cluster sizes: sum_k (n_k / N)^2."""
    shares = np.bincount(np.asarray(assignments)) / len(assignments)
    return float((shares**2).sum())


def clusters_used(assignments: np.ndarray) -> int:
    """How many clusters hold at least one image: candidates that leave asked-for clusters empty are compared apart."""
    return int(len(np.unique(assignments)))


def neighbour_kappa(assignments: np.ndarray, neighbors: np.ndarray) -> float:
    """(agreement - chance) / (1 - chance): 1 when all neighbours agree, 0 at chance, 0 for one cluster."""
    chance = chance_agreement(assignments)
    if chance >= 1.0:
        return 0.0
    return (neighbour_agreement(assignments, neighbors) - chance) / (1.0 - chance)


def scan_objective(probs: np.ndarray, neighbors: np.ndarray, entropy_weight: float) -> float:
    """SCAN loss (consistency - weight * entropy of the mean) of probabilities ``(N, C)`` over every mined pair."""
    probs = np.asarray(probs)
    _check_pairs(probs, neighbors)
    k = neighbors.shape[1]
    anchors = torch.from_numpy(np.repeat(probs, k, axis=0)).double()
    partners = torch.from_numpy(probs[neighbors.reshape(-1)]).double()
    return float(scan_loss(anchors.log(), partners.log(), entropy_weight).total)


def stability(labelings: Sequence[np.ndarray]) -> float:
    """Mean adjusted Rand index over all pairs of labelings of the same images (1 = identical partitions)."""
    if len(labelings) < 2:
        raise ValueError("stability needs at least two labelings")
    scores = [adjusted_rand_score(a, b) for a, b in itertools.combinations(labelings, 2)]
    return float(np.mean(scores))


def stability_each(labelings: Sequence[np.ndarray]) -> np.ndarray:
    """Every labeling's mean adjusted Rand index to the other labelings ``(L,)``."""
    if len(labelings) < 2:
        raise ValueError("stability needs at least two labelings")
    ari = np.eye(len(labelings))
    for i, j in itertools.combinations(range(len(labelings)), 2):
        ari[i, j] = ari[j, i] = adjusted_rand_score(labelings[i], labelings[j])
    return (ari.sum(1) - 1.0) / (len(labelings) - 1)


def generalisation(features: np.ndarray, assignments: np.ndarray, seed: int = 0, max_samples: int = 10_000) -> float:
    """Cohen's kappa between a labelling and a linear classifier's predictions of it on held-out images.

    Up to ``max_samples`` images are drawn (seeded) and split in two halves; a logistic regression
    on standardised ``features`` (N, d) is fitted to each half's labels and predicts the other half.
    1 when the labelling is a linear function of the features, about 0 for labels unrelated to them.
    """
    features, assignments = np.asarray(features, dtype=np.float64), np.asarray(assignments)
    if len(features) != len(assignments):
        raise ValueError(f"features has {len(features)} rows but there are {len(assignments)} assignments")
    rng = np.random.default_rng(seed)
    drawn = rng.permutation(len(features))[:max_samples]
    halves = (drawn[: len(drawn) // 2], drawn[len(drawn) // 2 :])
    x = (features - features[drawn].mean(0)) / features[drawn].std(0).clip(1e-8)
    truth, guess = [], []
    for fit, held in (halves, halves[::-1]):
        truth.append(assignments[held])
        if len(np.unique(assignments[fit])) < 2:
            guess.append(np.full(len(held), assignments[fit][0]))
            continue
        classifier = LogisticRegression(max_iter=300).fit(x[fit], assignments[fit])
        guess.append(classifier.predict(x[held]))
    truth, guess = np.concatenate(truth), np.concatenate(guess)
    if len(np.unique(np.concatenate([truth, guess]))) < 2:
        return 0.0
    return float(cohen_kappa_score(truth, guess))

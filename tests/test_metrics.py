"""Clustering metrics against permuted labellings and independent formulas."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from scanlearn.metrics import (
    confusion_matrix, evaluate_clustering, hungarian_mapping, majority_mapping, weighted_knn_accuracy,
)


def onehot(labels, k):
    return np.eye(k)[labels]


def test_hungarian_accuracy_is_one_for_a_permuted_labelling():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 5, 200)
    perm = rng.permutation(5)
    scores = evaluate_clustering(onehot(perm[targets], 5), targets)
    assert scores["acc"] == 1.0 and scores["nmi"] == pytest.approx(1.0) and scores["ari"] == pytest.approx(1.0)


def test_hungarian_accuracy_by_hand():
    # clusters 0,0,1,1,1,2 vs classes 1,1,0,0,2,2 -> best map 0->1, 1->0, 2->2: 5/6 correct
    clusters = np.array([0, 0, 1, 1, 1, 2])
    targets = np.array([1, 1, 0, 0, 2, 2])
    assert evaluate_clustering(onehot(clusters, 3), targets)["acc"] == pytest.approx(5 / 6)
    assert list(hungarian_mapping(clusters, targets, 3, 3)) == [1, 0, 2]


def test_many_to_one_for_overclustering():
    targets = np.array([0, 0, 0, 0, 1, 1])
    clusters = np.array([0, 0, 1, 1, 2, 2])
    assert list(majority_mapping(clusters, targets, 3, 2)) == [0, 0, 1]
    scores = evaluate_clustering(onehot(clusters, 3), targets)
    assert scores["acc_many_to_one"] == 1.0
    assert scores["acc"] == pytest.approx(4 / 6)
    assert scores["ari"] == pytest.approx(adjusted_rand_score(targets, clusters))


def test_top5_counts_true_class_among_five_best_clusters():
    probs = np.tile(np.arange(10, 0, -1, dtype=float), (2, 1))
    targets = np.array([0, 7])
    identity_clusters = np.arange(10)
    probs = np.vstack([probs, onehot(identity_clusters, 10)])
    targets = np.concatenate([targets, identity_clusters])
    scores = evaluate_clustering(probs, targets)
    assert scores["top5"] == pytest.approx(11 / 12)


def test_confusion_matrix_normalised_per_true_class():
    predicted = np.array([0, 1, 1, 1])
    targets = np.array([0, 0, 1, 1])
    matrix = confusion_matrix(predicted, targets, 2)
    np.testing.assert_allclose(matrix, [[0.5, 0.5], [0.0, 1.0]])
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)


def test_weighted_knn_votes_by_similarity():
    train = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = np.array([0, 0, 1])
    test = np.array([[1.0, 0.05], [0.05, 1.0]])
    assert weighted_knn_accuracy(train, labels, test, np.array([0, 1]), k=2) == 1.0


def brute_force_knn_accuracy(features, targets, k, temperature):
    """kNN accuracy of each image against all the others, by explicit cosine similarities (self excluded)."""
    normed = features / np.linalg.norm(features, axis=1, keepdims=True)
    sims = normed @ normed.T
    np.fill_diagonal(sims, -np.inf)
    correct = 0
    for i in range(len(features)):
        nearest = np.argsort(-sims[i], kind="stable")[:k]
        votes = np.zeros(targets.max() + 1)
        for j in nearest:
            votes[targets[j]] += np.exp(sims[i, j] / temperature)
        correct += int(votes.argmax() == targets[i])
    return correct / len(features)


def test_knn_on_the_bank_itself_never_lets_an_image_vote_for_itself():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(120, 8)).astype(np.float32)
    targets = rng.integers(0, 3, 120)  # random labels: a self-vote would be decisive, the others are noise
    expected = brute_force_knn_accuracy(features, targets, 7, 0.1)
    scored = weighted_knn_accuracy(features, targets, features, targets, k=7, temperature=0.1, exclude_self=True)
    assert scored == pytest.approx(expected)
    with_self = weighted_knn_accuracy(features, targets, features, targets, k=7, temperature=0.1)
    assert with_self > expected + 0.2


def test_top5_only_with_more_than_five_clusters():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 5, 50)
    assert "top5" not in evaluate_clustering(rng.random((50, 5)), targets)
    assert "top5" not in evaluate_clustering(rng.random((50, 3)), targets)
    assert "top5" in evaluate_clustering(rng.random((50, 6)), targets)

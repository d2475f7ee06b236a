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

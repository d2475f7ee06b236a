"""Consensus of labelings: alignment by Hungarian matching, majority vote, invariance to cluster names."""

import numpy as np
import pytest

from scanlearn.consensus import align, consensus, first_appearance


def test_align_renames_clusters_to_the_references():
    reference = np.array([0, 0, 1, 1, 2, 2])
    renamed = np.array([2, 2, 0, 0, 1, 1])
    assert align(renamed, reference, 3).tolist() == reference.tolist()


def test_first_appearance_numbers_clusters_in_order():
    assert first_appearance(np.array([4, 4, 1, 7, 1])).tolist() == [0, 0, 1, 2, 1]


def test_majority_vote_by_hand():
    # Three labelings of five images; the third disagrees on image 4 and is named differently.
    a = np.array([0, 0, 1, 1, 1])
    b = np.array([0, 0, 1, 1, 0])
    c = np.array([1, 1, 0, 0, 1])  # == [0, 0, 1, 1, 0] after alignment to a
    result = consensus([a, b, c])
    assert result.labels.tolist() == [0, 0, 1, 1, 0]
    assert result.agreement.tolist() == pytest.approx([1, 1, 1, 1, 2 / 3])
    assert result.unanimous.tolist() == [True, True, True, True, False]


def test_ties_go_to_the_reference():
    a = np.array([0, 0, 1, 1])
    b = np.array([0, 0, 1, 0])
    assert consensus([a, b], reference=0).labels.tolist() == [0, 0, 1, 1]
    assert consensus([a, b], reference=1).labels.tolist() == [0, 0, 1, 0]


def test_permuted_cluster_names_give_the_identical_consensus():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, 300)
    labelings = []
    for seed in range(5):
        noisy = truth.copy()
        flip = np.random.default_rng(seed).random(300) < 0.2
        noisy[flip] = np.random.default_rng(seed + 10).integers(0, 4, flip.sum())
        labelings.append(noisy)
    expected = consensus(labelings)
    permuted = [rng.permutation(4)[labels] for labels in labelings]
    again = consensus(permuted)
    assert again.labels.tolist() == expected.labels.tolist()
    assert again.agreement.tolist() == expected.agreement.tolist()
    # Five 80 %-correct votes recover the partition better than any one of them.
    assert (align(expected.labels, truth, 4) == truth).mean() > max((l == truth).mean() for l in labelings)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="at least two"):
        consensus([np.zeros(3, int)])
    with pytest.raises(ValueError, match="same images"):
        consensus([np.zeros(3, int), np.zeros(4, int)])
    with pytest.raises(ValueError, match="reference"):
        consensus([np.zeros(3, int), np.zeros(3, int)], reference=2)

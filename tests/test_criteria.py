"""Label-free criteria against values worked out by hand."""

import math

import numpy as np
import pytest

from scanlearn import criteria

# Four images in two clusters {0,1} and {2,3}; each image's two mined neighbours.
ASSIGN = np.array([0, 0, 1, 1])
NEIGHBORS = np.array([[1, 2], [0, 3], [3, 0], [2, 1]])


def test_agreement_counts_pairs_in_the_same_cluster():
    # Pairs: (0,1) yes, (0,2) no, (1,0) yes, (1,3) no, (2,3) yes, (2,0) no, (3,2) yes, (3,1) no.
    assert criteria.neighbour_agreement(ASSIGN, NEIGHBORS) == pytest.approx(4 / 8)


def test_chance_is_the_sum_of_squared_shares():
    assert criteria.chance_agreement(np.array([0, 0, 0, 1])) == pytest.approx(0.75**2 + 0.25**2)


def test_kappa_is_zero_at_chance_and_one_when_all_agree():
    assert criteria.neighbour_kappa(ASSIGN, NEIGHBORS) == pytest.approx((0.5 - 0.5) / 0.5)
    agreeing = np.array([[1, 1], [0, 0], [3, 3], [2, 2]])
    assert criteria.neighbour_kappa(ASSIGN, agreeing) == pytest.approx(1.0)


def test_kappa_does_not_reward_one_cluster():
    assert criteria.neighbour_agreement(np.zeros(4, int), NEIGHBORS) == 1.0
    assert criteria.neighbour_kappa(np.zeros(4, int), NEIGHBORS) == 0.0


def test_kappa_prefers_the_partition_neighbours_support():
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(3), 50)
    same = np.stack([rng.choice(np.flatnonzero(truth == t), 5) for t in truth])
    shuffled = rng.permutation(truth)
    assert criteria.neighbour_kappa(truth, same) > 0.99
    assert abs(criteria.neighbour_kappa(shuffled, same)) < 0.1


def test_scan_objective_by_hand():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.2, 0.8]])
    neighbors = np.array([[1], [0], [3], [2]])
    consistency = -(2 * math.log(0.82) + 2 * math.log(0.68)) / 4
    mean = np.array([0.55, 0.45])
    entropy = -(mean * np.log(mean)).sum()
    expected = consistency - 2.0 * entropy
    assert criteria.scan_objective(probs, neighbors, entropy_weight=2.0) == pytest.approx(expected, rel=1e-9)


def test_stability_is_mean_pairwise_ari():
    a = np.array([0, 0, 1, 1])
    relabelled = np.array([1, 1, 0, 0])
    split = np.array([0, 1, 2, 3])
    assert criteria.stability([a, relabelled]) == pytest.approx(1.0)
    # ARI(a, split) = 0 (singletons share no pair); mean over the three pairs (1, 0, 0).
    assert criteria.stability([a, relabelled, split]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        criteria.stability([a])


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="neighbors must be"):
        criteria.neighbour_agreement(ASSIGN, NEIGHBORS[:3])


def test_stability_each_is_every_labelings_mean_ari_to_the_others():
    a = np.array([0, 0, 1, 1])
    relabelled = np.array([1, 1, 0, 0])
    split = np.array([0, 1, 2, 3])
    # ARI matrix: (a, relabelled) = 1, every pair with `split` = 0.
    assert criteria.stability_each([a, relabelled, split]) == pytest.approx([0.5, 0.5, 0.0])
    each = criteria.stability_each([a, relabelled, split])
    assert each.mean() == pytest.approx(criteria.stability([a, relabelled, split]))


def test_generalisation_rewards_a_labelling_the_features_separate():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(400, 2))
    by_side = (features[:, 0] > 0).astype(int)
    assert criteria.generalisation(features, by_side) > 0.95
    assert abs(criteria.generalisation(features, rng.permutation(by_side))) < 0.15


def test_generalisation_of_one_cluster_is_zero():
    features = np.random.default_rng(0).normal(size=(50, 3))
    assert criteria.generalisation(features, np.zeros(50, int)) == 0.0
    with pytest.raises(ValueError, match="rows"):
        criteria.generalisation(features, np.zeros(49, int))

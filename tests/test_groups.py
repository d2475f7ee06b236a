"""What is in each group: least confident members, nearest other cluster, near-duplicates."""

from __future__ import annotations

import itertools

import numpy as np

from scanlearn.groups import least_confident, near_duplicates, nearest_clusters


def test_least_confident_members_come_first_per_cluster():
    probs = np.array([[0.9, 0.1, 0.0], [0.5, 0.3, 0.2], [0.2, 0.7, 0.1], [0.6, 0.4, 0.0], [0.1, 0.55, 0.35]])
    lists = least_confident(probs, 2)
    assert [x.tolist() for x in lists] == [[1, 3], [4, 2], []]


def test_nearest_cluster_is_the_one_with_the_most_similar_centre():
    features = np.array([[1.0, 0.0], [1.0, 0.2], [0.8, 0.6], [0.6, 0.8], [-1.0, 0.0]])
    clusters = np.array([0, 0, 1, 1, 2])
    nearest = nearest_clusters(features, clusters, 4)
    assert [n[0] if n else None for n in nearest] == [1, 0, 1, None]
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    centre0, centre1 = unit[:2].sum(0), unit[2:4].sum(0)
    cosine = centre0 @ centre1 / np.linalg.norm(centre0) / np.linalg.norm(centre1)
    assert abs(nearest[0][1] - cosine) < 1e-9


def test_near_duplicates_match_a_brute_force_loop_across_blocks():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(20, 8))
    features = np.concatenate([base, base[:5] + 0.01 * rng.normal(size=(5, 8)), 3 * base[5:7]])
    found = near_duplicates(features, 0.98, block=4)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    expected = {(i, j) for i, j in itertools.combinations(range(len(unit)), 2) if unit[i] @ unit[j] >= 0.98}
    assert {(i, j) for i, j, _ in found} == expected and len(expected) >= 7
    assert all(i < j for i, j, _ in found) and [c for *_, c in found] == sorted((c for *_, c in found), reverse=True)

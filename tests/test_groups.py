"""What is in each group: least confident members, nearest other cluster, near-duplicates."""

from __future__ import annotations

import itertools

import numpy as np

from scanlearn.groups import difference_hashes, least_confident, near_duplicates, nearest_clusters


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


def test_difference_hash_bits_say_where_the_picture_brightens_to_the_right():
    ramp = np.tile(np.arange(9.0), (8, 1))  # brighter to the right everywhere: every bit set
    assert difference_hashes(np.stack([ramp, ramp[:, ::-1]])).tolist() == [[255] * 8, [0] * 8]


def test_near_duplicates_match_a_brute_force_loop_across_blocks():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 255, size=(20, 8, 9))
    flat = np.full((2, 8, 9), 100.0) + np.array([0.0, 60.0])[:, None, None]  # same (empty) hash, unlike brightness
    thumbnails = np.concatenate([base, base[:5] + rng.normal(0, 2, size=(5, 8, 9)), flat])
    found = near_duplicates(thumbnails, max_bits=4, max_level=8.0, block=4)

    def bits(image: np.ndarray) -> list[bool]:
        return [image[r, c + 1] > image[r, c] for r in range(8) for c in range(8)]

    expected = {}
    for i, j in itertools.combinations(range(len(thumbnails)), 2):
        differ = sum(a != b for a, b in zip(bits(thumbnails[i]), bits(thumbnails[j])))
        if differ <= 4 and np.abs(thumbnails[i] - thumbnails[j]).mean() <= 8.0:
            expected[(i, j)] = differ
    assert {(i, j): b for i, j, b in found} == expected and len(expected) >= 5
    assert (25, 26) not in expected, "flat images of different brightness are not duplicates"
    assert [b for *_, b in found] == sorted(b for *_, b in found)

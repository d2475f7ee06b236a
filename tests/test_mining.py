"""Neighbour mining on points whose neighbours are known."""

import numpy as np
import pytest

from scanlearn.mining import drop_self, mine_neighbors, neighbor_precision


def test_neighbors_on_a_circle_are_the_adjacent_points():
    angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    points = np.stack([np.cos(angles), np.sin(angles)], 1) * 3.0
    neighbors = mine_neighbors(points, 2)
    for i, row in enumerate(neighbors):
        assert set(row) == {(i - 1) % 12, (i + 1) % 12}


def test_neighbors_exclude_self_and_use_cosine_not_euclid():
    points = np.array([[1.0, 0.0], [10.0, 0.5], [0.0, 1.0], [0.1, 5.0]])
    neighbors = mine_neighbors(points, 1)
    assert neighbors[:, 0].tolist() == [1, 0, 3, 2]


def test_drop_self_when_self_not_returned():
    idx = np.array([[0, 1, 2], [2, 0, 3]])
    assert drop_self(idx).tolist() == [[1, 2], [2, 0]]


def test_neighbor_precision_fraction_of_same_label():
    neighbors = np.array([[1, 2], [0, 2], [0, 1]])
    targets = np.array([0, 0, 1])
    assert neighbor_precision(neighbors, targets) == pytest.approx(2 / 6)


def test_too_many_neighbors_rejected():
    with pytest.raises(ValueError, match="neighbours"):
        mine_neighbors(np.eye(3), 3)

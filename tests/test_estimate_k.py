"""estimate-k: coherence-based choice of K on well-separated blobs, and the --range parser."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scanlearn.cli import parse_range
from scanlearn.errors import ConfigError
from scanlearn.estimate_k import KScore, SweepSettings, choose_k, score_k, standardise
from scanlearn.mining import mine_neighbors


def blobs(groups: int = 4, per_group: int = 100, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Standardised features of ``groups`` tight Gaussian blobs and their 10 mined neighbours."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 6, size=(groups, 8))
    points = np.concatenate([c + rng.normal(0, 1, size=(per_group, 8)) for c in centres]).astype(np.float32)
    return standardise(points), mine_neighbors(points, 10)


def test_the_number_of_blobs_is_recovered():
    features, neighbors = blobs()
    settings = SweepSettings(heads=2, epochs=15, batch_size=128, lr=1e-2)
    scores = [score_k(features, neighbors, k, settings)[0] for k in range(2, 8)]
    estimate = choose_k(scores, settings)
    assert estimate.best == 4, estimate.table()
    assert all(s.used == s.k for s in scores if s.k <= 4)
    assert "coherence" in estimate.table() and "<" in estimate.table()


def test_no_coherent_k_falls_back_to_the_smallest():
    scores = [KScore(k, 0.0, 0.0, 1.0, k, 0.5, 0.6, 0.5) for k in (3, 5, 7)]
    assert choose_k(scores, SweepSettings()).best == 3


@pytest.mark.parametrize("text, expected", [("5:8", [5, 6, 7, 8]), ("3", [3])])
def test_parse_range(text: str, expected: list[int]):
    assert parse_range(text) == expected


@pytest.mark.parametrize("text", ["1:4", "9:5", "a:b"])
def test_bad_range_is_a_config_error(text: str):
    with pytest.raises(ConfigError, match="range"):
        parse_range(text)

"""estimate-k: coherence-based choice of K on well-separated blobs, and the --range parser."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scanlearn.cli import parse_range
from scanlearn import estimate_k
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


def test_a_stopped_search_resumes_from_the_ks_it_finished(tmp_path, monkeypatch):
    features, neighbors = blobs(per_group=40)
    settings = SweepSettings(heads=1, epochs=2, min_steps=1, batch_size=64)
    trained = []
    real = estimate_k.score_k

    def stop_at_four(features, neighbors, k, settings):
        if k == 4:
            raise KeyboardInterrupt
        trained.append(k)
        return real(features, neighbors, k, settings)

    monkeypatch.setattr(estimate_k, "score_k", stop_at_four)
    with pytest.raises(KeyboardInterrupt):
        estimate_k.sweep(features, neighbors, [2, 3, 4, 5], settings, tmp_path)
    first = [estimate_k.read_k(tmp_path, k, estimate_k.sweep_key(features, neighbors, settings)) for k in (2, 3)]
    monkeypatch.setattr(estimate_k, "score_k", lambda *a: trained.append(a[2]) or real(*a))
    scores, labels = estimate_k.sweep(features, neighbors, [2, 3, 4, 5], settings, tmp_path)
    assert trained == [2, 3, 4, 5], "2 and 3 were trained once, before the stop"
    assert [s.k for s in scores] == [2, 3, 4, 5] and scores[:2] == [kept[0] for kept in first]
    assert all(np.array_equal(labels[k], kept[1]) for k, kept in zip((2, 3), first))
    other = SweepSettings(heads=1, epochs=3, min_steps=1, batch_size=64)  # another search keeps nothing
    assert estimate_k.read_k(tmp_path, 2, estimate_k.sweep_key(features, neighbors, other)) is None

"""k-means on the mined features: the run's baseline, its saved form, and the graph estimate of cluster sizes."""

from __future__ import annotations

import faiss
import numpy as np

from scanlearn.mining import fit_whitening
from scanlearn.clustering.kmeans import (FEW_RESTARTS_FROM, block_agreement, fit_feature_kmeans, kmeans_restarts, graph_shares, keep_agreeing_blocks, kept_blocks,
                                         link_affinity, load_saved_kmeans, save_feature_kmeans)

SIZES = (40, 10, 10)  # one large group and two small ones, as on imbalanced data


def test_kmeans_finds_separated_groups_and_predicts_by_nearest_centroid():
    rng = np.random.default_rng(0)
    centres = np.eye(6)[[0, 2, 4]] * 5
    raw = np.concatenate([rng.normal(size=(n, 6)) * 0.1 + c for n, c in zip(SIZES, centres)])
    model = fit_feature_kmeans(raw, 3, seed=0)
    assert sorted(np.bincount(model.labels).tolist()) == [10, 10, 40]
    assert np.allclose(sorted(model.sizes()), [1 / 6, 1 / 6, 4 / 6])
    assert (model.predict(raw) == model.labels).all()
    assert (model.predict(centres) == model.labels[[0, 40, 50]]).all()


def long_group_and_small_blob(step: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """900 points along a 10-unit line and 100 in a tight blob 3 units past its end (every ``step``-th of them),
    with each point's 10 nearest."""
    rng = np.random.default_rng(0)
    line = np.stack([np.linspace(0, 10, 900), rng.normal(0, 0.1, 900)], 1)
    blob = rng.normal(0, 0.1, (100, 2)) + [13, 0]
    x = np.concatenate([line, blob]).astype(np.float32)[::step]
    distances = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(distances, np.inf)
    return x, np.argsort(distances, 1)[:, :10]


def kmeans_shares(x: np.ndarray, clusters: int) -> np.ndarray:
    """Sorted cluster shares of plain faiss k-means (seed 0), as ``graph_shares`` runs it."""
    fitted = faiss.Kmeans(x.shape[1], clusters, niter=25, nredo=3, seed=0, verbose=False)
    fitted.train(x)
    return np.sort(np.bincount(fitted.index.search(x, 1)[1][:, 0], minlength=clusters) / len(x))


def test_graph_shares_keep_a_long_group_whole_where_kmeans_halves_it():
    x, neighbors = long_group_and_small_blob()
    assert kmeans_shares(x, 2)[-1] < 0.7  # k-means cuts the line near its middle
    np.testing.assert_allclose(graph_shares(x, neighbors, 2, seed=0), [0.9, 0.1])


def test_graph_shares_fall_back_to_kmeans_with_too_few_points_per_subcluster():
    x, neighbors = long_group_and_small_blob(step=20)  # 50 points: one sub-cluster per cluster
    np.testing.assert_allclose(np.sort(graph_shares(x, neighbors, 2, seed=0)), kmeans_shares(x, 2))


def test_link_affinity_counts_pairs_both_ways_and_normalises_by_degree():
    affinity = link_affinity(np.array([0, 0, 1]), np.array([[1], [0], [0]]), 2)
    # pairs (0,0) twice and (1,0) once; symmetrised counts [[4, 1], [1, 0]], degrees 5 and 1
    np.testing.assert_allclose(affinity, [[4 / 5, 1 / np.sqrt(5)], [1 / np.sqrt(5), 0.0]])


def test_saved_kmeans_with_whitening_predicts_the_same(tmp_path):
    rng = np.random.default_rng(1)
    raw = np.concatenate([rng.normal(size=(n, 8)) + 6 * np.eye(8)[i] for i, n in enumerate(SIZES)])
    model = fit_feature_kmeans(raw, 3, seed=0, whitening=fit_whitening(raw, [4, 4]))
    save_feature_kmeans(tmp_path / "kmeans.npz", model)
    loaded = load_saved_kmeans(tmp_path / "kmeans.npz")
    assert len(loaded.whitening.means) == 2
    assert (loaded.predict(raw) == model.predict(raw)).all()
    assert (loaded.labels == model.labels).all()


def test_a_block_of_noise_is_left_out_and_agreeing_blocks_kept():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(4), 50)
    shape = np.eye(8)[groups * 2] * 3 + rng.normal(size=(200, 8)) * 0.3
    same = shape @ rng.normal(size=(8, 8))  # the same groups seen through another linear view
    noise = rng.normal(size=(200, 6))
    features = np.hstack([shape, same, noise])
    whitening = fit_whitening(features, [8, 8, 6], scale_axes=False)
    agreement = block_agreement(whitening, features, k=10)
    assert agreement[2] < 0.5 * min(agreement[0], agreement[1])
    kept = keep_agreeing_blocks(whitening, agreement)
    assert kept_blocks(kept) == [True, True, False]
    mapped = kept(features)
    assert mapped.shape[1] == sum(p.shape[1] for p in whitening.projections[:2])  # the noise maps to no column
    saved = fit_feature_kmeans(features, 4, seed=0, whitening=kept)
    assert sorted(np.bincount(saved.labels).tolist()) == [50, 50, 50, 50]


def test_blocks_that_agree_equally_are_all_kept():
    # agreement (B,) of three blocks, the lowest exactly half of the highest: kept (the rule is "at least half")
    rng = np.random.default_rng(1)
    features = rng.normal(size=(30, 6))
    whitening = fit_whitening(features, [2, 2, 2], scale_axes=False)
    kept = keep_agreeing_blocks(whitening, np.array([0.4, 0.3, 0.2]))
    assert kept_blocks(kept) == [True, True, True]
    assert kept_blocks(keep_agreeing_blocks(whitening, np.array([0.4, 0.3, 0.19]))) == [True, True, False]


def test_small_sets_get_many_kmeans_restarts_and_large_ones_few():
    assert kmeans_restarts(600) == 30 and kmeans_restarts(FEW_RESTARTS_FROM - 1) == 30
    assert kmeans_restarts(FEW_RESTARTS_FROM) == 3 and kmeans_restarts(60_000) == 3  # Fashion-MNIST's 60k: as before

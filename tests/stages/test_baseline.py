"""The run's k-means baseline and the label-free choice between it, SCAN and self-labelling."""

from __future__ import annotations

import json
import warnings

import faiss
import numpy as np
import pytest

from scanlearn.criteria import neighbour_kappa
from scanlearn.runs.artefacts import write_json
from scanlearn.stages import baseline
from scanlearn.stages.baseline import WorseThanFeaturesWarning, best_candidate, chosen_clustering, score_stage, warn_if_worse
from scanlearn.stages.feature_kmeans import (FeatureKMeans, fit_feature_kmeans, graph_shares, link_affinity, load_saved_kmeans,
                                             save_feature_kmeans)

SIZES = (40, 10, 10)  # one large group and two small ones, as on imbalanced data


def groups() -> np.ndarray:
    """True group of each of 60 images: 40 in group 0, 10 in group 1, 10 in group 2."""
    return np.repeat(np.arange(3), SIZES)


def within_group_neighbors(k: int = 3) -> np.ndarray:
    """Each image's k mined neighbours: the next k images of its own group (cyclically), never itself."""
    rows = []
    start = 0
    for size in SIZES:
        members = np.arange(start, start + size)
        rows += [[members[(i + j) % size] for j in range(1, k + 1)] for i in range(size)]
        start += size
    return np.asarray(rows)


def split_large_merge_small() -> np.ndarray:
    """What a uniform entropy target pushes towards: the large group halved, the two small ones merged."""
    return np.repeat(np.arange(3), (20, 20, 20))


def fake_run(tmp_path, monkeypatch, kmeans_labels: np.ndarray, stage_labels: dict[str, np.ndarray]):
    """A run whose mine, scan and selflabel stages finished; k-means and each stage assign the train images as given."""
    run = tmp_path / "run"
    for stage in ("mine", *stage_labels):
        (run / stage).mkdir(parents=True)
        (run / stage / "done.json").write_text("{}")
    np.save(run / "mine" / "neighbors_train.npy", within_group_neighbors())
    save_feature_kmeans(run / "mine" / "kmeans.npz", FeatureKMeans(np.eye(3, dtype=np.float32), kmeans_labels, None))
    monkeypatch.setattr(baseline, "load_split", lambda config, split: None)
    monkeypatch.setattr(baseline, "predict_probabilities",
                        lambda config, run_dir, stage, images: np.eye(3)[stage_labels[stage]])
    return run


def test_kmeans_finds_separated_groups_and_predicts_by_nearest_centroid():
    rng = np.random.default_rng(0)
    centres = np.eye(6)[[0, 2, 4]] * 5
    raw = np.concatenate([rng.normal(size=(n, 6)) * 0.1 + c for n, c in zip(SIZES, centres)])
    model = fit_feature_kmeans(raw, 3, seed=0, block_widths=None, whiten=False)
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
    model = fit_feature_kmeans(raw, 3, seed=0, block_widths=[4, 4], whiten=True)
    save_feature_kmeans(tmp_path / "kmeans.npz", model)
    loaded = load_saved_kmeans(tmp_path / "kmeans.npz")
    assert len(loaded.whitening.means) == 2
    assert (loaded.predict(raw) == model.predict(raw)).all()
    assert (loaded.labels == model.labels).all()


def test_a_later_stage_worse_than_kmeans_is_said_and_kmeans_is_used(tmp_path, monkeypatch):
    run = fake_run(tmp_path, monkeypatch, groups(), {"scan": split_large_merge_small()})
    scores = score_stage(None, run, "scan")
    # k-means keeps every group whole: kappa 1. SCAN cuts the large group, so 12 of its 120 pairs disagree
    # (images 17-19 reach past the cut, 37-39 wrap round to 0-2: 1+2+3 each), and merges the small ones:
    # agreement 168/180, chance 3 * (1/3)^2 = 1/3, kappa (168/180 - 1/3) / (2/3) = 0.9.
    assert scores["kmeans"] == pytest.approx(1.0)
    assert scores["scan"] == pytest.approx(0.9)
    summary = json.loads((run / "candidates.json").read_text())
    assert summary["best"] == "kmeans" and summary["criterion"] == "neighbour_kappa"
    assert chosen_clustering(run, "scan") == "kmeans"
    with pytest.warns(WorseThanFeaturesWarning, match=r"scan clusters .* worse than k-means .* predict uses kmeans"):
        warn_if_worse(run, "scan")


def test_a_later_stage_better_than_kmeans_is_kept_silently(tmp_path, monkeypatch):
    labels = {"scan": split_large_merge_small(), "selflabel": groups()}
    run = fake_run(tmp_path, monkeypatch, split_large_merge_small(), labels)
    score_stage(None, run, "scan")
    scores = score_stage(None, run, "selflabel")
    assert scores["selflabel"] == pytest.approx(1.0)
    assert scores["kmeans"] == pytest.approx(0.9)
    assert chosen_clustering(run, "selflabel") == "selflabel"
    with warnings.catch_warnings():
        warnings.simplefilter("error", WorseThanFeaturesWarning)
        assert warn_if_worse(run, "selflabel") is None


def test_a_rerun_stage_loses_its_stale_score(tmp_path, monkeypatch):
    run = fake_run(tmp_path, monkeypatch, split_large_merge_small(), {"scan": groups()})
    score_stage(None, run, "scan")
    (run / "scan" / "done.json").unlink()
    assert chosen_clustering(run, "scan") == "scan"  # no score for the final stage: nothing to compare
    assert "scan" not in baseline.candidate_scores(run)


def test_a_stage_that_empties_clusters_loses_to_one_that_fills_them(tmp_path, monkeypatch):
    merged = np.repeat([0, 1], (40, 20))  # the two small groups merged: no neighbour pair is cut
    run = fake_run(tmp_path, monkeypatch, split_large_merge_small(), {"scan": split_large_merge_small(),
                                                                       "selflabel": merged})
    score_stage(None, run, "scan")
    scores = score_stage(None, run, "selflabel")
    # Every neighbour pair agrees (1.0); chance (2/3)^2 + (1/3)^2 = 5/9: kappa 1, above SCAN's 0.9, with 2 clusters of 3.
    assert scores["selflabel"] == pytest.approx(1.0) and scores["scan"] == pytest.approx(0.9)
    summary = json.loads((run / "candidates.json").read_text())
    assert summary["clusters_used"] == {"kmeans": 3, "scan": 3, "selflabel": 2} and summary["best"] == "scan"
    assert chosen_clustering(run, "selflabel") == "scan"
    with pytest.warns(WorseThanFeaturesWarning, match=r"selflabel fills only 2 clusters .* where scan fills 3; predict uses scan"):
        warn_if_worse(run, "selflabel")


def test_a_score_saved_without_a_cluster_count_is_compared_by_kappa_alone(tmp_path, monkeypatch):
    run = fake_run(tmp_path, monkeypatch, split_large_merge_small(), {"scan": groups()})
    score_stage(None, run, "scan")
    write_json(run / "mine" / "kmeans.json", {"neighbour_kappa": 0.9})  # as an older version wrote it
    assert baseline.candidate_usage(run) == {"scan": 3}
    assert chosen_clustering(run, "scan") == "scan"  # kappa 1.0 against 0.9


def test_ties_and_near_ties_go_to_the_more_refined_candidate():
    assert best_candidate({"kmeans": 0.5, "scan": 0.5}) == "scan"
    assert best_candidate({"kmeans": 0.5, "scan": 0.4, "selflabel": 0.5}) == "selflabel"
    assert best_candidate({"kmeans": 0.831, "scan": 0.8933, "selflabel": 0.8926}) == "selflabel"  # balanced preset
    assert best_candidate({"kmeans": 0.5, "scan": 0.5 - baseline.MARGIN + 1e-4}) == "scan"
    assert best_candidate({"kmeans": 0.5, "scan": 0.5 - baseline.MARGIN - 1e-4}) == "kmeans"
    assert best_candidate({"kmeans": 0.826, "scan": 0.855, "selflabel": 0.786}) == "scan"
    assert best_candidate({"kmeans": 0.9, "scan": 0.8}, {"kmeans": 9, "scan": 10}) == "scan"
    assert neighbour_kappa(groups(), within_group_neighbors()) == pytest.approx(1.0)

"""The label-free choice between the run's k-means baseline, SCAN and self-labelling."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from scanlearn.criteria import neighbour_kappa
from scanlearn.clustering import choice as baseline
from scanlearn.clustering.choice import WorseThanFeaturesWarning, best_candidate, chosen_clustering, score_stage, warn_if_worse
from scanlearn.engine.run import Run
from scanlearn.clustering.kmeans import FeatureKMeans, fit_feature_kmeans, load_saved_kmeans, save_feature_kmeans, soft_assignments
from scanlearn.runs.artefacts import write_json

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
    monkeypatch.setattr(Run, "split", lambda made, split: None)
    monkeypatch.setattr(baseline, "predict_probabilities", lambda made, stage, images: np.eye(3)[stage_labels[stage]])
    return run


def test_a_later_stage_worse_than_kmeans_is_said_and_kmeans_is_used(tmp_path, monkeypatch):
    run = fake_run(tmp_path, monkeypatch, groups(), {"scan": split_large_merge_small()})
    scores = score_stage(Run(None, run), "scan")
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
    score_stage(Run(None, run), "scan")
    scores = score_stage(Run(None, run), "selflabel")
    assert scores["selflabel"] == pytest.approx(1.0)
    assert scores["kmeans"] == pytest.approx(0.9)
    assert chosen_clustering(run, "selflabel") == "selflabel"
    with warnings.catch_warnings():
        warnings.simplefilter("error", WorseThanFeaturesWarning)
        assert warn_if_worse(run, "selflabel") is None


def test_a_rerun_stage_loses_its_stale_score(tmp_path, monkeypatch):
    run = fake_run(tmp_path, monkeypatch, split_large_merge_small(), {"scan": groups()})
    score_stage(Run(None, run), "scan")
    (run / "scan" / "done.json").unlink()
    assert chosen_clustering(run, "scan") == "scan"  # no score for the final stage: nothing to compare
    assert "scan" not in baseline.candidate_scores(run)


def test_a_stage_that_empties_clusters_loses_to_one_that_fills_them(tmp_path, monkeypatch):
    merged = np.repeat([0, 1], (40, 20))  # the two small groups merged: no neighbour pair is cut
    run = fake_run(tmp_path, monkeypatch, split_large_merge_small(), {"scan": split_large_merge_small(),
                                                                       "selflabel": merged})
    score_stage(Run(None, run), "scan")
    scores = score_stage(Run(None, run), "selflabel")
    # Every neighbour pair agrees (1.0); chance (2/3)^2 + (1/3)^2 = 5/9: kappa 1, above SCAN's 0.9, with 2 clusters of 3.
    assert scores["selflabel"] == pytest.approx(1.0) and scores["scan"] == pytest.approx(0.9)
    summary = json.loads((run / "candidates.json").read_text())
    assert summary["clusters_used"] == {"kmeans": 3, "scan": 3, "selflabel": 2} and summary["best"] == "scan"
    assert chosen_clustering(run, "selflabel") == "scan"
    with pytest.warns(WorseThanFeaturesWarning, match=r"selflabel fills only 2 clusters .* where scan fills 3; predict uses scan"):
        warn_if_worse(run, "selflabel")


def test_a_score_saved_without_a_cluster_count_is_compared_by_kappa_alone(tmp_path, monkeypatch):
    run = fake_run(tmp_path, monkeypatch, split_large_merge_small(), {"scan": groups()})
    score_stage(Run(None, run), "scan")
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
    # a 20-minute demo (seed 2): k-means 0.009 ahead on its own neighbours; self-labelling scored 6.5 ACC points more
    assert best_candidate({"kmeans": 0.8778, "scan": 0.8689, "selflabel": 0.8688}) == "selflabel"
    assert best_candidate({"kmeans": 0.8854, "scan": 0.8743, "selflabel": 0.8808}) == "selflabel"  # moka-96 folder
    assert best_candidate({"kmeans": 0.8827, "scan": 0.8420, "selflabel": 0.8203}) == "kmeans"  # faenza-96 folder
    assert best_candidate({"kmeans": 0.9, "scan": 0.8}, {"kmeans": 9, "scan": 10}) == "scan"
    assert neighbour_kappa(groups(), within_group_neighbors()) == pytest.approx(1.0)


def test_trust_words_flag_a_stage_no_better_than_kmeans_as_weak(tmp_path, monkeypatch):
    run = fake_run(tmp_path, monkeypatch, groups(), {"scan": split_large_merge_small()})
    score_stage(Run(None, run), "scan")  # k-means kappa 1.0, SCAN 0.9 (see the test above)
    assert baseline.choice_reason(run, "scan") == (
        "k-means, the best by the label-free neighbour kappa (k-means 1.000, scan 0.900; higher is better)")
    # a trained stage clearly below k-means: the network learnt little of what the neighbours share
    assert baseline.trust_words(run, "scan").startswith("weak: the trained network's clusters agree with the mined")
    write_json(run / "scan" / "candidate.json", {"neighbour_kappa": 1.0 - baseline.MARGIN / 2, "clusters_used": 3})
    # within the margin of k-means, with neighbours that all share a cluster: consistent
    assert baseline.trust_words(run, "scan").startswith(f"consistent: neighbour kappa {1.0 - baseline.MARGIN / 2:.2f}")
    write_json(run / "mine" / "kmeans.json", {"neighbour_kappa": 0.5, "clusters_used": 3})
    write_json(run / "scan" / "candidate.json", {"neighbour_kappa": 0.5 + baseline.MARGIN / 2, "clusters_used": 3})
    assert baseline.trust_words(run, "scan").startswith("weak: training added nothing to k-means")


def test_trust_words_call_a_stage_that_beats_kmeans_consistent(tmp_path, monkeypatch):
    run = fake_run(tmp_path, monkeypatch, split_large_merge_small(), {"scan": groups()})
    score_stage(Run(None, run), "scan")
    assert baseline.trust_words(run, "scan") == "consistent: neighbour kappa 1.00 (mined neighbours mostly share a cluster)"


def test_trust_words_call_clusters_unrelated_to_the_neighbours_weak(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    scattered = {name: rng.permutation(groups()) for name in ("kmeans", "scan")}
    run = fake_run(tmp_path, monkeypatch, scattered["kmeans"], {"scan": scattered["scan"]})
    score_stage(Run(None, run), "scan")
    kappas = [neighbour_kappa(labels, within_group_neighbors()) for labels in scattered.values()]
    assert max(kappas) < baseline.WEAK_KAPPA
    assert baseline.trust_words(run, "scan").startswith("weak: the features barely separate the images")
    assert baseline.trust_words(tmp_path / "unscored", "scan") is None


def test_kmeans_answers_carry_soft_confidences_at_the_clusters_spread():
    rng = np.random.default_rng(0)
    centres = np.eye(6)[[0, 2, 4]] * 5
    raw = np.concatenate([rng.normal(size=(n, 6)) * 0.1 + c for n, c in zip(SIZES, centres)])
    model = fit_feature_kmeans(raw, 3, seed=0)
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    own = [((unit[i] - model.centroids[model.labels[i]]) ** 2).sum() for i in range(len(raw))]
    assert model.temperature == pytest.approx(float(np.median(own)), rel=1e-4)
    probs = soft_assignments(model.distances(raw), model.temperature)
    assert np.allclose(probs.sum(1), 1, atol=1e-5) and (probs.argmax(1) == model.labels).all()
    assert probs.max(1).min() > 0.99  # tight, far-apart groups: their members stay near-certain
    between = soft_assignments(np.array([[0.3, 0.3, 5.0]]), 0.1)[0]
    assert between == pytest.approx([0.5, 0.5, 0.0], abs=1e-6), "as near two centroids: no confident answer"
    one_spread = soft_assignments(np.array([[0.0, model.temperature]]), model.temperature)[0, 0]
    assert one_spread == pytest.approx(1 / (1 + np.exp(-1)), abs=1e-6)


def test_saved_kmeans_keeps_its_temperature(tmp_path):
    model = FeatureKMeans(np.eye(3, dtype=np.float32), np.arange(3), None, 0.25)
    save_feature_kmeans(tmp_path / "kmeans.npz", model)
    assert load_saved_kmeans(tmp_path / "kmeans.npz").temperature == 0.25
    save_feature_kmeans(tmp_path / "old.npz", FeatureKMeans(np.eye(3, dtype=np.float32), np.arange(3), None))
    assert load_saved_kmeans(tmp_path / "old.npz").temperature is None

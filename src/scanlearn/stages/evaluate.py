"""Evaluation: clustering scores of a trained stage on the test split, and pretext baselines."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans

from ..data.images import ImageSet
from ..engine.embedding import embed
from ..engine.features import FeatureCache, uses_cached_features
from ..engine.inference import predict_probabilities
from ..engine.run import Run
from ..engine.trained import eval_transform, load_contrastive_model
from ..data.fingerprint import fingerprint
from ..metrics import confusion_matrix, evaluate_clustering, hungarian_mapping, weighted_knn_accuracy
from ..report import plot_confusion
from ..runs.artefacts import record_run_metrics, require_stage, save_npy, stage_dir, write_json


def evaluate_stage(run: Run, stage: str) -> dict[str, float]:
    """Score ``stage``'s clustering of the test split; saves probabilities, metrics and confusion plot."""
    images = run.split("test")
    probs = predict_probabilities(run, stage, images)
    directory = stage_dir(run.directory, stage)
    save_npy(directory / "probs_test.npy", probs.astype(np.float32))
    if not images.has_labels:
        sizes = np.bincount(probs.argmax(1), minlength=probs.shape[1])
        return {"cluster_sizes": sizes.tolist()}
    targets = np.asarray(images.targets)
    n_classes = max(int(targets.max()) + 1, len(images.classes or []))
    metrics = evaluate_clustering(probs, targets, n_classes)
    clusters = probs.argmax(1)
    mapping = hungarian_mapping(clusters, targets, probs.shape[1], n_classes)
    matrix = confusion_matrix(mapping[clusters], targets, n_classes)
    write_json(directory / "eval_test.json", {**metrics, "confusion": matrix.tolist(), "mapping": mapping.tolist()})
    plot_confusion(matrix, images.classes, directory / "confusion_test.png", title=f"{stage}: ACC {metrics['acc']:.3f}")
    record_run_metrics(run.directory, stage, metrics)
    return metrics


def pretext_features(run: Run, train: ImageSet, test: ImageSet) -> tuple[np.ndarray, np.ndarray]:
    """Backbone features of both splits: from the feature cache when the run uses it, else embedded."""
    config = run.config
    if uses_cached_features(config):
        cache = FeatureCache(run)
        return np.array(cache.clean(train)), np.array(cache.clean(test))
    model = load_contrastive_model(run)
    transform = eval_transform(run.spec)
    return embed(model.backbone, train, config, transform), embed(model.backbone, test, config, transform)


def evaluate_pretext(run: Run, n_clusters: int) -> dict[str, float]:
    """Label-free baseline on the pretext features: k-means (fit on train, scored on test) + kNN accuracy
    (an image never votes for itself when train and test are the same images)."""
    require_stage(run.directory, "pretext", "evaluate")
    train, test = run.split("train"), run.split("test")
    if not (train.has_labels and test.has_labels):
        return {}
    train_f, test_f = pretext_features(run, train, test)
    same = fingerprint(train) == fingerprint(test)  # e.g. an image folder: its one split is bank and scored split
    knn = weighted_knn_accuracy(train_f, np.asarray(train.targets), test_f, np.asarray(test.targets),
                                k=min(100, len(train) - 1 - int(same)), exclude_self=same)
    normed = lambda f: f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)  # noqa: E731
    kmeans = KMeans(n_clusters, n_init=3, random_state=run.config.runtime.seed).fit(normed(train_f))
    onehot = np.eye(n_clusters)[kmeans.predict(normed(test_f))]
    metrics = {"knn_acc": knn, **evaluate_clustering(onehot, np.asarray(test.targets))}
    record_run_metrics(run.directory, "pretext", metrics)
    return metrics

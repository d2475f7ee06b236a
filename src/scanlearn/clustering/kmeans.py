"""k-means on the features the neighbours were mined on: the run's own baseline, and cluster sizes as a prior.

The features are those mining searched (``mine.features``), whitened as mining whitened them, as unit
rows; k = the number of clusters; seeded. Fitted once on the train split and kept in
``mine/kmeans.npz`` (so it goes with the mining it depends on); new images get the nearest centroid.

Two estimates of the cluster sizes: ``estimated``, the shares of that k-means (which favours clusters of
equal extent), and ``graph``, k-means sub-clusters merged along the mined neighbours (``graph_shares``),
which follows groups of very different sizes more closely.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

import faiss
import numpy as np
import torch
from sklearn.cluster import AgglomerativeClustering

from ..config import Config
from ..data.descriptors import image_descriptors
from ..data.images import ImageSet, TensorImageSet
from ..mining import Whitening, fit_whitening, l2_normalize, mine_neighbors
from ..engine.mined_features import mining_source, train_mining_features
from ..engine.run import Run
from ..runs.artefacts import load_arrays, load_npy, require_stage, save_arrays, save_npy

KMEANS_ARRAYS = "kmeans.npz"
# With mine.descriptors, a block is mined on only when its neighbours agree with the other blocks' at least half as
# often as the most agreeing block's do (chosen on the development folders, docs/folder-suite.md).
KEEP_AGREEMENT = 0.5
MANY_RESTARTS, FEW_RESTARTS_FROM = 30, 10_000
GRAPH_SHARES = "graph_prior.npy"
SUBCLUSTERS_PER_CLUSTER = 10
POINTS_PER_SUBCLUSTER = 40  # faiss k-means wants at least 39 training points per centroid


@dataclass
class FeatureKMeans:
    """k-means on the mined feature space: whitening as mining did it (if any), then unit rows, then centroids.

    Attributes:
        centroids: (C, D) cluster centres of the unit feature rows.
        labels: (N,) cluster of every training image.
        whitening: the mine stage's whitening, refitted the same way, or None.
    """

    centroids: np.ndarray
    labels: np.ndarray
    whitening: Whitening | None
    temperature: float | None = None  # the spread ``probabilities`` softens by; None in files written before it was

    def distances(self, raw: np.ndarray) -> np.ndarray:
        """Squared distance (N, C) of every row of raw mining features to every centroid, in the mined space."""
        x = mined_space(raw, self.whitening)
        return np.maximum((x**2).sum(1, keepdims=True) - 2 * x @ self.centroids.T + (self.centroids**2).sum(1), 0.0)

    def predict(self, raw: np.ndarray) -> np.ndarray:
        """Nearest centroid of every row of raw mining features."""
        return self.distances(raw).argmin(1)

    def probabilities(self, raw: np.ndarray) -> np.ndarray:
        """Soft assignments (N, C) of raw mining features (``soft_assignments`` at the clusters' typical spread): the
        nearest centroid has the highest probability, and an image between two centroids is not reported as certain."""
        return soft_assignments(self.distances(raw), self.temperature)

    def sizes(self) -> np.ndarray:
        """Share of the training images in each cluster (C,), summing to 1."""
        return np.bincount(self.labels, minlength=len(self.centroids)) / len(self.labels)


def spread_temperature(own: np.ndarray) -> float:
    """The median squared distance ``own`` (N,) of the training images to their own centroid: k-means' typical
    spread, the temperature of ``soft_assignments`` (at least 1e-6, for clusters of identical images)."""
    return max(float(np.median(own)), 1e-6)


def soft_assignments(distances: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities (N, C) = softmax(-d^2 / T) over the centroids, d^2 the squared distances (N, C).

    With T the clusters' typical spread (``spread_temperature``), an image as close to a second centroid as to
    its own gets 0.5 on each, and one whose second centroid lies a typical spread farther gets about 0.73.
    """
    logits = -(distances - distances.min(1, keepdims=True)) / temperature
    weights = np.exp(logits)
    return (weights / weights.sum(1, keepdims=True)).astype(np.float32)


def block_widths(config: Config, features: np.ndarray, learned: list[int] | None) -> list[int]:
    """The widths of the blocks ``features`` (the mined rows) are made of: the learned block(s), then one per
    descriptor."""
    extra = descriptor_widths(config)
    return (learned or [features.shape[1] - sum(extra)]) + extra


def descriptor_widths(config: Config) -> list[int]:
    """The width of each of ``mine.descriptors`` (computed on one blank image: they do not depend on content)."""
    if not config.mine.descriptors:
        return []
    blank = TensorImageSet(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), np.array([-1]))
    return image_descriptors(blank, config.mine.descriptors)[1]


def fit_block_transform(config: Config, features: np.ndarray, learned_widths: list[int] | None) -> Whitening | None:
    """The map fitted on the train split's mined rows before the search: PCA whitening per block
    (``mine.whiten``), else with ``mine.descriptors`` each block centred, reduced and L2-normalised so that all
    weigh the same (``fit_whitening`` without scaling the axes) and only the blocks that agree with the others
    kept (``keep_agreeing_blocks``), else None (the rows as they are)."""
    if not (config.mine.whiten or config.mine.descriptors):
        return None
    widths = block_widths(config, features, learned_widths)
    whitening = fit_whitening(features, widths, config.runtime.seed, scale_axes=config.mine.whiten)
    if not config.mine.descriptors:
        return whitening
    return keep_agreeing_blocks(whitening, block_agreement(whitening, features, config.mine.k))


def block_agreement(whitening: Whitening, features: np.ndarray, k: int) -> np.ndarray:
    """For each block (B,): the share of its rows' ``k`` nearest neighbours that each other block also finds, averaged
    over the other blocks. A block that describes what the images have in common agrees with the others; one that
    describes noise (colour of grey images, a network that learnt little) finds neighbours no other block finds."""
    mapped = whitening(features)
    bounds = np.cumsum([0] + [projection.shape[1] for projection in whitening.projections])
    k = min(k, len(features) - 1)
    neighbours = [mine_neighbors(mapped[:, start:stop], k) for start, stop in zip(bounds[:-1], bounds[1:])]
    blocks = len(neighbours)
    shared = np.eye(blocks)
    for i in range(blocks):
        for j in range(i + 1, blocks):
            both = np.concatenate([neighbours[i], neighbours[j]], axis=1)
            shared[i, j] = shared[j, i] = 2.0 - np.mean([len(np.unique(row)) for row in both]) / k
    return (shared.sum(1) - 1.0) / max(1, blocks - 1)


def keep_agreeing_blocks(whitening: Whitening, agreement: np.ndarray) -> Whitening:
    """``whitening`` with the blocks whose agreement is below ``KEEP_AGREEMENT`` times the best block's mapped to
    nothing (a projection with no columns), so neighbours are mined on the blocks that agree."""
    keep = agreement >= KEEP_AGREEMENT * agreement.max()
    projections = [projection if kept else projection[:, :0] for projection, kept in zip(whitening.projections, keep)]
    return Whitening(whitening.means, projections)


def kept_blocks(whitening: Whitening | None) -> list[bool] | None:
    """Which blocks ``whitening`` keeps (None: no block map)."""
    return None if whitening is None else [projection.shape[1] > 0 for projection in whitening.projections]


def mined_space(raw: np.ndarray, whitening: Whitening | None) -> np.ndarray:
    """Raw mining features (N, d) mapped into the space the neighbours were searched in (unit rows)."""
    return l2_normalize(whitening(raw) if whitening is not None else np.asarray(raw, dtype=np.float32))


def fit_mined_space(config: Config, raw: np.ndarray, learned_widths: list[int] | None
                    ) -> tuple[np.ndarray, Whitening | None]:
    """Unit rows of ``raw`` in the mined space, mapped as mining mapped them (``fit_block_transform``), and the map."""
    whitening = fit_block_transform(config, raw, learned_widths)
    return mined_space(raw, whitening), whitening


def kmeans_restarts(rows: int) -> int:
    """Seeded k-means starts, the best kept: ``MANY_RESTARTS`` up to ``FEW_RESTARTS_FROM`` rows, where each costs
    little and 3 left the answer to chance (oxygen icons, 5 seeds: NMI 0.16 to 0.31 with 3 starts, 0.27 with 30),
    else 3."""
    return MANY_RESTARTS if rows < FEW_RESTARTS_FROM else 3


def fit_feature_kmeans(raw: np.ndarray, clusters: int, seed: int, whitening: Whitening | None = None
                       ) -> FeatureKMeans:
    """k-means (k = ``clusters``, best of ``kmeans_restarts`` seeded starts) on unit rows of ``raw`` features mapped by ``whitening``
    (the mined space). faiss, as mining: it samples at most 256 rows per centroid, so ImageNet stays cheap."""
    x = mined_space(raw, whitening)
    fitted = faiss.Kmeans(x.shape[1], clusters, niter=25, nredo=kmeans_restarts(len(x)), seed=seed, verbose=False)
    fitted.train(x)
    distances, labels = fitted.index.search(x, 1)
    return FeatureKMeans(fitted.centroids.astype(np.float32), labels[:, 0].astype(np.int64), whitening,
                         spread_temperature(distances[:, 0]))


def save_feature_kmeans(path: Path, model: FeatureKMeans) -> None:
    """Write centroids, training labels and whitening blocks to one ``.npz`` (no pickled objects)."""
    save_arrays(path, kmeans_arrays(model))


def load_saved_kmeans(path: Path) -> FeatureKMeans:
    """Read what ``save_feature_kmeans`` wrote (verified; a damaged file is one ``CheckpointError`` line)."""
    return kmeans_from_arrays(load_arrays(path))


def kmeans_arrays(model: FeatureKMeans) -> dict[str, np.ndarray]:
    """Centroids, training labels, temperature and whitening blocks as named arrays (a file's contents)."""
    arrays = {"centroids": model.centroids, "labels": model.labels}
    if model.temperature is not None:
        arrays["temperature"] = np.float64(model.temperature)
    if model.whitening is not None:
        for i, (mean, projection) in enumerate(zip(model.whitening.means, model.whitening.projections)):
            arrays[f"mean_{i}"], arrays[f"projection_{i}"] = mean, projection
    return arrays


def kmeans_from_arrays(data: Mapping[str, np.ndarray]) -> FeatureKMeans:
    """The k-means ``kmeans_arrays`` describes."""
    blocks = sum(name.startswith("mean_") for name in data)
    whitening = Whitening([data[f"mean_{i}"] for i in range(blocks)],
                          [data[f"projection_{i}"] for i in range(blocks)]) if blocks else None
    temperature = float(data["temperature"]) if "temperature" in data else None
    return FeatureKMeans(data["centroids"], data["labels"], whitening, temperature)


def raw_mining_features(run: Run, images: ImageSet) -> tuple[np.ndarray, list[int] | None]:
    """The features mining searched (before whitening) of ``images``, embedded by this process alone."""
    features_of, widths = mining_source(run, shard=False)
    return np.asarray(features_of(images)), widths


def feature_kmeans(run: Run) -> FeatureKMeans:
    """The run's k-means baseline, fitted on the train split's mining features once and kept in ``mine/``."""
    directory = require_stage(run.directory, "mine", "the k-means baseline")
    path = directory / KMEANS_ARRAYS
    if path.is_file():
        return load_saved_kmeans(path)
    raw, widths = train_mining_features(run)
    model = fit_feature_kmeans(raw, run.clusters, run.config.runtime.seed, fit_block_transform(run.config, raw, widths))
    save_feature_kmeans(path, model)
    return model


def answering_kmeans(run: Run) -> FeatureKMeans:
    """The run's k-means baseline as the run answers with it, temperature included (one saved before temperatures
    were gets its training images' spread)."""
    model = feature_kmeans(run)
    if model.temperature is not None:
        return model
    train, _ = train_mining_features(run)
    own = model.distances(train)[np.arange(len(model.labels)), model.labels]
    return replace(model, temperature=spread_temperature(own))


def estimated_prior(run: Run, method: str = "estimated") -> torch.Tensor:
    """Cluster sizes the data suggests, largest first (C,): the shares of k-means' clusters on the mined features
    (``estimated``) or of k-means sub-clusters merged along the mined neighbours (``graph``)."""
    shares = graph_prior(run) if method == "graph" else feature_kmeans(run).sizes()
    return torch.tensor(np.sort(shares)[::-1].copy(), dtype=torch.float32)


def graph_prior(run: Run) -> np.ndarray:
    """``graph_shares`` on the train split's mined features and neighbours, computed once and kept in ``mine/``."""
    directory = require_stage(run.directory, "mine", "the graph prior")
    path = directory / GRAPH_SHARES
    if path.is_file():
        return load_npy(path)
    neighbors = load_npy(directory / "neighbors_train.npy")
    shares = graph_shares(train_mined_space(run), neighbors, run.clusters, run.config.runtime.seed)
    save_npy(path, shares)
    return shares


def train_mined_space(run: Run) -> np.ndarray:
    """The train split's features as ``mine`` searched them, in the k-means baseline's space (whitened as mining
    whitened them, unit rows): the one feature space the graph prior and estimate-k's heads read."""
    raw, widths = train_mining_features(run)
    return fit_mined_space(run.config, raw, widths)[0]


def graph_shares(x: np.ndarray, neighbors: np.ndarray, clusters: int, seed: int) -> np.ndarray:
    """Shares (C,) of the ``clusters`` groups ``graph_partition`` makes."""
    return np.bincount(graph_partition(x, neighbors, clusters, seed), minlength=clusters) / len(x)


def graph_partition(x: np.ndarray, neighbors: np.ndarray, clusters: int, seed: int) -> np.ndarray:
    """Group (N,) of every row of ``x``: k-means sub-clusters merged along the mined ``neighbors`` (N, k).

    k-means places centroids so that clusters have similar extent, which splits a large group and
    joins small ones; many sub-clusters (10 per cluster, fewer on small sets) each stay inside one
    group, and average-linkage merging by how often their images are each other's neighbours
    (``link_affinity``) rebuilds groups of any size. Plain k-means below 40 images per sub-cluster.
    """
    rows = np.ascontiguousarray(x, dtype=np.float32)
    subclusters = max(clusters, min(SUBCLUSTERS_PER_CLUSTER * clusters, len(rows) // POINTS_PER_SUBCLUSTER))
    fitted = faiss.Kmeans(rows.shape[1], subclusters, niter=25, nredo=3, seed=seed, verbose=False)
    fitted.train(rows)
    sub = fitted.index.search(rows, 1)[1][:, 0]
    if subclusters == clusters:
        return sub
    affinity = link_affinity(sub, neighbors, subclusters)
    merge = AgglomerativeClustering(clusters, metric="precomputed", linkage="average")
    return merge.fit(1.0 - affinity / affinity.max()).labels_[sub]


def link_affinity(assignments: np.ndarray, neighbors: np.ndarray, groups: int) -> np.ndarray:
    """(G, G) symmetric count of (image, mined neighbour) pairs between groups, normalised by the groups'
    total link counts (a_ij / sqrt(d_i d_j)), so large groups do not attract everything."""
    links = np.zeros((groups, groups))
    np.add.at(links, (np.repeat(assignments, neighbors.shape[1]), assignments[neighbors].ravel()), 1.0)
    links += links.T
    degree = links.sum(1)
    return links / np.sqrt(np.outer(degree, degree) + 1e-12)

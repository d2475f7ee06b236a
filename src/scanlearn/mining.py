"""Nearest-neighbour mining with faiss: cosine top-K on L2-normalised features.

``flat`` is exact inner-product search; ``ivf`` (inverted lists over k-means cells, ``nprobe``
cells searched per query) is approximate and scales to millions of images; its recall is
measured against exact search on a sample of queries. Indexes move to the GPU when faiss has GPU support and sees a GPU.
"""

from __future__ import annotations

import math

import faiss
import numpy as np

from .errors import ConfigError

INDEX_KINDS = ("flat", "ivf")
POINTS_PER_CELL = 39
TRAIN_POINTS_PER_CELL = 64
_GPU_RESOURCES: list = []


def l2_normalize(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as contiguous float32 (what faiss expects)."""
    x = np.ascontiguousarray(features, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_search(database: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-k of each query in ``database`` (IndexFlatIP); returns (sims, indices)."""
    db = l2_normalize(database)
    index = faiss.IndexFlatIP(db.shape[1])
    index.add(db)
    sims, idx = index.search(l2_normalize(queries), k)
    return sims, idx.astype(np.int64)


def auto_nlist(n: int) -> int:
    """Number of IVF cells for ``n`` vectors: about 4 sqrt(n), with at least 39 vectors per cell."""
    return max(1, min(int(4 * math.sqrt(n)), n // POINTS_PER_CELL))


def auto_nprobe(nlist: int) -> int:
    """Cells searched per query: 1/64 of the cells, at least 16 (all of them for small indexes)."""
    return min(nlist, max(16, nlist // 64))


def gpu_available() -> bool:
    """Whether this faiss build has GPU support and sees a GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _maybe_to_gpu(index: faiss.Index) -> faiss.Index:
    """``index`` on the current GPU when possible, else unchanged."""
    if not gpu_available():
        return index
    import torch

    if not _GPU_RESOURCES:
        _GPU_RESOURCES.append(faiss.StandardGpuResources())
    device = torch.cuda.current_device() if torch.cuda.is_available() else 0
    return faiss.index_cpu_to_gpu(_GPU_RESOURCES[0], device, index)


def build_index(
    database: np.ndarray, kind: str = "flat", nlist: int = 0, nprobe: int = 0, seed: int = 0
) -> faiss.Index:
    """Inner-product index of the L2-normalised ``database`` (trained and filled)."""
    if kind not in INDEX_KINDS:
        raise ConfigError(f"unknown index {kind!r}; choose one of {', '.join(INDEX_KINDS)} (mine.index)")
    db = l2_normalize(database)
    n, dim = db.shape
    if kind == "flat":
        index = _maybe_to_gpu(faiss.IndexFlatIP(dim))
        index.add(db)
        return index
    nlist = min(nlist or auto_nlist(n), n)
    index = _maybe_to_gpu(faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT))
    sample = TRAIN_POINTS_PER_CELL * nlist
    rows = np.random.default_rng(seed).permutation(n)[:sample] if sample < n else np.arange(n)
    index.train(db[np.sort(rows)])
    index.add(db)
    index.nprobe = min(nlist, nprobe or auto_nprobe(nlist))
    return index


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (similarities, int64 indices) of the L2-normalised ``queries``."""
    sims, idx = index.search(l2_normalize(queries), k)
    return sims, idx.astype(np.int64)


def mine_neighbors(
    features: np.ndarray, k: int, index: str = "flat", nlist: int = 0, nprobe: int = 0
) -> np.ndarray:
    """Indices (N, k) of each sample's k nearest neighbours in ``features``, itself excluded."""
    n = len(features)
    if not 0 < k < n:
        raise ValueError(f"number of neighbours must be in [1, {n - 1}] for {n} samples; got {k}")
    _, idx = search(build_index(features, index, nlist, nprobe), features, k + 1)
    return drop_self(idx)


def exact_neighbors(features: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Exact k nearest neighbours (itself excluded) of ``features[rows]`` among all of ``features``."""
    _, idx = knn_search(features, features[rows], k + 1)
    table = np.full((len(rows), k + 1), -1, dtype=np.int64)
    for i, (row, found) in enumerate(zip(rows, idx)):
        others = found[found != row][:k]
        table[i, : len(others)] = others
    return table[:, :k]


def recall_against_exact(features: np.ndarray, neighbors: np.ndarray, queries: int = 1000, seed: int = 0) -> float:
    """Mean fraction of the exact k neighbours found in ``neighbors``, on ``queries`` sampled rows."""
    n, k = neighbors.shape
    rows = np.sort(np.random.default_rng(seed).permutation(n)[: min(queries, n)])
    exact = exact_neighbors(features, rows, k)
    hits = [len(np.intersect1d(a, b)) for a, b in zip(neighbors[rows], exact)]
    return float(np.mean(hits) / k)


def drop_self(idx: np.ndarray) -> np.ndarray:
    """Remove each row's own index from a (N, k+1) neighbour table (or its last entry if absent)."""
    rows = np.arange(len(idx))[:, None]
    is_self = idx == rows
    missing_self = ~is_self.any(axis=1)
    is_self[missing_self, -1] = True
    return idx[~is_self].reshape(len(idx), idx.shape[1] - 1)


def neighbor_precision(neighbors: np.ndarray, targets: np.ndarray) -> float:
    """Fraction of mined neighbours sharing their anchor's label."""
    return float((targets[neighbors] == targets[:, None]).mean())

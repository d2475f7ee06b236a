"""Nearest-neighbour mining with faiss: exact cosine top-K on L2-normalised features."""

from __future__ import annotations

import faiss
import numpy as np


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


def mine_neighbors(features: np.ndarray, k: int) -> np.ndarray:
    """Indices (N, k) of each sample's k nearest neighbours in ``features``, itself excluded."""
    n = len(features)
    if not 0 < k < n:
        raise ValueError(f"number of neighbours must be in [1, {n - 1}] for {n} samples; got {k}")
    _, idx = knn_search(features, features, k + 1)
    return drop_self(idx)


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

"""What is in each group: its least confident members, its nearest other cluster, and near-duplicate images.

Features are compared by cosine similarity (L2-normalised), as for the prototypes
(``prototypes.py``): a cluster's centre is the normalised mean of its members' unit features.
"""

from __future__ import annotations

import numpy as np

DUPLICATE_COSINE = 0.98


def unit_rows(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero); features (N, D)."""
    features = np.asarray(features, dtype=np.float64)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def least_confident(probs: np.ndarray, count: int) -> list[np.ndarray]:
    """Per cluster, its ``count`` members (argmax == k) with the lowest top probability, least confident first.

    >>> least_confident(np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]]), 1)[0].tolist()
    [1]
    """
    clusters, confidence = probs.argmax(axis=1), probs.max(axis=1)
    order = np.argsort(confidence, kind="stable")
    return [order[clusters[order] == k][:count] for k in range(probs.shape[1])]


def nearest_clusters(features: np.ndarray, clusters: np.ndarray, k: int) -> list[tuple[int, float] | None]:
    """Per cluster, the other non-empty cluster whose centre is most similar to its own, with that cosine.

    Shape: features (N, D), clusters (N,). None for an empty cluster or when no other cluster has members.

    >>> f = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    >>> nearest_clusters(f, np.array([0, 1, 2]), 3)[0][0]
    1
    """
    unit = unit_rows(features)
    used = [c for c in range(k) if np.any(clusters == c)]
    centres = {c: unit_rows(unit[clusters == c].mean(axis=0, keepdims=True))[0] for c in used}
    result: list[tuple[int, float] | None] = []
    for c in range(k):
        others = [o for o in used if o != c]
        if c not in centres or not others:
            result.append(None)
            continue
        scores = [float(centres[c] @ centres[o]) for o in others]
        best = int(np.argmax(scores))
        result.append((others[best], scores[best]))
    return result


def near_duplicates(features: np.ndarray, threshold: float = DUPLICATE_COSINE, block: int = 1024) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, cosine)`` with i < j whose features have cosine similarity >= ``threshold``, most similar first.

    Compared block by block, so memory stays at ``block`` x N. Shape: features (N, D).

    >>> near_duplicates(np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]]))
    [(0, 1, 1.0)]
    """
    unit = unit_rows(features)
    pairs = []
    for start in range(0, len(unit), block):
        similarity = unit[start:start + block] @ unit.T
        rows, cols = np.nonzero(similarity >= threshold)
        keep = cols > rows + start
        pairs += [(int(r + start), int(c), round(float(similarity[r, c]), 4)) for r, c in zip(rows[keep], cols[keep])]
    return sorted(pairs, key=lambda p: (-p[2], p[0], p[1]))

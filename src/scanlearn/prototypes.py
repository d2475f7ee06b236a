"""Cluster prototypes and galleries: which images best represent each cluster.

docs/method.md (Evaluation): the prototype of a cluster is the image nearest to the mean feature of
its most confident members. Features are compared by cosine similarity (L2-normalised).
"""

from __future__ import annotations

import numpy as np


def members_by_confidence(probs: np.ndarray) -> list[np.ndarray]:
    """Indices of each cluster's members (argmax == k), most confident first; probs (N, K)."""
    clusters = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    order = np.argsort(-confidence, kind="stable")
    return [order[clusters[order] == k] for k in range(probs.shape[1])]


def prototypes(features: np.ndarray, probs: np.ndarray, top: int = 20) -> np.ndarray:
    """Per cluster, the member nearest to the mean feature of its ``top`` most confident members.

    Shape: features (N, D), probs (N, K). Returns (K,) image indices, -1 for an empty cluster.

    >>> f = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [-1.0, 0.0]])
    >>> p = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.1, 0.9]])
    >>> prototypes(f, p, top=3).tolist()
    [2, 3]
    """
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    result = np.full(probs.shape[1], -1, dtype=np.int64)
    for k, members in enumerate(members_by_confidence(probs)):
        if len(members):
            centre = unit[members[:top]].mean(axis=0)
            result[k] = members[int(np.argmax(unit[members] @ centre))]
    return result

"""What is in each group: its least confident members, its nearest other cluster, and near-duplicate images.

Features are compared by cosine similarity (L2-normalised), as for the prototypes
(``prototypes.py``): a cluster's centre is the normalised mean of its members' unit features.
Near-duplicates are found by image content (a difference hash and a small thumbnail), not by features.
"""

from __future__ import annotations

import numpy as np

# Near-duplicates: difference hashes at most 4 of 64 bits apart and 8x9 thumbnails at most 8 grey levels apart.
DUPLICATE_BITS = 4
DUPLICATE_LEVEL = 8.0


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


def difference_hashes(thumbnails: np.ndarray) -> np.ndarray:
    """64-bit difference hash of every image: is each pixel of its (8, 9) grey thumbnail brighter than the one on
    its left. Shape: thumbnails (N, 8, 9) -> (N, 8) uint8, the 64 bits packed.

    It follows an image's layout of light and dark, not its learned features, so two photos of different
    things that a weak network maps to the same place do not match.
    """
    bits = np.asarray(thumbnails)[:, :, 1:] > np.asarray(thumbnails)[:, :, :-1]
    return np.packbits(bits.reshape(len(bits), 64), axis=1)


def near_duplicates(thumbnails: np.ndarray, max_bits: int = DUPLICATE_BITS, max_level: float = DUPLICATE_LEVEL,
                    block: int = 256) -> list[tuple[int, int, int]]:
    """Pairs ``(i, j, bits)`` with i < j whose difference hashes differ in at most ``max_bits`` of 64 and whose
    thumbnails differ by at most ``max_level`` grey levels on average; fewest differing bits first.

    The second test keeps flat or smooth images of different brightness (whose hashes say little) apart.
    Compared block by block, so memory stays at ``block`` x N x 8 bytes. Shape: thumbnails (N, 8, 9) in 0..255.

    >>> flat = np.zeros((8, 9))
    >>> near_duplicates(np.stack([flat, flat + 2, flat + 100]))
    [(0, 1, 0)]
    """
    grey = np.asarray(thumbnails, dtype=np.float32)
    hashes = difference_hashes(grey)
    ones = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1).astype(np.uint8)
    pairs = []
    for start in range(0, len(grey), block):
        bits = ones[hashes[start:start + block, None, :] ^ hashes[None, :, :]].sum(-1, dtype=np.uint8)
        rows, cols = np.nonzero(bits <= max_bits)
        keep = cols > rows + start
        for r, c in zip(rows[keep], cols[keep]):
            if np.abs(grey[r + start] - grey[c]).mean() <= max_level:
                pairs.append((int(r + start), int(c), int(bits[r, c])))
    return sorted(pairs, key=lambda p: (p[2], p[0], p[1]))

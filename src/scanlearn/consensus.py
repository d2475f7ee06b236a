"""Consensus of several clusterings of the same images, without labels.

Cluster numbers are arbitrary, so every labelling is first renamed to agree with a reference
labelling as much as possible (Hungarian matching on their contingency table); each image then
takes the cluster most labellings give it; a tie goes to the reference's vote if it is among the
tied clusters, else to the earliest labelling in the list that votes for one of them. The result
is numbered in order of first appearance, so it does not depend on how any input named its
clusters. ``agreement`` is the share of labellings that vote for the winner; images where it is
1 (``unanimous``) are the safest pseudo-labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .metrics import hungarian_mapping


@dataclass(frozen=True)
class Consensus:
    """Consensus clusters ``labels`` (N,), the share of labellings agreeing with each ``agreement`` (N,)."""

    labels: np.ndarray
    agreement: np.ndarray

    @property
    def unanimous(self) -> np.ndarray:
        """Mask of the images every labelling puts in the same cluster."""
        return self.agreement >= 1.0


def align(labels: np.ndarray, reference: np.ndarray, n_clusters: int) -> np.ndarray:
    """``labels`` renamed so that as many images as possible carry the reference's cluster number."""
    return hungarian_mapping(labels, reference, n_clusters, n_clusters)[labels]


def first_appearance(labels: np.ndarray) -> np.ndarray:
    """Clusters renumbered 0, 1, ... in the order they first occur (a canonical name for a partition)."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inverse]


def consensus(labelings: Sequence[np.ndarray], reference: int = 0) -> Consensus:
    """Majority vote of ``labelings`` (each (N,), the same N images and at most the same clusters)
    after aligning each to ``labelings[reference]``; the reference also breaks ties first."""
    if len(labelings) < 2:
        raise ValueError("a consensus needs at least two labelings")
    arrays = [np.asarray(labels, dtype=np.int64) for labels in labelings]
    if len({len(a) for a in arrays}) != 1:
        raise ValueError(f"labelings must label the same images; got lengths {sorted({len(a) for a in arrays})}")
    if not 0 <= reference < len(arrays):
        raise ValueError(f"reference must index one of the {len(arrays)} labelings; got {reference}")
    n_clusters = int(max(a.max() for a in arrays)) + 1
    order = [reference, *(i for i in range(len(arrays)) if i != reference)]
    aligned = np.stack([align(arrays[i], arrays[reference], n_clusters) for i in order])
    votes = np.zeros((len(arrays[0]), n_clusters), dtype=np.int64)
    for voter in aligned:
        votes[np.arange(len(voter)), voter] += 1
    top = votes.max(1)
    winner = np.full(len(top), -1, dtype=np.int64)
    for voter in aligned:
        take = (winner < 0) & (votes[np.arange(len(voter)), voter] == top)
        winner[take] = voter[take]
    return Consensus(first_appearance(winner), top / len(arrays))

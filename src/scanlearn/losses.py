"""Losses of the SCAN pipeline as pure functions of tensors.

[0] SimCLR: Chen et al., "A Simple Framework for Contrastive Learning of Visual
    Representations", ICML 2020, arXiv:2002.05709.
[1] SCAN: Van Gansbeke et al., "SCAN: Learning to Classify Images Without Labels",
    ECCV 2020, arXiv:2005.12320.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

EPS = 1e-8


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, or in its own dtype when that is wider (float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def nt_xent_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.1,
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    rank: int = 0,
) -> torch.Tensor:
    """NT-Xent [0]: each view must pick its partner among the other 2N-1 embeddings.

    loss = mean_i -log( exp(s(i, j(i))/t) / sum_{k != i} exp(s(i, k)/t) ) over all 2N
    embeddings, with s the cosine similarity and j(i) the other view of the same image.
    Under data parallelism ``gather`` maps this rank's (N, D) block to the (W*N, D)
    concatenation over ranks (all-gather with gradient) and ``rank`` places the block in it:
    this rank's 2N embeddings are scored against all 2WN, so the mean of the per-rank losses
    is the loss of the global batch.

    Shape:
        z1, z2: (N, D) projections of two views (normalised here, any scale accepted).
    Returns:
        scalar loss. Perfectly aligned pairs orthogonal to everything else give
        -log(e^{1/t} / (e^{1/t} + 2N-2)).

    >>> nt_xent_loss(torch.eye(4)[:2], torch.eye(4)[:2]).item() < 0.01
    True
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be (N, D); got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    local = F.normalize(at_least_float32(torch.cat([z1, z2])), dim=1)
    keys1, keys2 = (gather(v) if gather else v for v in local.split(n))
    logits = local @ torch.cat([keys1, keys2]).t() / temperature
    rows = torch.arange(n, device=local.device) + rank * n
    own = torch.cat([rows, rows + len(keys1)])
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[torch.arange(2 * n, device=local.device), own] = True
    partner = torch.cat([own[n:], own[:n]])
    return F.cross_entropy(logits.masked_fill(is_self, float("-inf")), partner)


class ScanLoss(NamedTuple):
    """The three terms of the SCAN objective; ``total = consistency - weight * entropy``."""

    total: torch.Tensor
    consistency: torch.Tensor
    entropy: torch.Tensor


def entropy_of_distribution(dist: torch.Tensor) -> torch.Tensor:
    """Entropy -sum_c d_c log d_c of probability vectors (last axis), clamped at 1e-8 inside the log."""
    clamped = dist.clamp_min(EPS)
    return -(clamped * clamped.log()).sum(dim=-1)


def entropy_of_mean(probs: torch.Tensor) -> torch.Tensor:
    """Entropy of the batch-mean prediction, H(mean_i p_i); probs (N, C)."""
    return entropy_of_distribution(probs.mean(dim=0))


def divergence_from_prior(mean: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """KL(mean || prior) against the closest relabelling of ``prior``: -H(mean) - sum_c m_(c) log pi_(c).

    Both are sorted largest first, so the prior says how large the clusters are, not which is which
    (by the rearrangement inequality this is the smallest KL over all permutations of the prior).
    The entropy is ``entropy_of_distribution``'s (clamped at 1e-8); with a uniform prior the cross term
    is exactly log C, so the divergence is log C - H(mean): SCAN's entropy term up to a constant.

    Shape:
        mean: (C,) or (H, C) probability vectors; prior: (C,) positive, summing to 1.
    Returns:
        () or (H,).

    >>> round(divergence_from_prior(torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5])).item(), 6)
    0.0
    """
    ordered = mean.sort(dim=-1, descending=True).values
    target = prior.to(mean).sort(descending=True).values.clamp_min(EPS)
    return -(ordered * target.log()).sum(dim=-1) - entropy_of_distribution(mean)


def consistency_of(agreement: torch.Tensor) -> torch.Tensor:
    """mean over the last axis of -log <p, q>: binary cross-entropy against 1, log clamped at -100.

    Unlike a clamp of the dot product, the gradient survives large disagreements down to e^-100.
    """
    with torch.autocast(agreement.device.type, enabled=False):  # autocast refuses binary_cross_entropy
        bce = F.binary_cross_entropy(agreement.clamp(0.0, 1.0), torch.ones_like(agreement), reduction="none")
    return bce.mean(dim=-1)


def neighbour_agreement(probs: torch.Tensor, neighbors: torch.Tensor) -> torch.Tensor:
    """<p_i, p_j> for every image i and each of its mined neighbours j, flattened: probs (N, C), neighbors (N, K)."""
    return (probs[:, None, :] * probs[neighbors]).sum(-1).flatten()


def scan_loss(
    anchor_logits: torch.Tensor,
    neighbor_logits: torch.Tensor,
    entropy_weight: float = 5.0,
    batch_mean: Callable[[torch.Tensor], torch.Tensor] | None = None,
    prior: torch.Tensor | None = None,
) -> ScanLoss:
    """SCAN loss [1], eq. 2: neighbours agree, and the batch uses all clusters.

    consistency = mean_i -log <p_i, q_i> (log clamped at -100), p = softmax(anchor),
    q = softmax(neighbour); entropy = H(mean_i p_i); total = consistency - entropy_weight * entropy.
    With a ``prior`` (C,) of cluster sizes the batch is pulled towards those sizes instead of equal ones:
    total = consistency + entropy_weight * divergence_from_prior(mean_i p_i, prior), which for a uniform
    prior is the paper's total plus the constant entropy_weight * log C.
    Computed in float32, or float64 for float64 logits.
    Gradients flow through both anchors and neighbours. ``batch_mean`` maps this batch's mean
    probability vector to the global one (all-gather under data parallelism).

    Shape:
        anchor_logits, neighbor_logits: (N, C), or (H, N, C) for H heads at once.
    Returns:
        ScanLoss(total, consistency, entropy): scalars, or (H,) with one value per head.
    """
    if anchor_logits.shape != neighbor_logits.shape:
        raise ValueError("anchor and neighbour logits must have the same shape")
    p = at_least_float32(anchor_logits).softmax(dim=-1)
    q = at_least_float32(neighbor_logits).softmax(dim=-1)
    consistency = consistency_of((p * q).sum(dim=-1))
    mean = p.mean(dim=-2)
    mean = batch_mean(mean) if batch_mean else mean
    entropy = entropy_of_distribution(mean)
    if prior is not None:
        return ScanLoss(consistency + entropy_weight * divergence_from_prior(mean, prior), consistency, entropy)
    return ScanLoss(consistency - entropy_weight * entropy, consistency, entropy)


class SelfLabelLoss(NamedTuple):
    """Self-labelling loss and how many samples of the batch were confident."""

    loss: torch.Tensor
    num_confident: int
    max_confidence: float


def confidence_cross_entropy(
    weak_logits: torch.Tensor,
    strong_logits: torch.Tensor,
    threshold: float | torch.Tensor = 0.99,
    balance: bool = True,
    count_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    class_prior: torch.Tensor | None = None,
) -> SelfLabelLoss:
    """Self-labelling loss [1], sec. 3.3: cross-entropy on confident pseudo-labels.

    Samples whose weak-view max probability exceeds ``threshold`` get their argmax as label;
    the strong view is trained on them. ``threshold`` may be a (C,) tensor: one threshold per
    predicted class. With ``balance``, class c is weighted by
    n_confident * prior_c / count_c (classes without confident samples get no weight), and the loss
    is the weighted mean: each class weighs in proportion to ``class_prior`` (C,), equally when it is
    None (the paper's balancing; a uniform prior gives exactly the same loss). With no confident sample the loss is an exact zero that keeps the
    graph (so the step is a no-op instead of a crash).

    Under data parallelism ``count_reduce`` sums the per-class confident counts over ranks:
    weights, ``num_confident`` and the normaliser are then global, every rank takes the same
    branch, and the returned loss is this rank's share (the shares add up to the loss of the
    global batch, so multiply by the world size before DDP averages the gradients).

    Shape:
        weak_logits, strong_logits: (N, C). ``weak_logits`` is treated as a constant.
    """
    probs = at_least_float32(weak_logits.detach()).softmax(dim=1)
    confidence, labels = probs.max(dim=1)
    if isinstance(threshold, torch.Tensor):
        threshold = threshold.to(confidence.device)[labels]
    mask = confidence > threshold
    target = labels[mask]
    local_counts = torch.bincount(target, minlength=probs.shape[1]).float()
    counts = count_reduce(local_counts) if count_reduce else local_counts
    n_conf = int(counts.sum())
    if n_conf == 0:
        return SelfLabelLoss(strong_logits.sum() * 0.0, 0, float(confidence.max()))
    weight = torch.ones_like(counts)
    if balance:
        share = torch.ones_like(counts) if class_prior is None else class_prior.to(counts)
        weight = torch.where(counts > 0, n_conf * share / counts.clamp_min(1), torch.zeros_like(counts))
    if not bool(mask.any()):
        return SelfLabelLoss(strong_logits.sum() * 0.0, n_conf, float(confidence.max()))
    logits = at_least_float32(strong_logits[mask])
    summed = F.cross_entropy(logits, target, weight=weight.to(logits.dtype), reduction="sum")
    return SelfLabelLoss(summed / (weight * counts).sum(), n_conf, float(confidence.max()))

"""SCAN heads on features held in memory: the partner batches, the plain training loop, and a head's label-free score.

The SCAN stage trains through its Lightning module (``stages/scan.ScanModule``) on the same batches
(``pair_dataset``); the head search before SCAN, every K of ``estimate-k`` and every candidate of
``select`` train here (``fit_linear_heads``), and every head is scored by ``head_losses``.
"""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import ScanConfig
from ..data.images import ImageSet
from ..engine import distributed
from ..engine.features import apply_in_chunks, head_cache, rows
from ..engine.mined_features import TRAIN_FEATURES
from ..engine.trained import heads_read_multiscale
from ..engine.guards import check_finite
from ..engine.loaders import batch_loader, BatchFetchDataset
from ..engine.run import Run
from ..engine.lr_schedules import lr_schedule
from ..engine.training import make_optimizer
from ..losses import consistency_of, divergence_from_prior, entropy_of_mean, neighbour_agreement, scan_loss
from ..models.heads import BlockWhitening, ClusterHeads
from ..runs.artefacts import load_npy, require_stage
from .kmeans import estimated_prior, feature_kmeans

Fetch = Callable[[np.ndarray], torch.Tensor]


def partner_table(neighbors: np.ndarray, include_anchor: bool) -> np.ndarray:
    """Candidates for each anchor's partner: its K neighbours, plus itself when asked (K+1)."""
    if include_anchor:
        return np.concatenate([np.arange(len(neighbors))[:, None], neighbors], axis=1)
    return neighbors


def pair_dataset(rows: Fetch, neighbors: np.ndarray, include_anchor: bool) -> BatchFetchDataset:
    """Batches (anchors, one random partner of each, indices) for the SCAN loss."""
    table = partner_table(neighbors, include_anchor)

    def fetch(idx: np.ndarray):
        choice = torch.randint(table.shape[1], (len(idx),)).numpy()
        return rows(idx), rows(table[idx, choice]), torch.from_numpy(idx)

    return BatchFetchDataset(fetch, len(neighbors))


def head_losses(probs: torch.Tensor, neighbors: np.ndarray, prior: torch.Tensor | None = None) -> torch.Tensor:
    """SCAN loss (entropy weight 1; with ``prior``, the divergence from it) of each head over all anchor-neighbour
    pairs; probs (H, N, C)."""
    consistency, spread = head_terms(probs, neighbors, prior)
    return consistency + spread


def head_terms(probs: torch.Tensor, neighbors: np.ndarray, prior: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The two terms of each head's loss (H,) over all anchor-neighbour pairs: consistency, and the spread term
    (minus the entropy of the mean prediction, or the divergence from ``prior``); probs (H, N, C)."""
    index = torch.from_numpy(neighbors)
    consistency = torch.stack([consistency_of(neighbour_agreement(head, index)) for head in probs])
    spread = torch.stack([-entropy_of_mean(head) if prior is None else divergence_from_prior(head.mean(0), prior)
                          for head in probs])
    return consistency, spread


def clean_features(run: Run, images: ImageSet) -> np.ndarray:
    """Cached features of ``images`` that frozen heads read (``head_cache``); the random stream is the same whether or
    not the cache existed (building the backbone to fill it draws random initial weights)."""
    with torch.random.fork_rng(devices=[]):
        return head_cache(run).clean(images)


def train_head_features(run: Run, images: ImageSet) -> np.ndarray:
    """``clean_features`` of the train split; heads on the mined space take the rows ``mine`` saved rather than
    embedding the split again."""
    if not heads_read_multiscale(run.config):
        return clean_features(run, images)
    mined = require_stage(run.directory, "mine", "scan") / TRAIN_FEATURES
    return head_cache(run).keep(images, load_npy(mined))


def head_input_map(run: Run) -> BlockWhitening | None:
    """The map heads on the mined space apply to their features: mining's whitening (as the k-means baseline holds
    it); None for heads on the backbone's features, or when mining did not whiten."""
    if run.config.scan.head_features != "mined":
        return None
    whitening = feature_kmeans(run).whitening
    return None if whitening is None else BlockWhitening.of_blocks(whitening.means, whitening.projections)


@torch.no_grad()
def frozen_head_probabilities(heads: ClusterHeads, features: np.ndarray) -> torch.Tensor:
    """Softmax of every head on cached features (H, N, C), heads in eval mode."""
    return apply_in_chunks(lambda f: heads.eval()(f).float().softmax(-1), features)


def fit_linear_heads(features: np.ndarray, neighbors: np.ndarray, clusters: int, num_heads: int, epochs: int,
                     scan: ScanConfig, seed: int, progress: bool = False, prior: torch.Tensor | None = None,
                     input_map: BlockWhitening | None = None) -> ClusterHeads:
    """``num_heads`` linear heads trained for ``epochs`` with the SCAN loss on fixed ``features``, in this process.

    The heads' initial weights and the SCAN stage's batches and partners (``batch_loader``, ``pair_dataset``) come
    from ``seed`` alone, so a resumed run trains the heads it would have trained uninterrupted; the SCAN stage's loss
    (one pass over anchors and partners) and optimiser (``scan.optim``), in fp32, without a Lightning Trainer: its
    per-epoch checkpoints would cost more than these seconds-long fits. The head search, estimate-k and
    select train their heads here; the SCAN stage itself trains through ``ScanModule``.
    """
    with torch.random.fork_rng(devices=[]):  # the seed alone starts the heads, whatever ran before in the process
        torch.manual_seed(seed)
        heads = ClusterHeads(features.shape[1], clusters, num_heads, scan.normalize_features, copy.deepcopy(input_map))
    loader = batch_loader(pair_dataset(lambda idx: rows(features, idx), neighbors, scan.neighbor_includes_anchor),
                          scan.batch_size, shuffle=True, num_workers=0, seed=seed, drop_last=True, shard=False)
    optimizer = make_optimizer(heads.parameters(), scan.optim)
    schedule = lr_schedule(optimizer, scan.optim, epochs, epochs * len(loader))
    for epoch in tqdm(range(epochs), desc="linear heads", unit="epoch", leave=False, disable=not progress):
        loader.sampler.set_epoch(epoch)
        for anchors, partners, _ in loader:
            logits = heads(torch.cat([anchors, partners])).chunk(2, dim=1)
            total = scan_loss(*logits, scan.entropy_weight, prior=prior).total.sum()
            check_finite(total, "scan")
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            if scan.optim.interval == "step":
                schedule.step()
        if scan.optim.interval == "epoch":
            schedule.step()
    return heads.eval()


def scan_prior(run: Run) -> torch.Tensor | None:
    """The cluster sizes SCAN pulls towards with ``scan.prior`` ``estimated`` or ``graph`` (from the mined features,
    on rank 0 first and read back by the others), else None (the paper's uniform entropy term)."""
    if run.config.scan.prior == "uniform":
        return None
    with distributed.rank_zero_first():
        return estimated_prior(run, run.config.scan.prior)

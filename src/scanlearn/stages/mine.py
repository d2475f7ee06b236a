"""Stage 2: embed the data with the pretext model and mine every image's K nearest neighbours."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..config import Config
from ..data.images import ImageSet
from ..engine import distributed
from ..clustering.kmeans import fit_block_transform, kept_blocks
from ..engine.mined_features import mining_source, TRAIN_FEATURES
from ..engine.run import Run
from ..engine.training import finish_stage
from ..errors import DataError
from ..mining import neighbor_precision, recall_against_exact, search_neighbors, Whitening
from ..runs.artefacts import record_run_metrics, save_npy, stage_dir

LOG = logging.getLogger(__name__)


def run_mine(run: Run) -> dict[str, float]:
    """Save ``neighbors_train.npy`` (N, K), ``neighbors_test.npy`` (M, val_k) and the train split's features
    (``features_train.npy``, before whitening); report precision.

    Every rank embeds its shard; rank 0 builds the index once, searches, and writes.
    """
    config = run.config
    directory = stage_dir(run.directory, "mine")
    features_of, learned_widths = mining_source(run)
    whitening: Whitening | None = None
    metrics: dict[str, float] = {}
    for split, k in (("train", config.mine.k), ("test", config.mine.val_k)):  # train first: whitening is fitted on it
        images = run.split(split)
        if k >= len(images):
            key = "k" if split == "train" else "val_k"
            raise DataError(f"{k} neighbours requested but the {split} split has only {len(images)} images; lower --set mine.{key}")
        features = features_of(images)
        if not distributed.is_rank_zero():
            continue
        if split == "train":
            save_npy(directory / TRAIN_FEATURES, features)
            whitening = fit_block_transform(config, features, learned_widths)
            say_kept_blocks(config, whitening)
        if whitening is not None:
            features = whitening(features)
        metrics.update(mine_split(features, images, split, k, config, directory))
    if not distributed.is_rank_zero():
        return metrics
    finish_stage(run, "mine", metrics)
    if metrics:
        record_run_metrics(run.directory, "mine", metrics)
    return metrics


def say_kept_blocks(config: Config, whitening: Whitening | None) -> None:
    """Log which blocks the neighbours are mined on when some of ``mine.descriptors``' blocks were left out."""
    kept = kept_blocks(whitening)
    if not config.mine.descriptors or kept is None or all(kept):
        return
    names = ["learned features"] * (len(kept) - len(config.mine.descriptors)) + list(config.mine.descriptors)
    used = ", ".join(name for name, keep in zip(names, kept) if keep)
    left = ", ".join(name for name, keep in zip(names, kept) if not keep)
    LOG.info(f"mine: neighbours on {used}; left out {left} (their neighbours agree little with the others')")


def mine_split(features: np.ndarray, images: ImageSet, split: str, k: int, config: Config, directory: Path) -> dict[str, float]:
    """Mine and save the neighbours of one split; their precision, and recall when the index is approximate."""
    mine = config.mine
    mined = search_neighbors(features, k, mine.index, mine.nlist, mine.nprobe)
    neighbors = mined.neighbors
    save_npy(directory / f"neighbors_{split}.npy", neighbors)
    metrics: dict[str, float] = {}
    if mined.method == "bf16":  # exact bf16 search: rows it could not certify went to faiss
        metrics[f"exact_fallback_rows_{split}"] = float(mined.counts["fallback_rows"])
    if mine.index != "flat" and mine.recall_queries > 0:
        metrics[f"recall_{split}@{k}"] = recall_against_exact(features, neighbors, mine.recall_queries, config.runtime.seed)
    if images.has_labels:
        metrics[f"precision_{split}@{k}"] = neighbor_precision(neighbors, np.asarray(images.targets))
    return metrics


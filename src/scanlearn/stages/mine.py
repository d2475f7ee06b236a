"""Stage 2: embed the data with the pretext model and mine every image's K nearest neighbours."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import AugmentConfig, Config
from ..data.datasets import ImageSet
from ..errors import DataError
from ..mining import mine_neighbors, neighbor_precision
from ..models import ContrastiveModel
from .common import augmenter, data_spec, embed, finish_stage, load_split, record_run_metrics, save_npy, stage_dir
from .pretext import load_contrastive_model


def mining_features(model: ContrastiveModel, images: ImageSet, config: Config) -> np.ndarray:
    """Projection (SimCLR) or backbone (MoCo) features of ``images``, without augmentation."""
    fn = model if config.mine.features == "projection" else model.backbone
    return embed(fn, images, config, augmenter(AugmentConfig(kind="none"), data_spec(config)))


def run_mine(config: Config, run_dir: str | Path) -> dict[str, float]:
    """Save ``neighbors_train.npy`` (N, K) and ``neighbors_test.npy`` (M, val_k); report precision."""
    directory = stage_dir(run_dir, "mine")
    model = load_contrastive_model(config, run_dir)
    metrics: dict[str, float] = {}
    for split, k in (("train", config.mine.k), ("test", config.mine.val_k)):
        images = load_split(config, split)
        if k >= len(images):
            key = "k" if split == "train" else "val_k"
            raise DataError(f"{k} neighbours requested but the {split} split has only {len(images)} images; lower --set mine.{key}")
        features = mining_features(model, images, config)
        neighbors = mine_neighbors(features, k)
        save_npy(directory / f"neighbors_{split}.npy", neighbors)
        if images.has_labels:
            metrics[f"precision_{split}@{k}"] = neighbor_precision(neighbors, np.asarray(images.targets))
    finish_stage(run_dir, "mine", config, metrics)
    if metrics:
        record_run_metrics(run_dir, "mine", metrics)
    return metrics

"""Predictions of a finished stage: cluster probabilities of images, on cached backbone features when
the stage trained heads on a frozen backbone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import Config
from ..models import ClusterHeads, ClusteringModel
from .embedding import embed
from .features import FeatureCache, apply_in_chunks
from .splits import data_spec
from .trained import eval_transform, load_clustering_model, load_frozen_heads


def predict_probabilities(config: Config, run_dir: str | Path, stage: str, images) -> np.ndarray:
    """Cluster probabilities (N, C) of ``images`` under the model of ``stage`` (heads on cached features if frozen)."""
    heads = load_frozen_heads(config, run_dir, stage)
    if heads is not None:
        return features_probabilities(heads, FeatureCache(config, run_dir).clean(images))
    return model_probabilities(load_clustering_model(config, run_dir, stage), config, images)


def features_probabilities(heads: ClusterHeads, features: np.ndarray) -> np.ndarray:
    """Softmax (N, C) of the first of ``heads`` on cached backbone features (N, D)."""
    return apply_in_chunks(lambda f: heads(f)[0].float().softmax(-1), features).numpy()


def model_probabilities(model: ClusteringModel, config: Config, images) -> np.ndarray:
    """Softmax (N, C) of a clustering model's first head on ``images``, without augmentation."""
    model = model.eval()
    logits = embed(lambda x: model(x)[0], images, config, eval_transform(data_spec(config)))
    return torch.from_numpy(logits).softmax(-1).numpy()

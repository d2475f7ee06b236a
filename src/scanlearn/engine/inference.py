"""Predictions of a finished stage: cluster probabilities of images, on cached backbone features when
the stage trained heads on a frozen backbone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import Config
from .embedding import embed
from .features import FeatureCache, apply_in_chunks
from .splits import data_spec
from .trained import eval_transform, load_clustering_model, load_frozen_heads


def predict_probabilities(config: Config, run_dir: str | Path, stage: str, images) -> np.ndarray:
    """Cluster probabilities (N, C) of ``images`` under the model of ``stage`` (heads on cached features if frozen)."""
    heads = load_frozen_heads(config, run_dir, stage)
    if heads is not None:
        features = FeatureCache(config, run_dir).clean(images)
        return apply_in_chunks(lambda f: heads(f)[0].float().softmax(-1), features).numpy()
    model = load_clustering_model(config, run_dir, stage)
    logits = embed(lambda x: model(x)[0], images, config, eval_transform(data_spec(config)))
    return torch.from_numpy(logits).softmax(-1).numpy()

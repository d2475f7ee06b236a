"""Predictions of a finished stage: cluster probabilities of images, on cached backbone features when
the stage trained heads on a frozen backbone; and one pass over a set of images for several outputs."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..config import Config
from ..data.images import ImageSet
from ..models import ClusterHeads, ClusteringModel
from .embedding import embed, embed_all
from .features import FeatureCache, apply_in_chunks, head_cache, uses_cached_features
from .mined_features import mines_cached_features, model_mining_function, with_descriptors
from .run import Run
from .splits import data_spec
from .trained import (eval_transform, heads_read_multiscale, load_backbone, load_clustering_model,
                      load_contrastive_model, load_frozen_heads)

Output = Callable[[], np.ndarray]  # an output of an ``ImagePass``, available once it has run


class ImagePass:
    """Several outputs for one set of images from one pass over it: each batch is loaded and normalised once and fed
    to every network added; the backbone features the run caches come from its feature cache, and when it does not
    hold them yet they are computed in the same pass and kept there."""

    def __init__(self, run: Run, images: ImageSet) -> None:
        self.run, self.images = run, images
        self.networks: list[Callable[[torch.Tensor], torch.Tensor]] = []
        self.outputs: list[np.ndarray] = []
        self.backbone_output: Output | None = None
        self.head_output: Output | None = None
        self.mined_output: Output | None = None
        self.to_keep: list[tuple[FeatureCache, int]] = []  # cached features this pass computes, for their cache

    def add(self, network: Callable[[torch.Tensor], torch.Tensor]) -> Output:
        """``network``'s outputs (N, ...) on the normalised images, available after ``embed``."""
        self.networks.append(network)
        index = len(self.networks) - 1
        return lambda: self.outputs[index]

    def backbone(self) -> Output:
        """The frozen backbone's features (N, D) of the images (the pretrained or the pretext one), through the feature
        cache when the run caches them."""
        if self.backbone_output is None:
            cached = uses_cached_features(self.run.config)
            self.backbone_output = self.cached(FeatureCache(self.run)) if cached else self.add(load_backbone(self.run))
        return self.backbone_output

    def head_features(self) -> Output:
        """The features frozen heads read (``features.head_cache``): the backbone's, or the mined space's rows."""
        if not heads_read_multiscale(self.run.config):
            return self.backbone()
        if self.head_output is None:
            self.head_output = self.cached(head_cache(self.run))
        return self.head_output

    def mined(self) -> Output:
        """The features neighbours are mined on (before whitening): the rows frozen heads read when they read the
        mined space (one computation serves both), the cached backbone's, or the pretext model's; then
        ``mine.descriptors`` beside them."""
        if self.mined_output is None:
            config = self.run.config
            if heads_read_multiscale(config):
                learned = self.head_features()
            elif mines_cached_features(config):
                learned = self.backbone()
            else:
                learned = self.add(model_mining_function(load_contrastive_model(self.run), config))
            self.mined_output = learned if not config.mine.descriptors else (
                lambda: with_descriptors(config, self.images, learned()))
        return self.mined_output

    def cached(self, cache: FeatureCache) -> Output:
        """``cache``'s clean features of the images, or on a miss the pass's own, kept in the cache once it runs."""
        held = cache.held(self.images)
        if held is not None:
            return lambda: held
        self.to_keep.append((cache, len(self.networks)))
        return self.add(cache.backbone())

    def embed(self) -> None:
        """Embed the images once through every added network; computed backbone features are kept in the cache."""
        if not self.networks:
            return
        self.outputs = embed_all(self.networks, self.images, self.run.config, eval_transform(self.run.spec))
        for cache, index in self.to_keep:
            self.outputs[index] = cache.keep(self.images, self.outputs[index])


def stage_output(one: ImagePass, stage: str) -> Output:
    """Cluster probabilities (N, C) under the model of ``stage`` (heads on cached features if frozen), from ``one``."""
    heads = load_frozen_heads(one.run, stage)
    if heads is not None:
        features = one.head_features()
        return lambda: features_probabilities(heads, features())
    model = load_clustering_model(one.run, stage)
    logits = one.add(lambda x: model(x)[0])
    return lambda: softmax(logits())


def predict_probabilities(run: Run, stage: str, images: ImageSet) -> np.ndarray:
    """Cluster probabilities (N, C) of ``images`` under the model of ``stage`` (heads on cached features if frozen)."""
    one = ImagePass(run, images)
    probabilities = stage_output(one, stage)
    one.embed()
    return probabilities()


def features_probabilities(heads: ClusterHeads, features: np.ndarray) -> np.ndarray:
    """Softmax (N, C) of the first of ``heads`` on cached backbone features (N, D)."""
    return apply_in_chunks(lambda f: heads(f)[0].float().softmax(-1), features).numpy()


def model_probabilities(model: ClusteringModel, config: Config, images: ImageSet) -> np.ndarray:
    """Softmax (N, C) of a clustering model's first head on ``images``, without augmentation."""
    model = model.eval()
    return softmax(embed(lambda x: model(x)[0], images, config, eval_transform(data_spec(config))))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities (N, C) of a head's logits (N, C)."""
    return torch.from_numpy(logits).softmax(-1).numpy()

"""The features neighbours are mined on (``mine.features``): projection, backbone or multiscale rows of a set of
images, from the pretext model or the frozen backbone's feature cache, with ``mine.descriptors`` beside them."""

from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..config import Config
from ..data.descriptors import image_descriptors
from ..data.images import ImageSet
from ..models import ContrastiveModel
from ..models.pretrained import is_pretrained
from ..runs.artefacts import load_npy, stage_dir
from .embedding import embed, embed_distributed
from .features import FeatureCache, uses_cached_features
from .run import Run
from .splits import data_spec
from .trained import build_contrastive_model, empty_backbone, eval_transform, load_backbone, load_contrastive_model

TRAIN_FEATURES = "features_train.npy"  # in mine/: the train split's features as mined, before whitening


def mines_cached_features(config: Config) -> bool:
    """Whether neighbours are mined on the cached frozen-backbone features (pretrained backbones, and frozen runs
    mining the backbone) rather than on the pretext model's outputs."""
    return is_pretrained(config.model.backbone) or (config.mine.features == "backbone" and uses_cached_features(config))


def model_mining_function(model: ContrastiveModel, config: Config) -> Callable[[torch.Tensor], torch.Tensor]:
    """The pretext model's projection, backbone or multiscale features (``mine.features``) of a normalised batch."""
    if config.mine.features == "multiscale":
        return partial(model.backbone.multiscale_features, grid=config.mine.grid)
    return model if config.mine.features == "projection" else model.backbone


def mining_features(model: ContrastiveModel, images: ImageSet, config: Config, shard: bool = True) -> np.ndarray | None:
    """Projection, backbone or multiscale features (``mine.features``) of ``images``, without augmentation.

    Every rank embeds its shard and the rows are gathered on rank 0 only (None elsewhere); with
    ``shard=False`` this process embeds them all (rank 0 alone, after training).
    """
    fn = model_mining_function(model, config)
    transform = eval_transform(data_spec(config))
    if not shard:
        return embed(fn, images, config, transform)
    return embed_distributed(fn, images, config, transform, to_all=False)


def mining_source(run: Run, shard: bool = True) -> tuple[Callable[[ImageSet], np.ndarray], list[int] | None]:
    """Features to mine on, with ``mine.descriptors`` beside them, and the widths of the learned features' blocks
    (None: one block; ``block_widths`` gives every block's).
    """
    config = run.config
    learned, widths = learned_source(run, shard)
    if not config.mine.descriptors:
        return learned, widths

    def learned_and_described(images: ImageSet) -> np.ndarray | None:
        features = learned(images)
        return None if features is None else with_descriptors(config, images, features)

    return learned_and_described, widths


def learned_source(run: Run, shard: bool) -> tuple[Callable[[ImageSet], np.ndarray], list[int] | None]:
    """The learned half of ``mining_source``: cached backbone features for pretrained or frozen runs, else the
    pretext model's, and their block widths (None: one block)."""
    config = run.config
    if mines_cached_features(config):
        return FeatureCache(run).clean, None
    model = load_contrastive_model(run)
    widths = model.backbone.multiscale_widths(config.mine.grid) if config.mine.features == "multiscale" else None
    return (lambda images: mining_features(model, images, config, shard)), widths


def mining_network(run: Run) -> nn.Module:
    """The network the mined features come from (eval mode): the frozen backbone whose features the cache holds, or
    the pretext model."""
    return load_backbone(run) if mines_cached_features(run.config) else load_contrastive_model(run)


def empty_mining_network(config: Config) -> nn.Module:
    """``mining_network``'s architecture with untrained weights, for saved weights to be loaded into."""
    return empty_backbone(config) if mines_cached_features(config) else build_contrastive_model(config, data_spec(config))


def mining_function(network: nn.Module, config: Config) -> Callable[[torch.Tensor], torch.Tensor]:
    """The features neighbours are mined on, of a normalised batch, from ``mining_network``'s ``network``."""
    return network if mines_cached_features(config) else model_mining_function(network, config)


def with_descriptors(config: Config, images: ImageSet, learned: np.ndarray) -> np.ndarray:
    """The learned features (N, d) of ``images`` with their ``mine.descriptors`` beside them: the rows mined on."""
    if not config.mine.descriptors:
        return learned
    return np.concatenate([learned, image_descriptors(images, config.mine.descriptors)[0]], axis=1)


def train_mining_features(run: Run) -> tuple[np.ndarray, list[int] | None]:
    """The train split's features as ``mine`` searched them (before whitening) and their block widths: the file
    ``mine`` saved, so the k-means check, its prior and predict's distance check reuse one space and never embed the
    split again; a run mined before that file existed is embedded once more."""
    features_of, widths = mining_source(run, shard=False)
    saved = stage_dir(run.directory, "mine") / TRAIN_FEATURES
    if saved.is_file():
        return load_npy(saved), widths
    return np.asarray(features_of(run.split("train"))), widths

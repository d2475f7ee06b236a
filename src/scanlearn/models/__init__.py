"""Backbones (by registry name) and the heads SCAN puts on them."""

from .backbones import BACKBONES, Backbone
from .factory import build_backbone, list_backbones
from .heads import ClusterHeads, ClusteringModel, ContrastiveHead, ContrastiveModel, uniform_prior_log_weights

__all__ = [
    "BACKBONES", "Backbone", "build_backbone", "list_backbones",
    "ClusterHeads", "ClusteringModel", "ContrastiveHead", "ContrastiveModel", "uniform_prior_log_weights",
]

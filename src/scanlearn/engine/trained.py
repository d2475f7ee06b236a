"""The networks a run directory holds, rebuilt from its files: the pretext network, the frozen or
trained backbone and its identity, and the clustering heads or model of a finished stage."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from ..config import AugmentConfig, Config
from ..errors import CheckpointError, RunMismatchError
from .guards import load_state_checked
from .loaders import augmenter
from ..models import ClusterHeads, ClusteringModel, ContrastiveModel, build_backbone
from ..models.backbones import MultiscaleFeatures
from ..models.heads import BlockWhitening
from ..models.pretrained import NO_WEIGHTS, is_pretrained, library_version, split_name, split_weights
from ..runs.artefacts import load_torch, require_stage
from ..runs.fsutil import sha256_file
from .run import Run
from .splits import DataSpec, data_spec


def build_contrastive_model(config: Config, spec: DataSpec) -> ContrastiveModel:
    """Backbone of the configured architecture with its projection head."""
    backbone = build_backbone(config.model.backbone, width=config.model.width, in_channels=spec.channels)
    return ContrastiveModel(backbone, backbone.out_dim, config.model.proj_dim)


def load_contrastive_model(run: Run) -> ContrastiveModel:
    """The trained pretext model of ``run`` (eval mode, CPU)."""
    directory = require_stage(run.directory, "pretext", "this stage")
    model = build_contrastive_model(run.config, run.spec)
    state = load_torch(directory / "model.pt")
    load_state_checked(model, state["state_dict"], directory / "model.pt")
    return model.eval()


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | Path) -> str:
    """``sha256_file``, memoised per (path, size, mtime) so large weights are hashed once."""
    stat = os.stat(path)
    memo = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _DIGESTS:
        _DIGESTS[memo] = sha256_file(path)
    return _DIGESTS[memo]


def load_backbone(run: Run) -> nn.Module:
    """The frozen backbone in eval mode: the pretrained model with its weights, else the pretext one."""
    model = run.config.model
    if is_pretrained(model.backbone):
        channels = run.spec.channels
        return build_backbone(model.backbone, in_channels=channels, weights=model.weights, input_size=model.input_size).eval()
    return load_contrastive_model(run).backbone.eval()


def backbone_identity(run: Run) -> dict[str, Any]:
    """What the backbone's features depend on: name, weights-file hashes (or library download)."""
    model = run.config.model
    if is_pretrained(model.backbone):
        files = split_weights(model.weights, len(split_name(model.backbone)))
        weights = [_weights_identity(f, model.backbone) for f in files]
        return {"backbone": model.backbone, "weights": weights, "input_size": model.input_size}
    pretext = require_stage(run.directory, "pretext", "this stage") / "model.pt"
    return {"backbone": model.backbone, "width": model.width, "weights": [file_digest(pretext)]}


def _weights_identity(file: str | None, backbone: str) -> str:
    """A weights file's hash, or which library weights / random init the backbone uses."""
    if file == NO_WEIGHTS:
        return "random init (seed 0)"
    if not file:
        return f"download ({library_version(backbone)})"
    if not Path(file).is_file():
        raise CheckpointError(f"weights file {file} does not exist; pass an existing file with --weights FILE")
    return file_digest(file)


def eval_transform(spec: DataSpec) -> nn.Module:
    """Normalisation only (no augmentation)."""
    return augmenter(AugmentConfig(kind="none"), spec)


def head_shape(heads: ClusterHeads) -> dict:
    """What rebuilds ``heads`` before their weights are loaded: input width, clusters, input normalisation and the
    blocks of their input map (heads on the mined space)."""
    shape = {"feature_dim": heads.in_dim, "num_clusters": heads.num_clusters, "normalize_input": heads.normalize_input}
    if heads.input_map is not None:
        shape["input_blocks"] = [heads.input_map.in_widths, heads.input_map.out_widths]
    return shape


def heads_of_shape(shape: dict) -> ClusterHeads:
    """One untrained head of the shape ``head_shape`` recorded, for saved weights to be loaded into."""
    blocks = shape.get("input_blocks")
    return ClusterHeads(shape["feature_dim"], shape["num_clusters"], 1, shape.get("normalize_input", False),
                        BlockWhitening(*blocks) if blocks else None)


def heads_read_multiscale(config: Config) -> bool:
    """Whether frozen heads read the backbone's multiscale features (heads on the mined space of multiscale mining)."""
    return config.scan.head_features == "mined" and config.mine.features == "multiscale"


def head_network(config: Config, backbone: nn.Module) -> nn.Module:
    """The network whose outputs frozen heads read: the backbone, or its multiscale features
    (``heads_read_multiscale``)."""
    return MultiscaleFeatures(backbone, config.mine.grid) if heads_read_multiscale(config) else backbone


def model_state(model: ClusteringModel) -> dict:
    """What a stage that trained the whole clustering model saves."""
    return {"state_dict": model.state_dict(), **head_shape(model.heads)}


def frozen_state(heads: ClusterHeads, run: Run) -> dict:
    """What a frozen-backbone stage saves: the heads and the identity of the backbone they sit on."""
    return {"heads": heads.state_dict(), **head_shape(heads), "frozen_backbone": True,
            "backbone": backbone_identity(run)}


def load_clustering_model(run: Run, stage: str) -> ClusteringModel:
    """The single-head clustering model saved by ``stage`` (scan or selflabel), eval mode."""
    heads = load_frozen_heads(run, stage)
    if heads is not None:
        return clustering_model(head_network(run.config, load_backbone(run)), heads).eval()
    directory = require_stage(run.directory, stage, "this command")
    state = load_torch(directory / "model.pt")
    model = build_clustering_model(run.config, state)
    load_state_checked(model, state["state_dict"], directory / "model.pt")
    return model.eval()


def clustering_model(network: nn.Module, heads: ClusterHeads) -> ClusteringModel:
    """``heads`` on ``network``'s outputs as one clustering model."""
    model = ClusteringModel(network, heads.in_dim, heads.num_clusters, 1)
    model.heads = heads
    return model


def build_clustering_model(config: Config, shape: dict) -> ClusteringModel:
    """An untrained single-head clustering model of the configured architecture and the head ``shape`` recorded
    (``head_shape``), for saved weights to be loaded into."""
    return clustering_model(head_network(config, empty_backbone(config)), heads_of_shape(shape))


def empty_backbone(config: Config) -> nn.Module:
    """The configured backbone with untrained weights (no download), for saved weights to be loaded into."""
    return build_backbone(
        config.model.backbone, width=config.model.width, in_channels=data_spec(config).channels, weights=NO_WEIGHTS,
        input_size=config.model.input_size,
    )


def load_frozen_heads(run: Run, stage: str) -> ClusterHeads | None:
    """The heads ``stage`` trained on cached features (eval mode), or None if it trained a whole model."""
    path = require_stage(run.directory, stage, "this command") / "model.pt"
    state = load_torch(path)
    if not state.get("frozen_backbone"):
        return None
    if state["backbone"] != backbone_identity(run):
        raise RunMismatchError(
            f"{path} was trained on features of another backbone or weights file; rerun "
            f"`scanlearn {stage} --run-dir {run.directory}` or use the run's original --backbone/--weights"
        )
    heads = heads_of_shape(state)
    load_state_checked(heads, state["heads"], path)
    return heads.eval()

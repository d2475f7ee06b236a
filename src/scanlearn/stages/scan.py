"""Stage 3: SCAN — train clustering heads so that neighbours agree; keep the lowest-loss head."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import lightning as L
import numpy as np
import torch
from torch import nn

from ..config import AugmentConfig, Config
from ..data.datasets import ImageSet
from ..errors import DataError
from ..losses import entropy_of_mean, scan_loss
from ..models import ClusterHeads, ClusteringModel, build_backbone
from .common import (
    BatchFetchDataset, DataSpec, augmenter, batch_loader, build_trainer, data_spec, embed, fetch_images,
    finish_stage, load_split, load_torch, num_clusters, optimizer_with_schedule, record_run_metrics,
    require_stage, resume_checkpoint, save_torch, stage_dir, to_memory_format,
)
from .guards import check_finite, load_state_checked
from .pretext import load_contrastive_model

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


def global_mean(module: L.LightningModule) -> Callable[[torch.Tensor], torch.Tensor]:
    """Average a per-rank mean over all ranks (identity on one process), keeping gradients."""
    if module.trainer.world_size == 1:
        return lambda m: m
    return lambda m: module.all_gather(m, sync_grads=True).mean(0)


class ScanModule(L.LightningModule):
    """SCAN training; with ``backbone=None`` the batches are cached features (frozen backbone)."""

    def __init__(self, backbone: nn.Module | None, heads: ClusterHeads, config: Config, spec: DataSpec) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = heads
        self.config = config
        self.augment = augmenter(config.scan.augment, spec) if backbone is not None else None

    def on_after_batch_transfer(self, batch, dataloader_idx: int) -> torch.Tensor:
        anchors, partners, _ = batch
        if self.augment is None:
            return torch.cat([anchors, partners]).float()
        x = torch.cat([self.augment(anchors), self.augment(partners)])
        return to_memory_format(x, self.config.runtime)

    def training_step(self, x: torch.Tensor, batch_idx: int) -> torch.Tensor:
        features = self.backbone(x) if self.backbone is not None else x
        anchors, partners = self.heads(features).chunk(2, dim=1)
        reduce = global_mean(self)
        total = anchors.new_zeros((), dtype=torch.float32)
        for h in range(anchors.shape[0]):
            terms = scan_loss(anchors[h], partners[h], self.config.scan.entropy_weight, batch_mean=reduce)
            total = total + terms.total
            self.log(f"head{h}/total", terms.total, on_epoch=True, on_step=False)
            self.log(f"head{h}/consistency", terms.consistency, on_epoch=True, on_step=False)
            self.log(f"head{h}/entropy", terms.entropy, on_epoch=True, on_step=False)
        check_finite(total, "scan")
        self.log("loss", total / anchors.shape[0], prog_bar=True, on_epoch=True, on_step=True)
        return total

    def configure_optimizers(self):
        params = self.heads.parameters() if self.backbone is None else self.parameters()
        return optimizer_with_schedule(self, params, self.config.scan.optim)


def head_losses(probs: torch.Tensor, neighbors: np.ndarray) -> torch.Tensor:
    """SCAN loss (entropy weight 1) of each head over all anchor-neighbour pairs; probs (H, N, C)."""
    index = torch.from_numpy(neighbors)
    losses = []
    for head in probs:
        agreement = (head[:, None, :] * head[index]).sum(-1)
        losses.append(-agreement.clamp_min(1e-8).log().mean() - entropy_of_mean(head))
    return torch.stack(losses)


def eval_transform(spec: DataSpec) -> nn.Module:
    """Normalisation only (no augmentation)."""
    return augmenter(AugmentConfig(kind="none"), spec)


def cached_features(config: Config, run_dir: str | Path, backbone: nn.Module, images: ImageSet, spec: DataSpec) -> torch.Tensor:
    """Backbone features of ``images`` computed once and stored in ``scan/features_train.npy``."""
    path = stage_dir(run_dir, "scan") / "features_train.npy"
    if path.is_file():
        features = np.load(path)
        if len(features) == len(images):
            return torch.from_numpy(features)
    features = embed(backbone.eval(), images, config, eval_transform(spec))
    np.save(path, features)
    return torch.from_numpy(features)


def run_scan(config: Config, run_dir: str | Path) -> dict[str, float]:
    """Train ``scan.num_heads`` heads with the SCAN loss; save the model with the best head only."""
    spec = data_spec(config)
    mine_dir = require_stage(run_dir, "mine", "scan")
    directory = stage_dir(run_dir, "scan")
    images = load_split(config, "train")
    neighbors = np.load(mine_dir / "neighbors_train.npy")
    if len(neighbors) != len(images):
        raise DataError(f"neighbours were mined for {len(neighbors)} images but the data has {len(images)}; rerun `scanlearn mine`")
    backbone = load_contrastive_model(config, run_dir).backbone
    model = ClusteringModel(backbone, backbone.out_dim, num_clusters(config, images), config.scan.num_heads)
    L.seed_everything(config.runtime.seed, workers=True, verbose=False)
    frozen = config.scan.freeze_backbone
    if frozen:
        features = cached_features(config, run_dir, backbone, images, spec)
        rows: Fetch = lambda idx: features[torch.from_numpy(idx)]  # noqa: E731
        module = ScanModule(None, model.heads, config, spec)
    else:
        image_rows = fetch_images(images)
        rows = lambda idx: image_rows(idx)[0]  # noqa: E731
        module = ScanModule(backbone, model.heads, config, spec)
        if config.runtime.channels_last:
            module = module.to(memory_format=torch.channels_last)
    loader = batch_loader(
        pair_dataset(rows, neighbors, config.scan.neighbor_includes_anchor), config.scan.batch_size,
        shuffle=True, num_workers=0, seed=config.runtime.seed, drop_last=True,
    )
    trainer = build_trainer(config, directory, config.scan.epochs)
    trainer.fit(module, loader, ckpt_path=resume_checkpoint(directory))
    if not trainer.is_global_zero:
        return {}
    probs = head_probabilities(model, config, images, spec, features if frozen else None)
    losses = head_losses(probs, neighbors)
    best = int(losses.argmin())
    model.heads.keep(best)
    metrics = {"best_head": best, "head_losses": [float(v) for v in losses]}
    save_torch(directory / "model.pt", {"state_dict": model.state_dict(), "feature_dim": backbone.out_dim,
                                        "num_clusters": model.heads.heads[0].out_features})
    finish_stage(run_dir, "scan", config, metrics)
    return metrics


@torch.inference_mode()
def head_probabilities(
    model: ClusteringModel, config: Config, images: ImageSet, spec: DataSpec, features: torch.Tensor | None = None
) -> torch.Tensor:
    """Softmax of every head on every image (H, N, C), without augmentation."""
    model.eval()
    if features is not None:
        return model.heads(features.float()).float().softmax(-1)
    logits = embed(lambda x: model(x).transpose(0, 1), images, config, eval_transform(spec))
    return torch.from_numpy(logits).permute(1, 0, 2).softmax(-1)


def load_clustering_model(config: Config, run_dir: str | Path, stage: str) -> ClusteringModel:
    """The single-head clustering model saved by ``stage`` (scan or selflabel), eval mode."""
    directory = require_stage(run_dir, stage, "this command")
    state = load_torch(directory / "model.pt")
    spec = data_spec(config)
    backbone = build_backbone(config.model.backbone, width=config.model.width, in_channels=spec.channels)
    model = ClusteringModel(backbone, state["feature_dim"], state["num_clusters"], 1)
    load_state_checked(model, state["state_dict"], directory / "model.pt")
    return model.eval()

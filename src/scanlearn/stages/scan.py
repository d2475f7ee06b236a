"""Stage 3: SCAN — train clustering heads so that neighbours agree; keep the lowest-loss head."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import lightning as L
import numpy as np
import torch
from torch import nn

from ..config import Config
from ..data.images import ImageSet
from ..engine import distributed
from ..engine.embedding import embed_distributed, recalibrate_batch_norm
from ..engine.execution import prepare
from ..engine.features import head_cache, random_view_rows
from ..engine.guards import check_finite
from ..engine.loaders import augmenter, batch_loader, fetch_images
from ..engine.resume import ResumableModule
from ..engine.run import Run
from ..engine.splits import DataSpec
from ..engine.trained import eval_transform, frozen_state, load_backbone, model_state
from ..engine.training import finish_stage, fit_stage, optimizer_with_schedule
from ..errors import DataError
from ..losses import scan_loss
from ..models.heads import BlockWhitening, ClusterHeads, ClusteringModel, uniform_prior_log_weights
from ..runs.artefacts import load_npy, require_stage, save_torch, stage_dir
from ..clustering.heads import (clean_features, Fetch, fit_linear_heads, frozen_head_probabilities, head_input_map,
                               head_losses, pair_dataset, partner_table, scan_prior, train_head_features)


def global_mean(module: L.LightningModule) -> Callable[[torch.Tensor], torch.Tensor]:
    """Average a per-rank mean over all ranks (identity on one process), keeping gradients."""
    if module.trainer.world_size == 1:
        return lambda m: m
    return lambda m: module.all_gather(m, sync_grads=True).mean(0)


class ValidationLoss:
    """Label-free score of the model: SCAN loss (entropy weight 1) of every head on the validation split,
    each image against itself and its mined validation neighbours, as the authors select epochs and heads.
    With a ``prior`` the entropy term is the divergence from it, as in training."""

    def __init__(self, probabilities: Callable[[], torch.Tensor | None], neighbors: np.ndarray,
                 prior: torch.Tensor | None = None) -> None:
        self.probabilities = probabilities
        self.table = partner_table(neighbors, include_anchor=True)
        self.prior = prior

    def __call__(self) -> list[float]:
        """Per-head losses, computed on rank 0 (which alone receives the predictions) and sent to every rank."""
        probs = self.probabilities()
        losses = None if probs is None else [float(v) for v in head_losses(probs, self.table, self.prior)]
        return distributed.broadcast_object(losses)


class ScanModule(ResumableModule):
    """SCAN training; with ``backbone=None`` the batches are cached features (frozen backbone).

    With ``validation`` every epoch ends by scoring the heads on the validation split; the weights of
    the epoch with the lowest head loss are kept in ``best_state`` (saved in checkpoints, so a resumed
    run still knows them).
    """

    persistent = ("best_loss", "best_epoch", "best_state", "epoch_losses")

    def __init__(self, backbone: nn.Module | None, heads: ClusterHeads, config: Config, spec: DataSpec,
                 validation: ValidationLoss | None = None, prior: torch.Tensor | None = None) -> None:
        super().__init__()
        self.prior = prior
        self.backbone = backbone
        self.heads = heads
        self.config = config
        self.augment = augmenter(config.scan.augment, spec) if backbone is not None else None
        self.validation = validation
        self.best_loss = float("inf")
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self.epoch_losses: list[list[float]] = []

    def on_after_batch_transfer(self, batch, dataloader_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        anchors, partners, _ = batch
        if self.augment is None:
            return anchors.float(), partners.float()
        return self.augment(anchors), self.augment(partners)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features of images, or the batch itself when it already holds cached features."""
        return self.backbone(x) if self.backbone is not None else x

    def head_logits(self, anchors: torch.Tensor, partners: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(H, B, C) logits of anchors and partners: two forward passes (batch-norm statistics of each
        batch on its own, the authors' way) with ``scan.separate_passes``, else one over both."""
        if self.config.scan.separate_passes:
            return self.heads(self.features(anchors)), self.heads(self.features(partners))
        return self.heads(self.features(torch.cat([anchors, partners]))).chunk(2, dim=1)

    def training_step(self, views: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        anchors, partners = self.head_logits(*views)
        terms = scan_loss(anchors, partners, self.config.scan.entropy_weight, batch_mean=global_mean(self), prior=self.prior)
        total = terms.total.sum()
        check_finite(total, "scan")
        self.log("loss", terms.total.mean(), prog_bar=True, on_epoch=True, on_step=True, sync_dist=True)
        return total

    def on_train_epoch_end(self) -> None:
        """Score the epoch on the validation split; snapshot the weights when the lowest head loss improves."""
        if self.validation is None:
            return
        modes = [(module, module.training) for module in self.modules()]
        try:
            losses = self.validation()
        finally:
            for module, training in modes:
                module.train(training)
        self.epoch_losses.append(losses)
        self.log("val_loss", min(losses), on_epoch=True, on_step=False)
        if min(losses) < self.best_loss:
            self.best_loss, self.best_epoch = min(losses), self.current_epoch
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.state_dict().items()}

    def restore_best(self) -> list[float]:
        """Load the lowest-loss epoch's weights; return that epoch's per-head validation losses."""
        self.load_state_dict(self.best_state)
        return self.epoch_losses[self.best_epoch]

    def configure_optimizers(self):
        params = self.heads.parameters() if self.backbone is None else self.parameters()
        return optimizer_with_schedule(self, params, self.config.scan.optim)


def search_heads(config: Config, features: np.ndarray, clusters: int, neighbors: np.ndarray,
                 prior: torch.Tensor | None = None, input_map: BlockWhitening | None = None
                 ) -> tuple[ClusterHeads, list[float]]:
    """Starting heads: train ``scan.head_search`` linear heads on frozen backbone features, keep the
    ``scan.num_heads`` with the lowest SCAN loss (and return every candidate's loss).

    Heads that share one fine-tuned backbone end in the same partition whatever their initialisation;
    on frozen features they end in different ones, cheaply, and the loss ranks them.
    """
    heads = fit_linear_heads(features, neighbors, clusters, config.scan.head_search, config.scan.head_search_epochs,
                             config.scan, config.runtime.seed, config.runtime.progress, prior, input_map)
    losses = head_losses(frozen_head_probabilities(heads, features), neighbors, prior)
    heads.keep(losses.argsort()[: config.scan.num_heads].tolist())
    return heads, [float(v) for v in losses]


def scan_views(run: Run, images: ImageSet, clean: np.ndarray) -> list[np.ndarray]:
    """Feature arrays SCAN's frozen-backbone batches draw from: the clean features, or
    ``scan.cached_views`` views augmented with ``scan.augment``, each embedded once and cached."""
    config = run.config
    if config.scan.cached_views == 0:
        return [clean]
    cache = head_cache(run)
    return [cache.augmented(images, config.scan.augment, v) for v in range(config.scan.cached_views)]


def selection_data(run: Run, mine_dir: Path, images: ImageSet, neighbors: np.ndarray) -> tuple[ImageSet, np.ndarray]:
    """Images and neighbours whose SCAN loss picks the epoch and head: the train split's own (``val_k`` nearest;
    the default, so the test split chooses nothing) or, as the authors do, the test split's validation neighbours."""
    if run.config.scan.selection_split == "train":
        return images, neighbors[:, : run.config.mine.val_k]
    val_images = run.split("test")
    val_neighbors = load_npy(mine_dir / "neighbors_test.npy")
    if len(val_neighbors) != len(val_images):
        raise DataError(f"validation neighbours were mined for {len(val_neighbors)} images but the test split has "
                        f"{len(val_images)}; rerun `scanlearn mine`")
    return val_images, val_neighbors


def run_scan(run: Run) -> dict[str, float]:
    """Train ``scan.num_heads`` heads with the SCAN loss; save the model with the best head only.

    The kept epoch (with ``scan.select_epoch``, else the last) and head are those with the lowest SCAN
    loss on the selection split (``selection_data``, ``ValidationLoss``: no labels). With ``scan.freeze_backbone`` the heads
    train on cached backbone features and only they are saved. With ``scan.head_search`` the heads start
    from the best of that many heads trained on frozen features.
    """
    config, spec = run.config, run.spec
    mine_dir = require_stage(run.directory, "mine", "scan")
    directory = stage_dir(run.directory, "scan")
    images = run.split("train")
    neighbors = load_npy(mine_dir / "neighbors_train.npy")
    if len(neighbors) != len(images):
        raise DataError(f"neighbours were mined for {len(neighbors)} images but the data has {len(images)}; rerun `scanlearn mine`")
    val_images, val_neighbors = selection_data(run, mine_dir, images, neighbors)
    prior = scan_prior(run)
    frozen = config.scan.freeze_backbone
    clusters = run.clusters
    features = train_head_features(run, images) if frozen or config.scan.head_search else None
    input_map = head_input_map(run)  # fitted here or read back: seeded after it, the heads start the same either way
    L.seed_everything(config.runtime.seed, workers=True, verbose=False)
    searched = search_heads(config, features, clusters, neighbors, prior, input_map) if config.scan.head_search else None
    if frozen:
        heads = searched[0] if searched is not None else ClusterHeads(features.shape[1], clusters, config.scan.num_heads,
                                                                      config.scan.normalize_features, input_map)
        fetch: Fetch = random_view_rows(scan_views(run, images, features))
        val_features = clean_features(run, val_images)
        validation = ValidationLoss(lambda: frozen_head_probabilities(heads, val_features), val_neighbors, prior)
        module = ScanModule(None, heads, config, spec, validation=validation if config.scan.select_epoch else None,
                            prior=prior)
    else:
        backbone = load_backbone(run)
        model = ClusteringModel(backbone, backbone.out_dim, clusters, config.scan.num_heads,
                                config.scan.normalize_features)
        if searched is not None:
            model.heads.load_state_dict(searched[0].state_dict())
        heads = model.heads
        image_rows = fetch_images(images)
        fetch = lambda idx: image_rows(idx)[0]  # noqa: E731
        validation = ValidationLoss(lambda: head_probabilities(model, config, val_images, spec), val_neighbors, prior)
        module = ScanModule(backbone, heads, config, spec, validation=validation if config.scan.select_epoch else None,
                            prior=prior)
        module = prepare(module, config.runtime, "scan")
    loader = batch_loader(
        pair_dataset(fetch, neighbors, config.scan.neighbor_includes_anchor), config.scan.batch_size,
        shuffle=True, num_workers=0, seed=config.runtime.seed, drop_last=True,
    )
    fit_stage(config, directory, module, loader, config.scan.epochs)
    losses = module.restore_best() if config.scan.select_epoch else validation()
    if config.scan.recalibrate_bn and not frozen:
        recalibrate_batch_norm(backbone, images, config, eval_transform(spec))
    if config.scan.uniform_prior:
        train_probs = frozen_head_probabilities(heads, features) if frozen else head_probabilities(model, config, images, spec)
    if not distributed.is_rank_zero():
        return {}
    best = int(np.argmin(losses))
    heads.keep([best])
    if config.scan.uniform_prior:
        heads.shift_biases(uniform_prior_log_weights(train_probs[best]))
    metrics = {"best_head": best, "head_losses": losses}
    if prior is not None:
        metrics["prior"] = prior.tolist()
    if config.scan.select_epoch:
        metrics |= {"best_epoch": module.best_epoch, "validation_loss_per_epoch": [min(v) for v in module.epoch_losses]}
    if searched is not None:
        metrics["search_losses"] = searched[1]
    if frozen:
        save_torch(directory / "model.pt", frozen_state(heads, run))
    else:
        save_torch(directory / "model.pt", model_state(model))
    finish_stage(run, "scan", metrics)
    return metrics


@torch.inference_mode()
def head_probabilities(model: ClusteringModel, config: Config, images: ImageSet, spec: DataSpec) -> torch.Tensor | None:
    """Softmax of every head on every image (H, N, C), without augmentation.

    Under DDP every rank embeds a shard and rank 0 alone receives the result (None elsewhere).
    """
    model.eval()
    logits = embed_distributed(lambda x: model(x).transpose(0, 1), images, config, eval_transform(spec), to_all=False)
    return None if logits is None else torch.from_numpy(logits).permute(1, 0, 2).softmax(-1)



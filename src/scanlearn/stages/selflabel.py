"""Stage 4: self-labelling — fine-tune on the model's own confident predictions."""

from __future__ import annotations

import copy
import warnings

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..config import Config, SelfLabelConfig
from ..engine import distributed
from ..engine.embedding import recalibrate_batch_norm
from ..engine.execution import prepare
from ..engine.features import FeatureCache, head_cache, random_view_rows, rows
from ..engine.guards import check_finite
from ..engine.inference import features_probabilities, model_probabilities
from ..engine.loaders import BatchFetchDataset, augmenter, batch_loader, image_loader
from ..engine.resume import ResumableModule
from ..engine.run import Run
from ..engine.splits import DataSpec
from ..engine.trained import (clustering_model, eval_transform, file_digest, frozen_state, load_clustering_model,
                              load_frozen_heads, model_state)
from ..engine.training import finish_stage, fit_stage, optimizer_with_schedule
from ..losses import confidence_cross_entropy
from ..models import ClusterHeads, ClusteringModel, uniform_prior_log_weights
from ..runs.artefacts import save_torch, stage_dir
from ..clustering.kmeans import estimated_prior


class WrittenBackEMA:
    """The authors' EMA: after every optimiser step the average of the parameters is written back into the
    network, so the next step trains on it; buffers (batch-norm statistics) keep their starting values.

    The average starts from the network when training starts (after a resume: the written-back weights,
    which are the average, and the starting buffers), so it needs no state of its own in checkpoints.
    """

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.average: dict[str, torch.Tensor] | None = None

    def start(self, network: nn.Module) -> None:
        """Take the network's current parameters and buffers as the starting average."""
        self.average = copy.deepcopy(network.state_dict())

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        """average = decay * average + (1 - decay) * parameters, then the network takes the average."""
        for name, parameter in network.named_parameters():
            self.average[name].mul_(self.decay).add_(parameter.detach(), alpha=1 - self.decay)
        network.load_state_dict(self.average)


class SelfLabelModule(ResumableModule):
    """Cross-entropy on the strong view of samples confidently classified in the weak view.

    With ``frozen`` the batches are cached backbone features (clean, one strong view) and only
    the head is trained.
    """

    persistent = ("confident", "seen", "max_confidence")

    def __init__(self, model: ClusteringModel, config: Config, spec: DataSpec, frozen: bool = False,
                 thresholds: torch.Tensor | None = None, class_prior: torch.Tensor | None = None) -> None:
        super().__init__()
        self.model = model
        self.class_prior = class_prior
        self.thresholds = thresholds if thresholds is not None else config.selflabel.threshold
        self.config = config
        self.frozen = frozen
        self.weak = eval_transform(spec)
        self.strong = augmenter(config.selflabel.augment, spec)
        self.ema = exponential_average(model, config.selflabel)
        self.confident = 0
        self.seen = 0
        self.max_confidence = 0.0
        self.step_has_confident = False

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.frozen:
            clean, strong, _ = batch
            return clean.float(), strong.float()
        images = batch[0]
        return self.weak(images), self.strong(images)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the single head, from images or (frozen) from features."""
        return self.model.heads(x)[0] if self.frozen else self.model(x)[0]

    @torch.no_grad()
    def pseudo_label_logits(self, weak: torch.Tensor) -> torch.Tensor:
        """Weak-view logits, without gradients, with the network in ``selflabel.pseudo_label_mode``.

        ``train`` (the authors'): batch statistics, and the clean batch updates the running ones too.
        ``eval``: the running statistics, the predictions the model is scored on; batch statistics of
        clean images differ from those gathered on augmented ones and can wash out SCAN's confidence.
        """
        if self.config.selflabel.pseudo_label_mode == "train":
            return self.logits(weak)
        self.model.eval()
        try:
            return self.logits(weak)
        finally:
            self.model.train()

    def training_step(self, views, batch_idx: int):
        """Loss share of this rank times the world size (DDP averages gradients); confident counts are global."""
        weak, strong = views
        weak_logits = self.pseudo_label_logits(weak)
        world = self.trainer.world_size
        result = confidence_cross_entropy(
            weak_logits, self.logits(strong), self.thresholds, self.config.selflabel.balance,
            count_reduce=distributed.sum_over_ranks if world > 1 else None, class_prior=self.class_prior,
        )
        self.confident += result.num_confident
        self.seen += len(weak) * world
        self.max_confidence = max(self.max_confidence, result.max_confidence)
        self.log("confident", result.num_confident / (len(weak) * world), prog_bar=True, on_epoch=True, on_step=False,
                 sync_dist=True)
        self.step_has_confident = result.num_confident > 0
        loss = check_finite(result.loss * world, "selflabel")
        if self.step_has_confident:
            self.log("loss", loss, prog_bar=True, on_epoch=True, on_step=True, sync_dist=True)
        return loss

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        """Update only after batches with confident samples; the count is global, so every rank agrees."""
        optimizer_closure()
        if self.step_has_confident:
            optimizer.step()
            self.update_average()

    def on_train_start(self) -> None:
        if isinstance(self.ema, WrittenBackEMA):
            self.ema.start(self.model)

    def update_average(self) -> None:
        """Fold the step's weights into the exponential average (written back into the network, or kept apart)."""
        if isinstance(self.ema, WrittenBackEMA):
            self.ema.update(self.model)
        elif self.ema is not None:
            self.ema.update_parameters(self.model)

    def on_train_end(self) -> None:
        self.max_confidence = distributed.max_over_ranks(self.max_confidence)

    def configure_optimizers(self):
        params = self.model.heads.parameters() if self.frozen else self.model.parameters()
        return optimizer_with_schedule(self, params, self.config.selflabel.optim)

    def final_model(self) -> ClusteringModel:
        """The separate EMA's weights when it is on, else the trained (with a written-back EMA: averaged) model."""
        return self.ema.module if isinstance(self.ema, AveragedModel) else self.model


def exponential_average(model: ClusteringModel, selflabel: SelfLabelConfig) -> AveragedModel | WrittenBackEMA | None:
    """The EMA of ``selflabel.ema`` (None when 0): written back into the network with ``ema_write_back``
    (the authors'), else a separate averaged copy that becomes the final model."""
    if not selflabel.ema:
        return None
    if selflabel.ema_write_back:
        return WrittenBackEMA(selflabel.ema)
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(selflabel.ema))


def cluster_thresholds(probs: np.ndarray, threshold: float, min_fraction: float) -> torch.Tensor:
    """Per-cluster confidence thresholds: ``threshold``, lowered where fewer than ``min_fraction``
    of a cluster's members would pass it, so that no cluster loses all its pseudo-labels.

    Shape:
        probs: (N, C) weak-view probabilities of the training images. Returns (C,).
    """
    confidence, clusters = probs.max(axis=1), probs.argmax(axis=1)
    thresholds = np.full(probs.shape[1], threshold, dtype=np.float64)
    for c in range(probs.shape[1]):
        members = confidence[clusters == c]
        if len(members) and min_fraction > 0:
            thresholds[c] = min(threshold, float(np.quantile(members, 1 - min_fraction)) - 1e-6)
    return torch.as_tensor(thresholds, dtype=torch.float32)


def prior_by_cluster_size(prior: np.ndarray, sizes: np.ndarray) -> torch.Tensor:
    """Give the largest share of ``prior`` to the largest cluster, the next to the next, and so on.

    Shape:
        prior: (C,) shares in any order; sizes: (C,) cluster sizes (ties keep cluster order). Returns (C,).
    """
    shares = np.empty(len(sizes), dtype=np.float64)
    shares[np.argsort(-np.asarray(sizes), kind="stable")] = np.sort(np.asarray(prior, dtype=np.float64))[::-1]
    return torch.as_tensor(shares, dtype=torch.float32)


def weak_probabilities(model: ClusteringModel, config: Config, images, frozen: bool, cache=None) -> np.ndarray:
    """Softmax of the single head on every clean training image (eval mode), for thresholds and the prior."""
    model.eval()
    if frozen:
        return features_probabilities(model.heads, cache.clean(images))
    return model_probabilities(model, config, images)


def frozen_views(cache: FeatureCache, config: Config, images) -> BatchFetchDataset:
    """Clean and strongly augmented backbone features (``selflabel.embedded_views`` views), embedded once."""
    clean = cache.clean(images)
    strong = random_view_rows(
        [cache.augmented(images, config.selflabel.augment, v) for v in range(config.selflabel.embedded_views)]
    )

    def fetch(idx: np.ndarray):
        return rows(clean, idx), strong(idx), torch.from_numpy(idx)

    return BatchFetchDataset(fetch, len(images))


def heads_only(heads: ClusterHeads) -> ClusteringModel:
    """A clustering model over cached features: identity backbone, the given heads."""
    return clustering_model(nn.Identity(), heads)


def scan_backbone_cache(run: Run, model: ClusteringModel) -> FeatureCache:
    """Feature cache of the backbone SCAN fine-tuned (keyed by SCAN's saved model)."""
    identity = {"backbone": run.config.model.backbone, "weights": [file_digest(run.directory / "scan" / "model.pt")],
                "from": "scan"}
    return FeatureCache(run, backbone=model.backbone.eval(), identity=identity)


def run_selflabel(run: Run) -> dict[str, float]:
    """Fine-tune the SCAN model on confident pseudo-labels; save ``selflabel/model.pt``."""
    config, spec = run.config, run.spec
    directory = stage_dir(run.directory, "selflabel")
    frozen = config.selflabel.freeze_backbone
    heads = load_frozen_heads(run, "scan") if frozen else None
    model = heads_only(heads) if heads is not None else load_clustering_model(run, "scan")
    images = run.split("train")
    L.seed_everything(config.runtime.seed, workers=True, verbose=False)
    cache = None
    if frozen:
        cache = head_cache(run) if heads is not None else scan_backbone_cache(run, model)
    thresholds = class_prior = None
    if config.selflabel.min_confident_fraction > 0 or config.selflabel.prior != "uniform":
        probs = weak_probabilities(model, config, images, frozen, cache)
    if config.selflabel.min_confident_fraction > 0:
        thresholds = cluster_thresholds(probs, config.selflabel.threshold, config.selflabel.min_confident_fraction)
    if config.selflabel.prior != "uniform":
        sizes = np.bincount(probs.argmax(1), minlength=probs.shape[1])
        with distributed.rank_zero_first():
            class_prior = prior_by_cluster_size(estimated_prior(run, config.selflabel.prior).numpy(), sizes)
    module = SelfLabelModule(model, config, spec, frozen=frozen, thresholds=thresholds, class_prior=class_prior)
    if frozen:
        loader = batch_loader(frozen_views(cache, config, images), config.selflabel.batch_size,
                              shuffle=True, num_workers=0, seed=config.runtime.seed, drop_last=True)
    else:
        module = prepare(module, config.runtime, "selflabel")
        loader = image_loader(images, config.selflabel.batch_size, shuffle=True, config=config, drop_last=True)
    original = copy.deepcopy(model.state_dict())
    model.train()
    fit_stage(config, directory, module, loader, config.selflabel.epochs)
    if config.selflabel.recalibrate_bn and not frozen and module.confident > 0:
        # on every rank: converted SyncBatchNorm layers synchronise even here
        recalibrate_batch_norm(module.final_model().backbone, images, config, eval_transform(spec))
    if not distributed.is_rank_zero():
        return {}
    metrics = {
        "confident_fraction": module.confident / max(1, module.seen),
        "max_confidence": module.max_confidence,
    }
    if class_prior is not None:
        metrics["prior"] = class_prior.tolist()
    final = module.final_model()
    if module.confident == 0:
        warnings.warn(no_confident_message(config.selflabel.threshold, module.max_confidence), stacklevel=1)
        final.load_state_dict(original)
    elif config.selflabel.uniform_prior:
        probs = weak_probabilities(final, config, images, frozen, cache)
        final.heads.shift_biases(uniform_prior_log_weights(torch.from_numpy(probs)))
    if heads is not None:
        model.load_state_dict(final.state_dict())
        save_torch(directory / "model.pt", frozen_state(model.heads, run))
    else:
        save_torch(directory / "model.pt", model_state(final))
    finish_stage(run, "selflabel", metrics)
    return metrics


def no_confident_message(threshold: float, max_confidence: float) -> str:
    """Explain an all-unconfident self-labelling run and suggest a threshold that would work."""
    suggestion = max(0.5, round(max_confidence - 0.05, 2))
    return (
        f"self-labelling found no prediction above threshold {threshold} (highest confidence "
        f"{max_confidence:.3f}); the SCAN model was kept unchanged — retry with "
        f"--set selflabel.threshold={suggestion}"
    )

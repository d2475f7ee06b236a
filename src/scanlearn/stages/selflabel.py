"""Stage 4: self-labelling — fine-tune on the model's own confident predictions."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..config import Config
from ..losses import confidence_cross_entropy
from ..models import ClusteringModel
from .common import (
    BatchFetchDataset, DataSpec, augmenter, batch_loader, build_trainer, data_spec, embed, fetch_images,
    finish_stage, image_loader, load_split, optimizer_with_schedule, resume_checkpoint, save_torch,
    stage_dir, to_memory_format,
)
from .guards import check_finite
from .scan import eval_transform, load_clustering_model


class SelfLabelModule(L.LightningModule):
    """Cross-entropy on the strong view of samples confidently classified in the weak view.

    With ``frozen`` the batches are cached backbone features (clean, one strong view) and only
    the head is trained.
    """

    def __init__(self, model: ClusteringModel, config: Config, spec: DataSpec, frozen: bool = False) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.frozen = frozen
        self.weak = eval_transform(spec)
        self.strong = augmenter(config.selflabel.augment, spec)
        self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.selflabel.ema)) if config.selflabel.ema else None
        self.confident = 0
        self.seen = 0
        self.max_confidence = 0.0

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.frozen:
            clean, strong, _ = batch
            return clean.float(), strong.float()
        images = batch[0]
        runtime = self.config.runtime
        return to_memory_format(self.weak(images), runtime), to_memory_format(self.strong(images), runtime)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the single head, from images or (frozen) from features."""
        return self.model.heads(x)[0] if self.frozen else self.model(x)[0]

    def training_step(self, views, batch_idx: int):
        weak, strong = views
        with torch.no_grad():
            weak_logits = self.logits(weak)
        result = confidence_cross_entropy(
            weak_logits, self.logits(strong), self.config.selflabel.threshold, self.config.selflabel.balance
        )
        self.confident += result.num_confident
        self.seen += len(weak)
        self.max_confidence = max(self.max_confidence, result.max_confidence)
        self.log("confident", result.num_confident / len(weak), prog_bar=True, on_epoch=True, on_step=False)
        if result.num_confident == 0 and self.trainer.world_size == 1:
            return None
        loss = check_finite(result.loss, "selflabel")
        self.log("loss", loss, prog_bar=True, on_epoch=True, on_step=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def configure_optimizers(self):
        params = self.model.heads.parameters() if self.frozen else self.model.parameters()
        return optimizer_with_schedule(self, params, self.config.selflabel.optim)

    def final_model(self) -> ClusteringModel:
        """The EMA weights when EMA is on, else the trained model."""
        return self.ema.module if self.ema is not None else self.model


def frozen_views(config: Config, model: ClusteringModel, images, spec: DataSpec) -> BatchFetchDataset:
    """Clean and strongly augmented backbone features, embedded once per epoch's worth of views."""
    backbone = model.backbone.eval()
    clean = torch.from_numpy(embed(backbone, images, config, eval_transform(spec)))
    strong = torch.stack([
        torch.from_numpy(embed(backbone, images, config, augmenter(config.selflabel.augment, spec)))
        for _ in range(max(1, config.selflabel.cached_views))
    ])

    def fetch(idx: np.ndarray):
        index = torch.from_numpy(idx)
        view = torch.randint(len(strong), (len(idx),))
        return clean[index], strong[view, index], index

    return BatchFetchDataset(fetch, len(images))


def run_selflabel(config: Config, run_dir: str | Path) -> dict[str, float]:
    """Fine-tune the SCAN model on confident pseudo-labels; save ``selflabel/model.pt``."""
    spec = data_spec(config)
    directory = stage_dir(run_dir, "selflabel")
    model = load_clustering_model(config, run_dir, "scan")
    images = load_split(config, "train")
    L.seed_everything(config.runtime.seed, workers=True, verbose=False)
    frozen = config.selflabel.freeze_backbone
    module = SelfLabelModule(model, config, spec, frozen=frozen)
    if frozen:
        loader = batch_loader(frozen_views(config, model, images, spec), config.selflabel.batch_size,
                              shuffle=True, num_workers=0, seed=config.runtime.seed, drop_last=True)
    else:
        if config.runtime.channels_last:
            module = module.to(memory_format=torch.channels_last)
        loader = image_loader(images, config.selflabel.batch_size, shuffle=True, config=config, drop_last=True)
    original = copy.deepcopy(model.state_dict())
    model.train()
    trainer = build_trainer(config, directory, config.selflabel.epochs)
    trainer.fit(module, loader, ckpt_path=resume_checkpoint(directory))
    if not trainer.is_global_zero:
        return {}
    metrics = {
        "confident_fraction": module.confident / max(1, module.seen),
        "max_confidence": module.max_confidence,
    }
    state = module.final_model().state_dict()
    if module.confident == 0:
        warnings.warn(no_confident_message(config.selflabel.threshold, module.max_confidence), stacklevel=1)
        state = original
    save_torch(directory / "model.pt", {"state_dict": state, "feature_dim": model.backbone.out_dim,
                                        "num_clusters": model.heads.heads[0].out_features})
    finish_stage(run_dir, "selflabel", config, metrics)
    return metrics


def no_confident_message(threshold: float, max_confidence: float) -> str:
    """Explain an all-unconfident self-labelling run and suggest a threshold that would work."""
    suggestion = max(0.5, round(max_confidence - 0.05, 2))
    return (
        f"self-labelling found no prediction above threshold {threshold} (highest confidence "
        f"{max_confidence:.3f}); the SCAN model was kept unchanged — retry with "
        f"--set selflabel.threshold={suggestion}"
    )

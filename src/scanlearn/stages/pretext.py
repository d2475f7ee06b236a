"""Stage 1: SimCLR pretext training of the backbone (NT-Xent over two augmented views)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from ..config import Config
from ..losses import nt_xent_loss
from ..models import ContrastiveModel, build_backbone
from ..models.checkpoints import check_pretext_source, import_pretext_weights
from .common import (
    DataSpec, augmenter, build_trainer, data_spec, finish_stage, image_loader, load_split, load_torch,
    optimizer_with_schedule, require_stage, resume_checkpoint, save_torch, stage_dir, to_memory_format,
)
from .guards import check_finite, load_state_checked


def build_contrastive_model(config: Config, spec: DataSpec) -> ContrastiveModel:
    """Backbone of the configured architecture with its projection head."""
    backbone = build_backbone(config.model.backbone, width=config.model.width, in_channels=spec.channels)
    return ContrastiveModel(backbone, backbone.out_dim, config.model.proj_dim)


class PretextModule(L.LightningModule):
    """SimCLR: both views go through the network in one concatenated forward pass."""

    def __init__(self, model: ContrastiveModel, config: Config, spec: DataSpec) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.augment = augmenter(config.pretext.augment, spec)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, _, _ = batch
        views = torch.cat([self.augment(images), self.augment(images)])
        return to_memory_format(views, self.config.runtime)

    def training_step(self, views: torch.Tensor, batch_idx: int) -> torch.Tensor:
        z = self.model(views)
        z1, z2 = z.chunk(2)
        z1, z2 = self.all_gather(z1, sync_grads=True), self.all_gather(z2, sync_grads=True)
        if z1.ndim == 3:
            z1, z2 = z1.flatten(0, 1), z2.flatten(0, 1)
        loss = check_finite(nt_xent_loss(z1, z2, self.config.pretext.temperature), "pretext")
        self.log("loss", loss, prog_bar=True, on_epoch=True, on_step=True)
        return loss

    def configure_optimizers(self):
        return optimizer_with_schedule(self, self.model.parameters(), self.config.pretext.optim)


def run_pretext(config: Config, run_dir: str | Path) -> dict[str, float]:
    """Train (or import) the pretext model and save ``pretext/model.pt``."""
    check_pretext_source(config.pretext.method, config.model.pretext_checkpoint, config.name)
    spec = data_spec(config)
    directory = stage_dir(run_dir, "pretext")
    model = build_contrastive_model(config, spec)
    metrics: dict[str, float] = {}
    if config.model.pretext_checkpoint:
        metrics["imported_from"] = str(config.model.pretext_checkpoint)
        report = import_pretext_weights(model, config.model.pretext_checkpoint, config.model.backbone)
        metrics["imported_tensors"] = len(report.loaded)
    elif config.pretext.epochs > 0:
        images = load_split(config, "pretext")
        L.seed_everything(config.runtime.seed, workers=True, verbose=False)
        module = PretextModule(model, config, spec)
        if config.runtime.channels_last:
            module = module.to(memory_format=torch.channels_last)
        loader = image_loader(images, config.pretext.batch_size, shuffle=True, config=config, drop_last=True)
        trainer = build_trainer(config, directory, config.pretext.epochs)
        trainer.fit(module, loader, ckpt_path=resume_checkpoint(directory))
        metrics["loss"] = float(trainer.callback_metrics.get("loss_epoch", float("nan")))
        if not trainer.is_global_zero:
            return metrics
    save_torch(directory / "model.pt", {"state_dict": model.state_dict(), "feature_dim": model.backbone.out_dim})
    finish_stage(run_dir, "pretext", config, metrics)
    return metrics


def load_contrastive_model(config: Config, run_dir: str | Path) -> ContrastiveModel:
    """The trained pretext model of ``run_dir`` (eval mode, CPU)."""
    directory = require_stage(run_dir, "pretext", "this stage")
    model = build_contrastive_model(config, data_spec(config))
    state = load_torch(directory / "model.pt")
    load_state_checked(model, state["state_dict"], directory / "model.pt")
    return model.eval()

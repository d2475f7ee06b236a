"""Stage 1: SimCLR pretext training of the backbone (NT-Xent over two augmented views)."""

from __future__ import annotations

import lightning as L
import torch

from ..config import Config
from ..engine import distributed
from ..engine.execution import prepare
from ..engine.guards import check_finite
from ..engine.loaders import augmenter, image_loader
from ..engine.resume import ResumableModule
from ..engine.run import Run
from ..engine.splits import DataSpec
from ..engine.trained import build_contrastive_model
from ..engine.training import finish_stage, fit_stage, optimizer_with_schedule
from ..losses import nt_xent_loss
from ..models import ContrastiveModel
from ..models.checkpoints import check_pretext_source, import_pretext_weights
from ..models.pretrained import is_pretrained
from ..runs.artefacts import save_torch, stage_dir


class PretextModule(ResumableModule):
    """SimCLR: both views go through the network in one concatenated forward pass."""

    persistent = ("loss_sum", "loss_count")

    def __init__(self, model: ContrastiveModel, config: Config, spec: DataSpec) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.augment = augmenter(config.pretext.augment, spec)
        self.loss_sum = 0.0
        self.loss_count = 0

    def on_train_epoch_start(self) -> None:
        self.loss_sum, self.loss_count = 0.0, 0

    def epoch_loss(self) -> float:
        """Mean loss of the last epoch (kept in checkpoints, so a resumed run reports the same)."""
        return self.loss_sum / self.loss_count if self.loss_count else float("nan")

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, _, _ = batch
        return torch.cat([self.augment(images), self.augment(images)])

    def training_step(self, views: torch.Tensor, batch_idx: int) -> torch.Tensor:
        z = self.model(views)
        z1, z2 = z.chunk(2)
        gather = distributed.gather_with_grad(self.all_gather) if self.trainer.world_size > 1 else None
        loss = nt_xent_loss(z1, z2, self.config.pretext.temperature, gather=gather, rank=self.global_rank)
        check_finite(loss, "pretext")
        shown = self.trainer.strategy.reduce(loss.detach(), reduce_op="mean")
        self.log("loss", shown, prog_bar=True, on_epoch=True, on_step=True)
        self.loss_sum += float(shown)
        self.loss_count += 1
        return loss

    def configure_optimizers(self):
        return optimizer_with_schedule(self, self.model.parameters(), self.config.pretext.optim)


def check_pretext_inputs(config: Config) -> None:
    """Refuse, before any work, a pretext that needs imported weights without a checkpoint file."""
    if not is_pretrained(config.model.backbone):
        check_pretext_source(config.pretext.method, config.model.pretext_checkpoint, config.name)


def run_pretext(run: Run) -> dict[str, float]:
    """Train (or import) the pretext model and save ``pretext/model.pt``; pretrained backbones skip it."""
    config = run.config
    if is_pretrained(config.model.backbone):
        metrics = {"skipped": "pretrained backbone, skipped"}
        if distributed.is_rank_zero():
            finish_stage(run, "pretext", metrics)
        return metrics
    check_pretext_inputs(config)
    spec = run.spec
    directory = stage_dir(run.directory, "pretext")
    model = build_contrastive_model(config, spec)
    metrics: dict[str, float] = {}
    if config.model.pretext_checkpoint:
        metrics["imported_from"] = str(config.model.pretext_checkpoint)
        report = import_pretext_weights(model, config.model.pretext_checkpoint, config.model.backbone)
        metrics["imported_tensors"] = len(report.loaded)
    elif config.pretext.epochs > 0:
        images = run.split("pretext")
        L.seed_everything(config.runtime.seed, workers=True, verbose=False)
        module = PretextModule(model, config, spec)
        module = prepare(module, config.runtime, "pretext")
        loader = image_loader(images, config.pretext.batch_size, shuffle=True, config=config, drop_last=True)
        fit_stage(config, directory, module, loader, config.pretext.epochs)
        metrics["loss"] = module.epoch_loss()
    if not distributed.is_rank_zero():
        return metrics
    save_torch(directory / "model.pt", {"state_dict": model.state_dict(), "feature_dim": model.backbone.out_dim})
    finish_stage(run, "pretext", metrics)
    return metrics



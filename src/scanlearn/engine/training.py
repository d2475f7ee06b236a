"""One stage's training through Lightning's Trainer: devices, precision, logs, rolling checkpoints,
exact resume, optimiser and schedule, and the files that mark the stage finished."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from ..config import Config, OptimConfig, parse_devices, save_config
from .execution import resolve_precision
from .progress import epoch_callbacks, StderrProgressBar
from .lr_schedules import lr_schedule
from .resume import AtomicCheckpointIO, RollingCheckpoint, fit_resumable, preserve_logs
from .run import Run
from ..runs.artefacts import DONE_FILE, stage_dir, write_json


@contextmanager
def lightning_info_hidden() -> Iterator[None]:
    """Hide Lightning's INFO lines (devices available, checkpoint restored) while it lasts, restoring the
    logger's level after: each stage prints its own one-line device decision instead."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def build_trainer(config: Config, directory: Path, max_epochs: int, steps_per_epoch: int,
                  callbacks: list | None = None) -> L.Trainer:
    """Lightning Trainer for one stage: devices, precision, logs and per-epoch checkpoints (metrics logged
    at least once an epoch)."""
    runtime = config.runtime
    checkpoint = RollingCheckpoint(directory / "checkpoints", runtime.checkpoint_every_n_steps)
    preserve_logs(directory / "logs")
    devices = parse_devices(runtime.devices)
    return L.Trainer(
        accelerator=runtime.accelerator,
        devices=devices,
        num_nodes=runtime.num_nodes,
        strategy=runtime.strategy,
        sync_batchnorm=runtime.sync_batchnorm,
        precision=resolve_precision(runtime),
        max_epochs=max_epochs,
        deterministic=runtime.deterministic,
        logger=CSVLogger(directory, name="logs", version=""),
        callbacks=[checkpoint, *(callbacks or []), *epoch_callbacks(),
                   *([StderrProgressBar()] if runtime.progress else [])],
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=runtime.progress,
        enable_model_summary=False,
        log_every_n_steps=max(1, min(runtime.log_every_n_steps, steps_per_epoch)),
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        default_root_dir=directory,
    )


def fit_stage(config: Config, directory: Path, module: L.LightningModule, loader: DataLoader, max_epochs: int,
              callbacks: list | None = None) -> L.Trainer:
    """Build the stage's trainer and fit, resuming exactly where an interrupted run stopped.

    Every submodule is put in train mode first: Lightning keeps the mode each submodule had, and
    a backbone loaded for inference would otherwise train with frozen batch-norm statistics.
    """
    module.train()
    trainer = build_trainer(config, directory, max_epochs, len(loader), callbacks)
    fit_resumable(trainer, module, loader, directory / "checkpoints")
    return trainer


def make_optimizer(params: Iterator[torch.nn.Parameter], optim: OptimConfig) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov off) or Adam, with weight decay."""
    if optim.name == "sgd":
        return torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    if optim.name == "adam":
        return torch.optim.Adam(params, lr=optim.lr, weight_decay=optim.weight_decay)
    if optim.name == "adamw":
        return torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)
    raise ValueError(f"unknown optimiser {optim.name!r}; choose sgd, adam or adamw")


def optimizer_with_schedule(module: L.LightningModule, params, optim: OptimConfig) -> dict:
    """Lightning ``configure_optimizers`` result; the schedule advances every step or every epoch (``optim.interval``)."""
    optimizer = make_optimizer(params, optim)
    schedule = lr_schedule(optimizer, optim, module.trainer.max_epochs, int(module.trainer.estimated_stepping_batches))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": optim.interval}}


def finish_stage(run: Run, stage: str, metrics: dict[str, Any]) -> None:
    """Write the stage's resolved config and metrics, then its completion marker (last)."""
    directory = stage_dir(run.directory, stage)
    save_config(run.config, directory / "config.yaml")
    write_json(directory / "metrics.json", metrics)
    write_json(directory / DONE_FILE, {"stage": stage})

"""Inference over an image set: embed with a model (sharded over ranks when distributed) and
recalibrate batch-norm statistics on clean images."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from . import distributed
from ..config import Config
from ..data.images import ImageSet
from .execution import plan_execution
from .loaders import image_loader

EMBED_BATCH = 512  # images an embedding pass runs at once


def embed(
    fn: Callable[[torch.Tensor], torch.Tensor],
    images: ImageSet,
    config: Config,
    transform: torch.nn.Module,
    batch_size: int = EMBED_BATCH,
    device: torch.device | None = None,
) -> np.ndarray:
    """Apply ``fn`` (a model in eval mode) to every image after ``transform``; float32 numpy out."""
    return embed_all([fn], images, config, transform, batch_size, device)[0]


@torch.inference_mode()
def embed_all(
    fns: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    images: ImageSet,
    config: Config,
    transform: torch.nn.Module,
    batch_size: int = EMBED_BATCH,
    device: torch.device | None = None,
) -> list[np.ndarray]:
    """Apply every one of ``fns`` to each batch after ``transform``: several networks' outputs (float32 numpy, one
    array per function) from one pass over the images, each batch loaded and normalised once."""
    plan = plan_execution(config.runtime)
    device = device or plan.device
    outputs: list[list[torch.Tensor]] = [[] for _ in fns]
    loader = image_loader(images, batch_size, shuffle=False, config=config, shard=False)
    for batch, _, _ in tqdm(loader, desc="embedding", unit="batch", leave=False, disable=not config.runtime.progress):
        x = transform(batch.to(device, non_blocking=True))
        with plan.autocast():
            for fn, output in zip(fns, outputs):
                output.append(fn(x).float().cpu())
    return [torch.cat(output).numpy() for output in outputs]


def recalibrate_batch_norm(network: torch.nn.Module, images: ImageSet, config: Config, transform: torch.nn.Module) -> None:
    """Recompute the running statistics of every batch-norm layer of ``network`` as the average over one
    pass of ``images`` after ``transform``, and leave it in eval mode.

    Training gathers them on strongly augmented views; predictions are made on clean images.
    """
    layers = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
    embed(network.train(), images, config, transform)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    network.eval()


def embed_distributed(
    fn: Callable[[torch.Tensor], torch.Tensor],
    images: ImageSet,
    config: Config,
    transform: torch.nn.Module,
    batch_size: int = EMBED_BATCH,
    to_all: bool = True,
) -> np.ndarray | None:
    """``embed`` with every rank embedding its contiguous shard; rows gathered in order to all ranks
    (or to rank 0 only, the others getting None, when ``to_all`` is False)."""
    if not distributed.is_distributed() or len(images) < distributed.world_size():
        return embed(fn, images, config, transform, batch_size)
    start, stop = distributed.shard_bounds(len(images))[distributed.rank()]
    local = embed(fn, images.subset(np.arange(start, stop)), config, transform, batch_size)
    return distributed.gather_rows(local, len(images), to_all)

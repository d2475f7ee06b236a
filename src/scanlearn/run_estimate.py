"""Estimate of a whole run's duration from a short measured step of each stage.

On a batch of the run's own images, with each stage's own augmentation, it times one embedding
pass and one training pass (forward + backward) of the backbone; each stage's cost is then its
number of image passes times the measured cost per image (cached-feature stages embed each view
once, then pay a cost per image, epoch and head of head training). It reflects the machine's load at the time it
measures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .config import Config
from .data.datasets import ImageSet
from .data.descriptors import image_descriptors
from .models import build_backbone
from .models.pretrained import NO_WEIGHTS, is_pretrained
from .engine.loaders import augmenter
from .engine.run import Run
from .engine.trained import eval_transform

SAMPLE = 32
# Seconds per image and epoch of heads on cached features: a part for the loop (fetching, loss, validation) and a
# part per head. Measured on 2 AVX2 cores with 50 heads: 100 frozen SCAN epochs on a 600-image folder took 50 s,
# 30 epochs on 6,129 images 126 s (0.83 and 0.69 ms per image-epoch); one self-labelling head, 10 epochs on
# 6,129 images, 2 s (0.03 ms).
HEAD_IMAGE_EPOCH_S = 3e-5
# Mining's fixed cost (loading the model, the index, the block map, writing): 6.0, 6.2 and 8.1 s on folders of 100,
# 197 and 232 images (2 AVX-512 cores, fp32), where its per-image estimate was under a second.
MINE_START_S = 5.0
PER_HEAD_IMAGE_EPOCH_S = 1.4e-5


@dataclass(frozen=True)
class StepCosts:
    """Measured seconds per image: embedding (no gradient) and one training pass with each augmentation."""

    embed: float
    train: dict[str, float]
    describe: float = 0.0  # ``mine.descriptors`` of one image


def sample_batch(images: ImageSet, size: int = SAMPLE) -> torch.Tensor:
    """The first ``size`` images as one uint8 batch (N, C, H, W)."""
    return torch.stack([images[i][0] for i in range(min(size, len(images)))])


def measure(run: Run) -> StepCosts:
    """Seconds per image, on the run's training images, of an embedding pass and of a training pass under each
    stage's augmentation."""
    config, spec, images = run.config, run.spec, run.split("train")
    model = config.model
    backbone = build_backbone(model.backbone, width=model.width, in_channels=spec.channels,
                              weights=NO_WEIGHTS if is_pretrained(model.backbone) else None, input_size=model.input_size)
    batch = sample_batch(images)
    plain = eval_transform(spec)
    backbone.eval()
    with torch.inference_mode():
        embed = timed(lambda: backbone(plain(batch))) / len(batch)
    backbone.train()
    train = {}
    for stage in ("pretext", "scan", "selflabel"):
        augment = augmenter(getattr(config, stage).augment, spec)
        train[stage] = timed(lambda: backbone(augment(batch)).float().sum().backward()) / len(batch)
    describe = 0.0
    if config.mine.descriptors:
        sample = images.subset(list(range(len(batch))))
        describe = timed(lambda: image_descriptors(sample, config.mine.descriptors)) / len(batch)
    return StepCosts(embed, train, describe)


def run_seconds(run: Run) -> dict[str, float]:
    """Estimated seconds of each stage of ``run``, measured on its own training images."""
    return stage_seconds(run.config, len(run.split("train")), measure(run))


def timed(step, repeats: int = 2) -> float:
    """Wall seconds of the fastest of ``repeats`` calls of ``step`` (the first also warms up)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - started)
    return best


def head_seconds(heads: int) -> float:
    """Seconds per image and epoch of training ``heads`` heads on cached features."""
    return HEAD_IMAGE_EPOCH_S + heads * PER_HEAD_IMAGE_EPOCH_S


def pretext_images_per_epoch(n: int, batch_size: int) -> int:
    """Images the pretext stage trains on per epoch: whole batches only (the last partial one is dropped), or
    every image in one batch when the set is no larger than a batch (``engine.loaders``)."""
    return n if n <= batch_size else (n // batch_size) * batch_size


def stage_seconds(config: Config, n: int, costs: StepCosts) -> dict[str, float]:
    """Estimated seconds of each stage for ``n`` training images (each stage's evaluation included)."""
    frozen_scan, frozen_self = config.scan.freeze_backbone, config.selflabel.freeze_backbone
    pretrained = is_pretrained(config.model.backbone)
    imported = bool(config.model.pretext_checkpoint)  # weights read from a file: only the scoring pass is left
    pretext = 0.0 if pretrained or config.pretext.epochs == 0 else 2 * n * costs.embed + (
        0.0 if imported else
        config.pretext.epochs * pretext_images_per_epoch(n, config.pretext.batch_size) * 2 * costs.train["pretext"])
    mine = MINE_START_S + (1 if pretrained else 2) * n * costs.embed + 2 * n * costs.describe  # train and test splits
    scan_views = (1 + config.scan.cached_views) if frozen_scan else 0
    scan = (scan_views * n * costs.embed + config.scan.epochs * n * head_seconds(config.scan.num_heads) if frozen_scan
            else config.scan.epochs * n * 2 * costs.train["scan"] + 2 * n * costs.embed)
    selflabel = (config.selflabel.cached_views * n * costs.embed + config.selflabel.epochs * n * head_seconds(1)
                 if frozen_self
                 else config.selflabel.epochs * n * (costs.embed + costs.train["selflabel"]) + 2 * n * costs.embed)
    return {"pretext": pretext, "mine": mine, "scan": scan, "selflabel": selflabel}

"""Hand-made image descriptors mined beside the learned features (``mine.descriptors``).

A network trained from scratch on a few hundred images learns less than a colour histogram or a
histogram of gradients tells: its augmentations teach it to ignore colour, and 20 epochs see little.
These descriptors need no training; mining on them side by side with the learned features (each
block given equal weight, ``mining.fit_whitening``) finds neighbours that share colour, shape and
layout. Every image is first brought to ``SIDE`` px, so the descriptors of a folder do not depend on
the training size the schedule picked.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from skimage.color import rgb2gray, rgb2hsv
from skimage.feature import hog

from ..errors import ConfigError
from .images import ImageSet

SIDE = 64
PIXEL_SIDE = 32
HUE_BINS, SATURATION_BINS, VALUE_BINS = 8, 4, 4
HOG_CELL, HOG_ORIENTATIONS, HOG_BLOCK = 8, 9, 2
CHUNK = 256


def colour_histogram(rgb: np.ndarray) -> np.ndarray:
    """HSV histogram (8 hues x 4 saturations x 4 values) of each image (N, H, W, 3) in [0, 1], rows summing to 1."""
    hsv = rgb2hsv(rgb)
    scale = np.array([HUE_BINS, SATURATION_BINS, VALUE_BINS])
    cells = np.minimum((hsv * scale).astype(np.int64), scale - 1)
    bins = (cells[..., 0] * SATURATION_BINS + cells[..., 1]) * VALUE_BINS + cells[..., 2]
    size = HUE_BINS * SATURATION_BINS * VALUE_BINS
    counts = np.stack([np.bincount(row.ravel(), minlength=size) for row in bins]).astype(np.float32)
    return counts / counts.sum(1, keepdims=True)


def gradient_histogram(rgb: np.ndarray) -> np.ndarray:
    """HOG of each image (N, H, W, 3) in grey: 8-px cells, 9 orientations, 2 x 2 blocks (scikit-image)."""
    return np.stack([hog(image, orientations=HOG_ORIENTATIONS, pixels_per_cell=(HOG_CELL, HOG_CELL),
                         cells_per_block=(HOG_BLOCK, HOG_BLOCK)) for image in rgb2gray(rgb)]).astype(np.float32)


def small_pixels(rgb: np.ndarray) -> np.ndarray:
    """The image's RGB pixels at ``PIXEL_SIDE`` px: its layout of colours, (N, 3 * 32 * 32)."""
    batch = torch.from_numpy(np.ascontiguousarray(rgb.transpose(0, 3, 1, 2)))
    small = F.interpolate(batch, size=(PIXEL_SIDE, PIXEL_SIDE), mode="bilinear", antialias=True, align_corners=False)
    return small.flatten(1).numpy().astype(np.float32)


DESCRIPTORS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "hog": gradient_histogram,
    "colour": colour_histogram,
    "pixels": small_pixels,
}


def check_names(names: tuple[str, ...]) -> None:
    """Refuse a descriptor name this module does not know (one line naming the known ones)."""
    unknown = [name for name in names if name not in DESCRIPTORS]
    if unknown:
        raise ConfigError(f"unknown descriptor {unknown[0]!r}; mine.descriptors takes any of {sorted(DESCRIPTORS)}")


def rgb_at_side(batch: torch.Tensor) -> np.ndarray:
    """uint8 images (N, C, H, W) as RGB floats in [0, 1] at ``SIDE`` x ``SIDE``, (N, SIDE, SIDE, 3)."""
    x = batch.float() / 255
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (SIDE, SIDE):
        x = F.interpolate(x, size=(SIDE, SIDE), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return x.permute(0, 2, 3, 1).numpy()


def image_descriptors(images: ImageSet, names: tuple[str, ...]) -> tuple[np.ndarray, list[int]]:
    """The descriptors ``names`` of every image side by side (N, sum of widths), and each one's width."""
    check_names(names)
    chunks = []
    for start in range(0, len(images), CHUNK):
        batch = torch.stack([images[i][0] for i in range(start, min(start + CHUNK, len(images)))])
        rgb = rgb_at_side(batch)
        chunks.append([DESCRIPTORS[name](rgb) for name in names])
    blocks = [np.concatenate([chunk[j] for chunk in chunks]) for j in range(len(names))]
    return np.concatenate(blocks, axis=1), [block.shape[1] for block in blocks]

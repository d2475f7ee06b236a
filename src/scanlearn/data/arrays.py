"""In-memory arrays of images (the estimator's input) as uint8 NCHW batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .catalog import IMAGENET_MEAN, IMAGENET_STD, DatasetInfo, register
from .decode import center_crop_geometry, reason
from ..errors import DataError
from .images import ImageSet, TensorImageSet


def image_batch(array: np.ndarray | torch.Tensor, image_size: int | None = None) -> torch.Tensor:
    """Any stack of images as uint8 RGB (N,3,S,S): (N,H,W), (N,H,W,C) or (N,C,H,W), C in 1/3/4.

    Floats must lie in [0, 1]; alpha is composited over white; non-square images are resized
    on the shorter side to ``image_size`` (default: that side) and centre-cropped.
    """
    raw = array if isinstance(array, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(array))
    tensor = _to_nchw(_as_uint8(raw.cpu()))
    if tensor.shape[1] == 1:
        tensor = tensor.expand(-1, 3, -1, -1)
    elif tensor.shape[1] == 4:
        alpha = tensor[:, 3:].float() / 255
        tensor = (tensor[:, :3].float() * alpha + 255 * (1 - alpha)).round().to(torch.uint8)
    return _square(tensor.contiguous(), image_size)


def _as_uint8(tensor: torch.Tensor) -> torch.Tensor:
    """uint8 as is; floats in [0, 1] scaled to 0..255; anything else is a DataError."""
    if tensor.dtype == torch.uint8:
        return tensor
    if tensor.is_floating_point() and tensor.numel() and 0 <= float(tensor.min()) and float(tensor.max()) <= 1:
        return (tensor.float() * 255).round().to(torch.uint8)
    raise DataError(
        f"images must be uint8 (0..255) or floats in [0, 1], got {tensor.dtype}; convert them first"
    )


def _to_nchw(tensor: torch.Tensor) -> torch.Tensor:
    """(N,H,W), (N,H,W,C) or (N,C,H,W) -> (N,C,H,W); channels-last wins when both could fit."""
    if tensor.ndim == 3:
        return tensor[:, None]
    if tensor.ndim == 4 and tensor.shape[-1] in (1, 3, 4):
        return tensor.permute(0, 3, 1, 2)
    if tensor.ndim == 4 and tensor.shape[1] in (1, 3, 4):
        return tensor
    raise DataError(
        f"cannot read images of shape {tuple(tensor.shape)}; pass (N,H,W), (N,H,W,C) or (N,C,H,W) "
        "with 1, 3 or 4 channels"
    )


def _square(images: torch.Tensor, image_size: int | None) -> torch.Tensor:
    """Resize the shorter side to ``image_size`` (bilinear, antialiased) and centre-crop."""
    height, width = images.shape[-2:]
    size = int(image_size or min(height, width))
    if (height, width) == (size, size):
        return images
    (new_w, new_h), (left, top, right, bottom) = center_crop_geometry(width, height, size)
    if (new_h, new_w) != (height, width):
        resized = torch.nn.functional.interpolate(
            images.float(), size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
        )
        images = resized.round().clamp(0, 255).to(torch.uint8)
    return images[:, :, top:bottom, left:right].contiguous()


@register(DatasetInfo("array", None, 3, 32, IMAGENET_MEAN, IMAGENET_STD))
def _load_array(
    root: Path | None, split: str, download: bool, image_size: int | None
) -> ImageSet:
    """Images saved with ``numpy.save`` (any layout ``image_batch`` reads); every split is the same."""
    if root is None or not root.is_file():
        raise DataError(f"the array dataset needs data.root pointing at a .npy file of images, got {root}")
    try:
        array = np.load(root, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {root} as a .npy image array ({reason(exc)})") from exc
    images = image_batch(array, image_size)
    return TensorImageSet(images, np.full(len(images), -1, dtype=np.int64))

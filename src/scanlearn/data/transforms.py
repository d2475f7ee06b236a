"""Batched image augmentations for SCAN, run on whole uint8 batches on any device.

Every transform is an ``nn.Module`` without parameters that takes a uint8 batch
``(B, C, H, W)`` with ``C`` in {1, 3} and returns a normalised float32 batch of the same shape
(SimCLR crops may be resized to a smaller ``crop_size``).
Random parameters are drawn per sample from the global torch RNG (seed it with
``torch.manual_seed``) on the batch's device, so a CUDA batch is augmented on the GPU.
Augmentations always run in float32 with autocast disabled, whatever the caller's context.

References:
    [0] SimCLR: Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning
        of Visual Representations", ICML 2020, arXiv:2002.05709.
    [1] SCAN: Van Gansbeke, Vandenhende, Georgoulis, Proesmans, Van Gool, "SCAN: Learning to
        Classify Images Without Labels", ECCV 2020, arXiv:2005.12320.
    [2] RandAugment: Cubuk, Zoph, Shlens, Le, "RandAugment: Practical automated data
        augmentation with a reduced search space", 2020, arXiv:1909.13719.
    [3] Cutout: DeVries, Taylor, "Improved Regularization of Convolutional Neural Networks
        with Cutout", 2017, arXiv:1708.04552.
    [4] FixRes: Touvron, Vedaldi, Douze, Jegou, "Fixing the train-test resolution
        discrepancy", NeurIPS 2019, arXiv:1906.06423.

The single-image operations (``posterize``, ``solarize``, ``equalize``, ``rotate`` ...) are
module-level functions taking per-sample magnitudes, so each can be used and tested alone.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scanlearn.errors import ConfigError, DataError

__all__ = [
    "STRONG_OPS",
    "EvalTransform",
    "MultiView",
    "Normalize",
    "SimCLRAugment",
    "StrongAugment",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "adjust_sharpness",
    "affine_warp",
    "apply_strong_op",
    "autocontrast",
    "build_transform",
    "color_jitter",
    "centre_crop",
    "crop_at",
    "cutout",
    "equalize",
    "flip_and_shift",
    "normalize",
    "posterize",
    "random_crop",
    "random_grayscale",
    "resized_crop",
    "rgb_to_grayscale",
    "rotate",
    "sample_resized_crop_boxes",
    "shear_x",
    "shear_y",
    "solarize",
    "to_float",
    "to_uint8",
    "translate",
]

LUMA_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights used for grayscale conversion (as PIL and torchvision)."""

_CROP_ATTEMPTS = 10
_SMOOTH_KERNEL = ((1.0, 1.0, 1.0), (1.0, 5.0, 1.0), (1.0, 1.0, 1.0))


# ---------------------------------------------------------------------------------------------
# Conversion, validation and normalisation
# ---------------------------------------------------------------------------------------------


def check_image_batch(x: Tensor) -> None:
    """Raise ``DataError`` unless ``x`` is a uint8 batch of shape (B, C, H, W) with C in {1, 3}."""
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise DataError(f"expected an image batch of shape (B, C, H, W) with C in {{1, 3}}, "
                        f"got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        raise DataError(f"expected a uint8 image batch, got dtype {x.dtype}")


def to_float(x: Tensor) -> Tensor:
    """Convert a uint8 batch to contiguous float32 in [0, 1] (``x / 255``)."""
    return x.contiguous().to(torch.float32) / 255.0


def to_uint8(x: Tensor) -> Tensor:
    """Convert a float batch in [0, 1] to uint8 by rounding to the nearest level."""
    return (x * 255.0).round_().clamp_(0.0, 255.0).to(torch.uint8)


def _per_sample(values: Tensor) -> Tensor:
    """Reshape per-sample values (B,) to (B, 1, 1, 1) for broadcasting against a batch."""
    return values.to(torch.float32).reshape(-1, 1, 1, 1)


def _channel_values(values: Sequence[float], channels: int, what: str) -> tuple[float, ...]:
    """Match per-channel statistics to ``channels`` (average 3 -> 1, broadcast 1 -> 3)."""
    values = tuple(float(v) for v in values)
    if len(values) == channels:
        return values
    if len(values) == 1:
        return values * channels
    if len(values) == 3 and channels == 1:
        return (sum(values) / 3.0,)
    raise ConfigError(f"{what} has {len(values)} values; give 1 or {channels} for "
                      f"{channels}-channel images")


def _check_stats(mean: Sequence[float], std: Sequence[float]) -> tuple[tuple[float, ...], ...]:
    """Validate normalisation statistics at construction time and return them as float tuples."""
    mean_t, std_t = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    for name, values in (("mean", mean_t), ("std", std_t)):
        if len(values) not in (1, 3):
            raise ConfigError(f"{name} must have 1 or 3 values, got {len(values)}")
    if any(s <= 0 for s in std_t):
        raise ConfigError(f"std values must be positive, got {std_t}")
    return mean_t, std_t


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Return ``(x - mean) / std`` per channel for a float batch ``x`` in [0, 1].

    ``mean``/``std`` hold 1 or C values; 3 values on a 1-channel batch are averaged and
    1 value on a 3-channel batch is broadcast.

    Shape:
        x: (B, C, H, W) float. Output: (B, C, H, W) float32.
    """
    channels = x.shape[1]
    mean_t = x.new_tensor(_channel_values(mean, channels, "mean")).view(1, -1, 1, 1)
    std_t = x.new_tensor(_channel_values(std, channels, "std")).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


class _BatchTransform(nn.Module):
    """Shared input checks and float32, autocast-free execution for the batch transforms."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.mean, self.std = _check_stats(mean, std)

    def forward(self, x: Tensor) -> Tensor:
        check_image_batch(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self._transform(x)

    def _transform(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}"


class Normalize(_BatchTransform):
    """Convert uint8 images to float in [0, 1], then normalise with ``(x - mean) / std``.

    Shape:
        Input: (B, C, H, W) uint8, C in {1, 3}. Output: (B, C, H, W) float32.

    >>> Normalize((0.5,), (0.5,))(torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)).max().item()
    1.0
    """

    def _transform(self, x: Tensor) -> Tensor:
        return normalize(to_float(x), self.mean, self.std)


class EvalTransform(_BatchTransform):
    """Evaluation transform: a centre crop to ``crop_size`` (0: none), then uint8 -> float -> normalise.

    Used for neighbour mining, kNN monitoring and evaluation in SCAN [1]; the crop gives the
    authors' ImageNet view (images decoded at 256, centre 224 seen).

    Shape:
        Input: (B, C, H, W) uint8, C in {1, 3}. Output: (B, C, S, S) float32, S = ``crop_size``
        (or (B, C, H, W) without crop).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], crop_size: int = 0) -> None:
        super().__init__(mean, std)
        _check_non_negative("crop_size", crop_size)
        self.crop_size = int(crop_size)

    def _transform(self, x: Tensor) -> Tensor:
        if self.crop_size:
            _check_crop(x, self.crop_size)
            x = centre_crop(x, self.crop_size)
        return normalize(to_float(x), self.mean, self.std)


# ---------------------------------------------------------------------------------------------
# Colour operations (float batches in [0, 1], per-sample factors of shape (B,))
# ---------------------------------------------------------------------------------------------


def rgb_to_grayscale(x: Tensor) -> Tensor:
    """Luma ``0.299 R + 0.587 G + 0.114 B``; a 1-channel batch is returned unchanged.

    Shape:
        x: (B, C, H, W) float. Output: (B, 1, H, W).
    """
    if x.shape[1] == 1:
        return x
    red, green, blue = x.unbind(dim=1)
    luma = LUMA_WEIGHTS[0] * red + LUMA_WEIGHTS[1] * green + LUMA_WEIGHTS[2] * blue
    return luma.unsqueeze(1)


def _blend(image: Tensor, degenerate: Tensor, factor: Tensor) -> Tensor:
    """``factor * image + (1 - factor) * degenerate`` clamped to [0, 1]; factor 1 is exact."""
    factor = _per_sample(factor)
    return (factor * image + (1.0 - factor) * degenerate).clamp_(0.0, 1.0)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """Blend each image with black: factor 0 gives black, 1 the original."""
    return _blend(x, torch.zeros_like(x), factor)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend each image with its mean grey level: factor 0 gives a uniform grey image."""
    mean_grey = rgb_to_grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean_grey, factor)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Blend each image with its grayscale version ("color" op); identity for 1 channel."""
    if x.shape[1] == 1:
        return x
    return _blend(x, rgb_to_grayscale(x), factor)


def _smooth_3x3(x: Tensor) -> Tensor:
    """Smooth with the 3x3 kernel [[1,1,1],[1,5,1],[1,1,1]] / 13, keeping the border pixels."""
    channels, height, width = x.shape[1:]
    if height < 3 or width < 3:
        return x
    kernel = x.new_tensor(_SMOOTH_KERNEL) / 13.0
    smoothed = F.conv2d(x, kernel.expand(channels, 1, 3, 3), groups=channels)
    result = x.clone()
    result[..., 1:-1, 1:-1] = smoothed
    return result


def adjust_sharpness(x: Tensor, factor: Tensor) -> Tensor:
    """Blend each image with a 3x3-smoothed copy: factor 0 blurs, 1 is the original."""
    return _blend(x, _smooth_3x3(x), factor)


def _rgb_to_hsv(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Vectorised RGB -> (hue in [0, 1), saturation, value), each of shape (B, H, W)."""
    red, green, blue = x.unbind(dim=1)
    value = x.amax(dim=1)
    chroma = value - x.amin(dim=1)
    has_chroma = chroma > 0
    safe_chroma = torch.where(has_chroma, chroma, torch.ones_like(chroma))
    saturation = torch.where(value > 0, chroma / value.clamp_min(1e-12), torch.zeros_like(value))
    hue_if_red_max = ((green - blue) / safe_chroma).remainder(6.0)
    hue_if_green_max = (blue - red) / safe_chroma + 2.0
    hue_if_blue_max = (red - green) / safe_chroma + 4.0
    hue = torch.where(value == red, hue_if_red_max,
                      torch.where(value == green, hue_if_green_max, hue_if_blue_max))
    hue = torch.where(has_chroma, hue / 6.0, torch.zeros_like(hue))
    return hue, saturation, value


def _hsv_to_rgb(hue: Tensor, saturation: Tensor, value: Tensor) -> Tensor:
    """Vectorised HSV -> RGB: V - V S clamp(min(k, 4 - k), 0, 1) with k = (n + 6 H) mod 6."""
    offsets = hue.new_tensor([5.0, 3.0, 1.0]).view(1, 3, 1, 1)
    k = (offsets + 6.0 * hue.unsqueeze(1)).remainder(6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return value.unsqueeze(1) * (1.0 - saturation.unsqueeze(1) * ramp)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue of each image by ``shift`` turns (in [-0.5, 0.5]) in HSV space.

    A 1-channel batch is returned unchanged.

    Shape:
        x: (B, C, H, W) float in [0, 1]; shift: (B,). Output: (B, C, H, W).
    """
    if x.shape[1] == 1:
        return x
    hue, saturation, value = _rgb_to_hsv(x)
    hue = (hue + shift.to(torch.float32).view(-1, 1, 1)).remainder(1.0)
    return _hsv_to_rgb(hue, saturation, value).clamp_(0.0, 1.0)


def color_jitter(x: Tensor, brightness: Tensor | None, contrast: Tensor | None,
                 saturation: Tensor | None, hue: Tensor | None) -> Tensor:
    """Apply brightness, contrast, saturation and hue (in this fixed order) with per-sample values.

    A ``None`` entry skips that adjustment. Factors are multiplicative (1 = unchanged);
    ``hue`` is a shift in turns (0 = unchanged).
    """
    if brightness is not None:
        x = adjust_brightness(x, brightness)
    if contrast is not None:
        x = adjust_contrast(x, contrast)
    if saturation is not None:
        x = adjust_saturation(x, saturation)
    if hue is not None:
        x = adjust_hue(x, hue)
    return x


def random_grayscale(x: Tensor, p: float) -> Tensor:
    """Replace each 3-channel image by its luma replicated on 3 channels with probability ``p``."""
    if x.shape[1] == 1 or p <= 0:
        return x
    chosen = torch.rand(x.shape[0], device=x.device) < p
    grey = rgb_to_grayscale(x).expand_as(x)
    return torch.where(chosen.view(-1, 1, 1, 1), grey, x)


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Blur each image with its own Gaussian ``sigma`` (pixels): a separable, normalised
    ``kernel_size`` kernel with reflect padding, the same kernel as torchvision's ``gaussian_blur``.

    Shape:
        x: (B, C, H, W) float; sigma: (B,) positive. Output: (B, C, H, W).
    """
    batch, channels, height, width = x.shape
    radius = kernel_size // 2
    offsets = torch.linspace(-radius, radius, kernel_size, device=x.device)
    kernel = torch.exp(-0.5 * (offsets.view(1, -1) / sigma.to(x).view(-1, 1)) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)
    flat = x.reshape(1, batch * channels, height, width)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), kernel.view(-1, 1, 1, kernel_size),
                    groups=batch * channels)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"), kernel.view(-1, 1, kernel_size, 1),
                    groups=batch * channels)
    return flat.view(batch, channels, height, width)


def random_gaussian_blur(x: Tensor, p: float, sigma: tuple[float, float]) -> Tensor:
    """With probability ``p`` per image, a Gaussian blur with sigma uniform in ``sigma`` (as SimCLR [0]);
    the kernel spans +-3 sigma, at most the image."""
    if p <= 0:
        return x
    side = min(x.shape[-2:])
    radius = max(1, min(math.ceil(3 * sigma[1]), (side - 1) // 2))
    sigmas = torch.empty(x.shape[0], device=x.device).uniform_(*sigma)
    chosen = torch.rand(x.shape[0], device=x.device) < p
    return torch.where(chosen.view(-1, 1, 1, 1), gaussian_blur(x, sigmas, 2 * radius + 1), x)


# ---------------------------------------------------------------------------------------------
# Intensity operations (RandAugment-style)
# ---------------------------------------------------------------------------------------------


def autocontrast(x: Tensor) -> Tensor:
    """Stretch each channel of each image linearly so its minimum maps to 0 and maximum to 1.

    Channels with a single value are left unchanged.

    Shape:
        x: (B, C, H, W) float in [0, 1]. Output: (B, C, H, W).
    """
    low = x.amin(dim=(2, 3), keepdim=True)
    high = x.amax(dim=(2, 3), keepdim=True)
    spread = high - low
    has_spread = spread > 0
    stretched = (x - low) / torch.where(has_spread, spread, torch.ones_like(spread))
    return torch.where(has_spread, stretched.clamp_(0.0, 1.0), x)


def equalize(x: Tensor) -> Tensor:
    """Histogram-equalise each channel of each uint8 image (the PIL ``ImageOps.equalize`` rule).

    With ``step = (N - count of the brightest level) // 255`` a level ``v`` maps to
    ``(step // 2 + #pixels below v) // step``; channels with ``step == 0`` are unchanged
    (in particular every channel of an image with fewer than 256 pixels).

    Shape:
        x: (B, C, H, W) uint8. Output: (B, C, H, W) uint8.
    """
    batch, channels, height, width = x.shape
    levels = x.reshape(batch * channels, height * width).long()
    histogram = torch.zeros(batch * channels, 256, dtype=torch.long, device=x.device)
    histogram.scatter_add_(1, levels, torch.ones_like(levels))
    brightest = levels.amax(dim=1, keepdim=True)
    step = (height * width - histogram.gather(1, brightest)) // 255
    pixels_below = histogram.cumsum(dim=1) - histogram
    lut = ((pixels_below + step // 2) // step.clamp_min(1)).clamp_max(255)
    identity = torch.arange(256, device=x.device).expand_as(lut)
    lut = torch.where(step > 0, lut, identity)
    return lut.gather(1, levels).to(torch.uint8).reshape(batch, channels, height, width)


def solarize(x: Tensor, threshold: Tensor) -> Tensor:
    """Invert (``1 - x``) every value at or above the per-sample ``threshold`` in [0, 1].

    Shape:
        x: (B, C, H, W) float in [0, 1]; threshold: (B,). Output: (B, C, H, W).
    """
    return torch.where(x >= _per_sample(threshold), 1.0 - x, x)


def posterize(x: Tensor, bits: Tensor) -> Tensor:
    """Keep only the ``bits`` most significant bits (per sample, 1-8) of each uint8 value.

    Shape:
        x: (B, C, H, W) uint8; bits: (B,) integers. Output: (B, C, H, W) uint8.
    """
    dropped = 8 - bits.to(device=x.device, dtype=torch.long).clamp(1, 8)
    masks = (255 >> dropped) << dropped
    return torch.bitwise_and(x, masks.to(torch.uint8).view(-1, 1, 1, 1))


# ---------------------------------------------------------------------------------------------
# Geometric operations (bilinear resampling with affine_grid + grid_sample)
# ---------------------------------------------------------------------------------------------


def affine_warp(x: Tensor, matrix: Tensor, offset: Tensor, padding_mode: str = "zeros",
                size: int | None = None) -> Tensor:
    """Resample each image so output pixel ``p`` reads the input at ``matrix @ p + offset``.

    Coordinates are in pixels relative to the image centre (x to the right, y down), so the
    identity matrix with zero offset reproduces the image and integer offsets shift by whole
    pixels. Points outside the image read zeros (``padding_mode="zeros"``) or the nearest
    border pixel (``"border"``). With ``size`` the output is ``size`` x ``size`` and covers the
    same region (its pixels are scaled by ``H / size``).

    Shape:
        x: (B, C, H, W) float; matrix: (B, 2, 2); offset: (B, 2). Output: (B, C, H, W), or
        (B, C, size, size).
    """
    batch, channels, height, width = x.shape
    half_size = x.new_tensor([width / 2.0, height / 2.0])
    linear = matrix.to(x.dtype) * half_size.view(1, 1, 2) / half_size.view(1, 2, 1)
    translation = offset.to(x.dtype) / half_size
    theta = torch.cat([linear, translation.unsqueeze(2)], dim=2)
    out_height, out_width = (size, size) if size else (height, width)
    grid = F.affine_grid(theta, [batch, channels, out_height, out_width], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode,
                         align_corners=False)


def _identity_matrices(batch: int, device: torch.device) -> Tensor:
    return torch.eye(2, device=device).expand(batch, 2, 2).clone()


def rotate(x: Tensor, degrees: Tensor) -> Tensor:
    """Rotate each image counter-clockwise by ``degrees`` about its centre, filling with 0.

    Shape:
        x: (B, C, H, W) float; degrees: (B,). Output: (B, C, H, W).
    """
    radians = degrees.to(device=x.device, dtype=torch.float32) * (math.pi / 180.0)
    cos, sin = torch.cos(radians), torch.sin(radians)
    matrix = torch.stack([torch.stack([cos, -sin], dim=1), torch.stack([sin, cos], dim=1)], dim=1)
    return affine_warp(x, matrix, torch.zeros(x.shape[0], 2, device=x.device))


def _shear(x: Tensor, factor: Tensor, row: int, column: int) -> Tensor:
    matrix = _identity_matrices(x.shape[0], x.device)
    matrix[:, row, column] = factor.to(device=x.device, dtype=torch.float32)
    return affine_warp(x, matrix, torch.zeros(x.shape[0], 2, device=x.device))


def shear_x(x: Tensor, factor: Tensor) -> Tensor:
    """Shear each image horizontally about its centre: output (u, v) reads input (u + f v, v)."""
    return _shear(x, factor, row=0, column=1)


def shear_y(x: Tensor, factor: Tensor) -> Tensor:
    """Shear each image vertically about its centre: output (u, v) reads input (u, v + f u)."""
    return _shear(x, factor, row=1, column=0)


def translate(x: Tensor, dx: Tensor, dy: Tensor) -> Tensor:
    """Move the content of each image by (dx, dy) pixels (right, down), filling with 0.

    Shape:
        x: (B, C, H, W) float; dx, dy: (B,). Output: (B, C, H, W).
    """
    offset = -torch.stack([dx, dy], dim=1).to(device=x.device, dtype=torch.float32)
    return affine_warp(x, _identity_matrices(x.shape[0], x.device), offset)


def flip_and_shift(x: Tensor, flip: Tensor, dx: Tensor, dy: Tensor) -> Tensor:
    """Mirror horizontally where ``flip`` is true, then crop shifted by (dx, dy) pixels.

    Equivalent to zero-padding the image and cropping the original size at offset (dx, dy)
    from the centred position (torchvision's ``RandomCrop(size, padding)`` with integer offsets).

    Shape:
        x: (B, C, H, W) float; flip: (B,) bool; dx, dy: (B,). Output: (B, C, H, W).
    """
    mirror = 1.0 - 2.0 * flip.to(device=x.device, dtype=torch.float32)
    matrix = _identity_matrices(x.shape[0], x.device)
    matrix[:, 0, 0] = mirror
    offset = torch.stack([mirror * dx.to(mirror), dy.to(mirror)], dim=1)
    return affine_warp(x, matrix, offset)


def sample_resized_crop_boxes(batch: int, height: int, width: int,
                              scale: tuple[float, float], ratio: tuple[float, float],
                              device: torch.device | str = "cpu") -> Tensor:
    """Draw one crop box per sample following the RandomResizedCrop rule of [0].

    Tries ``10`` (area fraction ~ U(scale), log aspect ratio ~ U(log ratio)) pairs per sample
    and keeps the first that fits inside the image; samples where none fits use the whole
    image. The box centre is uniform over the positions that keep the box inside the image.
    Box sizes are continuous (sub-pixel), not rounded.

    Returns:
        (B, 4) float tensor of (centre_x, centre_y, box_width, box_height) in pixels.
    """
    area = height * width * torch.empty(batch, _CROP_ATTEMPTS, device=device).uniform_(*scale)
    log_ratio = torch.empty(batch, _CROP_ATTEMPTS, device=device).uniform_(
        math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(log_ratio)
    box_w, box_h = torch.sqrt(area * aspect), torch.sqrt(area / aspect)
    fits = (box_w <= width) & (box_h <= height)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)
    any_fits = fits.any(dim=1)
    box_w = torch.where(any_fits, box_w.gather(1, first).squeeze(1), float(width))
    box_h = torch.where(any_fits, box_h.gather(1, first).squeeze(1), float(height))
    centre_x = box_w / 2 + torch.rand(batch, device=device) * (width - box_w)
    centre_y = box_h / 2 + torch.rand(batch, device=device) * (height - box_h)
    return torch.stack([centre_x, centre_y, box_w, box_h], dim=1)


def resized_crop(x: Tensor, boxes: Tensor, flip: Tensor, size: int | None = None) -> Tensor:
    """Crop each image to its box, resize it bilinearly to the full size (or ``size`` x ``size``)
    and mirror if ``flip``.

    Shape:
        x: (B, C, H, W) float; boxes: (B, 4) as from ``sample_resized_crop_boxes``;
        flip: (B,) bool. Output: (B, C, H, W), or (B, C, size, size).
    """
    height, width = x.shape[-2:]
    centre_x, centre_y, box_w, box_h = boxes.to(torch.float32).unbind(dim=1)
    mirror = 1.0 - 2.0 * flip.to(device=x.device, dtype=torch.float32)
    matrix = torch.zeros(x.shape[0], 2, 2, device=x.device)
    matrix[:, 0, 0] = mirror * box_w / width
    matrix[:, 1, 1] = box_h / height
    offset = torch.stack([centre_x - width / 2, centre_y - height / 2], dim=1)
    return affine_warp(x, matrix, offset, padding_mode="border", size=size)


def cutout(x: Tensor, side: int | Tensor, centre_y: Tensor, centre_x: Tensor) -> Tensor:
    """Zero one square hole per image around the given pixel, clipped at the borders.

    The hole of side ``L`` (one int, or one per image) covers rows ``centre_y - L // 2`` up to,
    not including, ``centre_y + L // 2`` (columns likewise), the rule of Cutout [3] as SCAN [1]
    runs it: an odd ``L`` removes an ``L - 1`` square.

    Shape:
        x: (B, C, H, W); side, centre_y, centre_x: (B,) integers. Output: (B, C, H, W).
    """
    height, width = x.shape[-2:]
    half = torch.as_tensor(side, device=x.device).div(2, rounding_mode="floor").view(-1, 1)
    centre_y, centre_x = centre_y.to(x.device).view(-1, 1), centre_x.to(x.device).view(-1, 1)
    rows = torch.arange(height, device=x.device).view(1, -1)
    columns = torch.arange(width, device=x.device).view(1, -1)
    in_rows = (rows >= centre_y - half) & (rows < centre_y + half)
    in_columns = (columns >= centre_x - half) & (columns < centre_x + half)
    hole = in_rows.unsqueeze(2) & in_columns.unsqueeze(1)
    return x.masked_fill(hole.unsqueeze(1), 0.0)


def crop_at(x: Tensor, top: Tensor, left: Tensor, size: int) -> Tensor:
    """Cut a ``size`` x ``size`` window out of each image at its own integer (top, left) corner.

    Shape:
        x: (B, C, H, W); top, left: (B,) integers. Output: (B, C, size, size).
    """
    span = torch.arange(size, device=x.device)
    rows = (top.to(x.device).view(-1, 1) + span).view(-1, 1, size, 1)
    columns = (left.to(x.device).view(-1, 1) + span).view(-1, 1, 1, size)
    batch = torch.arange(x.shape[0], device=x.device).view(-1, 1, 1, 1)
    channels = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return x[batch, channels, rows, columns]


def centre_crop(x: Tensor, size: int) -> Tensor:
    """The central ``size`` x ``size`` square of every image (torchvision's rounding of the offset).

    Shape:
        x: (B, C, H, W) with H, W >= size. Output: (B, C, size, size).
    """
    height, width = x.shape[-2:]
    top, left = round((height - size) / 2), round((width - size) / 2)
    return x[..., top:top + size, left:left + size]


def random_crop(x: Tensor, size: int) -> Tensor:
    """A ``size`` x ``size`` window at a uniformly random position inside each image, no padding.

    Shape:
        x: (B, C, H, W) with H, W >= size. Output: (B, C, size, size).
    """
    batch, _, height, width = x.shape
    top = torch.randint(height - size + 1, (batch,), device=x.device)
    left = torch.randint(width - size + 1, (batch,), device=x.device)
    return crop_at(x, top, left, size)


def _check_crop(x: Tensor, size: int) -> None:
    """Raise ``DataError`` when the images are smaller than the crop taken from them."""
    if min(x.shape[-2:]) < size:
        raise DataError(f"images of {tuple(x.shape[-2:])} pixels are smaller than the {size}-pixel crop; "
                        "set data.resize to at least data.image_size")


# ---------------------------------------------------------------------------------------------
# Strong augmentation op list: each maps (float batch, uniform draws u in [0, 1)) -> batch
# ---------------------------------------------------------------------------------------------


def _uniform(u: Tensor, low: float, high: float) -> Tensor:
    return low + (high - low) * u


def _enhance_factor(u: Tensor) -> Tensor:
    return _uniform(u, 0.05, 0.95)


def _op_identity(x: Tensor, u: Tensor) -> Tensor:
    return x


def _op_autocontrast(x: Tensor, u: Tensor) -> Tensor:
    return autocontrast(x)


def _op_equalize(x: Tensor, u: Tensor) -> Tensor:
    return to_float(equalize(to_uint8(x)))


def _op_rotate(x: Tensor, u: Tensor) -> Tensor:
    return rotate(x, _uniform(u, -30.0, 30.0))


def _op_solarize(x: Tensor, u: Tensor) -> Tensor:
    return solarize(x, u)


def _op_color(x: Tensor, u: Tensor) -> Tensor:
    return adjust_saturation(x, _enhance_factor(u))


def _op_contrast(x: Tensor, u: Tensor) -> Tensor:
    return adjust_contrast(x, _enhance_factor(u))


def _op_brightness(x: Tensor, u: Tensor) -> Tensor:
    return adjust_brightness(x, _enhance_factor(u))


def _op_sharpness(x: Tensor, u: Tensor) -> Tensor:
    return adjust_sharpness(x, _enhance_factor(u))


def _op_shear_x(x: Tensor, u: Tensor) -> Tensor:
    return shear_x(x, _uniform(u, -0.1, 0.1))


def _op_shear_y(x: Tensor, u: Tensor) -> Tensor:
    return shear_y(x, _uniform(u, -0.1, 0.1))


def _op_translate_x(x: Tensor, u: Tensor) -> Tensor:
    return translate(x, _uniform(u, -0.1, 0.1) * x.shape[-1], torch.zeros_like(u))


def _op_translate_y(x: Tensor, u: Tensor) -> Tensor:
    return translate(x, torch.zeros_like(u), _uniform(u, -0.1, 0.1) * x.shape[-2])


def _op_posterize(x: Tensor, u: Tensor) -> Tensor:
    bits = (4 + torch.floor(4 * u)).clamp_max(7)
    return to_float(posterize(to_uint8(x), bits))


STRONG_OPS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "identity": _op_identity,
    "autocontrast": _op_autocontrast,
    "equalize": _op_equalize,
    "rotate": _op_rotate,
    "solarize": _op_solarize,
    "color": _op_color,
    "contrast": _op_contrast,
    "brightness": _op_brightness,
    "sharpness": _op_sharpness,
    "shear_x": _op_shear_x,
    "shear_y": _op_shear_y,
    "translate_x": _op_translate_x,
    "translate_y": _op_translate_y,
    "posterize": _op_posterize,
}
"""The 14 strong-augmentation ops of SCAN [1] (RandAugment-style [2]) and their magnitudes.

Each maps a float batch in [0, 1] and per-sample uniform draws ``u`` in [0, 1) to a batch:
rotate +-30 degrees; solarize threshold ``u``; color/contrast/brightness/sharpness factor in
[0.05, 0.95]; shear factor +-0.1; translate +-10 % of the width/height; posterize 4-7 bits (as SCAN's released code draws them).
"""


def apply_strong_op(x: Tensor, name: str, u: Tensor) -> Tensor:
    """Apply the strong op ``name`` with per-sample magnitude draws ``u`` in [0, 1).

    Shape:
        x: (B, C, H, W) float in [0, 1]; u: (B,). Output: (B, C, H, W) float in [0, 1].
    """
    try:
        op = STRONG_OPS[name]
    except KeyError:
        raise ConfigError(f"unknown strong op {name!r}; choose one of: "
                          f"{', '.join(STRONG_OPS)}") from None
    return op(x, u.to(device=x.device, dtype=torch.float32))


def _apply_random_ops(x: Tensor) -> Tensor:
    """One round: every sample applies one op drawn uniformly from ``STRONG_OPS``.

    Samples are grouped by op (one sort), each op runs once on its group, then the original
    order is restored.
    """
    batch = x.shape[0]
    choice = torch.randint(len(STRONG_OPS), (batch,), device=x.device)
    draws = torch.rand(batch, device=x.device)
    order = torch.argsort(choice, stable=True)
    counts = torch.bincount(choice, minlength=len(STRONG_OPS)).tolist()
    groups = zip(STRONG_OPS.values(), x[order].split(counts), draws[order].split(counts))
    transformed = [op(images, u) if len(images) else images for op, images, u in groups]
    result = torch.empty_like(x)
    result[order] = torch.cat(transformed)
    return result


# ---------------------------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------------------------


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1], got {value}")


def _check_non_negative(name: str, value: float) -> None:
    if value < 0:
        raise ConfigError(f"{name} must be >= 0, got {value}")


class SimCLRAugment(_BatchTransform):
    """SimCLR augmentation [0] with the settings SCAN [1] uses for its pretext stage.

    Augmentations, in order, each with its own random parameters per sample:

    1. RandomResizedCrop to the input size, or to ``crop_size`` x ``crop_size`` when it is set:
       area fraction in ``crop_scale``, aspect ratio in (3/4, 4/3), bilinear resampling (crop
       boxes are sub-pixel, not rounded). Crops smaller than the evaluation images cost less
       to train on and show objects at about the size they have in the full image [4];
    2. horizontal flip with probability ``flip_p`` (fused with 1 in one resampling);
    3. with probability ``jitter_p`` a colour jitter in the fixed order brightness, contrast,
       saturation, hue: factors uniform in [max(0, 1 - s), 1 + s] and hue shift uniform in
       [-h, h] turns (HSV rotation) for ``jitter = (b, c, s, h)``; a 0 strength disables that
       part; saturation and hue are skipped for 1-channel images;
    4. grayscale (luma replicated on 3 channels) with probability ``grayscale_p``
       (3-channel images only);
    5. Gaussian blur with probability ``blur_p``, sigma uniform in ``blur_sigma`` pixels (SimCLR's
       ImageNet setting; off by default as in SCAN's CIFAR setting). It hides prints and fine
       texture, so views agree on shape;
    6. clamp to [0, 1] and normalise with ``(x - mean) / std``.

    Shape:
        Input: (B, C, H, W) uint8, C in {1, 3}. Output: (B, C, H, W) float32.

    >>> torch.manual_seed(0) and None
    >>> SimCLRAugment((0.5,), (0.5,))(torch.zeros(4, 1, 8, 8, dtype=torch.uint8)).shape
    torch.Size([4, 1, 8, 8])
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float],
                 crop_scale: tuple[float, float] = (0.2, 1.0), flip_p: float = 0.5,
                 jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
                 jitter_p: float = 0.8, grayscale_p: float = 0.2, crop_size: int = 0,
                 blur_p: float = 0.0, blur_sigma: tuple[float, float] = (0.1, 2.0)) -> None:
        super().__init__(mean, std)
        low, high = (float(v) for v in crop_scale)
        if crop_size < 0:
            raise ConfigError(f"crop_size must be 0 (input size) or a side in pixels, got {crop_size}")
        if not 0.0 < blur_sigma[0] <= blur_sigma[1]:
            raise ConfigError(f"blur_sigma must satisfy 0 < low <= high, got {blur_sigma}")
        if not 0.0 < low <= high <= 1.0:
            raise ConfigError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
        if len(jitter) != 4:
            raise ConfigError(f"jitter must be (brightness, contrast, saturation, hue), "
                              f"got {jitter}")
        for name, value in zip(("brightness", "contrast", "saturation", "hue"), jitter):
            _check_non_negative(f"jitter {name}", value)
        if jitter[3] > 0.5:
            raise ConfigError(f"jitter hue must be <= 0.5, got {jitter[3]}")
        for name, value in (("flip_p", flip_p), ("jitter_p", jitter_p),
                            ("grayscale_p", grayscale_p), ("blur_p", blur_p)):
            _check_probability(name, value)
        self.crop_scale = (low, high)
        self.flip_p = float(flip_p)
        self.jitter = tuple(float(v) for v in jitter)
        self.jitter_p = float(jitter_p)
        self.grayscale_p = float(grayscale_p)
        self.crop_size = int(crop_size)
        self.blur_p = float(blur_p)
        self.blur_sigma = (float(blur_sigma[0]), float(blur_sigma[1]))

    def augment(self, x: Tensor) -> Tensor:
        """Steps 1-5 without normalisation: uint8 batch -> float32 batch in [0, 1]."""
        check_image_batch(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            images = to_float(x)
            batch, _, height, width = images.shape
            boxes = sample_resized_crop_boxes(batch, height, width, self.crop_scale,
                                              (3 / 4, 4 / 3), device=x.device)
            flip = torch.rand(batch, device=x.device) < self.flip_p
            images = resized_crop(images, boxes, flip, self.crop_size or None)
            images = self._random_color_jitter(images)
            images = random_grayscale(images, self.grayscale_p)
            images = random_gaussian_blur(images, self.blur_p, self.blur_sigma)
            return images.clamp_(0.0, 1.0)

    def _random_color_jitter(self, x: Tensor) -> Tensor:
        if self.jitter_p <= 0 or not any(self.jitter):
            return x
        batch = x.shape[0]
        brightness, contrast, saturation = (
            self._draw_factor(batch, strength, x.device) for strength in self.jitter[:3]
        )
        hue = self._draw_hue(batch, self.jitter[3], x.device)
        jittered = color_jitter(x, brightness, contrast, saturation, hue)
        chosen = torch.rand(batch, device=x.device) < self.jitter_p
        return torch.where(chosen.view(-1, 1, 1, 1), jittered, x)

    @staticmethod
    def _draw_factor(batch: int, strength: float, device: torch.device) -> Tensor | None:
        if strength == 0:
            return None
        return torch.empty(batch, device=device).uniform_(max(0.0, 1.0 - strength),
                                                          1.0 + strength)

    @staticmethod
    def _draw_hue(batch: int, strength: float, device: torch.device) -> Tensor | None:
        if strength == 0:
            return None
        return torch.empty(batch, device=device).uniform_(-strength, strength)

    def _transform(self, x: Tensor) -> Tensor:
        return normalize(self.augment(x), self.mean, self.std)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, crop_scale={self.crop_scale}, flip_p={self.flip_p}, "
                f"jitter={self.jitter}, jitter_p={self.jitter_p}, "
                f"grayscale_p={self.grayscale_p}, crop_size={self.crop_size}, blur_p={self.blur_p}, "
                f"blur_sigma={self.blur_sigma}")


class StrongAugment(_BatchTransform):
    """SCAN [1] strong augmentation: flip, crop, RandAugment-style ops [2], Cutout [3].

    Augmentations, in order, each with its own random parameters per sample:

    1. a ``crop_size`` x ``crop_size`` window at a random position, no padding (``crop_size=0``:
       the input size, so nothing happens, as SCAN's "random crop to the image size" on
       CIFAR/STL; the authors' ImageNet strong view is a random 224 crop of a 256 image);
    2. horizontal flip with probability 0.5;
    3. a whole-pixel shift in [-crop_padding, crop_padding] per axis with zero fill (a random
       crop after zero-padding by ``crop_padding``, fused with 2; 0 disables it);
    4. ``n_ops`` rounds, each applying one op drawn uniformly (with replacement) from the 14 in
       ``STRONG_OPS`` with a random magnitude: identity, autocontrast, equalize, rotate
       +-30 deg, solarize, color, contrast, brightness, sharpness (factors 0.05-0.95),
       shear x/y +-0.1, translate x/y +-10 % of the size, posterize 4-7 bits;
       geometric ops resample bilinearly and fill with 0; color is the identity on 1 channel;
       every round's result is rounded to 8 bits, as the authors' ops on 8-bit images;
    5. normalise with ``(x - mean) / std``;
    6. Cutout: one square hole per image with a uniformly random centre, clipped at the borders,
       set to 0 (after normalisation). Its side is ``cutout``, or with ``cutout_random_side``
       drawn uniformly from 1..``cutout`` for every image (the authors' rule, about 7 % of a
       32x32 image removed for ``cutout=16`` against 19 % for the fixed side); ``cutout=0``
       disables it.

    Shape:
        Input: (B, C, H, W) uint8, C in {1, 3}. Output: (B, C, S, S) float32, S = ``crop_size`` or H.

    >>> torch.manual_seed(0) and None
    >>> StrongAugment((0.5,), (0.5,))(torch.zeros(4, 3, 32, 32, dtype=torch.uint8)).shape
    torch.Size([4, 3, 32, 32])
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], n_ops: int = 4,
                 cutout: int = 16, crop_padding: int = 4, cutout_random_side: bool = False,
                 crop_size: int = 0) -> None:
        super().__init__(mean, std)
        for name, value in (("n_ops", n_ops), ("cutout", cutout), ("crop_padding", crop_padding),
                            ("crop_size", crop_size)):
            if int(value) != value:
                raise ConfigError(f"{name} must be an integer, got {value}")
            _check_non_negative(name, value)
        self.n_ops = int(n_ops)
        self.cutout = int(cutout)
        self.crop_padding = int(crop_padding)
        self.cutout_random_side = bool(cutout_random_side)
        self.crop_size = int(crop_size)

    def augment(self, x: Tensor) -> Tensor:
        """Steps 1-4 without normalisation or Cutout: uint8 batch -> float32 batch in [0, 1]."""
        check_image_batch(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            if self.crop_size:
                _check_crop(x, self.crop_size)
                x = random_crop(x, self.crop_size)
            images = to_float(x)
            batch = images.shape[0]
            flip = torch.rand(batch, device=x.device) < 0.5
            pad = self.crop_padding
            shifts = torch.randint(-pad, pad + 1, (2, batch), device=x.device)
            images = flip_and_shift(images, flip, shifts[0], shifts[1])
            for _ in range(self.n_ops):
                images = to_float(to_uint8(_apply_random_ops(images)))
            return images.clamp_(0.0, 1.0)

    def _transform(self, x: Tensor) -> Tensor:
        images = normalize(self.augment(x), self.mean, self.std)
        if self.cutout == 0:
            return images
        batch, _, height, width = images.shape
        centre_y = torch.randint(height, (batch,), device=x.device)
        centre_x = torch.randint(width, (batch,), device=x.device)
        return cutout(images, self.cutout_sides(batch, x.device), centre_y, centre_x)

    def cutout_sides(self, batch: int, device: torch.device) -> Tensor:
        """The hole's side for each image: ``cutout``, or uniform in 1..``cutout`` with ``cutout_random_side``."""
        if self.cutout_random_side:
            return torch.randint(1, self.cutout + 1, (batch,), device=device)
        return torch.full((batch,), self.cutout, device=device)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, n_ops={self.n_ops}, cutout={self.cutout}, "
                f"crop_padding={self.crop_padding}, cutout_random_side={self.cutout_random_side}, "
                f"crop_size={self.crop_size}")


class MultiView(nn.Module):
    """Apply several transforms to the same batch and return one output per transform.

    ``MultiView(SimCLRAugment(m, s), SimCLRAugment(m, s))`` gives the two views of SimCLR [0].

    Shape:
        Input: (B, C, H, W) uint8. Output: tuple of (B, C, H, W) float32, one per transform.
    """

    def __init__(self, *transforms: nn.Module) -> None:
        super().__init__()
        if not transforms:
            raise ConfigError("MultiView needs at least one transform")
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return tuple(transform(x) for transform in self.transforms)


_TRANSFORMS: dict[str, type[_BatchTransform]] = {
    "eval": EvalTransform,
    "simclr": SimCLRAugment,
    "strong": StrongAugment,
}


def build_transform(name: str, mean: Sequence[float], std: Sequence[float],
                    **kwargs: object) -> nn.Module:
    """Build the transform called ``name`` ("eval", "simclr" or "strong") with its keywords.

    Raises:
        ConfigError: for an unknown name or a keyword the transform does not take.
    """
    try:
        transform_class = _TRANSFORMS[name]
    except KeyError:
        raise ConfigError(f"unknown transform {name!r}; choose one of: "
                          f"{', '.join(_TRANSFORMS)}") from None
    accepted = set(inspect.signature(transform_class.__init__).parameters) - {"self", "mean", "std"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ConfigError(f"transform {name!r} got unknown option(s) {', '.join(unknown)}; "
                          f"valid options: {', '.join(sorted(accepted)) or 'none'}")
    return transform_class(mean, std, **kwargs)

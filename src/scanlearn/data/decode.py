"""Decoding one image file: to RGB uint8, resized and centre-cropped, and why a file cannot be read."""

from __future__ import annotations

import os
import random
import stat
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
PAD_COLOUR = (124, 116, 104)  # the ImageNet mean colour (catalog.IMAGENET_MEAN x 255): about zero once normalised
SPECIAL_KINDS = (
    (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"), (stat.S_ISDIR, "directory"),
)


def is_image(name: str) -> bool:
    """True for visible files with a supported image extension."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def reason(exc: BaseException) -> str:
    """One-line description of a decoding failure."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def read_image(path: str | os.PathLike[str], draft_size: int | None = None) -> Image.Image:
    """Decode an image file to 8-bit RGB (any mode, EXIF orientation applied), e.g. for thumbnails."""
    return open_rgb(str(path), draft_size)


def shorter_side(path: str) -> int:
    """The shorter side of the image in ``path`` in pixels, read from its header (nothing decoded)."""
    with Image.open(path) as image:
        return min(image.size)


def median_shorter_side(paths: Sequence[str], sample: int = 200) -> int:
    """Median shorter side of a seeded sample of ``sample`` images (headers only: fast on any folder)."""
    chosen = random.Random(0).sample(list(paths), min(sample, len(paths)))
    sides = sorted(shorter_side(path) for path in chosen)
    return sides[len(sides) // 2]


def open_rgb(path: str, draft_size: int | None = None) -> Image.Image:
    """Fully decode ``path`` into an 8-bit RGB image, whatever its mode and orientation."""
    with Image.open(path) as image:
        if draft_size is not None:
            image.draft(None, (draft_size, draft_size))
        image.load()
        image = ImageOps.exif_transpose(image)
        return _to_rgb(image)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB: wide integers rescaled, transparency over white."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return Image.fromarray(_wide_to_uint8(image)).convert("RGB")
    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _wide_to_uint8(image: Image.Image) -> np.ndarray:
    """Scale a 16/32-bit integer or float grey image to uint8 (16-bit full range -> 0..255)."""
    array = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        scale = 255.0 if array.size and array.max() <= 1.0 else 1.0
    else:
        scale = 255.0 / 65535.0 if array.size and array.max() > 255 else 1.0
    return np.clip(np.rint(array * scale), 0, 255).astype(np.uint8)


def center_crop_geometry(width: int, height: int, size: int) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """The (width, height) an image is resized to so that its shorter side is ``size``, and the centred square
    (left, top, right, bottom) cut from it: the one rounding of the PIL and the tensor path (``arrays.image_batch``)."""
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    left, top = round((new_w - size) / 2), round((new_h - size) / 2)
    return (new_w, new_h), (left, top, left + size, top + size)


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` (bilinear, antialiased) and centre-crop a square."""
    resized, box = center_crop_geometry(*image.size, size)
    if resized != image.size:
        image = image.resize(resized, Image.Resampling.BILINEAR)
    return image.crop(box)


def resize_pad(image: Image.Image, size: int) -> Image.Image:
    """Resize the longer side to ``size`` (bilinear, antialiased) and centre the whole image on a neutral square."""
    width, height = image.size
    scale = size / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    if (new_w, new_h) == (size, size):
        return image
    canvas = Image.new("RGB", (size, size), PAD_COLOUR)
    canvas.paste(image, ((size - new_w) // 2, (size - new_h) // 2))
    return canvas


def decode_problem(path: str) -> str | None:
    """Why ``path`` cannot be decoded to RGB, or None when it can (never opening a FIFO, device or socket)."""
    try:
        kind = _special_kind(os.stat(path).st_mode)
        if kind is not None:
            return f"not a regular file ({kind})"
        open_rgb(path)
    except UnidentifiedImageError:
        return "not a recognised image file"
    except Exception as exc:  # any decoder failure makes the file unusable
        return reason(exc)
    return None


def _special_kind(mode: int) -> str | None:
    """What a non-regular file is ("FIFO", "socket", ...), None for a regular file: reading one could block forever."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in SPECIAL_KINDS if test(mode)), "special file")

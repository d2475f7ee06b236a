"""Folders and arrays of visually distinct shapes drawn with PIL, for end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("red_circles", "green_squares", "blue_triangles")
COLOURS = {"red_circles": (220, 30, 30), "green_squares": (30, 190, 40), "blue_triangles": (40, 60, 225)}
SIZES = ((48, 48), (64, 48), (40, 56), (72, 72))
FORMATS = (  # (mode, extension)
    ("RGB", ".png"), ("RGB", ".jpg"), ("RGBA", ".png"), ("P", ".png"), ("CMYK", ".jpg"),
    ("RGB", ".webp"), ("RGB", ".bmp"), ("RGB", ".tiff"), ("CMYK", ".tiff"),
)


def draw_shape(kind: str, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """One RGB image: a shape of ``kind`` at a random place and size on a pale noisy background."""
    width, height = size
    background = rng.integers(215, 255, size=(height, width, 3), dtype=np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    side = int(rng.uniform(0.45, 0.75) * min(width, height))
    left = int(rng.integers(0, width - side + 1))
    top = int(rng.integers(0, height - side + 1))
    box = (left, top, left + side, top + side)
    colour = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in COLOURS[kind])
    if kind == "red_circles":
        draw.ellipse(box, fill=colour)
    elif kind == "green_squares":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(left + side // 2, top), (left, top + side), (left + side, top + side)], fill=colour)
    return image


def save_as(image: Image.Image, path: Path, mode: str) -> None:
    """Save ``image`` converted to ``mode`` (RGBA gets a soft alpha, P an adaptive palette)."""
    if mode == "RGBA":
        converted = image.convert("RGBA")
        converted.putalpha(235)
    elif mode == "P":
        converted = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    else:
        converted = image.convert(mode)
    converted.save(path)


def write_shape_folder(root: Path, per_class: int = 40, seed: int = 0, nested: bool = True) -> Path:
    """``root/<class>/[sub/]shape_<i>.<ext>`` in assorted sizes, modes and formats."""
    rng = np.random.default_rng(seed)
    for kind in CLASSES:
        for i in range(per_class):
            mode, ext = FORMATS[(i + CLASSES.index(kind)) % len(FORMATS)]
            folder = root / kind / (f"batch{i % 2}" if nested else "")
            folder.mkdir(parents=True, exist_ok=True)
            save_as(draw_shape(kind, SIZES[i % len(SIZES)], rng), folder / f"shape_{i:03d}{ext}", mode)
    return root


def add_bad_files(root: Path) -> list[Path]:
    """A truncated JPEG and a text file named ``.png`` inside class folders; returns their paths."""
    good = draw_shape("red_circles", (64, 64), np.random.default_rng(99))
    truncated = root / CLASSES[0] / "truncated.jpg"
    good.save(truncated, quality=90)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    fake = root / CLASSES[1] / "notes.png"
    fake.write_text("this is not an image\n")
    return [truncated, fake]


def shape_arrays(per_class: int = 40, side: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N, side, side, 3), labels (N,))`` of the three shape classes."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, kind in enumerate(CLASSES):
        for _ in range(per_class):
            images.append(np.asarray(draw_shape(kind, (side, side), rng)))
            labels.append(label)
    return np.stack(images), np.asarray(labels)

"""STL-10 from its binary files; the pretext split adds the unlabelled images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .catalog import IMAGENET_MEAN, IMAGENET_STD, DatasetInfo, check_native_size, default_root, ensure_files, register
from ..errors import DataError
from .images import ImageSet, TensorImageSet

STL_SIDE = 96
STL_PIXELS = 3 * STL_SIDE * STL_SIDE
STL_CLASSES = [
    "airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck",
]  # fmt: skip


def _read_stl_images(files: Sequence[Path]) -> np.ndarray:
    """Read STL-10 ``*_X.bin`` files (column-major images) into one (N,3,96,96) view."""
    sizes = [f.stat().st_size for f in files]
    for path, size in zip(files, sizes):
        if size % STL_PIXELS:
            raise DataError(f"{path} is damaged: size is not a multiple of 3*96*96 bytes")
    buffer = np.empty(sum(sizes), dtype=np.uint8)
    start = 0
    for path, size in zip(files, sizes):
        with open(path, "rb") as handle:
            handle.readinto(memoryview(buffer)[start : start + size])
        start += size
    return buffer.reshape(-1, 3, STL_SIDE, STL_SIDE).transpose(0, 1, 3, 2)


def _read_stl_labels(path: Path) -> np.ndarray:
    """STL-10 ``*_y.bin`` labels (stored 1..10) as 0-based int64."""
    return np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1


def _stl_part_labels(folder: Path, part: str) -> np.ndarray:
    """Labels of one STL-10 part, -1 for the unlabeled part; checked against its image count."""
    count = (folder / f"{part}_X.bin").stat().st_size // STL_PIXELS
    if part == "unlabeled":
        return np.full(count, -1, dtype=np.int64)
    labels = _read_stl_labels(folder / f"{part}_y.bin")
    if len(labels) != count:
        raise DataError(f"{folder}/{part}_y.bin has {len(labels)} labels for {count} images")
    return labels


def _stl_classes(folder: Path) -> list[str]:
    """Class names from ``class_names.txt`` when present."""
    names_file = folder / "class_names.txt"
    if names_file.is_file():
        names = [n.strip() for n in names_file.read_text().splitlines() if n.strip()]
        if names:
            return names
    return list(STL_CLASSES)


@register(DatasetInfo("stl10", 10, 3, STL_SIDE, IMAGENET_MEAN, IMAGENET_STD))
def _load_stl10(
    root: Path | None, split: str, download: bool, image_size: int | None
) -> ImageSet:
    """STL-10 binaries: pretext = train+unlabeled (targets -1), train, test."""
    from torchvision.datasets import STL10

    check_native_size("stl10", STL_SIDE, image_size)
    base = default_root(root)
    folder = base / "stl10_binary"
    parts = {"pretext": ["train", "unlabeled"], "train": ["train"], "test": ["test"]}[split]
    needed = [f"{p}_X.bin" for p in parts] + [f"{p}_y.bin" for p in parts if p != "unlabeled"]
    ensure_files(
        folder,
        needed,
        download,
        lambda: STL10(str(base), split="test", download=True),
        f"STL-10 not found: expected {folder}/ with {', '.join(needed)} "
        "(layout ROOT/stl10_binary/); pass --data-root ROOT or add --set data.download=true",
    )
    images = _read_stl_images([folder / f"{p}_X.bin" for p in parts])
    labels = np.concatenate([_stl_part_labels(folder, p) for p in parts])
    return TensorImageSet(torch.from_numpy(images), labels, _stl_classes(folder))

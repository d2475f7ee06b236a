"""Datasets as fixed-size uint8 images plus integer targets, behind one name registry.

Every loader returns an :class:`ImageSet`; augmentation happens later on batches, so datasets
only decode, resize and crop. Standard datasets are read from their published on-disk
formats with our own small readers (one module per format family, each registering itself
when imported here); torchvision is used only to download them.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError
from . import arrays, cifar, fashion_mnist, folder, imagenet, stl10  # noqa: F401  (importing a format registers it)
from .catalog import DATASETS, SPLITS, DatasetInfo
from .images import ImageSet


def load_dataset(
    name: str,
    split: str,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    image_size: int | None = None,
    labels_from_folders: bool = False,
) -> ImageSet:
    """Load split ``pretext``/``train``/``test`` of the registered dataset ``name``.

    ``labels_from_folders`` (image folders only) takes each file's first-level subfolder
    name as its class; without it a folder's images are unlabelled.
    """
    entry = DATASETS.get(name)
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    path = Path(root).expanduser() if root is not None else None
    if entry.folder_labels:
        return entry.load(path, split, download, image_size, labels_from_folders)  # type: ignore[call-arg]
    if labels_from_folders:
        raise ConfigError(
            f"labels_from_folders applies to image folders only; {name} has its own labels — "
            "drop --labels-from-folders"
        )
    return entry.load(path, split, download, image_size)  # type: ignore[call-arg]


def is_image_folder(name: str) -> bool:
    """True when dataset ``name`` is a user's folder of image files (may hold unreadable files)."""
    return DATASETS.get(name).folder_labels


def list_datasets() -> list[str]:
    """Names of all registered datasets, sorted."""
    return DATASETS.names()


def dataset_info(name: str) -> DatasetInfo:
    """Metadata of the registered dataset ``name``."""
    return DATASETS.get(name).info

"""A user's folder of images, optionally labelled by first-level subfolder; run directories inside are skipped."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from .catalog import IMAGENET_MEAN, IMAGENET_STD, DatasetInfo, register
from .decode import IMAGE_EXTENSIONS, is_image
from ..errors import DataError
from .images import FileImageSet, ImageSet
from ..runs.rundir import is_run_dir


def _walk_images(root: Path) -> list[str]:
    """All image files below ``root`` (following links once; hidden entries and run directories skipped), sorted."""
    found: list[str] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and not is_run_dir(os.path.join(dirpath, d))]
        found.extend(os.path.join(dirpath, f) for f in filenames if is_image(f))
    return sorted(found)


def _folder_labels(root: Path, paths: list[str]) -> tuple[np.ndarray, list[str]]:
    """Targets from each file's first-level subfolder; files at top level get -1."""
    tops = [Path(p).relative_to(root).parts for p in paths]
    classes = sorted({parts[0] for parts in tops if len(parts) > 1})
    index = {name: i for i, name in enumerate(classes)}
    targets = np.array([index[p[0]] if len(p) > 1 else -1 for p in tops], dtype=np.int64)
    loose = int((targets < 0).sum())
    if loose:
        warnings.warn(
            f"{loose} images directly in {root} have no class folder; their target is -1",
            stacklevel=3,
        )
    return targets, classes


def load_folder(
    root: str | os.PathLike[str],
    image_size: int = 64,
    labels_from_folders: bool = False,
    channels: int = 3,
    fit: str = "pad",
) -> FileImageSet:
    """Every image below ``root`` (recursive, sorted), made square by ``fit``; labels from first-level folders if asked."""
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist or is not a directory; pass the folder holding your images")
    paths = _walk_images(folder)
    if not paths:
        raise DataError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {folder}; point at the folder holding your images"
        )
    if not labels_from_folders:
        unknown = np.full(len(paths), -1, dtype=np.int64)
        return FileImageSet(paths, unknown, image_size, channels=channels, fit=fit)
    targets, classes = _folder_labels(folder, paths)
    return FileImageSet(paths, targets, image_size, classes, channels, fit)


@register(DatasetInfo("folder", None, 3, 64, IMAGENET_MEAN, IMAGENET_STD), folder_labels=True)
def _load_user_folder(
    root: Path | None, split: str, download: bool, image_size: int | None, labels_from_folders: bool
) -> ImageSet:
    """A user's image folder (labels from subfolder names only if asked); every split is the same."""
    if root is None:
        raise DataError("the folder dataset needs --data PATH (or --data-root DIR) pointing at your images")
    return load_folder(root, image_size or 64, labels_from_folders)

"""ImageNet and its 50/100/200-class subsets as folders of JPEGs (one folder per wnid)."""

from __future__ import annotations

import importlib.resources
import os
import warnings
from pathlib import Path

from .catalog import IMAGENET_MEAN, IMAGENET_STD, DatasetInfo, default_root, register
from .decode import is_image
from ..errors import DataError
from .images import FileImageSet, ImageSet


def read_subset_file(name: str) -> list[tuple[str, str]]:
    """``(wnid, human name)`` pairs listed in the packaged ``imagenet_subsets/<name>.txt``."""
    package = importlib.resources.files("scanlearn.data")
    resource = package.joinpath("imagenet_subsets", f"{name}.txt")
    pairs = []
    for line in resource.read_text(encoding="utf-8").splitlines():
        if line.strip():
            wnid, _, label = line.strip().partition(" ")
            pairs.append((wnid, label.strip() or wnid))
    return pairs


def _subdirs(folder: Path) -> list[str]:
    """Names of visible subdirectories of ``folder``, sorted."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def _files_in(folder: Path) -> list[str]:
    """Image file paths directly inside ``folder``, sorted; empty when it does not exist."""
    if not folder.is_dir():
        return []
    with os.scandir(folder) as entries:
        return sorted(str(folder / e.name) for e in entries if e.is_file() and is_image(e.name))


def _imagenet_root(root: Path | None) -> Path:
    """The ImageNet folder: explicit root or ``$SCANLEARN_DATA/imagenet``."""
    candidate = root if root is not None else default_root(None) / "imagenet"
    if not (candidate / "train").is_dir() and not (candidate / "val").is_dir():
        raise DataError(
            f"ImageNet not found in {candidate}: pass --data-root DIR with train/<wnid>/*.JPEG "
            "and val/<wnid>/*.JPEG (ImageNet cannot be downloaded automatically)"
        )
    return candidate


def _select_wnids(reference: Path, subset: str | None) -> tuple[list[str], list[str]]:
    """Sorted wnids to use (present on disk) and their class names."""
    present = set(_subdirs(reference)) if reference.is_dir() else set()
    if subset is None:
        wnids = sorted(present)
        names = dict(zip(wnids, wnids))
    else:
        names = dict(read_subset_file(subset))
        wnids = sorted(w for w in names if w in present)
        missing = sorted(w for w in names if w not in present)
        if wnids and missing:
            warnings.warn(
                f"{subset}: {len(missing)} of {len(names)} listed classes are missing in "
                f"{reference} (first: {', '.join(missing[:3])}); using the {len(wnids)} present",
                stacklevel=2,
            )
    if not wnids:
        wanted = subset or "imagenet"
        raise DataError(f"no class folders (<wnid>/) of {wanted} found in {reference}")
    return wnids, [names[w] for w in wnids]


def _load_imagenet_folder(
    root: Path | None, split: str, image_size: int | None, subset: str | None
) -> FileImageSet:
    """ImageNet (or a class subset) from ``ROOT/{train,val}/<wnid>/*``; val serves as test."""
    base = _imagenet_root(root)
    split_dir = base / ("val" if split == "test" else "train")
    if not split_dir.is_dir():
        raise DataError(f"ImageNet split folder {split_dir} is missing")
    reference = base / "train" if (base / "train").is_dir() else split_dir
    wnids, classes = _select_wnids(reference, subset)
    paths: list[str] = []
    targets: list[int] = []
    for target, wnid in enumerate(wnids):
        files = _files_in(split_dir / wnid)
        paths.extend(files)
        targets.extend([target] * len(files))
    if not paths:
        raise DataError(
            f"no images in {split_dir}/<wnid>/ for the selected classes "
            "(val must be sorted into <wnid> folders)"
        )
    return FileImageSet(paths, targets, image_size or 224, classes)


def _register_imagenet(name: str, num_classes: int, subset: str | None) -> None:
    """Register the folder loader for full ImageNet (``subset=None``) or a packaged subset."""

    def load(root: Path | None, split: str, download: bool, image_size: int | None) -> ImageSet:
        return _load_imagenet_folder(root, split, image_size, subset)

    load.__doc__ = f"ImageNet folder loader for {subset or 'all classes'}."
    register(DatasetInfo(name, num_classes, 3, 224, IMAGENET_MEAN, IMAGENET_STD))(load)


_register_imagenet("imagenet", 1000, None)
_register_imagenet("imagenet50", 50, "imagenet_50")
_register_imagenet("imagenet100", 100, "imagenet_100")
_register_imagenet("imagenet200", 200, "imagenet_200")

"""The dataset registry: each format registers its metadata and loader under a name."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .decode import reason
from ..errors import ConfigError, DataError
from .images import ImageSet
from ..registry import Registry

SPLITS = ("pretext", "train", "test")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset: class count, channels, native size, normalisation."""

    name: str
    num_classes: int | None
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


Loader = Callable[[Path | None, str, bool, int | None], ImageSet]


FolderLoader = Callable[[Path | None, str, bool, int | None, bool], ImageSet]


@dataclass(frozen=True)
class DatasetEntry:
    """What the registry stores per dataset: its metadata and its loader.

    ``folder_labels`` marks user image folders: their loader takes a fifth argument saying
    whether to read labels from subfolder names.
    """

    info: DatasetInfo
    load: Loader | FolderLoader
    folder_labels: bool = False


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def register(info: DatasetInfo, folder_labels: bool = False) -> Callable[[Loader], Loader]:
    """Decorator registering ``load`` under ``info.name`` together with ``info``."""

    def add(load: Loader) -> Loader:
        DATASETS.register(info.name)(DatasetEntry(info, load, folder_labels))
        return load

    return add


def default_root(root: Path | None) -> Path:
    """Explicit root, else ``$SCANLEARN_DATA``, else ``~/.cache/scanlearn``."""
    if root is not None:
        return root
    env = os.environ.get("SCANLEARN_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "scanlearn"


def system_data_root() -> Path:
    """Where the system's dataset packages live: ``$SCANLEARN_SYSTEM_DATA``, else Debian's ``/usr/share/datasets``.

    The variable lets a test run or CI hide what a machine happens to have installed."""
    return Path(os.environ.get("SCANLEARN_SYSTEM_DATA") or "/usr/share/datasets")


def check_native_size(name: str, native: int, image_size: int | None) -> None:
    """In-memory datasets come at their native size only."""
    if image_size is not None and int(image_size) != native:
        raise ConfigError(
            f"{name} images are {native}x{native}; image_size must be {native} or unset, "
            f"got {image_size}"
        )


def run_download(what: str, fetch: Callable[[], object]) -> None:
    """Run a torchvision download, turning any failure into a one-line DataError."""
    try:
        fetch()
    except Exception as exc:  # network, checksum and archive errors all mean the same to users
        raise DataError(f"downloading {what} failed ({reason(exc)}); check the network") from exc


def ensure_files(
    folder: Path, files: Sequence[str], download: bool, fetch: Callable[[], object], missing: str
) -> None:
    """Download when ``files`` are missing from ``folder`` and allowed; else DataError."""
    if all((folder / f).is_file() for f in files):
        return
    if download:
        run_download(folder.name, fetch)
        if all((folder / f).is_file() for f in files):
            return
    raise DataError(missing)

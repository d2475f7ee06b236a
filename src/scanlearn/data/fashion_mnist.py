"""Fashion-MNIST from its idx files (the system copy, a root folder, or a download)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from .catalog import DatasetInfo, check_native_size, default_root, register, run_download, system_data_root
from .decode import reason
from ..errors import DataError
from .images import ImageSet, TensorImageSet

FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a uint8 IDX file (gzip-compressed or not) into an array of its stated shape."""
    with open(path, "rb") as handle:
        raw = handle.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path} is a damaged gzip file ({reason(exc)})") from exc
    if len(raw) < 4 or raw[0:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DataError(f"{path} is not a uint8 IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    if len(raw) - header != int(np.prod(dims)):
        raise DataError(f"{path} is truncated or damaged: header says {dims}, size disagrees")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _idx_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem`` or ``folder/stem.gz``, whichever exists."""
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _fashion_candidates(root: Path | None) -> list[Path]:
    """Folders that may hold the IDX files, in lookup order."""
    bases = [root] if root is not None else []
    env = os.environ.get("SCANLEARN_DATA")
    if env:
        bases.append(Path(env).expanduser())
    folders = [f for b in bases for f in (b, b / "fashion-mnist", b / "FashionMNIST" / "raw")]
    return folders + [system_data_root() / "fashion-mnist"]


def _find_fashion(root: Path | None, part: str) -> tuple[Path, Path] | None:
    """Locate the image and label IDX files of ``part`` (train/test)."""
    for folder in _fashion_candidates(root):
        files = [_idx_file(folder, stem) for stem in FASHION_FILES[part]]
        if files[0] is not None and files[1] is not None:
            return files[0], files[1]
    return None


def _download_fashion(root: Path | None) -> None:
    """Fetch Fashion-MNIST with torchvision into the default data root."""
    from torchvision.datasets import FashionMNIST

    target = default_root(root)
    run_download("Fashion-MNIST", lambda: FashionMNIST(root=str(target), download=True))


def _fashion_classes() -> list[str]:
    """Class names as torchvision spells them."""
    try:
        from torchvision.datasets import FashionMNIST
    except ImportError:
        return list(FASHION_CLASSES)
    return list(FashionMNIST.classes)


@register(DatasetInfo("fashion-mnist", 10, 1, 28, (0.2860,), (0.3530,)))
def _load_fashion_mnist(
    root: Path | None, split: str, download: bool, image_size: int | None
) -> ImageSet:
    """Fashion-MNIST from IDX files: 60k train (pretext/train), 10k test."""
    check_native_size("fashion-mnist", 28, image_size)
    part = "test" if split == "test" else "train"
    found = _find_fashion(root, part)
    if found is None and download:
        _download_fashion(root)
        found = _find_fashion(default_root(root), part)
    if found is None:
        raise DataError(
            "Fashion-MNIST IDX files not found; run `apt-get install dataset-fashion-mnist`, "
            "or pass --data-root DIR holding the four *-ubyte(.gz) IDX files, "
            "or add --set data.download=true (needs network)"
        )
    images, labels = read_idx(found[0]), read_idx(found[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{found[0]} and {found[1]} do not form an image/label pair")
    return TensorImageSet(torch.from_numpy(images[:, None].copy()), labels, _fashion_classes())

"""CIFAR-10 and CIFAR-100 (20 superclasses) from their pickled batches, unpickled with arrays only."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100

from .catalog import DatasetInfo, check_native_size, default_root, ensure_files, register
from .decode import reason
from ..errors import DataError
from .images import ImageSet, TensorImageSet

_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only builds numpy arrays and plain containers, never arbitrary objects."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict[str, object]:
    """Load one CIFAR python pickle with str keys (files written by Python 2 or 3)."""
    try:
        with open(path, "rb") as handle:
            entry = _ArrayUnpickler(handle, encoding="latin1").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DataError(f"cannot read CIFAR file {path} ({reason(exc)})") from exc
    if not isinstance(entry, dict):
        raise DataError(f"{path} is not a CIFAR python batch (expected a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _meta_names(path: Path, key: str) -> list[str]:
    """Class names stored under ``key`` in a CIFAR meta pickle, as str."""
    values = _unpickle(path).get(key)
    if not isinstance(values, (list, tuple)):
        raise DataError(f"{path} lacks the {key!r} list of class names")
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _cifar_batches(folder: Path, files: Sequence[str], label_key: str) -> TensorImageSet:
    """Concatenate CIFAR batches into one set of (3,32,32) images with ``label_key`` targets."""
    data, labels = [], []
    for name in files:
        entry = _unpickle(folder / name)
        if "data" not in entry or label_key not in entry:
            raise DataError(f"{folder / name} lacks the 'data' or {label_key!r} key")
        data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(int(v) for v in entry[label_key])  # type: ignore[attr-defined]
    return TensorImageSet(torch.from_numpy(np.concatenate(data)), labels)


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant keeps its pickles and which keys hold its labels and class names."""

    title: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: str
    names_key: str
    downloader: Callable[..., object]


def _load_cifar(layout: CifarLayout, name: str, root: Path | None, split: str, download: bool,
                image_size: int | None) -> ImageSet:
    """One CIFAR variant's ``split`` (train for pretext/train, else test) from its pickles, fetched first
    with ``download`` through torchvision."""
    check_native_size(name, 32, image_size)
    base = default_root(root)
    folder = base / layout.folder
    files = list(layout.test if split == "test" else layout.train)
    listed = ", ".join(dict.fromkeys([*layout.train, *layout.test, layout.meta]))
    ensure_files(
        folder,
        [*files, layout.meta],
        download,
        lambda: layout.downloader(str(base), train=True, download=True),
        f"{layout.title} not found: expected {folder}/ with {listed} (layout ROOT/{layout.folder}/); "
        "pass --data-root ROOT or add --set data.download=true",
    )
    images = _cifar_batches(folder, files, layout.label_key)
    images.classes = _meta_names(folder / layout.meta, layout.names_key)
    return images


CIFAR10_LAYOUT = CifarLayout("CIFAR-10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                             "batches.meta", "labels", "label_names", CIFAR10)
CIFAR20_LAYOUT = CifarLayout("CIFAR-100", "cifar-100-python", ("train",), ("test",), "meta", "coarse_labels",
                             "coarse_label_names", CIFAR100)


@register(
    DatasetInfo("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
)
def _load_cifar10(
    root: Path | None, split: str, download: bool, image_size: int | None
) -> ImageSet:
    """CIFAR-10 from its python pickles: train (pretext/train) or test_batch (test)."""
    return _load_cifar(CIFAR10_LAYOUT, "cifar10", root, split, download, image_size)


@register(
    DatasetInfo("cifar20", 20, 3, 32, (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))
)
def _load_cifar20(
    root: Path | None, split: str, download: bool, image_size: int | None
) -> ImageSet:
    """CIFAR-100 with its 20 superclasses (coarse labels) as targets."""
    return _load_cifar(CIFAR20_LAYOUT, "cifar20", root, split, download, image_size)

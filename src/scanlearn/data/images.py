"""Image sets: fixed-size uint8 images plus integer targets, in memory or as files decoded on access."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from PIL import Image, ImageFile
from tqdm.auto import tqdm

from .decode import decode_problem, open_rgb, reason, resize_center_crop, resize_pad
from ..errors import ConfigError, DataError

Indices = Sequence[int] | np.ndarray | torch.Tensor

FITS = ("crop", "pad")


class ImageSet(torch.utils.data.Dataset):
    """Images as uint8 (C,H,W) tensors of one fixed size, with integer targets (-1 = unknown)."""

    targets: np.ndarray
    classes: list[str] | None
    channels: int
    image_size: int
    paths: list[str] | None

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        """Return ``(image uint8 CxHxW, target, index)``."""
        index = _normalise_index(int(i), len(self))
        return self._image(index), int(self.targets[index]), index

    def _image(self, index: int) -> torch.Tensor:
        """Decode image ``index`` as a contiguous uint8 (C,H,W) tensor."""
        raise NotImplementedError

    def subset(self, indices: Indices) -> ImageSet:
        """A new set holding only ``indices``, with targets, classes and paths kept aligned."""
        raise NotImplementedError

    @property
    def has_labels(self) -> bool:
        """True when the set is non-empty and every target is a known class (>= 0)."""
        return len(self.targets) > 0 and bool((self.targets >= 0).all())

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n={len(self)}, channels={self.channels}, "
            f"image_size={self.image_size}, has_labels={self.has_labels})"
        )


class TensorImageSet(ImageSet):
    """In-memory images (Fashion-MNIST, CIFAR, STL-10, preloaded files) as one uint8 (N,C,H,W) tensor."""

    def __init__(
        self,
        images: torch.Tensor | np.ndarray,
        targets: Sequence[int] | np.ndarray,
        classes: list[str] | None = None,
        paths: Sequence[str] | None = None,
    ) -> None:
        images = torch.as_tensor(images)
        self.targets = _as_targets(targets)
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[2] != images.shape[3]:
            raise DataError(
                f"images must be a uint8 (N,C,H,W) tensor with H == W, got {images.dtype} "
                f"{tuple(images.shape)}"
            )
        if images.shape[0] != len(self.targets):
            raise DataError(f"{images.shape[0]} images but {len(self.targets)} targets")
        self.images = images
        self.classes = list(classes) if classes is not None else None
        self.channels = int(images.shape[1])
        self.image_size = int(images.shape[2])
        self.paths = [str(p) for p in paths] if paths is not None else None
        if self.paths is not None and len(self.paths) != len(self.targets):
            raise DataError(f"{len(self.paths)} paths but {len(self.targets)} images")

    def _image(self, index: int) -> torch.Tensor:
        return self.images[index].contiguous()

    def subset(self, indices: Indices) -> TensorImageSet:
        idx = _as_indices(indices)
        paths = [self.paths[i] for i in idx] if self.paths is not None else None
        return TensorImageSet(self.images[torch.from_numpy(idx)], self.targets[idx], self.classes, paths)


class FileImageSet(ImageSet):
    """Image files decoded with PIL on access, as RGB (or grey), made square by ``fit``.

    ``fit="crop"`` resizes the shorter side and cuts the centre square; ``fit="pad"`` resizes
    the longer side and centres the whole image on a neutral square (:data:`decode.PAD_COLOUR`).
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        targets: Sequence[int] | np.ndarray,
        image_size: int,
        classes: list[str] | None = None,
        channels: int = 3,
        fit: str = "crop",
    ) -> None:
        self.paths = [str(p) for p in paths]
        self.targets = _as_targets(targets)
        if len(self.paths) != len(self.targets):
            raise DataError(f"{len(self.paths)} paths but {len(self.targets)} targets")
        if int(image_size) < 1:
            raise ConfigError(f"image_size must be a positive integer, got {image_size}")
        self.image_size = int(image_size)
        self.classes = list(classes) if classes is not None else None
        if channels not in (1, 3):
            raise ConfigError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
        if fit not in FITS:
            raise ConfigError(f"fit must be crop or pad, got {fit!r}")
        self.channels = channels
        self.fit = fit

    def _image(self, index: int) -> torch.Tensor:
        path = self.paths[index]
        try:
            image = open_rgb(path, draft_size=self.image_size)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise DataError(
                f"cannot decode {path}: {reason(exc)} (drop unreadable files with scan_unreadable)"
            ) from exc
        square = resize_pad if self.fit == "pad" else resize_center_crop
        image = square(image, self.image_size)
        if self.channels == 1:
            image = image.convert("L")
        array = np.asarray(image, dtype=np.uint8).reshape(self.image_size, self.image_size, -1)
        return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()

    def subset(self, indices: Indices) -> FileImageSet:
        idx = _as_indices(indices)
        return FileImageSet(
            [self.paths[i] for i in idx], self.targets[idx], self.image_size, self.classes,
            self.channels, self.fit,
        )

    def fitted(self, fit: str) -> FileImageSet:
        """The same files made square by ``fit`` (crop or pad)."""
        return FileImageSet(self.paths, self.targets, self.image_size, self.classes, self.channels, fit)

    def without(self, paths: Iterable[str | os.PathLike[str]]) -> FileImageSet:
        """A subset with every item whose path is in ``paths`` removed (e.g. unreadable files)."""
        drop = {str(p) for p in paths}
        return self.subset([i for i, p in enumerate(self.paths) if p not in drop])

    def only(self, paths: Iterable[str | os.PathLike[str]]) -> FileImageSet:
        """The subset whose paths are listed in ``paths`` (order kept); DataError if any is gone."""
        keep = {str(p) for p in paths}
        missing = keep.difference(self.paths)
        if missing:
            raise DataError(
                f"{len(missing)} listed images are no longer there (e.g. {sorted(missing)[0]}); "
                "restore them or start a new run with --restart"
            )
        return self.subset([i for i, p in enumerate(self.paths) if p in keep])


def _normalise_index(index: int, length: int) -> int:
    """Turn a possibly negative index into a position, raising IndexError when out of range."""
    position = index + length if index < 0 else index
    if not 0 <= position < length:
        raise IndexError(f"index {index} out of range for {length} items")
    return position


def _as_targets(targets: Sequence[int] | np.ndarray) -> np.ndarray:
    """Targets as a 1-D int64 array."""
    array = np.asarray(targets, dtype=np.int64).reshape(-1)
    return array.copy()


def _as_indices(indices: Indices) -> np.ndarray:
    """Subset indices as a 1-D int64 array."""
    if isinstance(indices, torch.Tensor):
        indices = indices.cpu().numpy()
    return np.asarray(indices, dtype=np.int64).reshape(-1)


def scan_unreadable(image_set: ImageSet, progress: bool = False) -> list[tuple[str, str]]:
    """Fully decode every file of ``image_set``; return ``(path, reason)`` for the bad ones."""
    if image_set.paths is None:
        return []
    bad: list[tuple[str, str]] = []
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        for path in tqdm(image_set.paths, desc="checking images", unit="img", disable=not progress):
            reason = decode_problem(path)
            if reason is not None:
                bad.append((path, reason))
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous
    return bad


def preload(images: ImageSet, progress: bool = False, max_bytes: int = 2**31) -> ImageSet:
    """Decode a file-backed set once into memory (paths kept) so epochs skip decoding.

    Sets larger than ``max_bytes`` once decoded, and in-memory sets, are returned unchanged.
    """
    if not isinstance(images, FileImageSet):
        return images
    shape = (len(images), images.channels, images.image_size, images.image_size)
    if int(np.prod(shape)) > max_bytes:
        return images
    batch = torch.empty(shape, dtype=torch.uint8)
    for i in tqdm(range(len(images)), desc="loading images", unit="img", disable=not progress):
        batch[i] = images._image(i)
    return TensorImageSet(batch, images.targets, images.classes, images.paths)

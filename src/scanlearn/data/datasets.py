"""Datasets as fixed-size uint8 images plus integer targets, behind one name registry.

Every loader returns an :class:`ImageSet`; augmentation happens later on batches, so datasets
only decode, resize and crop. Standard datasets are read from their published on-disk
formats with our own small readers; torchvision is used only to download them.
"""

from __future__ import annotations

import gzip
import importlib.resources
import json
import os
import pickle
import stat
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from ..errors import ConfigError, DataError
from ..fsutil import atomic_write_bytes
from ..registry import Registry
from ..rundir import is_run_dir

SPLITS = ("pretext", "train", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FITS = ("crop", "pad")
PAD_COLOUR = tuple(round(255 * m) for m in IMAGENET_MEAN)  # neutral: about zero once normalised

Indices = Sequence[int] | np.ndarray | torch.Tensor


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
    the longer side and centres the whole image on a neutral square (:data:`PAD_COLOUR`).
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
            image = _open_rgb(path, draft_size=self.image_size)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise DataError(
                f"cannot decode {path}: {_reason(exc)} (drop unreadable files with scan_unreadable)"
            ) from exc
        square = _resize_pad if self.fit == "pad" else _resize_center_crop
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


def _register(info: DatasetInfo, folder_labels: bool = False) -> Callable[[Loader], Loader]:
    """Decorator registering ``load`` under ``info.name`` together with ``info``."""

    def add(load: Loader) -> Loader:
        DATASETS.register(info.name)(DatasetEntry(info, load, folder_labels))
        return load

    return add


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


# ----------------------------------------------------------------------------- helpers


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


def _default_root(root: Path | None) -> Path:
    """Explicit root, else ``$SCANLEARN_DATA``, else ``~/.cache/scanlearn``."""
    if root is not None:
        return root
    env = os.environ.get("SCANLEARN_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "scanlearn"


def _check_native_size(name: str, native: int, image_size: int | None) -> None:
    """In-memory datasets come at their native size only."""
    if image_size is not None and int(image_size) != native:
        raise ConfigError(
            f"{name} images are {native}x{native}; image_size must be {native} or unset, "
            f"got {image_size}"
        )


def _reason(exc: BaseException) -> str:
    """One-line description of a decoding failure."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _download(what: str, fetch: Callable[[], object]) -> None:
    """Run a torchvision download, turning any failure into a one-line DataError."""
    try:
        fetch()
    except Exception as exc:  # network, checksum and archive errors all mean the same to users
        raise DataError(f"downloading {what} failed ({_reason(exc)}); check the network") from exc


# ----------------------------------------------------------------------------- image decoding


def read_image(path: str | os.PathLike[str], draft_size: int | None = None) -> Image.Image:
    """Decode an image file to 8-bit RGB (any mode, EXIF orientation applied), e.g. for thumbnails."""
    return _open_rgb(str(path), draft_size)


def _open_rgb(path: str, draft_size: int | None = None) -> Image.Image:
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


def _resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` (bilinear, antialiased) and centre-crop a square."""
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = round((new_w - size) / 2), round((new_h - size) / 2)
    return image.crop((left, top, left + size, top + size))


def _resize_pad(image: Image.Image, size: int) -> Image.Image:
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


def scan_unreadable(image_set: ImageSet, progress: bool = False) -> list[tuple[str, str]]:
    """Fully decode every file of ``image_set``; return ``(path, reason)`` for the bad ones."""
    if image_set.paths is None:
        return []
    bad: list[tuple[str, str]] = []
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        for path in tqdm(image_set.paths, desc="checking images", unit="img", disable=not progress):
            reason = _decode_problem(path)
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


def write_path_list(path: str | os.PathLike[str], rows: Iterable[tuple[str, ...]]) -> None:
    """Atomically write one row per line: the path as a JSON string (so any legal name survives), then tab, notes."""
    text = "".join("\t".join((json.dumps(row[0]), *row[1:])) + "\n" for row in rows)
    atomic_write_bytes(path, lambda f: f.write(text.encode("utf-8")))


def read_path_rows(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """``(path, notes)`` per line of a list written by ``write_path_list`` (or an older plain one)."""
    lines = Path(path).read_text(encoding="utf-8", errors="surrogateescape").split("\n")
    return [_path_row(line) for line in lines if line.strip()]


def _path_row(line: str) -> tuple[str, str]:
    """A JSON-quoted path and what follows its tab; older lists hold a plain path (then tab, notes)."""
    if line.startswith('"'):
        try:
            path, end = json.JSONDecoder().raw_decode(line)
            return path, line[end + 1:]
        except ValueError:
            pass
    path, _, notes = line.partition("\t")
    return path, notes


def read_path_list(path: str | os.PathLike[str]) -> list[str]:
    """The image paths listed in ``path`` (blank lines ignored)."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"image list {file} does not exist; rerun `scanlearn run` to rebuild it")
    return [listed for listed, _ in read_path_rows(file)]


def keep_listed(images: ImageSet, list_file: str | os.PathLike[str]) -> ImageSet:
    """Only the images of a file-backed set whose paths ``list_file`` lists."""
    if not isinstance(images, FileImageSet):
        raise ConfigError("data.files applies to image files only; unset it for in-memory datasets")
    return images.only(read_path_list(list_file))


def _decode_problem(path: str) -> str | None:
    """Why ``path`` cannot be decoded to RGB, or None when it can (never opening a FIFO, device or socket)."""
    try:
        kind = _special_kind(os.stat(path).st_mode)
        if kind is not None:
            return f"not a regular file ({kind})"
        _open_rgb(path)
    except UnidentifiedImageError:
        return "not a recognised image file"
    except Exception as exc:  # any decoder failure makes the file unusable
        return _reason(exc)
    return None


SPECIAL_KINDS = (
    (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"), (stat.S_ISDIR, "directory"),
)


def _special_kind(mode: int) -> str | None:
    """What a non-regular file is ("FIFO", "socket", ...), None for a regular file: reading one could block forever."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in SPECIAL_KINDS if test(mode)), "special file")


# ----------------------------------------------------------------------------- Fashion-MNIST

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
            raise DataError(f"{path} is a damaged gzip file ({_reason(exc)})") from exc
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
    return folders + [SYSTEM_FASHION_MNIST]


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

    target = _default_root(root)
    _download("Fashion-MNIST", lambda: FashionMNIST(root=str(target), download=True))


def _fashion_classes() -> list[str]:
    """Class names as torchvision spells them."""
    try:
        from torchvision.datasets import FashionMNIST
    except ImportError:
        return list(FASHION_CLASSES)
    return list(FashionMNIST.classes)


@_register(DatasetInfo("fashion-mnist", 10, 1, 28, (0.2860,), (0.3530,)))
def _load_fashion_mnist(
    root: Path | None, split: str, download: bool, image_size: int | None
) -> ImageSet:
    """Fashion-MNIST from IDX files: 60k train (pretext/train), 10k test."""
    _check_native_size("fashion-mnist", 28, image_size)
    part = "test" if split == "test" else "train"
    found = _find_fashion(root, part)
    if found is None and download:
        _download_fashion(root)
        found = _find_fashion(_default_root(root), part)
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


# ----------------------------------------------------------------------------- CIFAR


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
        raise DataError(f"cannot read CIFAR file {path} ({_reason(exc)})") from exc
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


def _ensure_files(
    folder: Path, files: Sequence[str], download: bool, fetch: Callable[[], object], missing: str
) -> None:
    """Download when ``files`` are missing from ``folder`` and allowed; else DataError."""
    if all((folder / f).is_file() for f in files):
        return
    if download:
        _download(folder.name, fetch)
        if all((folder / f).is_file() for f in files):
            return
    raise DataError(missing)


CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


@_register(
    DatasetInfo("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
)
def _load_cifar10(
    root: Path | None, split: str, download: bool, image_size: int | None
) -> ImageSet:
    """CIFAR-10 from its python pickles: train (pretext/train) or test_batch (test)."""
    from torchvision.datasets import CIFAR10

    _check_native_size("cifar10", 32, image_size)
    base = _default_root(root)
    folder = base / "cifar-10-batches-py"
    files = ["test_batch"] if split == "test" else CIFAR10_TRAIN
    _ensure_files(
        folder,
        [*files, "batches.meta"],
        download,
        lambda: CIFAR10(str(base), train=True, download=True),
        f"CIFAR-10 not found: expected {folder}/ with data_batch_1..5, test_batch, batches.meta "
        "(layout ROOT/cifar-10-batches-py/); pass --data-root ROOT or add --set data.download=true",
    )
    images = _cifar_batches(folder, files, "labels")
    images.classes = _meta_names(folder / "batches.meta", "label_names")
    return images


@_register(
    DatasetInfo("cifar20", 20, 3, 32, (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))
)
def _load_cifar20(
    root: Path | None, split: str, download: bool, image_size: int | None
) -> ImageSet:
    """CIFAR-100 with its 20 superclasses (coarse labels) as targets."""
    from torchvision.datasets import CIFAR100

    _check_native_size("cifar20", 32, image_size)
    base = _default_root(root)
    folder = base / "cifar-100-python"
    files = ["test"] if split == "test" else ["train"]
    _ensure_files(
        folder,
        [*files, "meta"],
        download,
        lambda: CIFAR100(str(base), train=True, download=True),
        f"CIFAR-100 not found: expected {folder}/ with train, test, meta "
        "(layout ROOT/cifar-100-python/); pass --data-root ROOT or add --set data.download=true",
    )
    images = _cifar_batches(folder, files, "coarse_labels")
    images.classes = _meta_names(folder / "meta", "coarse_label_names")
    return images


# ----------------------------------------------------------------------------- STL-10

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


@_register(DatasetInfo("stl10", 10, 3, STL_SIDE, IMAGENET_MEAN, IMAGENET_STD))
def _load_stl10(
    root: Path | None, split: str, download: bool, image_size: int | None
) -> ImageSet:
    """STL-10 binaries: pretext = train+unlabeled (targets -1), train, test."""
    from torchvision.datasets import STL10

    _check_native_size("stl10", STL_SIDE, image_size)
    base = _default_root(root)
    folder = base / "stl10_binary"
    parts = {"pretext": ["train", "unlabeled"], "train": ["train"], "test": ["test"]}[split]
    needed = [f"{p}_X.bin" for p in parts] + [f"{p}_y.bin" for p in parts if p != "unlabeled"]
    _ensure_files(
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


# ----------------------------------------------------------------------------- ImageNet


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


def _is_image(name: str) -> bool:
    """True for visible files with a supported image extension."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _subdirs(folder: Path) -> list[str]:
    """Names of visible subdirectories of ``folder``, sorted."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def _files_in(folder: Path) -> list[str]:
    """Image file paths directly inside ``folder``, sorted; empty when it does not exist."""
    if not folder.is_dir():
        return []
    with os.scandir(folder) as entries:
        return sorted(str(folder / e.name) for e in entries if e.is_file() and _is_image(e.name))


def _imagenet_root(root: Path | None) -> Path:
    """The ImageNet folder: explicit root or ``$SCANLEARN_DATA/imagenet``."""
    candidate = root if root is not None else _default_root(None) / "imagenet"
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
    _register(DatasetInfo(name, num_classes, 3, 224, IMAGENET_MEAN, IMAGENET_STD))(load)


_register_imagenet("imagenet", 1000, None)
_register_imagenet("imagenet50", 50, "imagenet_50")
_register_imagenet("imagenet100", 100, "imagenet_100")
_register_imagenet("imagenet200", 200, "imagenet_200")


# ----------------------------------------------------------------------------- user folder


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
        found.extend(os.path.join(dirpath, f) for f in filenames if _is_image(f))
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


@_register(DatasetInfo("folder", None, 3, 64, IMAGENET_MEAN, IMAGENET_STD), folder_labels=True)
def _load_user_folder(
    root: Path | None, split: str, download: bool, image_size: int | None, labels_from_folders: bool
) -> ImageSet:
    """A user's image folder (labels from subfolder names only if asked); every split is the same."""
    if root is None:
        raise DataError("the folder dataset needs --data PATH (or --data-root DIR) pointing at your images")
    return load_folder(root, image_size or 64, labels_from_folders)


# ----------------------------------------------------------------------------- in-memory arrays


def image_batch(array: np.ndarray | torch.Tensor, image_size: int | None = None) -> torch.Tensor:
    """Any stack of images as uint8 RGB (N,3,S,S): (N,H,W), (N,H,W,C) or (N,C,H,W), C in 1/3/4.

    Floats must lie in [0, 1]; alpha is composited over white; non-square images are resized
    on the shorter side to ``image_size`` (default: that side) and centre-cropped.
    """
    raw = array if isinstance(array, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(array))
    tensor = _to_nchw(_as_uint8(raw.cpu()))
    if tensor.shape[1] == 1:
        tensor = tensor.expand(-1, 3, -1, -1)
    elif tensor.shape[1] == 4:
        alpha = tensor[:, 3:].float() / 255
        tensor = (tensor[:, :3].float() * alpha + 255 * (1 - alpha)).round().to(torch.uint8)
    return _square(tensor.contiguous(), image_size)


def _as_uint8(tensor: torch.Tensor) -> torch.Tensor:
    """uint8 as is; floats in [0, 1] scaled to 0..255; anything else is a DataError."""
    if tensor.dtype == torch.uint8:
        return tensor
    if tensor.is_floating_point() and tensor.numel() and 0 <= float(tensor.min()) and float(tensor.max()) <= 1:
        return (tensor.float() * 255).round().to(torch.uint8)
    raise DataError(
        f"images must be uint8 (0..255) or floats in [0, 1], got {tensor.dtype}; convert them first"
    )


def _to_nchw(tensor: torch.Tensor) -> torch.Tensor:
    """(N,H,W), (N,H,W,C) or (N,C,H,W) -> (N,C,H,W); channels-last wins when both could fit."""
    if tensor.ndim == 3:
        return tensor[:, None]
    if tensor.ndim == 4 and tensor.shape[-1] in (1, 3, 4):
        return tensor.permute(0, 3, 1, 2)
    if tensor.ndim == 4 and tensor.shape[1] in (1, 3, 4):
        return tensor
    raise DataError(
        f"cannot read images of shape {tuple(tensor.shape)}; pass (N,H,W), (N,H,W,C) or (N,C,H,W) "
        "with 1, 3 or 4 channels"
    )


def _square(images: torch.Tensor, image_size: int | None) -> torch.Tensor:
    """Resize the shorter side to ``image_size`` (bilinear, antialiased) and centre-crop."""
    height, width = images.shape[-2:]
    size = int(image_size or min(height, width))
    if (height, width) == (size, size):
        return images
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    if (new_h, new_w) != (height, width):
        resized = torch.nn.functional.interpolate(
            images.float(), size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
        )
        images = resized.round().clamp(0, 255).to(torch.uint8)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return images[:, :, top : top + size, left : left + size].contiguous()


@_register(DatasetInfo("array", None, 3, 32, IMAGENET_MEAN, IMAGENET_STD))
def _load_array(
    root: Path | None, split: str, download: bool, image_size: int | None
) -> ImageSet:
    """Images saved with ``numpy.save`` (any layout ``image_batch`` reads); every split is the same."""
    if root is None or not root.is_file():
        raise DataError(f"the array dataset needs data.root pointing at a .npy file of images, got {root}")
    try:
        array = np.load(root, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {root} as a .npy image array ({_reason(exc)})") from exc
    images = image_batch(array, image_size)
    return TensorImageSet(images, np.full(len(images), -1, dtype=np.int64))

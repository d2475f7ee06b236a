"""The configured dataset: its spec (channels, size, normalisation, classes, decode side) and how a split is loaded."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from ..config import Config, DataConfig
from ..data.datasets import dataset_info, is_image_folder, load_dataset
from ..data.images import FileImageSet, ImageSet
from ..data.pathlists import keep_listed
from ..errors import ConfigError, DataError
from ..models.pretrained import is_pretrained, preprocessing

Decode = Callable[[ImageSet], ImageSet]  # image files to pixels in memory


@dataclass(frozen=True)
class DataSpec:
    """Static facts about the configured dataset, needed to build models and transforms and to load its images
    (``decode_side``: the side files are decoded at, None for the reader's own; ``fit``: how they are made square)."""

    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop: int = 0
    decode_side: int | None = None
    fit: str = "crop"


def data_spec(config: Config) -> DataSpec:
    """Channels, size, normalisation and class count of ``config.data.dataset``.

    A pretrained backbone's own preprocessing replaces the dataset's mean/std, and image
    folders are loaded at the backbone's input size.
    """
    info = dataset_info(config.data.dataset)
    size = config.data.image_size or info.image_size
    crop = size if config.data.resize else 0
    if crop and config.data.resize < crop:
        raise ConfigError(f"data.resize ({config.data.resize}) is smaller than the {crop}-pixel input; "
                          f"set --set data.resize={crop} or more (or null)")
    decode_side = load_image_size(config)
    spec = DataSpec(info.num_classes, info.channels, size, tuple(info.mean), tuple(info.std), crop, decode_side,
                    fit_mode(config))
    if not is_pretrained(config.model.backbone):
        return spec
    model = preprocessing(config.model.backbone, config.model.input_size)
    return replace(spec, image_size=decode_side or size, mean=model.mean, std=model.std)


def load_image_size(config: Config) -> int | None:
    """Side to decode images at: ``data.resize`` or ``data.image_size``, else a pretrained backbone's input size for folders."""
    if config.data.resize:
        return config.data.resize
    if config.data.image_size or not (is_pretrained(config.model.backbone) and is_image_folder(config.data.dataset)):
        return config.data.image_size
    return preprocessing(config.model.backbone, config.model.input_size).input_size


def decode_size(spec: DataSpec) -> int:
    """Side new images are decoded at to match training: ``data.resize`` (the transforms then crop), else the input side."""
    return spec.decode_side or spec.image_size


def num_clusters(requested: int | None, spec: DataSpec, images: ImageSet | None = None) -> int:
    """Clusters to find: the ``requested`` number (``num_clusters``), else the dataset's (or ``images``') class count."""
    if requested:
        return requested
    classes = spec.num_classes or 0
    if classes < 2 and images is not None and images.classes:
        classes = len(images.classes)
    if classes < 2:
        raise DataError("the number of clusters is unknown for this data; pass --clusters K (or --set num_clusters=K)")
    return classes


def fit_mode(config: Config) -> str:
    """How image files are made square: ``data.fit``, else pad for image folders and crop otherwise."""
    return config.data.fit or ("pad" if is_image_folder(config.data.dataset) else "crop")


def find_split(data: DataConfig, spec: DataSpec, split: str) -> ImageSet:
    """The ``split`` of the dataset ``data`` names as found on disk, not yet filtered or decoded."""
    images = load_dataset(
        data.dataset, split, root=data.root, download=data.download, image_size=spec.decode_side,
        labels_from_folders=data.labels_from_folders,
    )
    return images.fitted(spec.fit) if isinstance(images, FileImageSet) else images


def load_split(data: DataConfig, spec: DataSpec, split: str, decode: Decode) -> ImageSet:
    """The ``split`` of the dataset ``data`` names, cut to ``data.limit`` images when set; image folders decoded by
    ``decode`` (a run decodes each file once: ``engine.run``)."""
    images = find_split(data, spec, split)
    if data.files:
        images = keep_listed(images, data.files)
    if len(images) == 0:
        raise DataError(f"the {split} split of {data.dataset} is empty; check --data-root")
    if data.limit and data.limit < len(images):
        keep = np.sort(np.random.default_rng(0).permutation(len(images))[: data.limit])
        images = images.subset(keep)
    return decode(images) if is_image_folder(data.dataset) else images

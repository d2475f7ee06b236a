"""The configured dataset: its spec (channels, size, normalisation, classes) and its splits."""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..config import Config
from ..data.datasets import dataset_info, is_image_folder, load_dataset
from ..data.images import FileImageSet, ImageSet, TensorImageSet, preload
from ..data.pathlists import keep_listed
from ..errors import ConfigError, DataError
from ..models.pretrained import is_pretrained, preprocessing

# Decoded pixels of the last few file sets, by file identity (path, size, mtime) and decode size.
DECODED_KEPT = 4
_DECODED: OrderedDict[tuple, torch.Tensor] = OrderedDict()


@dataclass
class DataSpec:
    """Static facts about the configured dataset, needed to build models and transforms."""

    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop: int = 0


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
    spec = DataSpec(info.num_classes, info.channels, size, tuple(info.mean), tuple(info.std), crop)
    if not is_pretrained(config.model.backbone):
        return spec
    model = preprocessing(config.model.backbone, config.model.input_size)
    return replace(spec, image_size=load_image_size(config) or size, mean=model.mean, std=model.std)


def load_image_size(config: Config) -> int | None:
    """Side to decode images at: ``data.resize`` or ``data.image_size``, else a pretrained backbone's input size for folders."""
    if config.data.resize:
        return config.data.resize
    if config.data.image_size or not (is_pretrained(config.model.backbone) and is_image_folder(config.data.dataset)):
        return config.data.image_size
    return preprocessing(config.model.backbone, config.model.input_size).input_size


def decode_size(config: Config) -> int:
    """Side new images are decoded at to match training: ``data.resize`` (the transforms then crop), else the input side."""
    return load_image_size(config) or data_spec(config).image_size


def num_clusters(config: Config, images: ImageSet | None = None) -> int:
    """Clusters to find: the config's value, else the dataset's class count."""
    if config.num_clusters:
        return config.num_clusters
    classes = data_spec(config).num_classes or 0
    if classes < 2 and images is not None and images.classes:
        classes = len(images.classes)
    if classes < 2:
        raise DataError("the number of clusters is unknown for this data; pass --clusters K (or --set num_clusters=K)")
    return classes


def fit_mode(config: Config) -> str:
    """How image files are made square: ``data.fit``, else pad for image folders and crop otherwise."""
    return config.data.fit or ("pad" if is_image_folder(config.data.dataset) else "crop")


def find_split(config: Config, split: str) -> ImageSet:
    """The ``split`` of the configured dataset as found on disk, not yet filtered or decoded."""
    data = config.data
    images = load_dataset(
        data.dataset, split, root=data.root, download=data.download, image_size=load_image_size(config),
        labels_from_folders=data.labels_from_folders,
    )
    return images.fitted(fit_mode(config)) if isinstance(images, FileImageSet) else images


def load_split(config: Config, split: str) -> ImageSet:
    """The ``split`` of the configured dataset, cut to ``data.limit`` images when set."""
    data = config.data
    images = find_split(config, split)
    if data.files:
        images = keep_listed(images, data.files)
    if len(images) == 0:
        raise DataError(f"the {split} split of {data.dataset} is empty; check --data-root")
    if data.limit and data.limit < len(images):
        keep = np.sort(np.random.default_rng(0).permutation(len(images))[: data.limit])
        images = images.subset(keep)
    if is_image_folder(data.dataset):
        images = decoded(images, config.runtime.progress)
    return images


def decoded(images: ImageSet, progress: bool) -> ImageSet:
    """``preload(images)``, reusing this process's decode of the same files at the same size while they are unchanged.

    Every stage loads its splits; without this an image folder was decoded once per call (about 13 per run).
    """
    if not isinstance(images, FileImageSet):
        return images
    stats = [os.stat(path) for path in images.paths]
    key = (images.image_size, images.channels, images.fit, tuple((p, st.st_size, st.st_mtime_ns) for p, st in zip(images.paths, stats)))
    pixels = _DECODED.pop(key, None)
    if pixels is None:
        loaded = preload(images, progress=progress)
        if not isinstance(loaded, TensorImageSet):
            return loaded
        pixels = loaded.images
    _DECODED[key] = pixels
    while len(_DECODED) > DECODED_KEPT:
        _DECODED.pop(next(iter(_DECODED)))
    return TensorImageSet(pixels, images.targets, images.classes, images.paths)

"""A run: its validated config, its directory, and what is loaded for them once (the data's spec, its splits)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import torch

from ..config import Config, DataConfig
from ..data.images import FileImageSet, ImageSet, preload, TensorImageSet
from .splits import DataSpec, data_spec, load_split, num_clusters


class LoadedSplits:
    """The splits a run has loaded, each once per data settings, and the pixels of its image files, decoded once for
    every split that holds them (an image folder's splits are the same files)."""

    def __init__(self) -> None:
        self.splits: dict[tuple[str, DataConfig, DataSpec], ImageSet] = {}
        self.pixels: dict[tuple, torch.Tensor] = {}

    def split(self, data: DataConfig, spec: DataSpec, name: str, progress: bool) -> ImageSet:
        """Split ``name`` of ``data``, loaded on first use."""
        key = (name, data, spec)
        if key not in self.splits:
            self.splits[key] = load_split(data, spec, name, lambda images: self.decoded(images, progress))
        return self.splits[key]

    def decoded(self, images: ImageSet, progress: bool) -> ImageSet:
        """``preload(images)``, reusing this run's decode of the same files at the same size."""
        if not isinstance(images, FileImageSet):
            return images
        key = (images.image_size, images.channels, images.fit, tuple(images.paths))
        if key not in self.pixels:
            loaded = preload(images, progress=progress)
            if not isinstance(loaded, TensorImageSet):
                return loaded
            self.pixels[key] = loaded.images
        return TensorImageSet(self.pixels[key], images.targets, images.classes, images.paths)


@dataclass(frozen=True)
class Run:
    """One run: the frozen, validated config, the run directory, and the data's spec and splits, each loaded once.

    A run's own additions to its config (``with_config``) make a new run sharing the loaded splits, which are
    keyed by the data settings they depend on.
    """

    config: Config
    directory: Path
    loaded: LoadedSplits = field(default_factory=LoadedSplits, repr=False, compare=False)

    @cached_property
    def spec(self) -> DataSpec:
        """Channels, size, normalisation, class count and decode side of the configured data."""
        return data_spec(self.config)

    @cached_property
    def clusters(self) -> int:
        """The number of clusters to find: the config's, else the data's class count."""
        return num_clusters(self.config.num_clusters, self.spec, self.split("train"))

    def split(self, name: str) -> ImageSet:
        """Split ``name`` (``pretext``, ``train`` or ``test``) of the configured data, loaded once for the run."""
        return self.loaded.split(self.config.data, self.spec, name, self.config.runtime.progress)

    def with_config(self, config: Config) -> Run:
        """This run with ``config`` (a validated addition to its own), its loaded splits shared."""
        return self if config is self.config else replace(self, config=config)

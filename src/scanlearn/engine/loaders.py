"""Batches for training and inference: whole-batch datasets, the global (DDP-exact) batch sampler,
image loaders and the augmentation module for a config section."""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from . import distributed
from ..config import AugmentConfig, Config
from ..data.images import ImageSet
from ..data.transforms import build_transform
from ..errors import ConfigError
from .resume import BatchKey, ResumableSampler
from .splits import DataSpec


class BatchFetchDataset(Dataset):
    """Dataset indexed by a list of indices, returning whole batches (fast for in-memory data)."""

    def __init__(self, fetch: Callable[[np.ndarray], tuple], length: int) -> None:
        self.fetch = fetch
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: Sequence[int] | BatchKey) -> tuple:
        if not isinstance(key, BatchKey):
            return self.fetch(np.asarray(key, dtype=np.int64))
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(key.seed)
            return self.fetch(np.asarray(key.indices, dtype=np.int64))


def fetch_images(images: ImageSet) -> Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Batch fetcher ``indices -> (uint8 images, targets, indices)`` for any ImageSet."""
    targets = torch.as_tensor(np.asarray(images.targets), dtype=torch.long)
    tensor = getattr(images, "images", None)

    def fetch(idx: np.ndarray):
        index = torch.from_numpy(idx)
        if isinstance(tensor, torch.Tensor):
            batch = tensor[index]
        else:
            batch = torch.stack([images[int(i)][0] for i in idx])
        return batch, targets[index], index

    return fetch


class GlobalBatchSampler(Sampler[list[int]]):
    """Batches of indices where ``batch_size`` is the global batch, split over the ranks.

    Every epoch draws one permutation (seeded by ``seed + epoch``, identical on all ranks)
    and cuts it into global batches; rank r takes the r-th contiguous slice of each. Step b
    of a W-process run therefore sees exactly global batch b of a one-process run, in the
    same order once gathered. The world size is read at iteration time, so a loader built
    before Lightning creates the process group still shards. ``shard=False`` gives every
    rank all batches (inference).
    """

    def __init__(self, length: int, batch_size: int, shuffle: bool, seed: int = 0, drop_last: bool = False, shard: bool = True) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        self.length = length
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last and length > batch_size
        self.shard = shard
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` (Lightning calls this before every epoch)."""
        self.epoch = epoch

    def _world(self) -> tuple[int, int]:
        """(world size, rank) to split batches over; checks that the global batch splits evenly."""
        if not (self.shard and distributed.is_distributed()):
            return 1, 0
        world = distributed.world_size()
        if self.batch_size % world:
            raise ConfigError(
                f"batch size {self.batch_size} is the global batch and must be divisible by the "
                f"{world} processes; choose a multiple of {world}"
            )
        return world, distributed.rank()

    def _batch_sizes(self, world: int) -> list[int]:
        """Global size of each batch of an epoch (the last one cut to a multiple of ``world``)."""
        full, rest = divmod(self.length, self.batch_size)
        sizes = [self.batch_size] * full
        rest -= rest % world
        if rest and not self.drop_last:
            sizes.append(rest)
        return sizes

    def __len__(self) -> int:
        return len(self._batch_sizes(self._world()[0]))

    def __iter__(self) -> Iterator[list[int]]:
        world, rank = self._world()
        if self.shuffle:
            order = torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.length)
        start = 0
        for size in self._batch_sizes(world):
            part = size // world
            yield order[start + rank * part: start + (rank + 1) * part].tolist()
            start += size


def batch_loader(
    dataset: BatchFetchDataset, batch_size: int, shuffle: bool, num_workers: int, seed: int = 0,
    drop_last: bool = False, shard: bool = True,
) -> DataLoader:
    """DataLoader drawing whole batches from ``dataset``; ``batch_size`` is split over the ranks under DDP."""
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=ResumableSampler(GlobalBatchSampler(len(dataset), batch_size, shuffle, seed, drop_last, shard), seed),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


def image_loader(
    images: ImageSet, batch_size: int, shuffle: bool, config: Config, drop_last: bool = False, shard: bool = True
) -> DataLoader:
    """Loader of (uint8 images, targets, indices) batches; workers only help for file-backed data."""
    workers = 0 if isinstance(getattr(images, "images", None), torch.Tensor) else config.data.num_workers
    dataset = BatchFetchDataset(fetch_images(images), len(images))
    return batch_loader(dataset, batch_size, shuffle, workers, config.runtime.seed, drop_last, shard)


def augmenter(augment: AugmentConfig, spec: DataSpec) -> torch.nn.Module:
    """Batch augmentation module (uint8 in, normalised float out) for an ``AugmentConfig``.

    With ``spec.crop`` (images decoded larger than the input) every view is cut to that side.
    """
    if augment.kind in ("none", "eval"):
        return build_transform("eval", spec.mean, spec.std, crop_size=spec.crop)
    if augment.kind == "simclr":
        return build_transform(
            "simclr", spec.mean, spec.std, crop_scale=tuple(augment.crop_scale), flip_p=augment.flip_p,
            jitter=tuple(augment.jitter), jitter_p=augment.jitter_p, grayscale_p=augment.grayscale_p,
            crop_size=augment.crop_size or spec.crop, blur_p=augment.blur_p, blur_sigma=tuple(augment.blur_sigma),
        )
    return build_transform(
        augment.kind, spec.mean, spec.std, n_ops=augment.n_ops, cutout=augment.cutout, crop_padding=augment.crop_padding,
        cutout_random_side=augment.cutout_random_side, crop_size=spec.crop,
    )

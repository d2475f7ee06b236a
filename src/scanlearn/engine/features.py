"""Frozen-backbone features: embedded once, cached in the run directory, memory-mapped.

An entry is ``run_dir/cache/<key>.npy`` with ``<key>.json`` beside it describing what it holds.
The key hashes everything the features depend on: backbone name, a hash of its weights file,
preprocessing, precision, the view (clean, or augmented view ``i`` with its settings), how
images are made square (``data.fit``) and the images' fingerprint (``scanlearn.data.fingerprint``).
Changed weights or images therefore never reuse stale features, while mining, SCAN heads,
self-labelling and evaluation share one embedding pass.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from . import distributed
from ..config import AugmentConfig, Config, to_dict
from ..data.images import ImageSet
from .embedding import embed_distributed
from .execution import resolve_precision
from ..data.fingerprint import fingerprint
from ..models.pretrained import is_pretrained
from ..runs.artefacts import save_npy, write_json
from .loaders import augmenter
from .run import Run
from .trained import backbone_identity, eval_transform, head_network, heads_read_multiscale, load_backbone

CACHE_DIR = "cache"
CLEAN = {"kind": "clean"}  # the view of an entry without augmentation


def head_cache(run: Run) -> FeatureCache:
    """The cache frozen heads read: the backbone's features, or the network ``trained.head_network`` names for heads
    on the mined space (the multiscale rows mining searched)."""
    if not heads_read_multiscale(run.config):
        return FeatureCache(run)
    return FeatureCache(run, identity={**backbone_identity(run), "features": "multiscale", "grid": run.config.mine.grid},
                        network=lambda backbone: head_network(run.config, backbone))


def uses_cached_features(config: Config) -> bool:
    """Whether backbone features are cached: pretrained backbones and frozen-backbone stages."""
    return is_pretrained(config.model.backbone) or config.scan.freeze_backbone or config.selflabel.freeze_backbone


class FeatureCache:
    """Cached features of one frozen backbone; the backbone is built only when an entry is missing."""

    def __init__(self, run: Run, backbone: nn.Module | None = None, identity: dict[str, Any] | None = None,
                 network: Callable[[nn.Module], nn.Module] = lambda backbone: backbone) -> None:
        self.run = run
        self.config = run.config
        self.directory = run.directory / CACHE_DIR
        self.spec = run.spec
        self._backbone = backbone
        self.network = network
        self.identity = identity if identity is not None else backbone_identity(run)
        self.embedded = 0

    def backbone(self) -> nn.Module:
        """The network whose features the cache holds (the backbone, or ``network`` of it), built on first use."""
        if self._backbone is None:
            self._backbone = self.network(load_backbone(self.run))
        return self._backbone

    def clean(self, images: ImageSet) -> np.ndarray:
        """Features (N, d) of ``images`` without augmentation."""
        transform = eval_transform(self.spec)
        return self.entry(images, CLEAN, lambda: self._embed(images, transform))

    def held(self, images: ImageSet) -> np.ndarray | None:
        """The cached clean features of ``images``, or None when the cache does not hold them (nothing computed)."""
        _, path, meta = self.location(images, CLEAN)
        return read_entry(path, meta, len(images))

    def keep(self, images: ImageSet, features: np.ndarray) -> np.ndarray:
        """Cache clean features of ``images`` computed by the caller (in one pass with other networks); the cached array."""
        return self.entry(images, CLEAN, lambda: features)

    def augmented(self, images: ImageSet, augment: AugmentConfig, view: int) -> np.ndarray:
        """Features (N, d) of augmented view number ``view`` (seeded, so each view is reproducible)."""
        description = self.augmented_view(augment, view)

        def compute() -> np.ndarray:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(description["seed"])
                return self._embed(images, augmenter(augment, self.spec))

        return self.entry(images, description, compute)

    def augmented_view(self, augment: AugmentConfig, view: int) -> dict[str, Any]:
        """The view of augmented entry number ``view``: its settings and seed (part of the entry's key)."""
        seed = self.config.runtime.seed * 100_003 + view
        return {"kind": "augmented", "augment": to_dict(augment), "view": view, "seed": seed}

    def holds(self, images: ImageSet, view: dict[str, Any]) -> bool:
        """Whether the entry of ``images`` and ``view`` is already cached (nothing computed): a stage reads it."""
        _, path, meta = self.location(images, view)
        return read_entry(path, meta, len(images)) is not None

    def describe(self, images: ImageSet, view: dict[str, Any]) -> dict[str, Any]:
        """Everything an entry depends on (hashed into its key, stored beside it)."""
        return {
            **self.identity,
            "mean": list(self.spec.mean), "std": list(self.spec.std), "channels": self.spec.channels,
            "precision": resolve_precision(self.config.runtime), "view": view,
            "data": fingerprint(images)["hash"], "count": len(images), "fit": self.spec.fit,
        }

    def location(self, images: ImageSet, view: dict[str, Any]) -> tuple[dict[str, Any], Path, Path]:
        """What the entry for ``images`` and ``view`` depends on, its array's path and its description's path."""
        description = self.describe(images, view)
        key = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:24]
        return description, self.directory / f"{key}.npy", self.directory / f"{key}.json"

    def entry(self, images: ImageSet, view: dict[str, Any], compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached array for ``images`` and ``view``, computing and storing it on a miss."""
        description, path, meta = self.location(images, view)
        cached = read_entry(path, meta, len(images))
        if cached is not None:
            return cached
        features = compute()
        if distributed.is_rank_zero():
            save_npy(path, np.ascontiguousarray(features, dtype=np.float32))
            write_json(meta, description)
        distributed.barrier()
        return np.load(path, mmap_mode="r", allow_pickle=False)

    def _embed(self, images: ImageSet, transform: nn.Module) -> np.ndarray:
        self.embedded += 1
        return embed_distributed(self.backbone(), images, self.config, transform, to_all=False)


def read_entry(path: Path, meta: Path, count: int) -> np.ndarray | None:
    """A cache entry's array when its description is there and it holds ``count`` rows, else None (a miss)."""
    cached = read_cached_array(path) if meta.is_file() else None
    return cached if cached is not None and len(cached) == count else None


def read_cached_array(path: Path) -> np.ndarray | None:
    """A cached array (memory-mapped, never unpickled), or None when it is missing or damaged: a miss, recomputed."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None


def rows(features: np.ndarray, index: np.ndarray) -> torch.Tensor:
    """Rows ``index`` of a (memory-mapped) feature array as a float tensor."""
    return torch.from_numpy(np.ascontiguousarray(features[index], dtype=np.float32))


def random_view_rows(views: list[np.ndarray]) -> Callable[[np.ndarray], torch.Tensor]:
    """Fetcher of rows where each row comes from a view drawn uniformly (global torch RNG) among ``views``,
    feature arrays of the same images (e.g. cached augmented views)."""

    def fetch(index: np.ndarray) -> torch.Tensor:
        view = torch.randint(len(views), (len(index),)).numpy()
        picked = np.empty((len(index), views[0].shape[1]), dtype=np.float32)
        for v, features in enumerate(views):
            picked[view == v] = features[index[view == v]]
        return torch.from_numpy(picked)

    return fetch


@torch.inference_mode()
def apply_in_chunks(fn: Callable[[torch.Tensor], torch.Tensor], features: np.ndarray, chunk: int = 8192) -> torch.Tensor:
    """``fn`` over a (memory-mapped) feature array in chunks, outputs concatenated along the sample axis."""
    outputs = [fn(rows(features, np.arange(s, min(s + chunk, len(features))))) for s in range(0, len(features), chunk)]
    return torch.cat(outputs, dim=-2)

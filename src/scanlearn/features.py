"""Frozen-backbone features: embedded once, cached in the run directory, memory-mapped.

An entry is ``run_dir/cache/<key>.npy`` with ``<key>.json`` beside it describing what it holds.
The key hashes everything the features depend on: backbone name, a hash of its weights file,
preprocessing, precision, the view (clean, or augmented view ``i`` with its settings), how
images are made square (``data.fit``) and the images' fingerprint (``scanlearn.fingerprint``).
Changed weights or images therefore never reuse stale features, while mining, SCAN heads,
self-labelling and evaluation share one embedding pass.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .config import AugmentConfig, Config, to_dict
from .data.datasets import ImageSet
from .errors import CheckpointError
from .models import build_backbone
from .models.pretrained import NO_WEIGHTS, is_pretrained, library_version, split_name, split_weights
from . import distributed
from .execution import resolve_precision
from .fingerprint import fingerprint
from .stages.common import (
    augmenter, data_spec, embed_distributed, fit_mode, require_stage, save_npy, write_json,
)

CACHE_DIR = "cache"
_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file, memoised per (path, size, mtime) so large weights are hashed once."""
    stat = os.stat(path)
    memo = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        _DIGESTS[memo] = digest.hexdigest()
    return _DIGESTS[memo]


def uses_cached_features(config: Config) -> bool:
    """Whether backbone features are cached: pretrained backbones and frozen-backbone stages."""
    return is_pretrained(config.model.backbone) or config.scan.freeze_backbone or config.selflabel.freeze_backbone


def load_backbone(config: Config, run_dir: str | Path) -> nn.Module:
    """The frozen backbone in eval mode: the pretrained model with its weights, else the pretext one."""
    model = config.model
    if is_pretrained(model.backbone):
        channels = data_spec(config).channels
        return build_backbone(model.backbone, in_channels=channels, weights=model.weights, input_size=model.input_size).eval()
    from .stages.pretext import load_contrastive_model

    return load_contrastive_model(config, run_dir).backbone.eval()


def backbone_identity(config: Config, run_dir: str | Path) -> dict[str, Any]:
    """What the backbone's features depend on: name, weights-file hashes (or library download)."""
    model = config.model
    if is_pretrained(model.backbone):
        files = split_weights(model.weights, len(split_name(model.backbone)))
        weights = [_weights_identity(f, model.backbone) for f in files]
        return {"backbone": model.backbone, "weights": weights, "input_size": model.input_size}
    pretext = require_stage(run_dir, "pretext", "this stage") / "model.pt"
    return {"backbone": model.backbone, "width": model.width, "weights": [file_digest(pretext)]}


def _weights_identity(file: str | None, backbone: str) -> str:
    """A weights file's hash, or which library weights / random init the backbone uses."""
    if file == NO_WEIGHTS:
        return "random init (seed 0)"
    if not file:
        return f"download ({library_version(backbone)})"
    if not Path(file).is_file():
        raise CheckpointError(f"weights file {file} does not exist; pass an existing file with --weights FILE")
    return file_digest(file)


class FeatureCache:
    """Cached features of one frozen backbone; the backbone is built only when an entry is missing."""

    def __init__(
        self, config: Config, run_dir: str | Path, backbone: nn.Module | None = None,
        identity: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.directory = self.run_dir / CACHE_DIR
        self.spec = data_spec(config)
        self._backbone = backbone
        self.identity = identity if identity is not None else backbone_identity(config, run_dir)
        self.embedded = 0

    def backbone(self) -> nn.Module:
        """The backbone, built on first use."""
        if self._backbone is None:
            self._backbone = load_backbone(self.config, self.run_dir)
        return self._backbone

    def clean(self, images: ImageSet) -> np.ndarray:
        """Features (N, d) of ``images`` without augmentation."""
        transform = augmenter(AugmentConfig(kind="none"), self.spec)
        return self.entry(images, {"kind": "clean"}, lambda: self._embed(images, transform))

    def augmented(self, images: ImageSet, augment: AugmentConfig, view: int) -> np.ndarray:
        """Features (N, d) of augmented view number ``view`` (seeded, so each view is reproducible)."""
        seed = self.config.runtime.seed * 100_003 + view
        description = {"kind": "augmented", "augment": to_dict(augment), "view": view, "seed": seed}

        def compute() -> np.ndarray:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return self._embed(images, augmenter(augment, self.spec))

        return self.entry(images, description, compute)

    def describe(self, images: ImageSet, view: dict[str, Any]) -> dict[str, Any]:
        """Everything an entry depends on (hashed into its key, stored beside it)."""
        return {
            **self.identity,
            "mean": list(self.spec.mean), "std": list(self.spec.std), "channels": self.spec.channels,
            "precision": resolve_precision(self.config.runtime), "view": view,
            "data": fingerprint(images)["hash"], "count": len(images), "fit": fit_mode(self.config),
        }

    def entry(self, images: ImageSet, view: dict[str, Any], compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached array for ``images`` and ``view``, computing and storing it on a miss."""
        description = self.describe(images, view)
        key = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:24]
        path, meta = self.directory / f"{key}.npy", self.directory / f"{key}.json"
        cached = read_cached_array(path) if meta.is_file() else None
        if cached is not None and len(cached) == len(images):
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


def read_cached_array(path: Path) -> np.ndarray | None:
    """A cached array (memory-mapped, never unpickled), or None when it is missing or damaged: a miss, recomputed."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None


def backbone_features(config: Config, run_dir: str | Path, images: ImageSet) -> np.ndarray:
    """Backbone features of ``images``: from the cache when the run uses it, else embedded now."""
    if uses_cached_features(config):
        return np.asarray(FeatureCache(config, run_dir).clean(images))
    transform = augmenter(AugmentConfig(kind="none"), data_spec(config))
    return embed_distributed(load_backbone(config, run_dir), images, config, transform)


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

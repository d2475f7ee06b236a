"""Tiny datasets and checkpoints written in the real on-disk formats, for end-to-end tests."""

from __future__ import annotations

import gzip
import logging
import pickle
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from scanlearn.data.imagenet import read_subset_file
from scanlearn.models import build_backbone

CIFAR10_NAMES = "airplane automobile bird cat deer dog frog horse ship truck".split()


def _pickle(path: Path, obj: dict) -> None:
    """Write ``obj`` as a protocol-2 pickle, as the CIFAR python batches are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def _rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random CIFAR rows of 3072 bytes (R plane, G plane, B plane)."""
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar10(root: Path, per_batch: int = 8, n_test: int = 12, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py`` with five train batches, ``test_batch`` and ``batches.meta``."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    for i in range(1, 6):
        labels = rng.integers(0, 10, per_batch).tolist()
        batch = {b"batch_label": b"training", b"labels": labels, b"data": _rows(rng, per_batch)}
        _pickle(folder / f"data_batch_{i}", batch)
    labels = rng.integers(0, 10, n_test).tolist()
    _pickle(folder / "test_batch", {b"batch_label": b"testing", b"labels": labels, b"data": _rows(rng, n_test)})
    _pickle(folder / "batches.meta", {b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_vis": 3072})
    return root


def write_cifar100(root: Path, n_train: int = 40, n_test: int = 12, seed: int = 0) -> Path:
    """``root/cifar-100-python`` with ``train``, ``test`` and ``meta`` (fine and coarse labels)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    for split, n in (("train", n_train), ("test", n_test)):
        fine = rng.integers(0, 100, n).tolist()
        _pickle(folder / split, {
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
            b"fine_labels": fine,
            b"coarse_labels": [f // 5 for f in fine],
            b"data": _rows(rng, n),
        })
    _pickle(folder / "meta", {
        b"fine_label_names": [f"fine_{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"super_{i}".encode() for i in range(20)],
    })
    return root


def write_stl10(root: Path, n_train: int = 20, n_unlabeled: int = 10, n_test: int = 12, seed: int = 0) -> Path:
    """``root/stl10_binary`` with ``{train,test,unlabeled}_X.bin`` and labels 1..10 in ``*_y.bin``."""
    rng = np.random.default_rng(seed)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    for part, n in (("train", n_train), ("test", n_test), ("unlabeled", n_unlabeled)):
        (folder / f"{part}_X.bin").write_bytes(rng.integers(0, 256, n * 3 * 96 * 96, dtype=np.uint8).tobytes())
        if part != "unlabeled":
            (folder / f"{part}_y.bin").write_bytes(rng.integers(1, 11, n, dtype=np.uint8).tobytes())
    return root


def write_imagenet(
    root: Path, subset: str | None = "imagenet_50", n_classes: int = 3, n_train: int = 4, n_val: int = 2, seed: int = 0
) -> list[str]:
    """``root/{train,val}/<wnid>/*.JPEG`` for ``n_classes`` wnids of the packaged subset list."""
    rng = np.random.default_rng(seed)
    wnids = [w for w, _ in read_subset_file(subset)][:n_classes] if subset else [f"n{i:08d}" for i in range(n_classes)]
    for k, wnid in enumerate(wnids):
        for split, count in (("train", n_train), ("val", n_val)):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(count):
                pixels = rng.integers(0, 256, size=(20 + 3 * j, 24, 3), dtype=np.uint8)
                pixels[..., k % 3] = 200
                name = f"{wnid}_{j}.JPEG" if split == "train" else f"ILSVRC2012_val_{k:04d}{j:04d}.JPEG"
                Image.fromarray(pixels).save(folder / name, quality=90)
    return wnids


def moco_state(
    width: int = 4, proj_dim: int = 128, seed: int = 0
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A MoCo v2 ``state_dict`` of a width-``width`` ResNet-50, and the query encoder's own weights."""
    torch.manual_seed(seed)
    backbone = build_backbone("resnet50", width=width)
    with torch.no_grad():
        for name, tensor in backbone.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 1.5)
            elif tensor.is_floating_point():
                tensor.add_(0.05 * torch.randn_like(tensor))
    query = {k: v.clone() for k, v in backbone.state_dict().items()}
    dim = backbone.out_dim
    head = {
        "fc.0.weight": torch.randn(dim, dim) / dim**0.5, "fc.0.bias": torch.randn(dim),
        "fc.2.weight": torch.randn(proj_dim, dim) / dim**0.5, "fc.2.bias": torch.randn(proj_dim),
    }
    state = {f"module.encoder_q.{k}": v for k, v in {**query, **head}.items()}
    state.update({f"module.encoder_k.{k}": v + 1 for k, v in {**query, **head}.items()})
    state["module.queue"] = torch.randn(proj_dim, 16)
    state["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    return state, {**query, **head}


def write_moco_checkpoint(path: Path, width: int = 4, proj_dim: int = 128) -> dict[str, torch.Tensor]:
    """Save a MoCo v2 checkpoint file (``epoch``/``arch``/``state_dict``/``optimizer``); returns the query weights."""
    state, query = moco_state(width, proj_dim)
    torch.save({"epoch": 800, "arch": "resnet50", "state_dict": state, "optimizer": {"state": {}}}, path)
    return query


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a gzip IDX file as in the MNIST / Fashion-MNIST distribution."""
    code = 0x0803 if array.ndim == 3 else 0x0801
    header = struct.pack(">I", code) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def write_fashion_mnist(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Fashion-MNIST-format IDX files of noise images with one bright bar per class."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 40, (n, 28, 28))
        for i, c in enumerate(labels):
            images[i, 2 * c: 2 * c + 8, 4:24] = 250
        write_idx(root / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    return root


@contextmanager
def logged_messages() -> Iterator[list[str]]:
    """The messages scanlearn logs (INFO and above) while it lasts, in order."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("scanlearn")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def error_lines(stderr: str) -> list[str]:
    """The ``scanlearn: error:`` lines of a command's stderr (progress messages share the stream)."""
    return [line for line in stderr.splitlines() if line.startswith("scanlearn: error:")]

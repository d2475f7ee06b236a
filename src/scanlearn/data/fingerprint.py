"""One fingerprint of a set of images, and the file listing of an image folder.

Image files are identified by their path relative to the folder that holds them, their size and
their modification time: cheap to read, and adding, removing or editing a file changes them,
while moving the whole folder does not. In-memory images are identified by every pixel. The
run state (``run.json``) and the feature-cache key both use :func:`fingerprint`; a folder run
keeps its :class:`Listing` and compares it with the folder on every run (:func:`compare`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch

from .images import ImageSet

SCHEME = 2  # bumped whenever what the fingerprint covers changes
SHOWN_NAMES = 3


@dataclass(frozen=True)
class Listing:
    """The image files below ``root``: relative path -> (size in bytes, modification time in ns)."""

    root: str
    files: dict[str, tuple[int, int]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (sizes and times as a two-item list)."""
        return {"root": self.root, "files": {name: list(stat) for name, stat in self.files.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Listing:
        """Inverse of :meth:`to_dict`."""
        return cls(str(data["root"]), {name: (int(size), int(mtime)) for name, (size, mtime) in data["files"].items()})


@dataclass
class FolderChange:
    """What differs between two listings of one folder, by relative path."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def summary(self) -> str:
        """``'20 added, 0 removed, 1 changed (added: a.png, b.png, ...; changed: c.png)'``."""
        counts = f"{len(self.added)} added, {len(self.removed)} removed, {len(self.changed)} changed"
        examples = [f"{kind}: {_names(names)}" for kind, names in
                    (("added", self.added), ("removed", self.removed), ("changed", self.changed)) if names]
        return f"{counts} ({'; '.join(examples)})" if examples else counts


def _names(names: list[str]) -> str:
    """The first few names, then ``...``."""
    return ", ".join(names[:SHOWN_NAMES]) + (", ..." if len(names) > SHOWN_NAMES else "")


def common_root(paths: list[str]) -> str:
    """The folder holding every path (the parent folder for a single file)."""
    return os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])


def list_files(paths: Iterable[str], root: str) -> Listing:
    """Size and modification time of each of ``paths``, keyed by its path relative to ``root``."""
    files = {}
    for path in paths:
        stat = link_or_file_stat(path)
        files[os.path.relpath(path, root)] = (stat.st_size, stat.st_mtime_ns)
    return Listing(str(root), files)


def link_or_file_stat(path: str) -> os.stat_result:
    """``os.stat`` of ``path``, or of the link itself when it dangles or loops (decoding then skips and lists it)."""
    try:
        return os.stat(path)
    except OSError:
        return os.lstat(path)


def compare(old: Listing, new: Listing) -> FolderChange:
    """Files added, removed or changed (size or modification time) from ``old`` to ``new``."""
    return FolderChange(
        added=sorted(set(new.files) - set(old.files)),
        removed=sorted(set(old.files) - set(new.files)),
        changed=sorted(name for name in set(old.files) & set(new.files) if old.files[name] != new.files[name]),
    )


def fingerprint(images: ImageSet) -> dict[str, Any]:
    """Count and hash of an image set: its files' listing (any edit shows), else every pixel; plus its targets."""
    digest = hashlib.sha256(f"{images.channels} {images.image_size} {getattr(images, 'fit', '')}\n".encode())
    digest.update(np.ascontiguousarray(images.targets, dtype=np.int64).tobytes())
    pixels = getattr(images, "images", None)
    if images.paths:
        listing = list_files(images.paths, common_root(images.paths))
        for name, (size, mtime) in listing.files.items():
            digest.update(f"{name}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))
    elif isinstance(pixels, torch.Tensor):
        digest.update(pixels.contiguous().numpy().data)
    else:
        for i in range(len(images)):
            digest.update(np.ascontiguousarray(images[i][0].numpy()).data)
    return {"scheme": SCHEME, "count": len(images), "hash": digest.hexdigest()[:24]}

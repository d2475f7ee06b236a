"""Crash-safe file writes: temporary sibling + fsync + rename, with a clear error when the disk is full.

A reader never sees a half-written file: it sees the old content or the new one. Checkpoints
can keep the file they replace as a backup (``last.ckpt`` -> ``previous.ckpt``). Saved dicts
carry a digest of their contents so that silent corruption is detected on load.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from .errors import CheckpointError, DiskFullError

DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
DIGEST_KEY = "scanlearn_digest"
_UMASK = os.umask(0)
os.umask(_UMASK)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is an OSError meaning "no space left" (or quota exceeded)."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL


def disk_full_error(path: str | Path) -> DiskFullError:
    """The one-line error for a full disk while writing ``path``."""
    where = Path(path).parent
    return DiskFullError(
        f"disk full while writing {path}; the previous version of the file is intact — free space "
        f"on the disk holding {where} (or pick a --run-dir on another disk) and rerun the same command to resume"
    )


def atomic_write_bytes(path: str | Path, write: Callable[[Any], None], backup: str | Path | None = None) -> None:
    """Write a file through ``write(fileobj)`` into a temporary sibling, then rename it in place.

    With ``backup``, an existing ``path`` is first renamed to ``backup`` so that the last good
    version survives even if the new one turns out to be damaged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if backup is not None and path.is_file():
            os.replace(path, backup)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full_error(path) from None
        raise


def _fsync_dir(folder: Path) -> None:
    """Flush a directory entry change to disk (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: str | Path) -> None:
    """Delete temporary files left by a write that was killed before its rename."""
    folder = Path(folder)
    if folder.is_dir():
        for leftover in folder.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)


def content_digest(obj: Any) -> str:
    """SHA-256 over the keys, tensors and plain values of a nested checkpoint structure."""
    digest = hashlib.sha256()
    _feed(digest, obj)
    return digest.hexdigest()


def _feed(digest: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        tensor = obj.detach().cpu().contiguous()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        digest.update(b"{")
        for key, value in obj.items():
            if key != DIGEST_KEY:
                digest.update(repr(key).encode())
                _feed(digest, value)
        digest.update(b"}")
    elif isinstance(obj, (list, tuple)):
        digest.update(b"[")
        for value in obj:
            _feed(digest, value)
        digest.update(b"]")
    else:
        digest.update(repr(obj).encode())


def with_digest(obj: dict) -> dict:
    """``obj`` plus a digest entry of its contents (a shallow copy; ``obj`` is not changed)."""
    return {**obj, DIGEST_KEY: content_digest(obj)}


def check_digest(obj: Any, path: str | Path) -> None:
    """Raise ``CheckpointError`` when a loaded dict's digest does not match its contents."""
    if isinstance(obj, dict) and DIGEST_KEY in obj and obj[DIGEST_KEY] != content_digest(obj):
        raise CheckpointError(f"checkpoint {path} is corrupt (contents do not match its checksum)")


def load_verified(path: str | Path) -> Any:
    """``torch.load`` on CPU plus digest check; any failure becomes ``CheckpointError``."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(exc).__name__})") from None
    check_digest(obj, path)
    return obj

"""Crash-safe file writes and code-free loads.

A reader never sees a half-written file: it sees the old content or the new one. Checkpoints
can keep the file they replace as a backup (``last.ckpt`` -> ``previous.ckpt``). Saved dicts
carry a digest of their contents so that silent corruption is detected on load. Every saved
torch file is read with ``weights_only=True``, so a crafted pickle in a shared run directory
or model file is refused instead of running its code.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import pickletools
import re
import tempfile
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError, DiskFullError, RunBusyError, UnsafeFileError

DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
DIGEST_KEY = "scanlearn_digest"
_UMASK = os.umask(0)
os.umask(_UMASK)
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
# What a pickled numeric NumPy array is rebuilt from (older ``SCAN.save`` files hold such arrays).
NUMPY_ARRAY_GLOBALS = [
    _RECONSTRUCT, (_RECONSTRUCT, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype,
    *sorted({type(np.dtype(code)) for code in "?bBhHiIlLqQefd"}, key=str),
]
UNSAFE_MARKERS = ("Unsupported global", "Can only build")
LOCK_FILE = ".scanlearn.lock"
DIGESTS_FILE = "digests.json"


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an error it was raised from, means "no space left" (or quota exceeded).

    torch.save reports a failed write as a RuntimeError raised while handling the OSError.
    """
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_error(path: str | Path) -> DiskFullError:
    """The one-line error for a full disk while writing ``path``."""
    where = Path(path).parent
    return DiskFullError(
        f"disk full while writing {path}; the previous version of the file is intact — free space "
        f"on the disk holding {where} (or pick a --run-dir on another disk) and rerun the same command to resume"
    )


def atomic_write_bytes(path: str | Path, write: Callable[[Any], None], backup: str | Path | None = None,
                       record: bool = False) -> None:
    """Write a file through ``write(fileobj)`` into a temporary sibling, then rename it in place.

    With ``backup``, an existing ``path`` is first renamed to ``backup`` so that the last good
    version survives even if the new one turns out to be damaged. With ``record``, the file's
    digest goes into its folder's ``DIGESTS_FILE`` so that ``read_recorded`` notices any later change.
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
        digest = sha256_file(tmp) if record else None
        if digest is not None:
            _record_digest(path, digest, keep_previous=True)
        if backup is not None and path.is_file():
            os.replace(path, backup)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        if digest is not None:
            _record_digest(path, digest, keep_previous=False)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full_error(path) from None
        raise


def _record_digest(path: Path, digest: str, keep_previous: bool) -> None:
    """Record ``digest`` as ``path``'s in its folder's manifest; before the rename the previous digest stays
    accepted too, so a crash between the two writes leaves a file that still matches."""
    recorded = read_digests(path.parent)
    previous = recorded.get(path.name, [])[:1] if keep_previous and path.is_file() else []
    recorded[path.name] = [digest, *(d for d in previous if d != digest)]
    atomic_write_bytes(path.parent / DIGESTS_FILE,
                       lambda f: f.write(json.dumps(with_digest({"files": recorded}), indent=1).encode()))


def read_digests(folder: Path) -> dict[str, list[str]]:
    """File name -> accepted digests from ``folder``'s manifest (empty when it has none); a damaged one raises."""
    path = folder / DIGESTS_FILE
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_bytes())
        check_digest(manifest, path)
        files = manifest["files"]
    except (ValueError, TypeError, KeyError, CheckpointError):
        raise CheckpointError(f"{path} is damaged (it records the checksums of the files beside it)") from None
    if not (isinstance(files, dict) and all(isinstance(v, list) for v in files.values())):
        raise CheckpointError(f"{path} is damaged (it records the checksums of the files beside it)")
    return files


def is_recorded(path: str | Path) -> bool:
    """Whether ``path`` was written with ``record`` (its folder's manifest names it)."""
    path = Path(path)
    return path.name in read_digests(path.parent)


def read_recorded(path: str | Path) -> bytes:
    """The bytes of ``path``, checked against the digest recorded when scanlearn wrote it (files written without
    one, e.g. by an older version, are read as they are); a changed file raises ``CheckpointError``, a missing one
    ``FileNotFoundError`` (its reader decides whether it may be absent)."""
    path = Path(path)
    accepted = read_digests(path.parent).get(path.name)
    data = path.read_bytes()
    if accepted is not None and hashlib.sha256(data).hexdigest() not in accepted:
        raise CheckpointError(f"{path} is damaged (contents do not match its checksum)")
    return data


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


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in blocks (model weights or a cached feature array can exceed memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def with_digest(obj: dict) -> dict:
    """``obj`` plus a digest entry of its contents (a shallow copy; ``obj`` is not changed)."""
    return {**obj, DIGEST_KEY: content_digest(obj)}


def check_digest(obj: Any, path: str | Path) -> None:
    """Raise ``CheckpointError`` when a loaded dict's digest does not match its contents."""
    if isinstance(obj, dict) and DIGEST_KEY in obj and obj[DIGEST_KEY] != content_digest(obj):
        raise CheckpointError(f"checkpoint {path} is corrupt (contents do not match its checksum)")


def load_without_code(path: str | Path) -> Any:
    """``torch.load`` on CPU that builds only tensors, plain containers and numeric NumPy arrays.

    A pickle naming any other Python object (the way a payload runs code) raises
    ``UnsafeFileError`` before anything is built; an unreadable file raises ``CheckpointError``.
    """
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(NUMPY_ARRAY_GLOBALS):
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a refused or damaged file
        refusal = unsafe_file_error(exc, path)
        if refusal is not None:
            raise refusal from None
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(exc).__name__})") from None


def unsafe_file_error(exc: Exception, path: str | Path) -> UnsafeFileError | None:
    """The one-line refusal when ``exc`` is a weights-only load rejecting a Python object in ``path``, or ``path`` is a
    plain pickle naming one (torch's loader rejects those before reading what they name), else None."""
    if any(marker in str(exc) for marker in UNSAFE_MARKERS):
        found = re.search(r"GLOBAL (\S+)|got <class '([^']+)'>", str(exc))
        name = next((n for n in found.groups() if n), "unknown") if found else "unknown"
    else:
        name = foreign_pickle_global(path)
        if name is None:
            return None
    return UnsafeFileError(
        f"refusing to unpickle {path}: it holds Python objects besides tensors ({name}), and loading them could run code"
    )


def foreign_pickle_global(path: str | Path) -> str | None:
    """The first object besides torch's and NumPy's that a plain pickle file names (read opcode by opcode with
    ``pickletools``, nothing built), or None for a file that is no such pickle."""
    allowed = ("torch.", "collections.OrderedDict", "numpy.")
    strings: list[str] = []
    try:
        if zipfile.is_zipfile(path):  # torch's own format: its loader already named any object it refused
            return None
        with open(path, "rb") as handle:
            for opcode, arg, _ in pickletools.genops(handle):
                if opcode.name in ("GLOBAL", "INST"):
                    name = str(arg).replace(" ", ".")
                elif opcode.name == "STACK_GLOBAL":
                    name = ".".join(strings[-2:]) if len(strings) >= 2 else "unknown"
                else:
                    if isinstance(arg, str):
                        strings.append(arg)
                    continue
                if not name.startswith(allowed):
                    return name
    except Exception:  # noqa: BLE001 - not a pickle (or a damaged one): the caller reports it as corrupt
        return None
    return None


def load_verified(path: str | Path) -> Any:
    """``load_without_code`` plus digest check; any failure becomes ``CheckpointError``."""
    obj = load_without_code(path)
    check_digest(obj, path)
    return obj


def refuse_file_as_run_dir(run_dir: Path) -> None:
    """One line instead of FileExistsError when ``--run-dir`` names an existing file."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir} is a file, not a directory; pass a directory (it is created if missing)")


@contextmanager
def run_dir_lock(run_dir: str | Path, create: bool = True) -> Iterator[None]:
    """Hold ``run_dir``'s advisory lock for the body, so a second command on it refuses instead of clashing.

    The lock is a ``flock`` on ``LOCK_FILE``, which names the holder's pid; the kernel releases it
    when the holder dies, so a stale lock file is simply taken over. Without ``create`` a missing
    run directory is left uncreated and unlocked (read-only commands then report what is missing).
    """
    run_dir = Path(run_dir)
    refuse_file_as_run_dir(run_dir)
    if not create and not run_dir.exists():
        yield
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
    except OSError as exc:
        raise ConfigError(
            f"cannot write in run directory {run_dir} ({exc.strerror}); make it writable or pick another --run-dir"
        ) from None
    with os.fdopen(fd, "r+") as handle:
        _take_lock(handle, run_dir)
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()


def _take_lock(handle: Any, run_dir: Path) -> None:
    """Lock ``handle`` without waiting and write our pid into it, or name the holder in a ``RunBusyError``."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = handle.read().strip() or "unknown"
        raise RunBusyError(
            f"run directory {run_dir} is in use by another scanlearn command (pid {holder}); wait for it to "
            "finish or pick another --run-dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()

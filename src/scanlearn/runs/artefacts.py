"""A run directory's stage artefacts: where each stage writes, its completion marker, and atomic,
verified JSON / NumPy / torch files with one-line errors for missing or damaged ones.

JSON, NumPy, YAML and list files get the SHA-256 of their bytes recorded when written and checked when read
(``fsutil.read_recorded``), as torch files carry a digest inside: any later change to their bytes is a one-line ``CheckpointError`` naming the file and the stage
to rerun, never a traceback or a silently different answer."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import CheckpointError, StageOrderError
from .fsutil import atomic_write_bytes, load_verified, read_recorded, with_digest

STAGES = ("pretext", "mine", "scan", "selflabel")
DONE_FILE = "done.json"


def stage_dir(run_dir: str | Path, stage: str) -> Path:
    """``run_dir/<stage>``, created on demand."""
    path = Path(run_dir) / stage
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_complete(run_dir: str | Path, stage: str) -> bool:
    """True when ``stage`` finished in ``run_dir`` (its completion marker exists)."""
    return (Path(run_dir) / stage / DONE_FILE).is_file()


def require_stage(run_dir: str | Path, stage: str, needed_by: str) -> Path:
    """The directory of the finished ``stage``, or a clear error telling which command to run."""
    if not is_complete(run_dir, stage):
        raise StageOrderError(
            f"{needed_by} needs the {stage} stage, which has not finished in {run_dir}; "
            f"run `scanlearn {stage} --run-dir {run_dir}` (or `scanlearn run`) first"
        )
    return Path(run_dir) / stage


def write_json(path: str | Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON, recording its digest."""
    atomic_write_bytes(path, lambda f: f.write(json.dumps(data, indent=2).encode()), record=True)


def read_json(path: str | Path) -> Any:
    """Parse a JSON file, or ``{}`` when it does not exist; a damaged one is a one-line ``CheckpointError``, and a
    dict's missing entry too (``SavedState``)."""
    path = Path(path)
    if not path.is_file():
        return {}
    text = verified_bytes(path)
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        state = "empty" if not text else f"truncated or not JSON: {type(exc).__name__}"
        raise CheckpointError(f"{path} is damaged ({state}); {rerun_hint(path)}") from None
    return SavedState(data, path) if isinstance(data, dict) else data


def verified_bytes(path: Path) -> bytes:
    """``fsutil.read_recorded`` with the way out (the stage to rerun) added to its error."""
    try:
        return read_recorded(path)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; {rerun_hint(path)}") from None


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """Atomically save a NumPy array, recording its digest."""
    atomic_write_bytes(path, lambda f: np.save(f, array), record=True)


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Atomically save named NumPy arrays to one ``.npz``, recording its digest."""
    atomic_write_bytes(path, lambda f: np.savez(f, **arrays), record=True)


def save_torch(path: str | Path, obj: Any) -> None:
    """Atomically ``torch.save`` an object; a dict gets a digest so that corruption is caught on load."""
    payload = with_digest(obj) if isinstance(obj, dict) else obj
    atomic_write_bytes(path, lambda f: torch.save(payload, f))


class SavedState(dict):
    """A stage's saved dict whose missing entries raise a one-line ``CheckpointError`` (not ``KeyError``)."""

    def __init__(self, data: dict, path: Path) -> None:
        super().__init__(data)
        self.path = path

    def __missing__(self, key: str) -> Any:
        raise CheckpointError(f"{self.path} lacks its {key!r} entry, so it was not written by this stage; {rerun_hint(self.path)}")


def load_torch(path: str | Path) -> SavedState:
    """A stage's saved dict, loaded without running code, with a clear error for a missing, corrupt or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; run the stage that writes it")
    try:
        state = load_verified(path)
    except CheckpointError as exc:
        raise type(exc)(f"{exc}; {rerun_hint(path)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds no saved state of this stage; {rerun_hint(path)}")
    return SavedState(state, path)


def rerun_hint(path: Path) -> str:
    """How to rebuild a damaged artefact: rerun the stage whose directory holds it (else, for a run-level
    file, rewrite it without discarding the finished stages, or start over)."""
    stage = next((part for part in reversed(Path(path).parts[-3:-1]) if part in STAGES), None)
    if stage:
        return f"rerun `scanlearn {stage} --restart`"
    return "delete it and rerun the same command to rewrite it, or start over with `scanlearn run --restart`"


def load_npy(path: str | Path) -> np.ndarray:
    """``np.load`` of a verified ``.npy`` with a clear error for a missing, damaged or object array file."""
    return _load_numpy(Path(path), lambda data: np.load(data, allow_pickle=False))


def load_arrays(path: str | Path) -> SavedState:
    """Every array of a verified ``.npz``, with the same clear errors as ``load_npy`` (a missing array too)."""
    path = Path(path)

    def read(data: io.BytesIO) -> SavedState:
        with np.load(data, allow_pickle=False) as arrays:
            return SavedState({name: arrays[name] for name in arrays.files}, path)
    return _load_numpy(path, read)


def _load_numpy(path: Path, read: Callable[[io.BytesIO], Any]) -> Any:
    """``read`` applied to the verified bytes of ``path``; any failure is one ``CheckpointError`` line."""
    try:
        data = verified_bytes(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist; run the stage that writes it") from None
    try:
        return read(io.BytesIO(data))
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path} is corrupt or truncated ({type(exc).__name__}); {rerun_hint(path)}") from None


def record_run_metrics(run_dir: str | Path, key: str, metrics: dict[str, float]) -> None:
    """Merge ``metrics`` under ``key`` into ``run_dir/metrics.json``."""
    path = Path(run_dir) / "metrics.json"
    data = read_json(path)
    data[key] = metrics
    write_json(path, data)


def has_work(run_dir: Path, stage: str) -> bool:
    """Whether ``stage`` finished or left checkpoints in ``run_dir``."""
    directory = run_dir / stage
    return (directory / DONE_FILE).is_file() or any((directory / "checkpoints").glob("*.ckpt"))

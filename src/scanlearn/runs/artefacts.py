"""A run directory's stage artefacts: where each stage writes, its completion marker, and atomic,
verified JSON / NumPy / torch files with one-line errors for missing or damaged ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, StageOrderError
from .fsutil import atomic_write_bytes, load_verified, with_digest

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
    """Atomically write ``data`` as indented JSON."""
    atomic_write_bytes(path, lambda f: f.write(json.dumps(data, indent=2).encode()))


def read_json(path: str | Path) -> Any:
    """Parse a JSON file, or ``{}`` when it does not exist; a damaged one is a one-line ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        state = "empty" if not path.stat().st_size else f"truncated or not JSON: {type(exc).__name__}"
        raise CheckpointError(f"{path} is damaged ({state}); {rerun_hint(path)}") from None


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """Atomically save a NumPy array."""
    atomic_write_bytes(path, lambda f: np.save(f, array))


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
    """``np.load`` with a clear error for a missing or damaged array file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; run the stage that writes it")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
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

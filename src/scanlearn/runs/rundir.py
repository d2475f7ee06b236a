"""Which folders are scanlearn run directories, and the only entries scanlearn may delete from them.

A run directory carries ``MARKER_FILE``, written when scanlearn first uses a new or empty
folder (or a run made before markers existed, recognised by its ``run.json``). Any other
non-empty folder is refused before anything is written to it or deleted from it, and cleanup
removes only the entries scanlearn itself writes there, so a user's own files are never touched.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import RunDirError
from .fsutil import DIGESTS_FILE, LOCK_FILE, atomic_write_bytes, refuse_file_as_run_dir

MARKER_FILE = ".scanlearn-run"
LEGACY_RUN_FILE = "run.json"
# Every entry scanlearn writes at the top of a run directory (tests/runs/test_rundir.py checks a full run).
WRITTEN_ENTRIES = frozenset({
    "pretext", "mine", "scan", "selflabel", "cache", "estimate_k", "images.npy",
    "run.json", "environment.json", "config.yaml", "files.txt", "skipped.txt", "listing.json", "metrics.json",
    "report.html", "figures", "assignments.csv", "candidates.json", "backbone.json", "budget.json", "timing.json", DIGESTS_FILE, MARKER_FILE, LOCK_FILE,
})
# Kept by ``run --restart``: the feature cache (keyed, so never stale), the API's input array and the held lock.
KEPT_ON_RESTART = frozenset({"cache", "images.npy", LOCK_FILE})


def is_run_dir(folder: str | Path) -> bool:
    """Whether ``folder`` holds the run marker (or is a run made before markers, with a readable run.json)."""
    folder = Path(folder)
    return (folder / MARKER_FILE).is_file() or _is_legacy_run(folder)


def _is_legacy_run(folder: Path) -> bool:
    """A pre-marker run: its run.json is a dict holding the run's config."""
    try:
        stored = json.loads((folder / LEGACY_RUN_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(stored, dict) and "config" in stored


def refuse_foreign_folder(folder: str | Path) -> None:
    """Refuse ``folder`` when it is a file, or holds entries (besides our lock) and is not a run directory."""
    folder = Path(folder)
    refuse_file_as_run_dir(folder)
    if folder.is_dir() and not is_run_dir(folder) and any(e.name != LOCK_FILE for e in folder.iterdir()):
        raise not_a_run_dir(folder)


def claim_run_dir(folder: str | Path) -> Path:
    """Create or adopt ``folder`` as a run directory; refuse a non-empty folder that is not one."""
    folder = Path(folder)
    refuse_foreign_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / MARKER_FILE).is_file():
        atomic_write_bytes(folder / MARKER_FILE, lambda f: f.write(b"scanlearn run directory\n"))
    return folder


def not_a_run_dir(folder: Path) -> RunDirError:
    """The one-line refusal for a folder without the run marker, naming one of its entries."""
    names = sorted(entry.name for entry in folder.iterdir())
    example = next((name for name in names if name not in WRITTEN_ENTRIES), names[0] if names else "nothing")
    return RunDirError(
        f"{folder} is not a scanlearn run directory (no {MARKER_FILE} marker; it holds {len(names)} entries, "
        f"e.g. {example!r}); nothing in it was changed — pass a new or empty --run-dir"
    )


def unlinked(path: Path, folder: bool = False) -> Path:
    """``path`` in a run directory with no symbolic link planted at it (or, for a ``folder``, directly in it): such a
    link is removed, its target untouched, so a file written in place there never lands outside the run."""
    if path.is_symlink():
        path.unlink()
    if folder:
        path.mkdir(parents=True, exist_ok=True)
        for entry in path.iterdir():
            if entry.is_symlink():
                entry.unlink()
    return path


def remove_written(folder: Path, names: frozenset[str] | set[str] | tuple[str, ...]) -> None:
    """Delete the entries ``names`` of run directory ``folder`` that scanlearn writes; refuse any other folder."""
    if not is_run_dir(folder):
        raise not_a_run_dir(folder)
    for name in sorted(set(names) & WRITTEN_ENTRIES - {MARKER_FILE}):
        entry = folder / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()

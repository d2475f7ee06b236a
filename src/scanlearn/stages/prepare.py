"""Before the first stage: decode every file of an image folder once and keep the readable ones.

The readable files are listed in ``RUN/files.txt`` (``config.data.files`` points there, so every
later stage, resume and ``predict`` sees exactly the same images); the others go to
``RUN/skipped.txt`` with their reason. Each path is one JSON string per line, so any legal file
name (newline, tab, bytes that are not UTF-8) survives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..config import Config
from ..data.images import ImageSet, scan_unreadable
from ..data.datasets import is_image_folder, load_dataset
from ..data.pathlists import read_path_rows, write_path_list
from ..errors import DataError

KEPT_FILE = "files.txt"
SKIPPED_FILE = "skipped.txt"


def prepare_images(config: Config, run_dir: str | Path, log: Callable[[str], None] = print) -> None:
    """For image folders, point ``config.data.files`` at the run's list of readable files (made once)."""
    if not is_image_folder(config.data.dataset) or config.data.files:
        return
    run_dir = Path(run_dir).resolve()
    kept = run_dir / KEPT_FILE
    if not kept.is_file():
        images = load_dataset(
            config.data.dataset, "train", root=config.data.root, image_size=config.data.image_size,
            labels_from_folders=config.data.labels_from_folders,
        )
        log(f"[scanlearn] checking {len(images)} images under {config.data.root}")
        bad = scan_unreadable(images, progress=config.runtime.progress)
        write_skipped(run_dir / SKIPPED_FILE, bad)
        write_kept(kept, images, {path for path, _ in bad})
        if bad:
            log(f"[scanlearn] skipped {len(bad)} unreadable files, listed in {run_dir / SKIPPED_FILE}")
    config.data.files = str(kept)


def write_skipped(path: Path, bad: list[tuple[str, str]]) -> None:
    """Each unreadable file with its reason (an empty file when every image is readable)."""
    write_path_list(path, bad)


def write_kept(path: Path, images: ImageSet, bad: set[str]) -> None:
    """List the readable files of ``images``; a DataError when none is readable."""
    kept = [p for p in images.paths or [] if p not in bad]
    if not kept:
        raise DataError(
            f"none of the {len(images)} image files is readable (see {path.parent / SKIPPED_FILE}); "
            "check the folder"
        )
    write_path_list(path, ((p,) for p in kept))


def read_skipped(run_dir: str | Path) -> list[tuple[str, str]]:
    """The ``(path, reason)`` pairs recorded in ``RUN/skipped.txt`` (none when absent)."""
    path = Path(run_dir) / SKIPPED_FILE
    return read_path_rows(path) if path.is_file() else []

"""Before the first stage: decode every file of an image folder once and keep the readable ones.

The readable files are listed in ``RUN/files.txt`` (``config.data.files`` points there, so every
later stage, resume and ``predict`` sees exactly the same images); the others go to
``RUN/skipped.txt`` as ``path<TAB>reason`` lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..config import Config
from ..data.datasets import ImageSet, is_image_folder, load_dataset, scan_unreadable
from ..errors import DataError
from ..fsutil import atomic_write_bytes

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
    """``path<TAB>reason`` per unreadable file (an empty file when every image is readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{file}\t{reason}\n" for file, reason in bad).encode("utf-8")
    atomic_write_bytes(path, lambda f: f.write(text))


def write_kept(path: Path, images: ImageSet, bad: set[str]) -> None:
    """List the readable files of ``images``; a DataError when none is readable."""
    kept = [p for p in images.paths or [] if p not in bad]
    if not kept:
        raise DataError(
            f"none of the {len(images)} image files is readable (see {path.parent / SKIPPED_FILE}); "
            "check the folder"
        )
    text = "".join(f"{p}\n" for p in kept).encode("utf-8")
    atomic_write_bytes(path, lambda f: f.write(text))


def read_skipped(run_dir: str | Path) -> list[tuple[str, str]]:
    """The ``(path, reason)`` pairs recorded in ``RUN/skipped.txt`` (none when absent)."""
    path = Path(run_dir) / SKIPPED_FILE
    if not path.is_file():
        return []
    rows = (line.split("\t", 1) for line in path.read_text(encoding="utf-8").splitlines() if line)
    return [(row[0], row[1] if len(row) > 1 else "") for row in rows]

"""Lists of image paths in text files (the kept and skipped files of a folder) and filtering a set by one."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import ConfigError, DataError
from .images import FileImageSet, ImageSet
from ..runs.artefacts import verified_bytes
from ..runs.fsutil import atomic_write_bytes


def write_path_list(path: str | os.PathLike[str], rows: Iterable[tuple[str, ...]], record: bool = True) -> None:
    """Atomically write one row per line: the path as a JSON string (so any legal name survives), then tab, notes;
    with ``record`` (a run's own list), its digest is recorded so that a damaged list is refused, not trusted."""
    text = "".join("\t".join((json.dumps(row[0]), *row[1:])) + "\n" for row in rows)
    atomic_write_bytes(path, lambda f: f.write(text.encode("utf-8")), record=record)


def read_path_rows(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """``(path, notes)`` per line of a list written by ``write_path_list`` (or an older plain one), verified."""
    lines = verified_bytes(Path(path)).decode("utf-8", errors="surrogateescape").split("\n")
    return [_path_row(line) for line in lines if line.strip()]


def _path_row(line: str) -> tuple[str, str]:
    """A JSON-quoted path and what follows its tab; older lists hold a plain path (then tab, notes)."""
    if line.startswith('"'):
        try:
            path, end = json.JSONDecoder().raw_decode(line)
            return path, line[end + 1:]
        except ValueError:
            pass
    path, _, notes = line.partition("\t")
    return path, notes


def read_path_list(path: str | os.PathLike[str]) -> list[str]:
    """The image paths listed in ``path`` (blank lines ignored)."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"image list {file} does not exist; rerun `scanlearn run` to rebuild it")
    return [listed for listed, _ in read_path_rows(file)]


def keep_listed(images: ImageSet, list_file: str | os.PathLike[str]) -> ImageSet:
    """Only the images of a file-backed set whose paths ``list_file`` lists."""
    if not isinstance(images, FileImageSet):
        raise ConfigError("data.files applies to image files only; unset it for in-memory datasets")
    return images.only(read_path_list(list_file))

"""Before the first stage: decode every file of an image folder once and keep the readable ones.

The readable files are listed in ``RUN/files.txt`` (``config.data.files`` points there, so every
later stage, resume and ``predict`` sees exactly the same images); the others go to
``RUN/skipped.txt`` with their reason. Each path is one JSON string per line, so any legal file
name (newline, tab, bytes that are not UTF-8) survives. ``RUN/listing.json`` records every image
file with its size and modification time; each later run compares the folder with it, says in
one line what was added, removed or changed, and refuses to reuse trained stages on changed data.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ..config import with_values
from ..data.datasets import is_image_folder, load_dataset
from ..data.images import ImageSet, scan_unreadable
from ..data.pathlists import read_path_rows, write_path_list
from ..runs.artefacts import has_work, rerun_hint, STAGES, verified_bytes
from ..engine.run import Run
from ..engine.splits import num_clusters
from ..errors import CheckpointError, DataError, RunMismatchError
from ..data.fingerprint import compare, FolderChange, list_files, Listing
from ..runs.fsutil import atomic_write_bytes, is_recorded

LOG = logging.getLogger(__name__)

KEPT_FILE = "files.txt"
SKIPPED_FILE = "skipped.txt"
LISTING_FILE = "listing.json"


def prepare_images(run: Run) -> Run:
    """For image folders, the run with ``data.files`` pointing at its list of readable files (other data: ``run``
    itself).

    The list is made once; on every later call the folder is compared with the recorded listing
    (one line of added / removed / changed files). A changed folder is listed afresh when no stage
    has worked yet, else refused with what to do (``--restart``, or ``predict`` for the new files).
    """
    config, run_dir = run.config, run.directory.resolve()
    kept = run_dir / KEPT_FILE
    if not is_image_folder(config.data.dataset) or (config.data.files and Path(config.data.files).resolve() != kept):
        return run
    images = load_dataset(
        config.data.dataset, "train", root=config.data.root, image_size=config.data.image_size,
        labels_from_folders=config.data.labels_from_folders,
    )
    current = list_files(images.paths or [], str(Path(config.data.root).expanduser().resolve()))
    recorded = read_listing(run_dir)
    if kept.is_file() and recorded is None and not is_recorded(kept):
        write_listing(run_dir, current)  # a run of an older version: its kept list stays, changes show from now on
        LOG.info(f"images: recorded the listing of the {len(current.files)} files under {current.root}")
    elif not (kept.is_file() and recorded is not None and reuse_listing(run_dir, recorded, current)):
        make_listing(run, images, current)
    return run.with_config(with_values(config, {"data.files": str(kept)}))


def reuse_listing(run_dir: Path, recorded: Listing, current: Listing) -> bool:
    """Whether the recorded file list still holds (moving the whole folder keeps it); refuses changed data under trained work."""
    change = compare(recorded, current)
    trained = [stage for stage in STAGES if has_work(run_dir, stage)]
    if not change:
        if recorded.root != current.root:
            rebase(run_dir, recorded.root, current.root)
            LOG.info(f"images: the {len(current.files)} files of {recorded.root} are now under {current.root} "
                "(same names, sizes and times); continuing")
        else:
            LOG.info(f"images: {len(current.files)} files under {current.root}, none added, removed or changed")
        return True
    if recorded.root != current.root:
        LOG.info(f"images: {current.root} differs from {recorded.root}, where this run listed them: {change.summary()}")
        if trained:
            raise RunMismatchError(
                f"{run_dir} was made on the images under {recorded.root}, and {current.root} holds other files "
                f"({change.summary()}); pass --data {recorded.root} to continue that run, drop --run-dir to cluster "
                f"{current.root} in a run directory of its own, or add --restart to redo this run on {current.root}"
            )
        return False
    LOG.info(f"images under {current.root} since this run listed them: {change.summary()}")
    if trained:
        raise RunMismatchError(stale_work_message(run_dir, current.root, change, trained))
    return False


def stale_work_message(run_dir: Path, root: str, change: FolderChange, trained: list[str]) -> str:
    """The refusal to reuse ``trained`` stages on a changed folder, with both ways forward."""
    return (f"the images under {root} changed since {run_dir} was trained on them ({change.summary()}), so its "
            f"{'/'.join(trained)} work is stale; rerun with --restart to train on the current images "
            f"(the feature cache is kept), or keep the trained model and assign every current image, new ones "
            f"included, with `scanlearn predict --run-dir {run_dir} --data {root}`")


def make_listing(run: Run, images: ImageSet, listing: Listing) -> None:
    """Check the cluster count, decode every file, then write the kept and skipped lists and the listing."""
    config, run_dir = run.config, run.directory.resolve()
    clusters = num_clusters(config.num_clusters, run.spec, images)
    if len(images) < clusters:
        raise DataError(f"{config.data.root} holds {len(images)} images, fewer than the {clusters} clusters asked for; "
                        "use fewer clusters (--clusters K) or more images")
    LOG.info(f"checking {len(images)} images under {config.data.root}")
    bad = scan_unreadable(images, progress=config.runtime.progress)
    write_skipped(run_dir / SKIPPED_FILE, bad)
    write_kept(run_dir / KEPT_FILE, images, {path for path, _ in bad})
    write_listing(run_dir, listing)
    if bad:
        LOG.info(f"skipped {len(bad)} unreadable files, listed in {run_dir / SKIPPED_FILE}")


def rebase(run_dir: Path, old_root: str, new_root: str) -> None:
    """Point the kept and skipped lists and the listing at the folder's new place."""
    moved = lambda path: os.path.join(new_root, os.path.relpath(path, old_root))  # noqa: E731
    write_path_list(run_dir / KEPT_FILE, ((moved(path),) for path, _ in read_path_rows(run_dir / KEPT_FILE)))
    write_skipped(run_dir / SKIPPED_FILE, [(moved(path), reason) for path, reason in read_skipped(run_dir)])
    write_listing(run_dir, Listing(new_root, read_listing(run_dir).files))


def read_listing(run_dir: Path) -> Listing | None:
    """The recorded listing of the run's image folder, or None (a run of an older version, or none yet); a
    damaged one is refused (``CheckpointError``), never silently replaced by the folder as it is now."""
    path = run_dir / LISTING_FILE
    try:
        text = verified_bytes(path)
    except FileNotFoundError:
        return None
    try:
        return Listing.from_dict(json.loads(text.decode("utf-8")))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path} is damaged ({type(exc).__name__}); {rerun_hint(path)}") from None


def write_listing(run_dir: Path, listing: Listing) -> None:
    """Atomically record ``listing`` (JSON, every file name escaped so any legal name survives)."""
    atomic_write_bytes(run_dir / LISTING_FILE, lambda f: f.write(json.dumps(listing.to_dict()).encode()), record=True)


def write_skipped(path: Path, bad: list[tuple[str, str]], record: bool = True) -> None:
    """Each unreadable file with its reason (an empty file when every image is readable); ``record`` for the run's own."""
    write_path_list(path, bad, record)


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

"""Predict: cluster assignments for a split or a folder of new images with a finished run."""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from ..data.folder import load_folder
from ..data.images import ImageSet, preload, scan_unreadable
from ..engine.run import Run
from ..engine.splits import decode_size
from ..errors import DataError, ScanlearnWarning
from ..mining import far_from
from ..runs.fsutil import atomic_write_bytes
from ..clustering.answer import probabilities_and_mined, run_probabilities
from ..engine.mined_features import train_mining_features
from .prepare import write_skipped

LOG = logging.getLogger(__name__)
# Share of new images far from every training image (beyond the training images' own 99th percentile of
# nearest-neighbour distance, which 1% of like images pass) above which predict warns.
UNLIKE_SHARE = 0.1


class UnlikeTrainingWarning(ScanlearnWarning):
    """Many new images lie far from every image the run was trained on: their clusters are guesses."""


def write_assignments(
    path: str | Path, images: ImageSet, probs: np.ndarray, threshold: float, exported: list[str] | None = None,
) -> Path:
    """CSV with one row per image: path (or index), cluster, confidence, confident yes/no (and its exported copy)."""
    names = images.paths or [str(i) for i in range(len(images))]
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["path", "cluster", "confidence", "confident", *(["exported_path"] if exported else [])])
    for i, (name, row) in enumerate(zip(names, probs)):
        k = int(row.argmax())
        writer.writerow([name, k, f"{row[k]:.4f}", "yes" if row[k] > threshold else "no", *([exported[i]] if exported else [])])
    atomic_write_bytes(path, lambda f: f.write(text.getvalue().encode()))
    return Path(path)


def predict_images(run: Run, images: ImageSet, out_csv: str | Path) -> np.ndarray:
    """Probabilities of ``images`` under the run's chosen clustering (``clustering.answer``); writes ``out_csv``."""
    probs = run_probabilities(run, images)
    write_assignments(out_csv, images, probs, run.config.selflabel.threshold)
    return probs


def predict_folder(run: Run, folder: str | Path, out_csv: str | Path, export: str | Path | None = None) -> np.ndarray:
    """Assign every readable image below ``folder``; unreadable ones go to ``<csv stem>_skipped.txt``.

    With ``export``, each file is also placed at ``export/cluster_<k>/<its path below folder>`` and
    the CSV gives that exported path beside the original one.
    """
    config, spec = run.config, run.spec
    images = load_folder(folder, image_size=decode_size(spec), channels=spec.channels, fit=spec.fit)
    bad = scan_unreadable(images, progress=config.runtime.progress)
    if bad:
        skipped = Path(out_csv).with_name(f"{Path(out_csv).stem}_skipped.txt")
        write_skipped(skipped, bad, record=False)
        LOG.info(f"skipped {len(bad)} unreadable files, listed in {skipped}")
    images = images.without(path for path, _ in bad)
    if len(images) == 0:
        raise DataError(f"no readable images under {folder}; check the folder")
    images = preload(images, progress=config.runtime.progress)
    probs, mined = probabilities_and_mined(run, images)
    warn_if_unlike_training(run, mined)
    exported = None
    if export is not None:
        targets = export_targets(images.paths or [], probs.argmax(1), folder, export)
        methods = export_clusters(images.paths or [], targets, export)
        exported = [str(target) for target in targets]
        LOG.info(f"exported {len(images)} files into {Path(export) / 'cluster_<k>'}/ ({describe_methods(methods)})")
    write_assignments(out_csv, images, probs, config.selflabel.threshold, exported)
    return probs


def warn_if_unlike_training(run: Run, new: np.ndarray) -> float:
    """Warn (one line) when more than ``UNLIKE_SHARE`` of the new images, by their mined features ``new`` (before
    whitening), lie far from every training image in that space (centred by the training mean, ``mining.far_from``);
    returns that share."""
    train, _ = train_mining_features(run)
    centre = train.mean(axis=0)
    far = far_from(train - centre, new - centre)
    share = float(far.mean())
    if share > UNLIKE_SHARE:
        warnings.warn(
            f"{int(far.sum())} of {len(far)} new images ({share:.0%}) lie farther from every training image than 99% "
            "of the training images lie from their nearest neighbour; their clusters are guesses — train a run on "
            "images like these", UnlikeTrainingWarning, stacklevel=2)
    return share


def export_targets(paths: list[str], clusters: np.ndarray, folder: str | Path, destination: str | Path) -> list[Path]:
    """``destination/cluster_<k>/<path relative to folder>`` of each file: subfolders kept, so no two collide."""
    root = Path(folder).expanduser()
    return [Path(destination) / f"cluster_{int(k)}" / Path(path).relative_to(root) for path, k in zip(paths, clusters)]


def export_clusters(paths: list[str], targets: list[Path], destination: str | Path) -> dict[str, int]:
    """Put each file at its target below ``destination`` as a hard link, else a symlink, else a copy.

    Returns how many files each method handled. The destination must be new or empty so that a
    second export never mixes with the first.
    """
    root = Path(destination)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DataError(f"export folder {root} is not empty; pass a new or empty --export folder")
    methods = {"hardlink": 0, "symlink": 0, "copy": 0}
    for path, target in zip(paths, targets):
        target.parent.mkdir(parents=True, exist_ok=True)
        methods[link_or_copy(Path(path), target)] += 1
    return methods


def link_or_copy(source: Path, target: Path) -> str:
    """Hard-link ``source`` to ``target``, falling back to a symlink, then a copy; returns the method."""
    try:
        os.link(source, target)
        return "hardlink"
    except OSError:
        pass
    try:
        os.symlink(source.resolve(), target)
        return "symlink"
    except OSError:
        shutil.copy2(source, target)
        return "copy"


def describe_methods(methods: dict[str, int]) -> str:
    """``'12 hard links, 3 copies'`` style summary of ``export_clusters``' result."""
    names = {"hardlink": "hard links", "symlink": "symlinks", "copy": "copies"}
    return ", ".join(f"{n} {names[m]}" for m, n in methods.items() if n) or "nothing"

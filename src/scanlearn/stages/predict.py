"""Predict: cluster assignments for a split or a folder of new images with a finished run."""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from ..config import Config
from ..data.datasets import ImageSet, load_folder, preload, scan_unreadable
from ..errors import DataError
from ..fsutil import atomic_write_bytes
from .baseline import KMEANS, chosen_clustering
from .feature_kmeans import kmeans_probabilities
from .common import data_spec, decode_size, is_complete
from .evaluate import predict_probabilities
from .prepare import write_skipped


def final_stage(run_dir: str | Path) -> str:
    """The most refined finished clustering stage of a run (selflabel, else scan)."""
    return "selflabel" if is_complete(run_dir, "selflabel") else "scan"


def write_assignments(path: str | Path, images: ImageSet, probs: np.ndarray, threshold: float) -> Path:
    """CSV with one row per image: path (or index), cluster, confidence, confident yes/no."""
    names = images.paths or [str(i) for i in range(len(images))]
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["path", "cluster", "confidence", "confident"])
    for name, row in zip(names, probs):
        k = int(row.argmax())
        writer.writerow([name, k, f"{row[k]:.4f}", "yes" if row[k] > threshold else "no"])
    atomic_write_bytes(path, lambda f: f.write(text.getvalue().encode()))
    return Path(path)


def predict_images(config: Config, run_dir: str | Path, images: ImageSet, out_csv: str | Path) -> np.ndarray:
    """Probabilities of ``images`` under the run's best clustering by the label-free criterion (the final model
    unless an earlier candidate scored higher, ``baseline.chosen_clustering``); writes ``out_csv``."""
    chosen = chosen_clustering(run_dir, final_stage(run_dir))
    if chosen == KMEANS:
        probs = kmeans_probabilities(config, run_dir, images)
    else:
        probs = predict_probabilities(config, run_dir, chosen, images)
    write_assignments(out_csv, images, probs, config.selflabel.threshold)
    return probs


def predict_folder(
    config: Config,
    run_dir: str | Path,
    folder: str | Path,
    out_csv: str | Path,
    export: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> np.ndarray:
    """Assign every readable image below ``folder``; unreadable ones go to ``<csv stem>_skipped.txt``."""
    spec = data_spec(config)
    images = load_folder(folder, image_size=decode_size(config), channels=spec.channels)
    bad = scan_unreadable(images, progress=config.runtime.progress)
    if bad:
        skipped = Path(out_csv).with_name(f"{Path(out_csv).stem}_skipped.txt")
        write_skipped(skipped, bad)
        log(f"[scanlearn] skipped {len(bad)} unreadable files, listed in {skipped}")
    images = images.without(path for path, _ in bad)
    if len(images) == 0:
        raise DataError(f"no readable images under {folder}; check the folder")
    probs = predict_images(config, run_dir, preload(images, progress=config.runtime.progress), out_csv)
    if export is not None:
        methods = export_clusters(images.paths or [], probs.argmax(1), export)
        log(f"[scanlearn] exported {len(images)} files into {export}/cluster_<k>/ ({describe_methods(methods)})")
    return probs


def export_clusters(paths: list[str], clusters: np.ndarray, destination: str | Path) -> dict[str, int]:
    """Put each file into ``destination/cluster_<k>/`` as a hard link, else a symlink, else a copy.

    Returns how many files each method handled. The destination must be new or empty so that a
    second export never mixes with the first.
    """
    root = Path(destination)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DataError(f"export folder {root} is not empty; pass a new or empty --export folder")
    methods = {"hardlink": 0, "symlink": 0, "copy": 0}
    for path, cluster in zip(paths, clusters):
        folder = root / f"cluster_{int(cluster)}"
        folder.mkdir(parents=True, exist_ok=True)
        methods[link_or_copy(Path(path), free_name(folder, Path(path).name))] += 1
    return methods


def free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/<stem>_<n><suffix>`` when that name is taken."""
    target = folder / name
    stem, suffix = Path(name).stem, Path(name).suffix
    n = 1
    while target.exists() or target.is_symlink():
        target = folder / f"{stem}_{n}{suffix}"
        n += 1
    return target


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

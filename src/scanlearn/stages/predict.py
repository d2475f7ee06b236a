"""Predict: cluster assignments for a split or a folder of new images with a finished run."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..config import Config
from ..data.datasets import ImageSet
from .common import is_complete
from .evaluate import predict_probabilities


def final_stage(run_dir: str | Path) -> str:
    """The most refined finished clustering stage of a run (selflabel, else scan)."""
    return "selflabel" if is_complete(run_dir, "selflabel") else "scan"


def write_assignments(path: str | Path, images: ImageSet, probs: np.ndarray, threshold: float) -> Path:
    """CSV with one row per image: path (or index), cluster, confidence, confident yes/no."""
    names = images.paths or [str(i) for i in range(len(images))]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "cluster", "confidence", "confident"])
        for name, row in zip(names, probs):
            k = int(row.argmax())
            writer.writerow([name, k, f"{row[k]:.4f}", "yes" if row[k] > threshold else "no"])
    return Path(path)


def predict_images(config: Config, run_dir: str | Path, images: ImageSet, out_csv: str | Path) -> np.ndarray:
    """Probabilities of ``images`` under the run's final model; writes ``out_csv``."""
    probs = predict_probabilities(config, run_dir, final_stage(run_dir), images)
    write_assignments(out_csv, images, probs, config.selflabel.threshold)
    return probs

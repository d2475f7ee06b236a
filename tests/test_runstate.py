"""Run checks before training: degenerate data is reported before any time is spent on it."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from scanlearn.config import resolve
from scanlearn.errors import ScanlearnWarning
from scanlearn.engine.run import Run
from scanlearn.runstate import prepare_run


def array_config(tmp_path: Path, images: np.ndarray, clusters: int):
    """The photos preset on an in-memory array of ``images`` saved as .npy."""
    np.save(tmp_path / "images.npy", images)
    return resolve("photos", None, [
        "data.dataset=array", f"data.root={tmp_path / 'images.npy'}", f"num_clusters={clusters}",
        "mine.k=5", "mine.val_k=3", "runtime.progress=false",
    ])


def varied(count: int, distinct: int) -> np.ndarray:
    """``count`` 16x16 RGB images cycling through ``distinct`` different ones."""
    rng = np.random.default_rng(0)
    pool = rng.integers(0, 256, (distinct, 16, 16, 3), dtype=np.uint8)
    return pool[np.arange(count) % distinct]


@pytest.mark.parametrize("distinct,clusters,words", [
    (1, 3, "all 40 training images are identical"),
    (2, 3, "only 2 distinct images for 3 clusters"),
], ids=["all-identical", "fewer-distinct-than-clusters"])
def test_degenerate_data_is_warned_about(tmp_path, distinct, clusters, words):
    config = array_config(tmp_path, varied(40, distinct), clusters)
    with pytest.warns(ScanlearnWarning, match=words):
        prepare_run(Run(config, tmp_path / "run"))


def test_varied_data_gives_no_warning(tmp_path):
    config = array_config(tmp_path, varied(40, 3), 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScanlearnWarning)
        prepare_run(Run(config, tmp_path / "run"))

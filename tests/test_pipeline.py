"""The end of a run: empty clusters are reported."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from scanlearn.errors import ClusterCollapseWarning
from scanlearn.pipeline import warn_if_clusters_empty


def finished_run(tmp_path, clusters: np.ndarray, k: int):
    """A run directory whose selflabel stage finished with these test-split cluster assignments."""
    stage = tmp_path / "run" / "selflabel"
    stage.mkdir(parents=True)
    (stage / "done.json").write_text("{}")
    np.save(stage / "probs_test.npy", np.eye(k, dtype=np.float32)[clusters])
    return tmp_path / "run"


def test_a_run_ending_with_empty_clusters_is_warned_about(tmp_path):
    run = finished_run(tmp_path, np.zeros(40, dtype=np.int64), 3)
    with pytest.warns(ClusterCollapseWarning, match="leaves 2 of 3 clusters empty"):
        warn_if_clusters_empty(run)


def test_a_run_using_every_cluster_gives_no_warning(tmp_path):
    run = finished_run(tmp_path, np.arange(40) % 3, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ClusterCollapseWarning)
        warn_if_clusters_empty(run)

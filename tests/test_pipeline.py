"""The end of a run: empty clusters are reported."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fakes import logged_messages
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


@pytest.mark.parametrize("checkpointed, word", [(False, "starting"), (True, "resuming")])
def test_a_stage_with_saved_work_says_it_resumes(tmp_path, monkeypatch, checkpointed, word):
    import scanlearn.pipeline as pipeline
    from test_runstate import array_config, varied

    from scanlearn.engine.run import Run
    from scanlearn.runs.rundir import claim_run_dir

    config, run = array_config(tmp_path, varied(40, 40), 3), claim_run_dir(tmp_path / "run")
    if checkpointed:
        (run / "pretext" / "checkpoints").mkdir(parents=True)
        (run / "pretext" / "checkpoints" / "last.ckpt").write_bytes(b"")
    monkeypatch.setitem(pipeline.STAGE_RUNNERS, "pretext", lambda made: {})
    monkeypatch.setattr(pipeline, "evaluate_finished", lambda made, stage: {})
    with logged_messages() as lines:
        pipeline.run_stage(Run(config, run), "pretext")
    assert lines[0] == f"pretext: {word} in {run / 'pretext'}"

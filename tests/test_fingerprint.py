"""One fingerprint of images: any changed file or pixel shows, a moved folder does not; listings name what changed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import torch

from scanlearn.data.images import TensorImageSet
from scanlearn.data.folder import load_folder
from scanlearn.data.fingerprint import fingerprint, FolderChange, list_files
from scanlearn.data.fingerprint import compare
from scanlearn.engine.run import Run
from stages.test_prepare import folder_config, write_images


def test_every_pixel_counts_not_a_sample():
    rng = np.random.default_rng(0)
    pixels = torch.from_numpy(rng.integers(0, 256, (500, 3, 8, 8), dtype=np.uint8))
    before = fingerprint(TensorImageSet(pixels, np.zeros(500, dtype=np.int64)))
    for index in (0, 3, 250, 499):  # a sample of 64 out of 500 images misses most of them
        edited = pixels.clone()
        edited[index, 1, 4, 4] ^= 1
        assert fingerprint(TensorImageSet(edited, np.zeros(500, dtype=np.int64)))["hash"] != before["hash"], index


def test_file_edits_show_but_a_moved_folder_does_not(tmp_path: Path):
    paths = write_images(tmp_path / "a", ["x.png", "y.png"])
    before = fingerprint(load_folder(tmp_path / "a"))
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # copy2: same sizes and modification times
    assert fingerprint(load_folder(tmp_path / "b")) == before
    stat = os.stat(paths[0])
    os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # edited in place, same size
    assert fingerprint(load_folder(tmp_path / "a"))["hash"] != before["hash"]


def test_the_run_state_and_the_feature_cache_share_the_fingerprint(tmp_path: Path):
    write_images(tmp_path / "photos", ["x.png", "y.png"])
    config = folder_config(tmp_path / "photos")
    run = Run(config, tmp_path / "run")
    train, test = run.split("train"), run.split("test")
    assert fingerprint(train) == fingerprint(test)
    import scanlearn.engine.features as features
    import scanlearn.runstate as runstate

    assert features.fingerprint is fingerprint and runstate.fingerprint is fingerprint


def test_compare_names_added_removed_and_changed_files(tmp_path: Path):
    paths = write_images(tmp_path / "f", ["a.png", "b.png", "c.png"])
    old = list_files(paths, str(tmp_path / "f"))
    new = list_files(paths[1:], str(tmp_path / "f"))
    new.files["b.png"] = (new.files["b.png"][0] + 1, new.files["b.png"][1])
    new.files["d.png"] = (1, 1)
    change = compare(old, new)
    assert change == FolderChange(added=["d.png"], removed=["a.png"], changed=["b.png"])
    assert change.summary().startswith("1 added, 1 removed, 1 changed")
    assert not compare(old, old)

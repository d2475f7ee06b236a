"""Preparing an image folder: only regular files are read, any legal name survives, the run is not data."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from scanlearn.config import resolve
from scanlearn.data.datasets import load_folder, read_path_list
from scanlearn.rundir import claim_run_dir
from scanlearn.fingerprint import fingerprint
from scanlearn.stages.common import load_split
from scanlearn.stages.prepare import prepare_images, read_skipped

ODD_NAMES = ["new\nline.png", "tab\there.png", '"quoted".png', "back\\slash.png", os.fsdecode(b"caf\xe9-latin1.png")]


def write_images(folder: Path, names: list[str]) -> list[str]:
    """A small distinct PNG per name in ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / name, format="PNG")
    return [str(folder / name) for name in names]


def folder_config(root: Path):
    """The photos preset on ``root``, quiet."""
    return resolve("photos", None, ["data.dataset=folder", f"data.root={root}", "num_clusters=2", "runtime.progress=false"])


def test_fifo_and_socket_named_like_images_are_skipped_and_listed_not_read(tmp_path):
    root = tmp_path / "photos"
    write_images(root, ["a.png", "b.png", "c.png"])
    fifo, sock = root / "x.png", root / "y.png"
    os.mkfifo(fifo)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock))
    config, run = folder_config(root), tmp_path / "run"
    worker = threading.Thread(target=prepare_images, args=(config, run, lambda m: None), daemon=True)
    worker.start()
    worker.join(timeout=60)
    if worker.is_alive():  # unblock the reader so the test fails instead of hanging
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert not worker.is_alive(), "reading the FIFO blocked"
    listener.close()
    assert read_skipped(run) == [(str(fifo), "not a regular file (FIFO)"), (str(sock), "not a regular file (socket)")]
    assert sorted(read_path_list(run / "files.txt")) == [str(root / n) for n in ("a.png", "b.png", "c.png")]


def test_any_legal_file_name_survives_the_image_list(tmp_path):
    root = tmp_path / "photos"
    paths = write_images(root, ["plain.png", *ODD_NAMES])
    config, run = folder_config(root), tmp_path / "run"
    prepare_images(config, run, lambda m: None)
    assert sorted(load_split(config, "train").paths) == sorted(paths)


def test_an_image_list_of_an_older_version_is_still_read(tmp_path):
    listed = tmp_path / "files.txt"
    listed.write_text("/photos/a.png\n/photos/b c.png\n\n")
    assert read_path_list(listed) == ["/photos/a.png", "/photos/b c.png"]


def test_a_run_directory_inside_the_data_folder_is_not_data(tmp_path):
    root = tmp_path / "photos"
    paths = write_images(root, ["a.png", "b.png"])
    run = claim_run_dir(root / "run")
    before = fingerprint(load_folder(root))
    write_images(run / "figures", ["cluster_sizes.png", "galleries.png"])
    found = load_folder(root)
    assert found.paths == paths and fingerprint(found) == before

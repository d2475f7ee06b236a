"""Preparing an image folder: only regular files are read, any legal name survives, the run is not data,
and a changed folder is noticed on every later run."""

from __future__ import annotations

import os
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakes import logged_messages
from scanlearn.config import resolve
from scanlearn.data.folder import load_folder
from scanlearn.data.pathlists import read_path_list
from scanlearn.errors import CheckpointError, DataError, RunMismatchError
from scanlearn.folder_backbone import apply_folder_defaults, BackboneChoice, FolderDefaults, preset_backbone
from scanlearn.pipeline import run_pipeline
from scanlearn.runstate import prepare_run
from scanlearn.runs.rundir import claim_run_dir
from scanlearn.data.fingerprint import fingerprint
from scanlearn.engine.run import Run
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
    run = tmp_path / "run"
    worker = threading.Thread(target=prepare_images, args=(Run(folder_config(root), run),), daemon=True)
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
    prepared = prepare_images(Run(folder_config(root), tmp_path / "run"))
    assert sorted(prepared.split("train").paths) == sorted(paths)


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


def trained(run: Path) -> None:
    """Mark the run's pretext stage finished, as a trained run has it."""
    (run / "pretext").mkdir(parents=True, exist_ok=True)
    (run / "pretext" / "done.json").write_text('{"stage": "pretext"}')


def listed_run(tmp_path: Path, names: list[str]):
    """A folder of ``names``, its config and a run directory that listed it and finished a stage."""
    root = tmp_path / "photos"
    write_images(root, names)
    run = claim_run_dir(tmp_path / "run")
    prepare_images(Run(folder_config(root), run))
    trained(run)
    return root, run


def prepare_again(root: Path, run: Path) -> list[str]:
    """Prepare a fresh config of ``root`` in ``run``; returns the log lines."""
    with logged_messages() as lines:
        prepare_images(Run(folder_config(root), run))
    return lines


@pytest.mark.parametrize("edit, counts, name", [
    ("add", "1 added, 0 removed, 0 changed", "d.png"),
    ("remove", "0 added, 1 removed, 0 changed", "a.png"),
    ("edit", "0 added, 0 removed, 1 changed", "b.png"),
])
def test_a_changed_folder_is_named_in_one_line_and_trained_work_is_not_reused(tmp_path, edit, counts, name):
    root, run = listed_run(tmp_path, ["a.png", "b.png", "c.png"])
    if edit == "add":
        write_images(root, ["d.png"])
    elif edit == "remove":
        (root / "a.png").unlink()
    else:
        stat = os.stat(root / "b.png")
        Image.new("RGB", (12, 12), (1, 2, 3)).save(root / "b.png", format="PNG")  # edited in place
        os.utime(root / "b.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with logged_messages() as lines, pytest.raises(RunMismatchError) as error:
        prepare_images(Run(folder_config(root), run))
    message = str(error.value)
    assert counts in message and name in message and "\n" not in message
    assert "--restart" in message and f"scanlearn predict --run-dir {run.resolve()} --data {root}" in message
    assert any(counts in line for line in lines)


def test_an_unchanged_folder_says_so_and_keeps_its_list(tmp_path):
    root, run = listed_run(tmp_path, ["a.png", "b.png"])
    before = (run / "files.txt").read_text()
    lines = prepare_again(root, run)
    assert lines == [f"images: 2 files under {root}, none added, removed or changed"]
    assert (run / "files.txt").read_text() == before


def test_a_changed_folder_without_trained_work_is_listed_afresh(tmp_path):
    root, run = listed_run(tmp_path, ["a.png", "b.png"])
    (run / "pretext" / "done.json").unlink()
    write_images(root, ["c.png"])
    lines = prepare_again(root, run)
    assert "1 added" in lines[0]
    assert sorted(read_path_list(run / "files.txt")) == [str(root / n) for n in ("a.png", "b.png", "c.png")]
    assert prepare_again(root, run)[0].endswith("none added, removed or changed")


def test_a_moved_folder_continues_the_run_a_different_copy_is_named_as_such(tmp_path):
    root, run = listed_run(tmp_path, ["a.png", "b.png"])
    moved = tmp_path / "elsewhere" / "photos"
    shutil.copytree(root, moved)  # same names, sizes and modification times
    lines = prepare_again(moved, run)
    assert "same names, sizes and times" in lines[0]
    prepared = prepare_images(Run(folder_config(moved), run))
    assert sorted(prepared.split("train").paths) == [str(moved / "a.png"), str(moved / "b.png")]
    other = tmp_path / "copy"
    shutil.copytree(root, other, copy_function=shutil.copyfile)  # a plain copy: new modification times
    with pytest.raises(RunMismatchError) as error:
        prepare_again(other, run)
    message = str(error.value)
    assert str(other) in message and str(moved) in message and "no longer there" not in message
    assert f"--data {moved}" in message


def test_too_few_images_for_the_clusters_is_refused_before_any_image_is_decoded(tmp_path, monkeypatch):
    root = tmp_path / "photos"
    write_images(root, ["a.png"])
    import scanlearn.stages.prepare as prepare

    monkeypatch.setattr(prepare, "scan_unreadable", lambda *a, **k: pytest.fail("images were decoded"))
    with pytest.raises(DataError, match="--clusters"):
        prepare_images(Run(folder_config(root), tmp_path / "run"))


def test_dangling_and_looping_links_are_skipped_and_listed_like_any_unreadable_file(tmp_path):
    root = tmp_path / "photos"
    write_images(root, ["a.png", "b.png", "c.png"])
    (root / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (root / "loop1.png").symlink_to(root / "loop2.png")
    (root / "loop2.png").symlink_to(root / "loop1.png")
    (root / "again").symlink_to(root)  # a folder loop: walked once
    prepare_images(Run(folder_config(root), tmp_path / "run"))
    assert sorted(path for path, _ in read_skipped(tmp_path / "run")) == [str(root / n) for n in
                                                                          ("gone.png", "loop1.png", "loop2.png")]
    assert sorted(read_path_list(tmp_path / "run" / "files.txt")) == [str(root / n) for n in ("a.png", "b.png", "c.png")]


def test_a_damaged_listing_is_refused_not_rebuilt_from_the_folder_as_it_is_now(tmp_path):
    root, run = listed_run(tmp_path, ["a.png", "b.png", "c.png"])
    listing = run / "listing.json"
    listing.write_bytes(listing.read_bytes()[:40])
    write_images(root, ["d.png"])
    with pytest.raises(CheckpointError) as error:
        prepare_again(root, run)
    assert f"{listing} is damaged" in str(error.value) and "\n" not in str(error.value)
    assert len(read_path_list(run / "files.txt")) == 3


def test_a_deleted_listing_lists_the_folder_afresh_so_no_image_is_left_out(tmp_path):
    root, run = listed_run(tmp_path, ["a.png", "b.png", "c.png"])
    (run / "listing.json").unlink()
    write_images(root, ["d.png"])
    prepare_again(root, run)
    assert sorted(read_path_list(run / "files.txt")) == [str(root / n) for n in ("a.png", "b.png", "c.png", "d.png")]


def test_a_truncated_image_list_is_refused_not_read_as_fewer_images(tmp_path):
    root = tmp_path / "photos"
    write_images(root, [f"{i}.png" for i in range(6)])
    prepared = prepare_images(Run(folder_config(root), tmp_path / "run"))
    kept = tmp_path / "run" / "files.txt"
    kept.write_text("".join(kept.read_text().splitlines(keepends=True)[:3]))
    with pytest.raises(CheckpointError) as error:
        prepared.split("test")
    assert f"{kept} is damaged" in str(error.value) and "rerun" in str(error.value)


def test_a_damaged_image_list_is_named_and_nothing_is_rewritten_before_the_refusal(tmp_path):
    root, run = listed_run(tmp_path, [f"{i}.png" for i in range(6)])
    config = resolve("photos", None, ["data.dataset=folder", f"data.root={root}", "num_clusters=2", "mine.k=2",
                                      "mine.val_k=2", "runtime.progress=false"])
    defaults = FolderDefaults(BackboneChoice("photos", preset_backbone("photos"), "scratch", None, "from scratch"))
    prepare_run(apply_folder_defaults(prepare_images(Run(config, run)), defaults))
    kept = run / "files.txt"
    kept.write_text("".join(kept.read_text().splitlines(keepends=True)[:3]))
    before = {name: (run / name).read_bytes() for name in ("backbone.json", "run.json", "files.txt", "listing.json")}
    with pytest.raises(CheckpointError) as error:
        run_pipeline(Run(config, run), defaults=defaults)
    assert f"{kept} is damaged" in str(error.value) and "different data" not in str(error.value)
    assert {name: (run / name).read_bytes() for name in before} == before

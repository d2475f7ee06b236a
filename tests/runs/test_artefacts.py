"""Every artefact a run writes and later reads carries a digest recorded when written: a truncated, flipped or
rewritten file is one ``CheckpointError`` line naming it and the stage to rerun, never a traceback or a silently
different answer; a write interrupted between its records still reads; files of older versions read as they are."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from scanlearn.config import Config, read_yaml, save_config
from scanlearn.data.pathlists import read_path_list, write_path_list
from scanlearn.errors import CheckpointError, ConfigError
from scanlearn.runs.artefacts import load_arrays, load_npy, read_json, save_arrays, save_npy, write_json
from scanlearn.runs.fsutil import DIGESTS_FILE, atomic_write_bytes


def json_kind(path: Path) -> tuple[Callable[[], object], Callable[[], None]]:
    """Write/read a JSON artefact; a rewrite renames its key (as case 2 of issue 48)."""
    return (lambda: read_json(path)["neighbour_kappa"]), lambda: path.write_text(json.dumps({"kappa": 0.5, "clusters_used": 3}))


def npy_kind(path: Path) -> tuple[Callable[[], object], Callable[[], None]]:
    """A neighbour array; a rewrite keeps its shape and dtype but changes one id (case 6)."""
    def rewrite() -> None:
        changed = np.load(path)
        changed[0, 0] = (changed[0, 0] + 1) % 10
        np.save(path, changed)
    return (lambda: load_npy(path)), rewrite


def npz_kind(path: Path) -> tuple[Callable[[], object], Callable[[], None]]:
    """k-means arrays; a rewrite holds an object array under the same name (case 4)."""
    return (lambda: load_arrays(path)["centroids"]), lambda: np.savez(path, centroids=np.array([{"a": 1}], dtype=object))


def list_kind(path: Path) -> tuple[Callable[[], object], Callable[[], None]]:
    """A run's list of images; a rewrite drops its second half (case 8)."""
    def rewrite() -> None:
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(lines[: len(lines) // 2]))
    return (lambda: read_path_list(path)), rewrite


def yaml_kind(path: Path) -> tuple[Callable[[], object], Callable[[], None]]:
    """A run's config.yaml; a rewrite changes one value's type."""
    return (lambda: read_yaml(path)), lambda: path.write_text(path.read_text().replace("seed: 0", "seed: many", 1))


WRITERS = {
    "json": ("kmeans.json", lambda p: write_json(p, {"neighbour_kappa": 0.5, "clusters_used": 3}), json_kind),
    "npy": ("neighbors_train.npy", lambda p: save_npy(p, np.arange(40).reshape(10, 4) % 10), npy_kind),
    "npz": ("kmeans.npz", lambda p: save_arrays(p, {"centroids": np.eye(3, dtype=np.float32)}), npz_kind),
    "txt": ("files.txt", lambda p: write_path_list(p, [(f"/images/{i}.png",) for i in range(8)]), list_kind),
    "yaml": ("config.yaml", lambda p: save_config(Config(), p), yaml_kind),
}


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 8] = bytes(b ^ 0xFF for b in data[middle:middle + 8])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncate", "flip bytes", "rewrite"])
@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_a_damaged_artefact_is_one_line_naming_it_and_the_stage_to_rerun(tmp_path, kind, damage):
    name, write, reader = WRITERS[kind]
    path = tmp_path / "run" / "mine" / name
    write(path)
    read, rewrite = reader(path)
    read()  # intact: reads
    {"truncate": truncate, "flip bytes": flip, "rewrite": lambda _: rewrite()}[damage](path)
    before = path.read_bytes()
    with pytest.raises(CheckpointError) as error:
        read()
    message = str(error.value)
    assert str(path) in message and "scanlearn mine --restart" in message and "\n" not in message, message
    assert path.read_bytes() == before, "a refused file is kept for inspection"


def test_a_run_level_file_names_the_way_out_without_discarding_trained_stages(tmp_path):
    path = tmp_path / "run" / "metrics.json"
    write_json(path, {"scan": {"acc": 0.5}})
    flip(path)
    with pytest.raises(CheckpointError, match="delete it and rerun the same command"):
        read_json(path)


def test_an_entry_missing_from_a_saved_dict_is_one_line_not_a_key_error(tmp_path):
    path = tmp_path / "run" / "scan" / "candidate.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"kappa": 0.5}))  # written by hand: no digest to check
    with pytest.raises(CheckpointError, match="lacks its 'neighbour_kappa' entry.*scanlearn scan --restart"):
        read_json(path)["neighbour_kappa"]


def test_files_of_an_older_version_without_digests_read_as_they_are(tmp_path):
    np.save(tmp_path / "neighbors_train.npy", np.arange(6).reshape(3, 2))
    (tmp_path / "metrics.json").write_text('{"acc": 0.5}')
    assert np.array_equal(load_npy(tmp_path / "neighbors_train.npy"), np.arange(6).reshape(3, 2))
    assert read_json(tmp_path / "metrics.json") == {"acc": 0.5}
    assert not (tmp_path / DIGESTS_FILE).exists()
    assert read_json(tmp_path / "absent.json") == {}


def test_a_rewrite_by_scanlearn_is_recorded_and_reads(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"acc": 0.5})
    write_json(path, {"acc": 0.75})
    assert read_json(path) == {"acc": 0.75}
    assert len(json.loads((tmp_path / DIGESTS_FILE).read_text())["files"]["metrics.json"]) == 1


def test_a_write_stopped_between_its_two_records_leaves_a_file_that_still_reads(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_json(path, {"acc": 0.5})
    real_replace = os.replace

    def killed_at_the_rename(source, target):
        if Path(target) == path:
            raise KeyboardInterrupt  # stands in for a kill after the new digest was recorded, before the rename
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", killed_at_the_rename)
    with pytest.raises(KeyboardInterrupt):
        write_json(path, {"acc": 0.75})
    monkeypatch.undo()
    assert read_json(path) == {"acc": 0.5}
    write_json(path, {"acc": 0.75})
    assert read_json(path) == {"acc": 0.75}


def test_a_damaged_digest_record_is_named(tmp_path):
    write_json(tmp_path / "metrics.json", {"acc": 0.5})
    flip(tmp_path / DIGESTS_FILE)
    with pytest.raises(CheckpointError, match=f"{DIGESTS_FILE} is damaged"):
        read_json(tmp_path / "metrics.json")


def test_an_unrecorded_write_leaves_no_digest_record(tmp_path):
    atomic_write_bytes(tmp_path / "predictions.csv", lambda f: f.write(b"path,cluster\n"))
    assert not (tmp_path / DIGESTS_FILE).exists()


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"scan:\n  epochs: 3 # \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 20 .*save it as UTF-8"):
        read_yaml(path)

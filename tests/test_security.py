"""Nothing a user opens runs code, and every fault around the run directory is answered in one line.

Each loader is fed a pickle whose ``__reduce__`` would create a marker file: the marker must never
appear and the answer must be one ``scanlearn: error:`` line (exit 2) or a typed exception. The
run directories here are mostly hand-made (no training), so the file stays fast.
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scanlearn.api import SCAN
from scanlearn.errors import CheckpointError, ConfigError, DataError, DiskFullError, RunBusyError, UnsafeFileError
from scanlearn.engine.features import read_cached_array
from scanlearn.runs.fsutil import LOCK_FILE, atomic_write_bytes, run_dir_lock
from scanlearn.models import build_backbone
from scanlearn.models.checkpoints import read_external_state
from scanlearn.runs.rundir import MARKER_FILE
from scanlearn.runs.artefacts import load_npy, save_torch
from scanlearn.engine.resume import AtomicCheckpointIO, find_resume_checkpoint
from test_faults import error_line, make_data, tiny, tiny_inference

STAGES = ("pretext", "mine", "scan", "selflabel")


class Payload:
    """Pickles to a call of ``exec`` that creates ``marker``: what a crafted file would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",)


def write_payload(path: Path, marker: Path, writer: str = "torch") -> Path:
    """A model-like dict carrying the payload, written with ``torch.save`` or plain ``pickle.dump``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"state_dict": {"w": torch.zeros(2)}, "feature_dim": 2, "extra": Payload(marker)}
    if writer == "torch":
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(state))
    return path


def mark_run(run: Path) -> Path:
    """``run`` created with the marker every run directory scanlearn makes carries."""
    run.mkdir(parents=True, exist_ok=True)
    (run / MARKER_FILE).write_text("scanlearn run directory\n")
    return run


def finished_run(run: Path) -> Path:
    """A marked run directory whose every stage claims to be finished and evaluated (no training)."""
    mark_run(run)
    for stage in STAGES:
        (run / stage).mkdir(parents=True, exist_ok=True)
        for name in ("done.json", "evaluated.json"):
            (run / stage / name).write_text(json.dumps({"stage": stage}))
    return run


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("data"), seed=0)


@pytest.fixture()
def marker(tmp_path) -> Path:
    return tmp_path / "payload-ran"


# ----------------------------------------------------------------------------- payloads
@pytest.mark.parametrize("command", ["predict", "evaluate", "mine --restart", "report"])
def test_payload_model_in_a_run_directory_never_runs(tmp_path, data, marker, capsys, command):
    run = finished_run(tmp_path / "run")
    for stage in ("pretext", "scan", "selflabel"):
        write_payload(run / stage / "model.pt", marker)
    args = tiny(run, data) if command == "mine --restart" else tiny_inference(run, data)
    error_line(capsys, [*command.split(), *args], "refusing to unpickle", "model.pt", "(exec)", "--restart")
    assert not marker.exists()


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_payload_checkpoint_is_refused_before_lightning_resumes(tmp_path, data, marker, capsys, writer):
    run = mark_run(tmp_path / "run")
    payload = write_payload(run / "pretext" / "checkpoints" / "last.ckpt", marker, writer)
    before = payload.read_bytes()
    error_line(capsys, ["pretext", *tiny(run, data)], "refusing to unpickle", "last.ckpt", "--restart")
    assert not marker.exists()
    assert payload.read_bytes() == before, "the refused file is kept for inspection"


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_lightning_checkpoint_io_loads_without_code(tmp_path, marker, writer):
    path = write_payload(tmp_path / "last.ckpt", marker, writer)
    with pytest.raises(CheckpointError) as error:
        AtomicCheckpointIO().load_checkpoint(path, weights_only=False)
    assert "\n" not in str(error.value) and str(path) in str(error.value)
    assert not marker.exists()


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_payload_saved_model_is_refused_by_scan_load(tmp_path, marker, writer):
    path = write_payload(tmp_path / "model.scan", marker, writer)
    with pytest.raises(UnsafeFileError) as error:
        SCAN.load(path)
    assert "\n" not in str(error.value) and "SCAN.save" in str(error.value)
    assert not marker.exists()


def test_payload_pretext_checkpoint_is_refused(tmp_path, data, marker, capsys):
    external = write_payload(tmp_path / "moco.pth", marker)
    error_line(capsys, ["pretext", *tiny(tmp_path / "run", data, "--pretext-checkpoint", str(external))],
               "refusing to unpickle", str(external), "torch.save(checkpoint['state_dict'], FILE)")
    with pytest.raises(UnsafeFileError):
        read_external_state(external)
    assert not marker.exists()


@pytest.mark.parametrize("source", ["torchvision:resnet18", "timm:resnet18"])
def test_payload_weights_file_of_a_pretrained_backbone_is_refused(tmp_path, marker, source):
    pytest.importorskip(source.split(":")[0])
    weights = write_payload(tmp_path / "weights.pth", marker)
    with pytest.raises(UnsafeFileError) as error:
        build_backbone(source, weights=str(weights))
    assert "\n" not in str(error.value) and str(weights) in str(error.value)
    assert not marker.exists()


def test_payload_arrays_are_never_unpickled(tmp_path, marker):
    crafted = np.array([Payload(marker)], dtype=object)
    neighbours = tmp_path / "mine" / "neighbors_train.npy"
    neighbours.parent.mkdir()
    np.save(neighbours, crafted, allow_pickle=True)
    with pytest.raises(CheckpointError, match="scanlearn mine --restart"):
        load_npy(neighbours)
    cache = tmp_path / "cache.npy"
    np.save(cache, crafted, allow_pickle=True)
    assert read_cached_array(cache) is None, "a crafted cache entry is a miss, recomputed"
    assert not marker.exists()
    np.save(cache, np.ones((3, 2), np.float32))
    assert read_cached_array(cache).shape == (3, 2)


# ----------------------------------------------------------------------------- saved models
def saved_model(tmp_path: Path, normalize_input: bool = False) -> Path:
    """A saved SCAN model of a width-4 network (fitted state set by hand: no training)."""
    from scanlearn.engine.trained import build_clustering_model
    from scanlearn.config import load_preset, with_values

    model = SCAN(n_clusters=3, model__width=4)
    model.config_ = with_values(load_preset("photos"), {"model.width": 4})
    model.model_ = build_clustering_model(model.config_, {"feature_dim": 32, "num_clusters": 3, "normalize_input": normalize_input})
    model.clustering_, model.run_dir_ = "selflabel", None
    model.probabilities_ = np.random.default_rng(0).dirichlet(np.ones(3), size=50).astype(np.float32)
    model.labels_ = model.probabilities_.argmax(1)
    model.paths_ = None
    return model.save(tmp_path / "model.scan")


def test_scan_load_verifies_the_checksum(tmp_path):
    path = saved_model(tmp_path)
    loaded = SCAN.load(path)
    assert loaded.probabilities_.dtype == np.float32 and loaded.labels_.shape == (50,)
    raw = path.read_bytes()
    middle = len(raw) // 2
    path.write_bytes(raw[:middle] + bytes(b ^ 0xFF for b in raw[middle:middle + 64]) + raw[middle + 64:])
    with pytest.raises(DataError) as error:
        SCAN.load(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and "checksum" in message


@pytest.mark.parametrize("normalize_input", [False, True])
def test_scan_load_keeps_whether_the_heads_normalise_their_input(tmp_path, normalize_input):
    loaded = SCAN.load(saved_model(tmp_path, normalize_input)).model_.heads
    features = torch.randn(4, 32)
    assert loaded.normalize_input == normalize_input
    assert torch.allclose(loaded(features), loaded(3 * features), atol=1e-5) == normalize_input


def test_scan_load_reads_files_with_numpy_arrays(tmp_path):
    path = saved_model(tmp_path)
    state = torch.load(path, weights_only=True)
    state.pop("scanlearn_digest")
    state["labels"], state["probabilities"] = state["labels"].numpy(), state["probabilities"].numpy()
    save_torch(path, state)
    assert np.array_equal(SCAN.load(path).labels_, state["labels"])


def test_scan_load_validates_the_saved_config(tmp_path):
    path = saved_model(tmp_path)
    state = torch.load(path, weights_only=True)
    state.pop("scanlearn_digest")
    state["config"]["scan"]["epochs"] = -1
    save_torch(path, state)
    with pytest.raises(ConfigError, match="scan.epochs") as error:
        SCAN.load(path)
    assert "\n" not in str(error.value)


# ----------------------------------------------------------------------------- one line, nothing lost
@pytest.mark.parametrize("where", ["--config file", "run's config.yaml"])
def test_a_config_that_is_not_utf8_is_one_line(tmp_path, data, capsys, where):
    run = finished_run(tmp_path / "run")
    config = tmp_path / "mine.yaml" if where == "--config file" else run / "config.yaml"
    config.write_bytes(b"scan:\n  epochs: 2  # caf\xe9\n")
    args = ["--config", str(config)] if where == "--config file" else []
    error_line(capsys, ["predict", "--run-dir", str(run), "--data-root", str(data), *args], str(config),
               "not UTF-8 text", "save it as UTF-8")


def test_run_dir_naming_a_file(tmp_path, data, capsys):
    afile = tmp_path / "file"
    afile.write_text("keep me")
    error_line(capsys, ["pretext", *tiny(afile, data)], "is a file, not a directory")
    with pytest.raises(ConfigError, match="is a file"):
        SCAN(n_clusters=2, run_dir=afile, verbose=False).fit(np.zeros((4, 8, 8), dtype=np.uint8))
    assert afile.read_text() == "keep me"


def test_read_only_run_directory(tmp_path, data, capsys, monkeypatch):
    run = finished_run(tmp_path / "run")
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if str(path).startswith(str(run)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    error_line(capsys, ["evaluate", *tiny_inference(run, data)], "cannot write in run directory", "make it writable")


@pytest.mark.parametrize("devices", ["abc", "0", "1,x", "-2"])
def test_bad_devices(tmp_path, data, capsys, devices):
    error_line(capsys, ["pretext", *tiny(tmp_path / "run", data, "--devices", devices)], "runtime.devices", "--devices")


def test_model_file_lacking_an_entry(tmp_path, data, capsys):
    run = finished_run(tmp_path / "run")
    save_torch(run / "selflabel" / "model.pt", {"state_dict": {}})
    error_line(capsys, ["predict", *tiny_inference(run, data)], "selflabel/model.pt lacks its 'feature_dim' entry",
               "scanlearn selflabel --restart")


def test_predict_output_naming_a_directory(tmp_path, data, capsys):
    error_line(capsys, ["predict", *tiny_inference(tmp_path / "run", data, "--output", str(tmp_path))], "is a directory",
               "assignments.csv")


@pytest.mark.parametrize("damage", ["truncated metrics.json", "empty run.json"])
def test_damaged_run_directory_json(tmp_path, data, capsys, damage):
    run = finished_run(tmp_path / "run")
    kind, name = damage.split()
    (run / name).write_text('{"scan": {"acc": 0.5' if kind == "truncated" else "")
    before = (run / name).read_bytes()
    error_line(capsys, ["run", *tiny(run, data)], str(run / name), "damaged", "--restart")
    assert (run / name).read_bytes() == before


class _FullDisk:
    """A file on a disk that fills up after ``room`` bytes: later writes fail with ENOSPC.

    With some room left, the failure happens inside torch's C++ zip writer, which reports it as
    a RuntimeError ("enforce fail at inline_container.cc") raised while handling the OSError.
    """

    def __init__(self, handle, room: int = 512) -> None:
        self.handle = handle
        self.room = room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name: str):
        return getattr(self.handle, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()


def test_disk_full_inside_torch_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    save_torch(path, {"w": torch.ones(3)})
    before = path.read_bytes()
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _FullDisk(real_fdopen(fd, *a, **k)))
    with pytest.raises(DiskFullError, match="disk full while writing"):
        atomic_write_bytes(path, lambda f: torch.save({"w": torch.zeros(1000)}, f), backup=tmp_path / "previous.ckpt")
    assert path.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


def test_disk_full_during_training_checkpoint(tmp_path, data, capsys, monkeypatch):
    run = tmp_path / "run"
    real_fdopen, opened = os.fdopen, [0]

    def fill_after_two(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)
        if "last.ckpt" in os.readlink(f"/proc/self/fd/{fd}"):
            opened[0] += 1
            return _FullDisk(handle) if opened[0] > 2 else handle
        return handle

    monkeypatch.setattr(os, "fdopen", fill_after_two)
    error_line(capsys, ["pretext", *tiny(run, data)], "disk full", "last.ckpt", "intact", "rerun the same command")
    monkeypatch.undo()
    assert not list(run.rglob(".*.tmp"))
    assert find_resume_checkpoint(run / "pretext" / "checkpoints") is not None


# ----------------------------------------------------------------------------- run-directory lock
def test_second_command_on_a_busy_run_directory_refuses(tmp_path, data, capsys):
    run = tmp_path / "run"
    with run_dir_lock(run):
        error_line(capsys, ["pretext", *tiny(run, data)], "in use by another scanlearn command", f"pid {os.getpid()}",
                   "--run-dir")
        with pytest.raises(RunBusyError, match="in use"):
            SCAN(n_clusters=2, run_dir=run, verbose=False).fit(np.zeros((4, 8, 8), dtype=np.uint8))
    assert not (run / "pretext").exists()
    assert (run / LOCK_FILE).read_text() == "", "a released lock names no holder"


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run / LOCK_FILE).write_text(dead.stdout.strip())
    with run_dir_lock(run):
        assert (run / LOCK_FILE).read_text() == str(os.getpid())


def test_lock_held_by_another_process_is_refused(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from scanlearn.runs.fsutil import run_dir_lock\n"
         f"with run_dir_lock({str(run)!r}):\n    print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunBusyError, match=f"pid {holder.pid}"):
            with run_dir_lock(run):
                pass
    finally:
        holder.communicate("", timeout=30)
    with run_dir_lock(run):
        assert (run / LOCK_FILE).read_text() == str(os.getpid())

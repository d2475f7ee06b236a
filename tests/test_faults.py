"""Fault injection: kill it, corrupt it, feed it garbage — it resumes, refuses clearly, loses nothing.

Every training run here is tiny (200 synthetic 28x28 images, width-4 ResNet, 4 steps per
epoch, a checkpoint after every step) and deterministic (``--seed 3 --deterministic``), so a
resumed run must reproduce the uninterrupted reference bit for bit.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fakes import write_fashion_mnist
from scanlearn.cli import main
from scanlearn.config import resolve
from scanlearn.errors import ConfigError
from scanlearn.engine.interrupt import Interrupted, handle_signals
from scanlearn.models import ContrastiveModel, build_backbone
from scanlearn.runs.artefacts import save_npy, save_torch, write_json
from scanlearn.runs.rundir import MARKER_FILE, WRITTEN_ENTRIES
from scanlearn.engine.resume import DATA_KEY, RollingCheckpoint, find_resume_checkpoint

STEPS_PER_EPOCH = 4
LATER_STAGES = ("mine", "scan", "selflabel")


class Killed(Exception):
    """Stands in for SIGKILL in in-process crash tests."""


# ----------------------------------------------------------------------------- helpers
def make_data(root: Path, seed: int) -> Path:
    """Fashion-MNIST-format IDX files of 200 train / 100 test images: one bright bar per class."""
    return write_fashion_mnist(root, 200, 100, seed)


def tiny(run: Path, root: Path, *extra: str) -> list[str]:
    """Common arguments of every tiny deterministic run."""
    sets = [
        "model.width=4", "pretext.epochs=2", "pretext.batch_size=50", "scan.epochs=2", "scan.batch_size=50",
        "selflabel.epochs=1", "selflabel.batch_size=50", "selflabel.threshold=0.3", "mine.k=5", "mine.val_k=3",
        "runtime.progress=false", "runtime.checkpoint_every_n_steps=1", "runtime.precision=32-true",
    ]
    args = ["--preset", "fashion-mnist", "--run-dir", str(run), "--data-root", str(root), "--seed", "3", "--deterministic"]
    return args + [a for s in sets for a in ("--set", s)] + list(extra)


def tiny_inference(run: Path, root: Path, *extra: str) -> list[str]:
    """``tiny`` for commands that train nothing (evaluate, predict, report), without the seed flags they do not take."""
    args = tiny(run, root, *extra)
    seed = args.index("--seed")
    return [a for a in args[:seed] + args[seed + 2:] if a != "--deterministic"]


def snapshot(run: Path) -> dict[str, str]:
    """SHA-256 of every artefact in ``run`` (logs excluded)."""
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*")) if p.is_file() and "logs" not in p.parts
    }


def assert_intact(before: dict[str, str], run: Path) -> None:
    """Every artefact recorded in ``before`` still exists with the same bytes; no temporary files left."""
    after = snapshot(run)
    changed = [k for k, v in before.items() if after.get(k) != v]
    assert not changed, changed
    assert not list(run.rglob(".*.tmp"))


def error_line(capsys, argv: list[str], *words: str) -> str:
    """Run the CLI, expect exit 2 and exactly one error line on stderr containing ``words``."""
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("scanlearn: error:")]
    assert len(errors) == 1, errors
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


def states_equal(a: Path, b: Path) -> bool:
    """Whether two saved model files hold identical tensors."""
    sa, sb = torch.load(a, weights_only=False)["state_dict"], torch.load(b, weights_only=False)["state_dict"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def only_pretext(reference: Path, target: Path) -> Path:
    """A copy of the reference run holding only the finished pretext stage."""
    return stages_before(reference, target, "mine")


def stages_before(reference: Path, target: Path, stage: str) -> Path:
    """A copy of the reference run holding only the stages finished before ``stage``."""
    shutil.copytree(reference, target)
    for later in ("pretext", *LATER_STAGES)[("pretext", *LATER_STAGES).index(stage):]:
        shutil.rmtree(target / later)
    (target / "metrics.json").unlink()
    return target


def crash_after_saves(monkeypatch, n: int) -> None:
    """Make the n-th checkpoint save of the next run the last thing it does."""
    original = RollingCheckpoint._save
    count = [0]

    def save(self, trainer, module):
        original(self, trainer, module)
        count[0] += 1
        if count[0] == n:
            raise Killed(f"killed after checkpoint {n}")

    monkeypatch.setattr(RollingCheckpoint, "_save", save)


def fill_disk_after(monkeypatch, name: str, n: int) -> None:
    """Flushing a file whose name contains ``name`` fails with ENOSPC after ``n`` successful writes."""
    original = os.fsync
    count = [0]

    def fsync(fd):
        if name in os.readlink(f"/proc/self/fd/{fd}"):
            count[0] += 1
            if count[0] > n:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(fd)

    monkeypatch.setattr(os, "fsync", fsync)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("data"), seed=0)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data) -> Path:
    """One uninterrupted deterministic run of every stage."""
    run = tmp_path_factory.mktemp("reference") / "run"
    assert main(["run", *tiny(run, data)]) == 0
    return run


# ----------------------------------------------------------------------------- resume
def test_sigkill_mid_epoch_twice_then_resume_gives_identical_metrics(tmp_path, data, reference):
    run = tmp_path / "run"
    argv = tiny(run, data)
    positions = []
    for stage in ("pretext", "scan"):
        child = subprocess.Popen([sys.executable, "-m", "scanlearn.cli", "run", *argv],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        last = run / stage / "checkpoints" / "last.ckpt"
        deadline = time.time() + 300
        while not last.exists() and child.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait()
        positions.append(find_resume_checkpoint(last.parent)[1][DATA_KEY])
    assert all(0 < p["done"] < STEPS_PER_EPOCH for p in positions), positions
    assert main(["run", *argv]) == 0
    assert (run / "metrics.json").read_text() == (reference / "metrics.json").read_text()
    for stage in ("pretext", "mine", "scan", "selflabel"):
        assert (run / stage / "metrics.json").read_text() == (reference / stage / "metrics.json").read_text(), stage
    assert states_equal(run / "selflabel" / "model.pt", reference / "selflabel" / "model.pt")


def start_cli(argv: list[str]) -> subprocess.Popen:
    """``python -m scanlearn.cli ARGV`` in a child process, stderr captured as text."""
    return subprocess.Popen([sys.executable, "-m", "scanlearn.cli", *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, child: subprocess.Popen, seconds: float = 240) -> None:
    """Wait until ``path`` exists (the child is then mid-training), failing if the child ends first."""
    deadline = time.time() + seconds
    while not path.exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert path.exists() and child.poll() is None, child.poll()


INTERRUPT_LINE = "scanlearn: interrupted; rerun the same command to resume from the last checkpoint"


@pytest.mark.parametrize("signum,stage", [(signal.SIGTERM, "pretext"), (signal.SIGINT, "scan")], ids=["SIGTERM-pretext", "SIGINT-scan"])
def test_signal_stops_at_a_safe_point_then_resume_is_identical(tmp_path, data, reference, signum, stage):
    run = stages_before(reference, tmp_path / "run", stage)
    argv = [stage, *tiny(run, data)]
    child = start_cli(argv)
    wait_for(run / stage / "checkpoints" / "last.ckpt", child)
    child.send_signal(signum)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 128 + signum, err
    assert err.splitlines().count(INTERRUPT_LINE) == 1 and "Traceback" not in err, err
    assert find_resume_checkpoint(run / stage / "checkpoints") is not None
    assert not (run / stage / "done.json").exists()
    assert main(argv) == 0
    assert (run / stage / "metrics.json").read_text() == (reference / stage / "metrics.json").read_text()
    assert states_equal(run / stage / "model.pt", reference / stage / "model.pt")


STUCK = """
import sys, threading
from scanlearn.engine.interrupt import handle_signals, training_safe_points
with handle_signals(grace=float(sys.argv[1])), training_safe_points():
    print("ready", flush=True)
    threading.Event().wait()  # stands in for native code that never reaches a safe point
"""


@pytest.mark.parametrize("grace,signals,code", [(600, [signal.SIGTERM, signal.SIGINT], 130), (0.5, [signal.SIGTERM], 143)],
                         ids=["second-signal", "grace-timer"])
def test_a_run_that_never_reaches_a_safe_point_still_ends(grace, signals, code):
    child = subprocess.Popen([sys.executable, "-c", STUCK, str(grace)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "ready\n"
    child.send_signal(signals[0])
    time.sleep(0.3)
    assert child.poll() is None
    for signum in signals[1:]:
        child.send_signal(signum)
    _, err = child.communicate(timeout=60)
    assert child.returncode == code and err.startswith(INTERRUPT_LINE), (child.returncode, err)


def test_a_signal_outside_training_stops_at_once():
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when started in the background (nohup, CI), else Python's
    with pytest.raises(Interrupted) as stopped, handle_signals():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    assert stopped.value.exit_code == 130
    assert signal.getsignal(signal.SIGINT) is before


def test_a_run_ending_with_empty_clusters_says_so(tmp_path, data, reference, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    probs = np.load(run / "selflabel" / "probs_test.npy")
    save_npy(run / "selflabel" / "probs_test.npy", np.eye(probs.shape[1], dtype=np.float32)[np.zeros(len(probs), dtype=np.int64)])
    assert main(["run", *tiny(run, data)]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("scanlearn: warning:")]
    assert any(f"leaves {probs.shape[1] - 1} of {probs.shape[1]} clusters empty" in line for line in warned), warned


def test_a_full_run_writes_only_entries_restart_knows(reference):
    names = {p.name for p in reference.iterdir()}
    assert MARKER_FILE in names and names <= WRITTEN_ENTRIES, names - WRITTEN_ENTRIES


@pytest.mark.parametrize("saves", [2, 4, 8], ids=["mid-epoch", "epoch-end", "training-end"])
def test_crash_after_any_checkpoint_resumes_exactly(tmp_path, data, reference, monkeypatch, saves):
    run = tmp_path / "run"
    crash_after_saves(monkeypatch, saves)
    with pytest.raises(Killed):
        main(["pretext", *tiny(run, data)])
    monkeypatch.undo()
    assert main(["pretext", *tiny(run, data)]) == 0
    assert states_equal(run / "pretext" / "model.pt", reference / "pretext" / "model.pt")
    assert (run / "pretext" / "metrics.json").read_text() == (reference / "pretext" / "metrics.json").read_text()


def test_crash_between_completion_and_evaluation_is_repaired(tmp_path, data, reference, monkeypatch):
    import scanlearn.pipeline as pipeline

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    scores = json.loads((run / "metrics.json").read_text())
    for stage in ("scan", "selflabel"):
        shutil.rmtree(run / stage)
        del scores[stage]
    write_json(run / "metrics.json", scores)
    original = pipeline.evaluate_stage

    def killed(run, stage):
        raise Killed(f"killed before scoring {stage}")

    monkeypatch.setattr(pipeline, "evaluate_stage", killed)
    with pytest.raises(Killed):
        main(["run", *tiny(run, data)])
    assert (run / "scan" / "done.json").is_file()
    assert "scan" not in json.loads((run / "metrics.json").read_text())
    monkeypatch.setattr(pipeline, "evaluate_stage", original)
    assert main(["run", *tiny(run, data)]) == 0
    assert (run / "metrics.json").read_text() == (reference / "metrics.json").read_text()


@pytest.mark.parametrize("damage", ["truncate", "flip-bytes", "both-bad"])
def test_corrupt_checkpoint_falls_back_and_says_so(tmp_path, data, reference, monkeypatch, capsys, damage):
    run = tmp_path / "run"
    crash_after_saves(monkeypatch, 3)
    with pytest.raises(Killed):
        main(["pretext", *tiny(run, data)])
    monkeypatch.undo()
    folder = run / "pretext" / "checkpoints"
    raw = (folder / "last.ckpt").read_bytes()
    if damage == "truncate":
        (folder / "last.ckpt").write_bytes(raw[: len(raw) // 2])
    else:
        middle = len(raw) // 2
        (folder / "last.ckpt").write_bytes(raw[:middle] + bytes(b ^ 0xFF for b in raw[middle:middle + 64]) + raw[middle + 64:])
    if damage == "both-bad":
        (folder / "previous.ckpt").write_bytes(b"garbage")
    capsys.readouterr()
    assert main(["pretext", *tiny(run, data)]) == 0
    warning = capsys.readouterr().err
    assert "last.ckpt is corrupt" in warning
    assert ("starting the stage over" if damage == "both-bad" else "resuming from previous.ckpt") in warning
    assert states_equal(run / "pretext" / "model.pt", reference / "pretext" / "model.pt")


# ----------------------------------------------------------------------------- training faults
def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path, data, reference, monkeypatch, capsys):
    import scanlearn.stages.pretext as pretext

    run = tmp_path / "run"
    original, calls = pretext.nt_xent_loss, [0]

    def poisoned(*args, **kwargs):
        calls[0] += 1
        loss = original(*args, **kwargs)
        return loss * float("nan") if calls[0] == 3 else loss

    monkeypatch.setattr(pretext, "nt_xent_loss", poisoned)
    error_line(capsys, ["pretext", *tiny(run, data)], "pretext loss became nan", "last good checkpoint is kept")
    path, state = find_resume_checkpoint(run / "pretext" / "checkpoints")
    assert state[DATA_KEY] == {"epoch": 0, "done": 2}
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    monkeypatch.undo()
    assert main(["pretext", *tiny(run, data)]) == 0
    assert states_equal(run / "pretext" / "model.pt", reference / "pretext" / "model.pt")


def test_huge_learning_rate_is_stopped_cleanly(tmp_path, data, capsys):
    line = error_line(capsys, ["pretext", *tiny(tmp_path / "run", data, "--set", "pretext.optim.lr=1e30")], "--restart")
    assert "nan" in line.lower() and "last good checkpoint" in line


def test_disk_full_while_checkpointing_keeps_previous_and_resumes(tmp_path, data, reference, monkeypatch, capsys):
    run = tmp_path / "run"
    fill_disk_after(monkeypatch, "last.ckpt", 2)
    error_line(capsys, ["pretext", *tiny(run, data)], "disk full", "free space", "rerun the same command")
    monkeypatch.undo()
    assert not list(run.rglob(".*.tmp"))
    assert find_resume_checkpoint(run / "pretext" / "checkpoints") is not None
    assert main(["pretext", *tiny(run, data)]) == 0
    assert states_equal(run / "pretext" / "model.pt", reference / "pretext" / "model.pt")


def test_disk_full_while_writing_neighbours_leaves_earlier_work_intact(tmp_path, data, reference, monkeypatch, capsys):
    run = only_pretext(reference, tmp_path / "run")
    before = snapshot(run)
    fill_disk_after(monkeypatch, "neighbors", 0)
    error_line(capsys, ["mine", *tiny(run, data)], "disk full", "previous version of the file is intact")
    monkeypatch.undo()
    assert_intact(before, run)
    assert not (run / "mine" / "done.json").exists()
    assert main(["mine", *tiny(run, data)]) == 0


def test_self_label_with_no_confident_sample_suggests_a_threshold(tmp_path, data, reference, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    shutil.rmtree(run / "selflabel")
    capsys.readouterr()
    extra = ["--set", "selflabel.threshold=0.9999", "--set", "selflabel.min_confident_fraction=0"]
    assert main(["selflabel", *tiny(run, data, *extra)]) == 0
    err = capsys.readouterr().err
    assert "no prediction above threshold 0.9999" in err and "highest confidence" in err
    assert "--set selflabel.threshold=" in err
    assert states_equal(run / "selflabel" / "model.pt", run / "scan" / "model.pt")


# ----------------------------------------------------------------------------- stale resumes
def test_changed_config_is_refused_with_the_differing_keys(tmp_path, data, reference, capsys):
    run = only_pretext(reference, tmp_path / "run")
    before = snapshot(run)
    line = error_line(capsys, ["mine", *tiny(run, data, "--set", "pretext.optim.lr=0.1", "--set", "model.width=8")],
                      "different config", "pretext.optim.lr: 0.3 -> 0.1", "model.width: 4 -> 8", "--restart", "--run-dir")
    assert "runtime" not in line
    assert_intact(before, run)


def test_neutral_and_later_stage_keys_do_not_block_a_resume(tmp_path, data, reference):
    run = only_pretext(reference, tmp_path / "run")
    extra = ["--set", "runtime.progress=true", "--set", "runtime.checkpoint_every_n_steps=0", "--set", "scan.epochs=1"]
    assert main(["mine", *tiny(run, data, *extra)]) == 0


def test_changed_data_is_refused(tmp_path, data, reference, capsys):
    run = only_pretext(reference, tmp_path / "run")
    other = make_data(tmp_path / "other", seed=1)
    before = snapshot(run)
    error_line(capsys, ["mine", *tiny(run, other)], "different data", "train.hash")
    assert_intact(before, run)


def test_restart_discards_the_stale_stage(tmp_path, data, reference):
    run = only_pretext(reference, tmp_path / "run")
    assert main(["pretext", *tiny(run, data, "--set", "pretext.epochs=1", "--restart")]) == 0
    assert not states_equal(run / "pretext" / "model.pt", reference / "pretext" / "model.pt")


def test_environment_and_resolved_config_are_recorded(reference):
    session = json.loads((reference / "environment.json").read_text())["sessions"][-1]
    assert {"python", "torch", "lightning", "device", "cpu_count"} <= set(session)
    assert session["deterministic"] is True and session["seed"] == 3
    assert "width: 4" in (reference / "config.yaml").read_text()
    assert json.loads((reference / "run.json").read_text())["data"]["train"]["count"] == 200


# ----------------------------------------------------------------------------- bad inputs
def test_checkpoint_from_another_backbone_is_refused(tmp_path, data, reference, capsys):
    run = only_pretext(reference, tmp_path / "run")
    backbone = build_backbone("resnet18-cifar", width=8, in_channels=1)
    wide = ContrastiveModel(backbone, backbone.out_dim, 128)
    save_torch(run / "pretext" / "model.pt", {"state_dict": wide.state_dict(), "feature_dim": backbone.out_dim})
    error_line(capsys, ["mine", *tiny(run, data)], "does not fit this model", "another backbone")
    external = tmp_path / "resnet50.pt"
    torch.save(build_backbone("resnet50", in_channels=3).state_dict(), external)
    error_line(capsys, ["pretext", *tiny(tmp_path / "other", data, "--pretext-checkpoint", str(external))], str(external))


def test_corrupt_model_file_of_a_finished_stage(tmp_path, data, reference, capsys):
    run = only_pretext(reference, tmp_path / "run")
    model = run / "pretext" / "model.pt"
    model.write_bytes(model.read_bytes()[:1000])
    error_line(capsys, ["mine", *tiny(run, data)], "corrupt", "scanlearn pretext --restart")


def test_stage_before_the_stage_it_needs(tmp_path, data, capsys):
    error_line(capsys, ["scan", *tiny(tmp_path / "run", data)], "needs the mine stage", "scanlearn mine")
    error_line(capsys, ["evaluate", *tiny_inference(tmp_path / "run", data)], "needs the", "first")


BAD_DATA = {
    "missing path": (["--set", "data.dataset=folder", "--set", "num_clusters=3", "--data-root", "/no/such/dir"], ["does not exist"]),
    "empty folder": (["--set", "data.dataset=folder", "--set", "num_clusters=3", "--data-root", "{empty}"], ["no images"]),
    "fewer images than clusters": (["--set", "data.limit=8", "--set", "num_clusters=10"], ["only 8 training images for 10 clusters"]),
    "neighbours >= images": (["--set", "mine.k=200"], ["200 neighbours requested", "only 200 images", "mine.k"]),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_inputs(tmp_path, data, capsys, case):
    extra, words = BAD_DATA[case]
    (tmp_path / "empty").mkdir()
    extra = [a.replace("{empty}", str(tmp_path / "empty")) for a in extra]
    run = tmp_path / "run"
    error_line(capsys, ["run", *tiny(run, data, *extra)], *words)
    assert not any((run / stage).exists() for stage in ("pretext", *LATER_STAGES))


BAD_CONFIG = {
    "unknown preset": (["--preset", "nope"], ["unknown preset 'nope'", "choose one of"]),
    "fewer than 2 clusters": (["--set", "num_clusters=1"], ["num_clusters must be at least 2"]),
    "unknown override key": (["--set", "scan.epoch=3"], ["unknown config key 'scan.epoch'", "scan.epochs"]),
    "wrong value type": (["--set", "scan.epochs=many"], ["scan.epochs must be int", "'many'"]),
    "threshold out of range": (["--set", "selflabel.threshold=1.5"], ["selflabel.threshold must be between 0 and 1"]),
    "non-positive batch": (["--set", "scan.batch_size=0"], ["scan.batch_size must be at least 1"]),
    "unknown optimiser": (["--set", "pretext.optim.name=adamx"], ["pretext.optim.name must be one of sgd, adam, adamw"]),
    "unknown augmentation": (["--set", "scan.augment.kind=wild"], ["scan.augment.kind must be one of"]),
    "unknown backbone": (["--set", "model.backbone=resnet99"], ["unknown backbone 'resnet99'"]),
    "malformed override": (["--set", "scan.epochs"], ["must look like key=value"]),
}


@pytest.mark.parametrize("case", list(BAD_CONFIG))
def test_bad_config_inputs(tmp_path, data, capsys, case):
    extra, words = BAD_CONFIG[case]
    argv = ["run", "--run-dir", str(tmp_path / "run"), "--data-root", str(data)]
    if "--preset" not in extra:
        argv += ["--preset", "fashion-mnist"]
    error_line(capsys, [*argv, *extra], *words)
    assert not (tmp_path / "run").exists()


def test_malformed_yaml(tmp_path, data, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("scan:\n  epochs: [1, 2\n")
    error_line(capsys, ["run", "--config", str(bad), "--run-dir", str(tmp_path / "run")], "malformed YAML", "line")


def test_validate_is_part_of_resolve():
    with pytest.raises(ConfigError, match="ema"):
        resolve("fashion-mnist", None, ["selflabel.ema=1.0"])


def test_scientific_notation_is_read_as_a_number():
    assert resolve("fashion-mnist", None, ["scan.optim.lr=3e-4"]).scan.optim.lr == 3e-4


# ----------------------------------------------------------------------------- damaged run state (issue 48)
def renamed_key(path: Path) -> None:
    path.write_text(path.read_text().replace("neighbour_kappa", "kappa"))


def flipped_bytes(path: Path) -> None:
    raw = path.read_bytes()
    middle = len(raw) // 2
    path.write_bytes(raw[:middle] + bytes(b ^ 0xFF for b in raw[middle:middle + 64]) + raw[middle + 64:])


def object_array(path: Path) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, centroids=np.array([{"centre": 1}], dtype=object), labels=np.zeros(3, dtype=np.int64))


def huge_id(path: Path) -> None:
    neighbours = np.load(path)
    neighbours[0, 0] = 10**9
    np.save(path, neighbours)


def ids_in_range(path: Path) -> None:
    neighbours = np.load(path)
    neighbours[:, 0] = (neighbours[:, 0] + 1) % len(neighbours)
    np.save(path, neighbours)


def truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def wrong_type(path: Path) -> None:
    saved = json.loads(path.read_text())
    first = next(iter(saved))
    saved[first] = "high"
    path.write_text(json.dumps(saved))


@pytest.mark.parametrize("name, damage, command, way_out", [
    ("mine/kmeans.json", renamed_key, "predict", "scanlearn mine --restart"),
    ("mine/kmeans.npz", flipped_bytes, "predict", "scanlearn mine --restart"),
    ("mine/kmeans.npz", object_array, "predict", "scanlearn mine --restart"),
    ("mine/neighbors_train.npy", huge_id, "scan --restart", "scanlearn mine --restart"),
    ("mine/neighbors_train.npy", ids_in_range, "scan --restart", "scanlearn mine --restart"),
    ("config.yaml", truncated, "predict", "--restart"),
    ("metrics.json", wrong_type, "evaluate", "--restart"),
    ("run.json", flipped_bytes, "run", "--restart"),
], ids=["kmeans.json-renamed-key", "kmeans.npz-flipped", "kmeans.npz-object-array", "neighbours-huge-id",
        "neighbours-in-range", "config.yaml-truncated", "metrics.json-wrong-type", "run.json-flipped"])
def test_damaged_run_state_is_one_line_naming_the_file_and_the_way_out(tmp_path, data, reference, capsys, name, damage,
                                                                       command, way_out):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    damage(run / name)
    before = snapshot(run / "mine")
    args = tiny(run, data) if command in ("run", "scan --restart") else tiny_inference(run, data)
    if name == "config.yaml":
        args = ["--run-dir", str(run), "--data-root", str(data)]  # predict then reads the run's own config
    error_line(capsys, [*command.split(), *args], str(run / name), way_out)
    assert_intact(before, run / "mine")


def test_report_writes_no_figure_through_a_link_planted_in_the_run(tmp_path, data, reference):
    run, mine = tmp_path / "run", tmp_path / "my-figures"
    shutil.copytree(reference, run)
    mine.mkdir()
    (mine / "cluster_sizes.png").write_bytes(b"my own figure")
    shutil.rmtree(run / "figures")
    (run / "figures").symlink_to(mine)
    (run / "report.html").unlink()
    (run / "report.html").symlink_to(mine / "notes.html")
    (mine / "notes.html").write_text("my notes")
    assert main(["report", *tiny_inference(run, data)]) == 0
    assert (mine / "cluster_sizes.png").read_bytes() == b"my own figure" and (mine / "notes.html").read_text() == "my notes"
    assert sorted(p.name for p in mine.iterdir()) == ["cluster_sizes.png", "notes.html"]
    assert not (run / "figures").is_symlink() and (run / "figures" / "cluster_sizes.png").is_file()
    assert not (run / "report.html").is_symlink() and (run / "report.html").stat().st_size > 0


SECOND_SIGNAL = """
import os, signal, sys, time
import scanlearn.cli as cli

def stopped(args):
    os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C stops the command
    time.sleep(5)

cli.dispatch = stopped
code = cli.main(["report"])
os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C while the stopped command winds down
time.sleep(0.5)
sys.exit(code)
"""


def test_a_second_signal_while_stopping_still_exits_130():
    child = subprocess.run([sys.executable, "-c", SECOND_SIGNAL], capture_output=True, text=True, timeout=120)
    assert child.returncode == 130, (child.returncode, child.stderr)
    assert child.stderr.splitlines() == [INTERRUPT_LINE], child.stderr

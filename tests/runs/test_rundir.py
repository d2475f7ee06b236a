"""Run directories: scanlearn deletes only what it wrote, and only in a folder marked as its run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from fakes import write_fashion_mnist
from scanlearn.cli import main
from scanlearn.errors import RunDirError
from scanlearn.pipeline import clear_run_dir, clear_stages
from scanlearn.runs.fsutil import LOCK_FILE
from scanlearn.runs.rundir import MARKER_FILE, claim_run_dir, is_run_dir


def user_folder(root: Path, count: int = 92) -> Path:
    """A folder of a user's own files: notes, a document, a sub-folder, and names a run also uses."""
    root.mkdir(parents=True)
    for i in range(count - 4):
        (root / f"note_{i:02d}.txt").write_text(f"my note {i}\n")
    (root / "thesis.docx").write_bytes(b"PK\x03\x04 my thesis")
    (root / "config.yaml").write_text("mine: true\n")
    (root / "pretext").mkdir()
    (root / "pretext" / "draft.md").write_text("# mine\n")
    (root / "metrics.json").write_text("{}")
    return root


def contents(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file below ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def one_error(capsys, argv: list[str], *words: str) -> None:
    """The CLI exits 2 with exactly one error line holding ``words``."""
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("scanlearn: error:")]
    assert len(errors) == 1, errors
    assert all(word in errors[0] for word in words), errors[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_fashion_mnist(tmp_path_factory.mktemp("data"), 40, 20, 0)


def test_restart_with_missing_data_deletes_nothing_from_a_user_folder(tmp_path, capsys):
    folder = user_folder(tmp_path / "mine")
    before = contents(folder)
    one_error(capsys, ["run", "--restart", "--data", str(tmp_path / "nowhere"), "--run-dir", str(folder)],
              "is not a scanlearn run directory", "nothing in it was changed")
    assert contents(folder) == before and len(before) == 92


@pytest.mark.parametrize("command", ["run", "pretext", "scan"])
def test_restart_refuses_a_folder_that_is_not_a_run(tmp_path, data, capsys, command):
    folder = user_folder(tmp_path / "mine")
    before = contents(folder)
    argv = [command, "--restart", "--preset", "fashion-mnist", "--data-root", str(data), "--run-dir", str(folder)]
    one_error(capsys, argv, "is not a scanlearn run directory", "note_00.txt", "--run-dir")
    assert contents(folder) == before and not (folder / MARKER_FILE).exists()


def test_a_folder_that_is_not_a_run_is_not_written_to_without_restart(tmp_path, data, capsys):
    folder = user_folder(tmp_path / "mine")
    before = contents(folder)
    one_error(capsys, ["pretext", "--preset", "fashion-mnist", "--data-root", str(data), "--run-dir", str(folder)],
              "is not a scanlearn run directory")
    assert contents(folder) == before


def test_restart_removes_only_what_scanlearn_wrote(tmp_path):
    run = claim_run_dir(tmp_path / "run")
    for name in ("pretext", "scan", "cache"):
        (run / name).mkdir()
        (run / name / "done.json").write_text("{}")
    for name in ("files.txt", "metrics.json", "report.html", "my_notes.txt"):
        (run / name).write_text("x")
    clear_stages(run, "scan")
    assert sorted(p.name for p in run.iterdir()) == sorted(
        [MARKER_FILE, "pretext", "cache", "files.txt", "metrics.json", "report.html", "my_notes.txt"])
    clear_run_dir(run)
    assert sorted(p.name for p in run.iterdir()) == sorted([MARKER_FILE, "cache", "my_notes.txt"])
    assert (run / "cache" / "done.json").is_file()


def test_claim_adopts_new_empty_and_pre_marker_runs_only(tmp_path):
    assert is_run_dir(claim_run_dir(tmp_path / "new" / "run"))
    (tmp_path / "empty").mkdir()
    assert is_run_dir(claim_run_dir(tmp_path / "empty"))
    old = tmp_path / "old"
    old.mkdir()
    (old / "run.json").write_text(json.dumps({"config": {}, "data": {}}))
    (old / "pretext").mkdir()
    assert is_run_dir(old) and (claim_run_dir(old) / MARKER_FILE).is_file()
    with pytest.raises(RunDirError, match="note_00.txt"):
        claim_run_dir(user_folder(tmp_path / "mine"))


@pytest.mark.parametrize("command", ["predict", "report", "evaluate"])
def test_a_command_reading_a_run_refuses_a_folder_that_is_not_one_and_leaves_nothing_there(tmp_path, data, capsys,
                                                                                            command):
    folder = user_folder(tmp_path / "mine")
    before = contents(folder)
    one_error(capsys, [command, "--run-dir", str(folder), "--preset", "fashion-mnist", "--data-root", str(data)],
              str(folder), "is not a scanlearn run directory", "--run-dir of a finished run")
    assert contents(folder) == before and not (folder / LOCK_FILE).exists()

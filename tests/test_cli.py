"""The command line itself: help texts, flags per command, checks made before any image is read, run directories."""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import pytest

from fakes import error_lines
from scanlearn import arguments, cli
from scanlearn.config import resolve
from scanlearn.engine.run import Run
from scanlearn.estimate_k import auto_range
from scanlearn.errors import ConfigError, ScanlearnWarning
from scanlearn.runs.rundir import claim_run_dir
from scanlearn.selection import DEFAULT_CRITERION, HIGHER_IS_BETTER
from shapes import write_shape_folder

COMMANDS = ("pretext", "mine", "scan", "selflabel", "evaluate", "run", "predict", "report", "estimate-k", "select")
TRAINING_ONLY = ("--clusters", "--labels-from-folders", "--num-nodes")


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_has_a_one_line_help_and_a_description():
    parser = cli.build_parser()
    listed = parser.format_help()
    for name, sub in subparsers().items():
        assert sub.description and "\n" not in sub.description.strip(), name
        line = next(line for line in listed.splitlines() if line.strip().startswith(name))
        assert line.strip() != name or name in ("selflabel", "estimate-k"), name  # long names wrap onto the next line
    assert set(subparsers()) == set(COMMANDS)


@pytest.mark.parametrize("command", ["predict", "estimate-k"])
def test_predict_and_estimate_k_list_only_the_flags_they_use(command):
    text = subparsers()[command].format_help()
    for flag in TRAINING_ONLY:
        assert flag not in text, flag
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args([command, "--clusters", "3"])


def test_run_lists_the_training_flags():
    text = subparsers()["run"].format_help()
    assert all(flag in text for flag in TRAINING_ONLY)


def test_preset_help_does_not_contradict_itself():
    text = " ".join(subparsers()["run"].format_help().split())
    assert "default fashion-mnist" not in text
    assert "default: photos with --data" in text


def test_estimate_k_scales_its_default_range_with_the_number_of_images(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(Run, "split", lambda run, name: [0] * 100)
    monkeypatch.setattr(cli, "estimate_k", lambda run, ks: seen.append(ks) or pytest.fail("stop here"))
    args = cli.build_parser().parse_args(["estimate-k", "--run-dir", str(tmp_path / "run")])
    assert args.range is None
    with pytest.raises(pytest.fail.Exception):
        cli.run_command(args, cli.run_from_args(args))
    assert seen == [[2, 3, 4, 5]] == [auto_range(100)]  # one cluster per 20 images at most


@pytest.mark.parametrize("args, words", [
    (["run", "--clusters", "1"], "--clusters must be at least 2"),
    (["estimate-k", "--range", "1:4"], "--range must cover K >= 2"),
])
def test_flag_checks_come_before_any_image_and_name_the_flag(tmp_path, monkeypatch, capsys, args, words):
    import scanlearn.stages.prepare as prepare

    monkeypatch.setattr(prepare, "load_dataset", lambda *a, **k: pytest.fail("images were read"))
    missing = tmp_path / "no such folder"
    assert cli.main([*args, "--data", str(missing), "--run-dir", str(tmp_path / "run")]) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and words in errors[0] and "--set num_clusters" not in errors[0]
    assert not (tmp_path / "run").exists()


def test_each_folder_gets_its_own_default_run_directory(tmp_path):
    first, second = tmp_path / "a" / "photos", tmp_path / "b" / "photos"
    dirs = []
    for folder in (first, second, first):
        args = cli.build_parser().parse_args(["run", "--data", str(folder), "--clusters", "3"])
        dirs.append(cli.run_from_args(args).directory)
    assert dirs[0] == dirs[2] != dirs[1]
    assert dirs[0].parent == Path("runs") and dirs[0].name.startswith("photos-") and len(dirs[0].name) == len("photos-") + 6
    named = cli.run_from_args(cli.build_parser().parse_args(["run", "--preset", "fashion-mnist"])).directory
    assert named == Path("runs") / resolve("fashion-mnist", None, []).name


def test_predict_writes_its_own_file_by_default(tmp_path, monkeypatch):
    import scanlearn.cli as module

    written = []
    monkeypatch.setattr(module, "predict_folder", lambda run, data, output, export: written.append(output) or [])
    run = claim_run_dir(tmp_path / "run")
    assert cli.main(["predict", "--run-dir", str(run), "--data", str(tmp_path / "new")]) == 0
    assert written == [run / "predictions_new.csv"]


def test_flags_set_their_config_keys_and_seed_zero_counts(tmp_path):
    args = cli.build_parser().parse_args(["run", "--preset", "fashion-mnist", "--seed", "0", "--devices", "1",
                                          "--run-dir", str(tmp_path / "run"), "--set", "runtime.seed=5"])
    run = cli.run_from_args(args)
    config = run.config
    assert config.runtime.seed == 0 and str(config.runtime.devices) == "1" and run.directory == tmp_path / "run"
    assert not config.runtime.deterministic  # a flag left out sets nothing


def test_warnings_are_one_line_only_while_a_command_runs(tmp_path, capsys):
    before = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with cli.one_line_warnings():
            warnings.warn("clusters left empty", ScanlearnWarning)
        assert warnings.showwarning is before
        assert cli.main(["predict", "--run-dir", str(tmp_path / "no-run")]) == 2
        assert warnings.showwarning is before, "main leaves the process's warning display as it found it"
    assert "scanlearn: warning: clusters left empty" in capsys.readouterr().err
def test_a_folder_run_keeps_stdout_for_results_and_ends_with_a_summary(tmp_path, capsys):
    root = write_shape_folder(tmp_path / "pics", per_class=6, seed=3, nested=False)
    run_dir = tmp_path / "run"
    quick = ["--clusters", "3", "--run-dir", str(run_dir), "--set", "pretext.epochs=1", "--set", "scan.epochs=1",
             "--set", "selflabel.epochs=1", "--set", "mine.k=3", "--set", "mine.val_k=3", "--set", "data.image_size=16",
             "--set", "model.width=4", "--set", "runtime.progress=true"]
    assert cli.main(["run", "--data", str(root), *quick]) == 0
    out, err = capsys.readouterr()
    assert "Epoch 0" in err and "scanlearn: report:" in err, "progress bars and log lines go to stderr"
    assert "Epoch" not in out and "scanlearn:" not in out and "it/s" not in out
    summary = out.split("Summary:\n", 1)[1].splitlines()
    assert [line.split(":")[0] for line in summary] == ["clusters", "answer", "trust", "report", "assignments"]
    sizes = [int(part.split(": ")[1]) for part in summary[0].split("largest first: ")[1].rstrip(")").split(", ")]
    rows = list(csv.DictReader(open(run_dir / "assignments.csv", newline="")))
    assert sorted(sizes, reverse=True) == sorted(Counter(r["cluster"] for r in rows).values(), reverse=True)
    assert sum(sizes) == len(rows) == 18
    assert summary[3] == f"report: {run_dir / 'report.html'}" and summary[4] == f"assignments: {run_dir / 'assignments.csv'}"
    assert summary[2].split(": ")[1].split(":")[0] in ("weak", "moderate", "consistent")
    assert "scanlearn report — pics" in (run_dir / "report.html").read_text()
    assert "neighbour kappa" in summary[1] or "no label-free scores" in summary[1]


HELP_ONLY = """
import sys, time
started = time.perf_counter()
import scanlearn
for argv in (["--help"], ["run", "--help"], ["select", "--help"]):
    try:
        scanlearn.main(argv)
    except SystemExit:
        pass
print("heavy:", sorted(m for m in ("torch", "lightning", "scanlearn.cli", "sklearn") if m in sys.modules))
print(f"seconds: {time.perf_counter() - started:.2f}")
"""


def test_help_answers_without_importing_torch():
    done = subprocess.run([sys.executable, "-c", HELP_ONLY], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(cli.__file__).parents[1])})
    assert done.returncode == 0, done.stderr
    assert "heavy: []" in done.stdout
    assert "estimate-k" in done.stdout and "--clusters K" in done.stdout and "--criterion" in done.stdout


def test_select_offers_exactly_the_criteria_selection_knows():
    assert set(arguments.CRITERIA) == set(HIGHER_IS_BETTER) and arguments.DEFAULT_CRITERION == DEFAULT_CRITERION
@pytest.mark.parametrize("argv, words", [
    (["run", "--clusters", "abc"], ["--clusters", "'abc'", "scanlearn run --help"]),
    (["predict", "--split", "val"], ["--split", "'val'", "scanlearn predict --help"]),
    (["nope"], ["'nope'", "scanlearn --help"]),
])
def test_argument_errors_are_one_line_naming_the_flag(capsys, argv, words):
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    assert len(err.splitlines()) == 1 and err.startswith("scanlearn: error: "), err
    assert all(word in err for word in words), err


@pytest.mark.timeout(60)
def test_select_takes_neighbour_counts_and_still_the_old_flag_name():
    config = resolve("fashion-mnist", None, [])

    def grid(*flags: str) -> tuple[int, ...]:
        return cli.candidate_grid(cli.build_parser().parse_args(["select", *flags]), config).ks

    assert grid("--neighbours", "3,5") == (3, 5) and grid() == (config.mine.k,)
    with pytest.warns(ScanlearnWarning, match="--ks is deprecated; pass --neighbours"):
        assert grid("--ks", "3,5") == (3, 5)
    with pytest.raises(ConfigError, match="--neighbours must be a comma-separated list"):
        grid("--neighbours", "3;5")
    text = subparsers()["select"].format_help()
    assert "--neighbours LIST" in text and "--ks" not in text
    with pytest.raises(ConfigError, match="pass only --neighbours"):
        cli.check_flags(cli.build_parser().parse_args(["select", "--ks", "3", "--neighbours", "5"]))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("preset, flags, split", [
    ("fashion-mnist", [], "test"), ("fashion-mnist", ["--split", "train"], "train"),
    ("photos", [], "train"), ("photos", ["--split", "train"], "train"),
], ids=["dataset", "dataset-train", "folder", "folder-train"])
def test_predict_assigns_a_split_and_on_a_folder_run_its_own_images(tmp_path, monkeypatch, preset, flags, split):
    seen = []
    monkeypatch.setattr(Run, "split", lambda run, name: seen.append(name) or name)
    monkeypatch.setattr(cli, "predict_images", lambda run, images, output: seen.append(output) or [])
    run = claim_run_dir(tmp_path / "run")
    assert cli.main(["predict", "--run-dir", str(run), "--preset", preset, "--data-root", str(tmp_path), *flags]) == 0
    assert seen == [split, run / f"predictions_{split}.csv"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("preset, flags, words", [
    ("fashion-mnist", ["--split", "test", "--data", "new"], "--split and --data exclude each other"),
    ("photos", ["--split", "test"], "a run on a folder has no test split"),
], ids=["with-data", "folder-test"])
def test_predict_refuses_a_split_that_means_nothing(tmp_path, monkeypatch, capsys, preset, flags, words):
    monkeypatch.setattr(Run, "split", lambda run, name: pytest.fail("images were read"))
    run = claim_run_dir(tmp_path / "run")
    assert cli.main(["predict", "--run-dir", str(run), "--preset", preset, "--data-root", str(tmp_path), *flags]) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and words in errors[0]

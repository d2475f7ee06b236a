"""The command line itself: help texts, flags per command, checks made before any image is read, run directories."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from fakes import error_lines
from scanlearn import cli
from scanlearn.config import resolve
from scanlearn.runs.rundir import claim_run_dir

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


def test_estimate_k_tries_two_clusters_by_default():
    args = cli.build_parser().parse_args(["estimate-k"])
    assert cli.parse_range(args.range)[0] == 2


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
        dirs.append(cli.config_from_args(args)[1])
    assert dirs[0] == dirs[2] != dirs[1]
    assert dirs[0].parent == Path("runs") and dirs[0].name.startswith("photos-") and len(dirs[0].name) == len("photos-") + 6
    named = cli.config_from_args(cli.build_parser().parse_args(["run", "--preset", "fashion-mnist"]))[1]
    assert named == Path("runs") / resolve("fashion-mnist", None, []).name


def test_predict_writes_its_own_file_by_default(tmp_path, monkeypatch):
    import scanlearn.cli as module

    written = []
    monkeypatch.setattr(module, "predict_folder", lambda config, run_dir, data, output, export: written.append(output) or [])
    run = claim_run_dir(tmp_path / "run")
    assert cli.main(["predict", "--run-dir", str(run), "--data", str(tmp_path / "new")]) == 0
    assert written == [run / "predictions_new.csv"]


def test_flags_set_their_config_keys_and_seed_zero_counts(tmp_path):
    args = cli.build_parser().parse_args(["run", "--preset", "fashion-mnist", "--seed", "0", "--devices", "1",
                                          "--run-dir", str(tmp_path / "run"), "--set", "runtime.seed=5"])
    config, run_dir = cli.config_from_args(args)
    assert config.runtime.seed == 0 and str(config.runtime.devices) == "1" and run_dir == tmp_path / "run"
    assert not config.runtime.deterministic  # a flag left out sets nothing


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

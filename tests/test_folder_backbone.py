"""A folder without a preset: frozen pretrained backbone when its weights are at hand, else from scratch.

Nothing is downloaded: conftest.py points the download caches at empty folders and a test that
needs cached weights writes randomly initialised ones there itself. The download question is answered
through a stand-in terminal (stdin, or the reading of an answer replaced) and never waits for a person.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from scanlearn.cli import main
from scanlearn.config import resolve
from scanlearn.engine.run import Run
from scanlearn.engine.trained import load_frozen_heads
from scanlearn.folder_backbone import CHOICE_FILE, PRETRAINED_PRESETS, choose_backbone, preset_backbone, read_choice
from scanlearn.models.pretrained import cached_weights, download_megabytes
from shapes import write_shape_folder

DINO = "vit_small_patch14_dinov2.lvd142m"
COMMIT = "0" * 40


def hub_snapshot(cache: Path, model: str) -> Path:
    """The folder the Hugging Face hub cache keeps ``timm/<model>``'s files in (its ``main`` ref written)."""
    repo = cache / f"models--timm--{model}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


@pytest.fixture
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Empty Hugging Face and torch hub caches of this test only."""
    hf, torch_home = tmp_path / "hf", tmp_path / "torch"
    monkeypatch.setenv("HF_HUB_CACHE", str(hf))
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    return hf, torch_home


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shape_folder(tmp_path_factory.mktemp("own") / "photos", per_class=12, nested=False)


def test_offline_without_weights_falls_back_to_scratch_and_says_how_to_do_better(caches):
    choice = choose_backbone()
    assert (choice.preset, choice.source, choice.pretrained, choice.weights) == ("photos", "scratch", False, None)
    assert "--allow-download" in choice.reason and "--weights FILE" in choice.reason and "\n" not in choice.reason


def test_weights_file_and_allowed_download_choose_the_first_pretrained_preset(caches):
    first = preset_backbone(PRETRAINED_PRESETS[0])
    given = choose_backbone(weights="my.safetensors")
    assert (given.preset, given.source, given.weights) == (PRETRAINED_PRESETS[0], "file", "my.safetensors")
    allowed = choose_backbone(allow_download=True)
    assert (allowed.source, allowed.weights, allowed.backbone) == ("download", None, first)
    model = timm.create_model(DINO, pretrained=False, num_classes=0)
    megabytes = 4 * sum(t.numel() for t in model.state_dict().values()) / 1e6
    assert download_megabytes(first) == pytest.approx(megabytes)
    assert f"about {megabytes:.0f} MB" in allowed.reason


def test_cached_files_are_found_in_each_librarys_cache(caches):
    hf, torch_home = caches
    assert cached_weights(f"timm:{DINO}") is None and cached_weights("torchvision:resnet50") is None
    (hub_snapshot(hf, DINO) / "model.safetensors").write_bytes(b"x")
    (torch_home / "hub" / "checkpoints").mkdir(parents=True)
    (torch_home / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth").write_bytes(b"x")
    assert cached_weights(f"timm:{DINO}") == str(hub_snapshot(hf, DINO) / "model.safetensors")
    assert cached_weights("torchvision:resnet50").endswith("resnet50-11ad3fa6.pth")
    assert cached_weights(f"timm:{DINO}+torchvision:resnet50").count("+") == 1
    assert choose_backbone().source == "cache"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_cached_weights_give_a_frozen_pretrained_run(caches, folder, tmp_path, capsys):
    """Random weights in the hub cache stand in for DINOv2's."""
    torch.manual_seed(0)
    file = hub_snapshot(caches[0], DINO) / "model.safetensors"
    save_file(timm.create_model(DINO, pretrained=False, num_classes=0).state_dict(), str(file))
    run = tmp_path / "run"
    args = ["run", "--data", str(folder), "--clusters", "3", "--labels-from-folders", "--run-dir", str(run),
            "--set", "model.input_size=28", "--set", "mine.k=5", "--set", "mine.val_k=3", "--set", "scan.epochs=2",
            "--set", "scan.batch_size=16", "--set", "scan.num_heads=4", "--set", "selflabel.epochs=1",
            "--set", "selflabel.cached_views=1", "--set", "selflabel.batch_size=16", "--set", "runtime.progress=false"]
    assert main(args) == 0
    out = capsys.readouterr()
    choice = read_choice(run)
    assert (choice.preset, choice.source, choice.weights) == ("dinov2-vits14", "cache", str(file))
    assert f"scanlearn: backbone: frozen timm:{DINO} with cached weights {file}" in out.err
    assert "scanlearn: estimate: about" in out.err and "training from scratch" not in out.err
    assert "overall: stage 1/4 pretext" in out.err and "overall: stage 4/4 selflabel" in out.err
    assert f"backbone: timm:{DINO}" in (run / "config.yaml").read_text()
    assert (run / "cache").is_dir() and (run / "report.html").is_file()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_no_weights_trains_from_scratch_with_one_line_and_records_it(caches, folder, tmp_path, capsys, monkeypatch):
    from scanlearn import schedule

    monkeypatch.setattr(schedule, "FROZEN_SCAN_EPOCHS", 3)
    monkeypatch.setattr(schedule, "FROZEN_SELFLABEL_EPOCHS", 2)
    run = tmp_path / "run"
    args = ["run", "--data", str(folder), "--clusters", "3", "--run-dir", str(run),
            "--set", "data.image_size=16", "--set", "model.width=4", "--set", "pretext.epochs=2",
            "--set", "pretext.batch_size=16", "--set", "mine.k=5", "--set", "mine.val_k=3",
            "--set", "runtime.progress=false"]
    assert main(args) == 0
    out = capsys.readouterr().err
    lines = [line for line in out.splitlines() if "training from scratch" in line]
    assert len(lines) == 1 and "--allow-download" in lines[0] and "about " in lines[0]
    assert "schedule for 36 images: pretext 2 epochs, SCAN and self-labelling on the frozen" in out
    recorded = json.loads((run / CHOICE_FILE).read_text())
    assert recorded["source"] == "scratch" and recorded["schedule"].startswith("schedule for 36 images")
    config = (run / "config.yaml").read_text()
    assert "backbone: resnet18-stl" in config and "freeze_backbone: true" in config and "epochs: 3" in config
    saved = resolve(None, str(run / "config.yaml"), [])
    assert all(load_frozen_heads(Run(saved, run), stage).normalize_input for stage in ("scan", "selflabel"))


def test_estimator_on_a_folder_chooses_the_same_way(caches, folder, tmp_path):
    from scanlearn import SCAN

    offline = SCAN(n_clusters=3, pretext__epochs=2)._folder_defaults(str(folder), tmp_path)
    assert offline.choice.source == "scratch" and offline.fixed == frozenset({"pretext.epochs"})
    assert SCAN(n_clusters=3)._config(str(folder), tmp_path, offline).name == "photos"
    given = SCAN(n_clusters=3, model__weights="w.safetensors")
    defaults = given._folder_defaults(str(folder), tmp_path)
    config = given._config(str(folder), tmp_path, defaults)
    assert (config.name, config.model.weights) == ("dinov2-vits14", "w.safetensors")
    assert SCAN(preset="photos")._folder_defaults(str(folder), tmp_path) is None
    assert SCAN()._folder_defaults(torch.zeros(4, 3, 8, 8), tmp_path) is None


def test_missing_model_library_counts_as_no_weights(caches, monkeypatch):
    from scanlearn import folder_backbone
    from scanlearn.errors import ConfigError

    def not_installed(name):
        raise ConfigError("backbone source timm is not installed; run `pip install timm`")

    monkeypatch.setattr(folder_backbone, "cached_weights", not_installed)
    monkeypatch.setattr(folder_backbone, "download_megabytes", not_installed)
    choice = choose_backbone(allow_download=True)
    assert choice.source == "scratch" and "pip install timm" in choice.reason


# ----------------------------------------------------------------------------- asking before a download
class StandIn(torch.nn.Module):
    """What the library's download would return, built without the network."""

    num_features = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :4]


@pytest.fixture
def person(caches, tmp_path, monkeypatch):
    """A terminal whose answers come from stdin, answers remembered in this test's config folder, sizes not measured."""
    from scanlearn import cli, folder_backbone

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setattr(cli, "on_terminal", lambda: True)
    monkeypatch.setattr(folder_backbone, "download_megabytes", lambda name: 88.0)
    return tmp_path / "config" / "scanlearn" / "downloads.json"


def started(monkeypatch) -> list:
    """``cli.run_command`` replaced by a recorder: the run's config and backbone choice, no training."""
    from scanlearn import cli

    runs = []
    monkeypatch.setattr(cli, "run_command", lambda args, run, defaults: runs.append((run.config, defaults)) or 0)
    return runs


def never(prompt: str) -> str:
    pytest.fail(f"asked although it must not: {prompt}")


def run_folder(folder: Path, run_dir: Path, *flags: str) -> int:
    return main(["run", "--data", str(folder), "--clusters", "3", "--run-dir", str(run_dir), *flags])


@pytest.mark.timeout(120)
def test_a_yes_on_a_terminal_downloads_and_is_remembered(person, folder, tmp_path, monkeypatch, capsys):
    from scanlearn import cli
    from scanlearn.models import pretrained

    runs = started(monkeypatch)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    assert run_folder(folder, tmp_path / "first") == 0
    err = capsys.readouterr().err
    config, defaults = runs[0]
    assert (defaults.choice.source, defaults.choice.weights, config.name) == ("download", None, "dinov2-vits14")
    assert f"Download the pretrained backbone dinov2-vits14 (about 88 MB, once, into {tmp_path / 'hf'})" in err
    assert "scanlearn: remembered your answer (yes)" in err and "--no-download" in err
    assert json.loads(person.read_text()) == {f"timm:{DINO}": True}

    monkeypatch.setattr(cli, "read_line", never)
    assert run_folder(folder, tmp_path / "second") == 0
    assert runs[1][1].choice.source == "download"
    assert "yes, as answered before" in capsys.readouterr().err

    downloads = []
    monkeypatch.setattr(pretrained, "_timm_create",
                        lambda name, size, pretrained: downloads.append((name, pretrained)) or StandIn())
    pretrained.build_pretrained(defaults.choice.backbone, weights=defaults.choice.weights)
    assert downloads == [(DINO, True)], "the choice makes the model library download its weights"


@pytest.mark.timeout(120)
def test_a_no_on_a_terminal_trains_from_scratch_and_is_remembered(person, folder, tmp_path, monkeypatch, capsys):
    from scanlearn import cli

    runs = started(monkeypatch)
    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
    assert run_folder(folder, tmp_path / "first") == 0
    assert runs[0][1].choice.source == "scratch" and runs[0][0].name == "photos"
    assert json.loads(person.read_text()) == {f"timm:{DINO}": False}
    assert "remembered your answer (no)" in capsys.readouterr().err
    monkeypatch.setattr(cli, "read_line", never)
    assert run_folder(folder, tmp_path / "second") == 0
    assert runs[1][1].choice.source == "scratch"


@pytest.mark.timeout(120)
def test_ctrl_c_at_the_question_is_no_for_this_run_only(person, folder, tmp_path, monkeypatch, capsys):
    from scanlearn import cli

    def interrupted(prompt: str) -> str:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
        pytest.fail("Ctrl-C did not reach the question")

    runs = started(monkeypatch)
    monkeypatch.setattr(cli, "read_line", interrupted)
    assert run_folder(folder, tmp_path / "run") == 0, "Ctrl-C at the question does not stop the run"
    assert runs[0][1].choice.source == "scratch" and not person.exists()
    assert "the next run asks again" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_without_a_terminal_nothing_is_asked_and_nothing_downloaded(person, folder, tmp_path, monkeypatch):
    from scanlearn import cli

    runs = started(monkeypatch)
    monkeypatch.setattr(cli, "on_terminal", lambda: False)
    monkeypatch.setattr(cli, "read_line", never)
    assert run_folder(folder, tmp_path / "run") == 0
    assert runs[0][1].choice.source == "scratch" and not person.exists()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("flag, remembered, source", [("--no-download", True, "scratch"),
                                                      ("--allow-download", False, "download")])
def test_a_download_flag_never_asks_and_overrides_the_remembered_answer(person, folder, tmp_path, monkeypatch,
                                                                         flag, remembered, source):
    from scanlearn import cli

    runs = started(monkeypatch)
    monkeypatch.setattr(cli, "read_line", never)
    assert run_folder(folder, tmp_path / "first", flag) == 0
    person.parent.mkdir(parents=True)
    person.write_text(json.dumps({f"timm:{DINO}": remembered}))
    assert run_folder(folder, tmp_path / "second", flag) == 0
    assert [defaults.choice.source for _, defaults in runs] == [source, source]


@pytest.mark.timeout(120)
def test_only_rank_zero_asks_and_the_other_ranks_follow_its_remembered_answer(person, folder, tmp_path, monkeypatch):
    from scanlearn import cli

    runs = started(monkeypatch)
    monkeypatch.setattr(cli, "read_line", never)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert run_folder(folder, tmp_path / "first") == 0
    person.parent.mkdir(parents=True)
    person.write_text(json.dumps({f"timm:{DINO}": True}))
    assert run_folder(folder, tmp_path / "second") == 0
    assert [defaults.choice.source for _, defaults in runs] == ["scratch", "download"]


@pytest.mark.timeout(60)
def test_allow_and_no_download_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["run", "--data", "x", "--allow-download", "--no-download"])
    assert stopped.value.code == 2 and "--no-download" in capsys.readouterr().err


@pytest.mark.timeout(60)
def test_the_estimator_never_asks(person, folder, tmp_path, monkeypatch):
    from scanlearn import SCAN, cli

    monkeypatch.setattr(cli, "read_line", never)
    person.parent.mkdir(parents=True)
    person.write_text(json.dumps({f"timm:{DINO}": True}))
    assert SCAN(n_clusters=3)._folder_defaults(str(folder), tmp_path / "run").choice.source == "scratch"
    assert SCAN(n_clusters=3, allow_download=True)._folder_defaults(str(folder), tmp_path / "run").choice.source == "download"

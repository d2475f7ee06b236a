"""Pretrained (timm / torchvision) backbones: frozen-feature pipeline, feature cache, presets.

Models are randomly initialised and saved by the tests, then loaded back with --weights:
nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torchvision
from PIL import Image, ImageDraw

from fakes import error_lines
from scanlearn.engine import features as feature_module
from scanlearn.cli import main
from scanlearn.config import load_preset, with_values
from scanlearn.errors import CheckpointError, ConfigError
from scanlearn.models import build_backbone
from scanlearn.engine.splits import data_spec, load_image_size
from scanlearn.runs.fsutil import DIGESTS_FILE

SHAPES = ("circle", "square", "triangle")
FAST = [
    "--set", "data.labels_from_folders=true", "--set", "data.num_workers=0", "--set", "num_clusters=3",
    "--set", "model.input_size=32", "--set", "mine.k=5", "--set", "mine.val_k=3",
    "--set", "scan.epochs=3", "--set", "scan.batch_size=16", "--set", "scan.num_heads=10",
    "--set", "selflabel.epochs=2", "--set", "selflabel.batch_size=16", "--set", "selflabel.cached_views=2",
    "--set", "selflabel.threshold=0.4", "--set", "selflabel.augment.cutout=8", "--set", "selflabel.augment.crop_padding=4",
    "--set", "runtime.progress=false", "--set", "runtime.precision=32-true",
]


def draw(shape: str, rng: np.random.Generator, size: int = 40) -> Image.Image:
    """One ``shape`` in a random colour at a random place on a random grey background."""
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 80, 3)))
    pen = ImageDraw.Draw(image)
    x, y, r = (int(v) for v in (*rng.integers(12, size - 12, 2), rng.integers(6, 11)))
    colour = tuple(int(v) for v in rng.integers(120, 256, 3))
    if shape == "circle":
        pen.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    elif shape == "square":
        pen.rectangle((x - r, y - r, x + r, y + r), fill=colour)
    else:
        pen.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=colour)
    return image


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """``shapes/<shape>/<i>.png``: 12 PIL-drawn images per shape."""
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        (root / shape).mkdir()
        for i in range(12):
            draw(shape, rng).save(root / shape / f"{i}.png")
    return root


def save_weights(path: Path, model: torch.nn.Module, seed: int) -> Path:
    """Perturb ``model`` with ``seed`` (so each seed gives other weights) and save its state dict."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.01 * torch.randn_like(tensor))
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture()
def count_embeds(monkeypatch) -> list[int]:
    """Number of embedding passes the feature cache made (one element per pass)."""
    calls: list[int] = []
    real = feature_module.embed_distributed

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(feature_module, "embed_distributed", counting)
    return calls


def cache_files(run: Path) -> set[str]:
    return {p.name for p in (run / "cache").glob("*.npy")}


def test_timm_pipeline_runs_on_cached_features_and_reuses_them(tmp_path, folder, count_embeds, capsys):
    weights = save_weights(tmp_path / "vit.pth", timm.create_model("vit_tiny_patch16_224", num_classes=0), seed=1)
    run = tmp_path / "run"
    args = ["run", "--backbone", "timm:vit_tiny_patch16_224", "--weights", str(weights),
            "--data-root", str(folder), "--run-dir", str(run), *FAST]
    assert main(args) == 0
    out = capsys.readouterr()
    assert "scanlearn: pretext: done" in out.err and "pretrained backbone, skipped" in out.err and "selflabel" in out.out
    assert json.loads((run / "pretext" / "metrics.json").read_text()) == {"skipped": "pretrained backbone, skipped"}
    assert not (run / "pretext" / "model.pt").exists()
    assert len(count_embeds) == 3  # clean (train and test are the same folder) + 2 strong views
    first = cache_files(run)
    assert len(first) == 3
    clean = [p for p in (run / "cache").glob("*.json") if p.name != DIGESTS_FILE and json.loads(p.read_text())["view"]["kind"] == "clean"]
    features = np.load(clean[0].with_suffix(".npy"), mmap_mode="r")
    assert isinstance(features, np.memmap) and features.shape == (36, 192)
    assert np.allclose(np.linalg.norm(features, axis=1), 1, atol=1e-4)
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["scan"]["acc"] <= 1 and 0 <= metrics["selflabel"]["acc"] <= 1
    assert len(json.loads((run / "scan" / "metrics.json").read_text())["head_losses"]) == 10
    saved = torch.load(run / "scan" / "model.pt", weights_only=False)
    assert saved["frozen_backbone"] and set(saved["heads"]) == {"weight", "bias"}
    assert saved["heads"]["weight"].shape[0] == 1

    count_embeds.clear()
    assert main([*args, "--restart"]) == 0
    assert count_embeds == [] and cache_files(run) == first
    assert main(["evaluate", "--run-dir", str(run), "--weights", str(weights), *FAST]) == 0
    assert main(["predict", "--run-dir", str(run), "--weights", str(weights), *FAST]) == 0
    assert count_embeds == []
    assert len((run / "predictions_train.csv").read_text().splitlines()) == 37

    capsys.readouterr()
    save_weights(weights, timm.create_model("vit_tiny_patch16_224", num_classes=0), seed=2)
    assert main(["mine", "--run-dir", str(run), "--weights", str(weights), *FAST]) == 0
    assert len(count_embeds) == 1
    assert len(cache_files(run)) == 4 and first < cache_files(run)
    assert main(["evaluate", "--run-dir", str(run), "--weights", str(weights), *FAST]) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "another backbone or weights file" in err[0]


def test_torchvision_and_concatenated_backbones(tmp_path, folder, count_embeds):
    resnet = save_weights(tmp_path / "r18.pth", torchvision.models.resnet18(), seed=3)
    tiny = save_weights(tmp_path / "r10.pth", timm.create_model("resnet10t"), seed=4)
    run = tmp_path / "run"
    args = ["run", "--backbone", "timm:resnet10t+torchvision:resnet18", "--weights", f"{tiny}+{resnet}",
            "--data-root", str(folder), "--run-dir", str(run), *FAST, "--set", "selflabel.freeze_backbone=false"]
    assert main(args) == 0
    assert len(count_embeds) == 1  # self-labelling fine-tunes here, so only the clean view is cached
    (features,) = [np.load(p, mmap_mode="r") for p in (run / "cache").glob("*.npy")]
    assert features.shape == (36, 1024)
    assert np.allclose(np.linalg.norm(features[:, :512], axis=1), 1, atol=1e-4)
    assert np.allclose(np.linalg.norm(features[:, 512:], axis=1), 1, atol=1e-4)
    saved = torch.load(run / "selflabel" / "model.pt", weights_only=False)
    assert "state_dict" in saved and any(k.startswith("backbone.branches.1.") for k in saved["state_dict"])
    assert 0 <= json.loads((run / "metrics.json").read_text())["selflabel"]["acc"] <= 1


def test_torchvision_backbone_strips_classifier_and_renormalises_grey_input(tmp_path):
    weights = save_weights(tmp_path / "r18.pth", torchvision.models.resnet18(), seed=5)
    backbone = build_backbone("torchvision:resnet18", in_channels=1, weights=str(weights), input_size=32).eval()
    with torch.no_grad():
        out = backbone(torch.randn(2, 1, 20, 20))
    assert out.shape == (2, 512) and backbone.out_dim == 512 and backbone.renormalise


def test_offline_download_is_one_clear_error(tmp_path, folder, monkeypatch, capsys):
    def offline(*args, **kwargs):
        if kwargs.get("pretrained"):
            raise OSError("Name or service not known")
        return real(*args, **kwargs)

    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline)
    code = main(["mine", "--backbone", "timm:resnet10t", "--data-root", str(folder), "--run-dir", str(tmp_path / "r"), *FAST])
    assert code == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "--weights FILE" in err[0] and "timm:resnet10t" in err[0]


@pytest.mark.parametrize("name, message", [
    ("timm:no_such_model", "unknown timm model"),
    ("torchvision:no_such_model", "unknown torchvision model"),
    ("hub:resnet10t", "unknown backbone source"),
    ("timm:resnet10t+resnet18", "needs a source prefix"),
])
def test_bad_backbone_names_are_config_errors(name, message):
    with pytest.raises(ConfigError, match=message):
        build_backbone(name, weights="none")


def test_weights_of_another_model_are_refused(tmp_path):
    weights = save_weights(tmp_path / "r18.pth", torchvision.models.resnet18(), seed=6)
    with pytest.raises(CheckpointError, match="does not fit timm:resnet10t"):
        build_backbone("timm:resnet10t", weights=str(weights))
    with pytest.raises(CheckpointError, match="does not exist"):
        build_backbone("torchvision:resnet18", weights=str(tmp_path / "missing.pth"))


@pytest.mark.parametrize("preset, backbone, mean, size", [
    ("dinov2-vits14", "timm:vit_small_patch14_dinov2.lvd142m", (0.485, 0.456, 0.406), 224),
    ("dinov2-vitb14", "timm:vit_base_patch14_dinov2.lvd142m", (0.485, 0.456, 0.406), 224),
    ("clip-vitb16", "timm:vit_base_patch16_clip_224.openai", (0.48145466, 0.4578275, 0.40821073), 224),
    ("resnet50-imagenet", "torchvision:resnet50", (0.485, 0.456, 0.406), 224),
])
def test_presets_follow_the_model_preprocessing(preset, backbone, mean, size):
    config = load_preset(preset)
    assert config.model.backbone == backbone and config.data.dataset == "folder"
    assert config.scan.freeze_backbone and config.selflabel.freeze_backbone and config.scan.num_heads >= 10
    spec = data_spec(config)
    assert spec.mean == pytest.approx(mean) and spec.image_size == size == load_image_size(config)
    config = with_values(config, {"data.dataset": "cifar10"})
    assert data_spec(config).image_size == 32 and load_image_size(config) is None

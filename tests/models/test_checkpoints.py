"""Importing external pretext weights: MoCo v2, torchvision ResNet-50, and refusing misfits."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import pytest
import torch
import torchvision

from scanlearn.errors import CheckpointError, ConfigError
from scanlearn.models import ContrastiveModel, build_backbone
from scanlearn.models.checkpoints import check_pretext_source, import_pretext_weights

WIDTH = 4


def contrastive(name: str = "resnet50", width: int = WIDTH) -> ContrastiveModel:
    """A freshly initialised backbone + 128-d projection head."""
    backbone = build_backbone(name, width=width)
    return ContrastiveModel(backbone, backbone.out_dim, 128)


def moco_state(width: int = WIDTH) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A MoCo v2 state dict built from our own ResNet-50 (distinct random values), and its query weights."""
    source = contrastive(width=width)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, tensor in source.state_dict().items():
            if tensor.is_floating_point():
                positive = name.endswith("running_var")
                tensor.copy_(torch.rand_like(tensor) + 0.5 if positive else torch.randn_like(tensor))
    query = {k.removeprefix("backbone."): v.clone() for k, v in source.backbone.state_dict(prefix="backbone.").items()}
    query |= {f"fc.{k}": v.clone() for k, v in source.head.state_dict().items()}
    state = {f"module.encoder_q.{k}": v for k, v in query.items()}
    state |= {f"module.encoder_k.{k}": v + 1.0 for k, v in query.items()}
    state |= {"module.queue": torch.randn(128, 32), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    return state, query


def save(path: Path, obj: object) -> Path:
    """``torch.save`` and return the path."""
    torch.save(obj, path)
    return path


def test_moco_v2_checkpoint_loads_query_encoder_and_mlp_exactly(tmp_path: Path) -> None:
    state, query = moco_state()
    path = save(tmp_path / "moco_v2_800ep_pretrain.pth.tar", {"epoch": 800, "arch": "resnet50", "state_dict": state})
    model = contrastive()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = import_pretext_weights(model, path, "resnet50")
    own = model.state_dict()
    for key, value in query.items():
        ours = "head." + key[len("fc."):] if key.startswith("fc.") else "backbone." + key
        assert torch.equal(own[ours], value), key
    assert report.layout == "MoCo v2" and report.missing == [] and report.unexpected == []
    assert len(report.loaded) == len(own) and report.ignored == len(query) + 2


def test_torchvision_resnet50_state_dict_loads_backbone(tmp_path: Path) -> None:
    reference = torchvision.models.resnet50()
    path = save(tmp_path / "resnet50.pth", reference.state_dict())
    model = contrastive(width=64)
    with pytest.warns(UserWarning) as caught:
        report = import_pretext_weights(model, path, "resnet50")
    message = str(caught[0].message)
    assert "\n" not in message and "torchvision layout" in message
    assert "unexpected, skipped: fc.weight, fc.bias" in message
    assert "missing, kept at initialisation: head.0.weight" in message
    for key, value in reference.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(model.backbone.state_dict()[key], value), key
    assert sorted(report.unexpected) == ["fc.bias", "fc.weight"]
    assert all(k.startswith("head.") for k in report.missing)


def test_ddp_prefixed_and_own_pretext_checkpoints_load(tmp_path: Path) -> None:
    source = contrastive()
    wrapped = {f"module.{k}": v for k, v in source.backbone.state_dict().items()}
    model = contrastive()
    with pytest.warns(UserWarning, match="missing"):
        import_pretext_weights(model, save(tmp_path / "ddp.pth", {"model": wrapped}))
    assert torch.equal(model.backbone.layer2[0].conv1.weight, source.backbone.layer2[0].conv1.weight)
    own_format = {"state_dict": source.state_dict(), "feature_dim": source.backbone.out_dim}
    report = import_pretext_weights(contrastive(), save(tmp_path / "model.pt", own_format))
    assert report.layout == "scanlearn" and report.missing == []


@pytest.mark.parametrize(("name", "width"), [("resnet18", WIDTH), ("resnet50", 2 * WIDTH)])
def test_checkpoint_of_another_backbone_is_refused(tmp_path: Path, name: str, width: int) -> None:
    state, _ = moco_state()
    path = save(tmp_path / "moco.pth", {"state_dict": state})
    with pytest.raises(CheckpointError) as error:
        import_pretext_weights(contrastive(name, width), path, name)
    message = str(error.value)
    assert "\n" not in message and "does not fit" in message and "model.backbone" in message


def test_unreadable_or_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        import_pretext_weights(contrastive(), tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        import_pretext_weights(contrastive(), tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        import_pretext_weights(contrastive(), save(tmp_path / "code.pth", {"args": argparse.Namespace(lr=0.1)}))
    with pytest.raises(CheckpointError, match="no state dict"):
        import_pretext_weights(contrastive(), save(tmp_path / "empty.pth", {"epoch": 3}))


def test_pretext_source_check() -> None:
    check_pretext_source("simclr", None, "cifar10")
    check_pretext_source("moco_v2", "moco.pth", "imagenet50")
    with pytest.raises(ConfigError) as error:
        check_pretext_source("moco_v2", None, "imagenet50")
    assert "\n" not in str(error.value) and "--pretext-checkpoint FILE" in str(error.value)
    with pytest.raises(ConfigError, match="simclr, moco_v2"):
        check_pretext_source("byol", None, "cifar10")

"""Import external pretext weights: MoCo v2 checkpoints and torchvision ResNet state dicts."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..errors import CheckpointError
from .heads import ContrastiveModel

MOCO_PREFIX = "module.encoder_q."


def read_external_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint file (``state_dict`` / ``model`` key or the file itself)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"pretext checkpoint {path} does not exist; pass an existing file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the file is unusable
        raise CheckpointError(f"cannot read pretext checkpoint {path} ({type(exc).__name__}); is it a PyTorch file?") from None
    for key in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds no state dict")
    return data


def to_contrastive_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename MoCo v2 (``module.encoder_q.*``, MLP in ``fc.0``/``fc.2``) or torchvision keys to ours."""
    if any(k.startswith(MOCO_PREFIX) for k in state):
        state = {k[len(MOCO_PREFIX):]: v for k, v in state.items() if k.startswith(MOCO_PREFIX)}
    renamed = {}
    for key, value in state.items():
        if key.startswith("fc."):
            renamed["head." + key[len("fc."):]] = value
        else:
            renamed["backbone." + key] = value
    return renamed


def import_pretext_weights(model: ContrastiveModel, path: str | Path) -> tuple[list[str], list[str]]:
    """Load backbone (and MLP head when shapes fit) weights; returns (missing, unexpected) keys.

    Backbone keys must all be present, else ``CheckpointError``; a head that does not fit is
    skipped with a warning (a torchvision classifier ``fc`` is not a projection head).
    """
    incoming = to_contrastive_keys(read_external_state(path))
    own = model.state_dict()
    usable = {k: v for k, v in incoming.items() if k in own and own[k].shape == v.shape}
    missing_backbone = [k for k in own if k.startswith("backbone.") and k not in usable]
    if missing_backbone:
        raise CheckpointError(
            f"{path} does not fit backbone: {len(missing_backbone)} backbone weights missing or of "
            f"another shape (first: {missing_backbone[0]}); pick the matching --set model.backbone"
        )
    missing = [k for k in own if k not in usable]
    unexpected = [k for k in incoming if k not in usable]
    if missing or unexpected:
        warnings.warn(
            f"imported {path}: {len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}",
            stacklevel=2,
        )
    model.load_state_dict(usable, strict=False)
    return missing, unexpected

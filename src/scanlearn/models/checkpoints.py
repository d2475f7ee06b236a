"""Import external pretext weights: MoCo v2 checkpoints and torchvision ResNet state dicts.

Accepted layouts (optionally nested under ``state_dict`` or ``model``):

* MoCo v2 (``moco_v2_800ep_pretrain.pth.tar``): query encoder under ``module.encoder_q.``
  with its MLP projection head in ``fc.0`` / ``fc.2``; everything else (the momentum
  encoder ``module.encoder_k.*``, ``queue``, ``queue_ptr``) is ignored.
* torchvision ResNet (``torchvision.models.resnet50().state_dict()``): backbone keys plus a
  1000-way classifier ``fc`` that does not fit the projection head and is skipped.
* scanlearn's own pretext ``model.pt`` (``backbone.*`` / ``head.*``) and DDP-wrapped
  (``module.``-prefixed) variants of the above.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import CheckpointError, ConfigError, UnsafeFileError
from ..runs.fsutil import load_without_code
from .heads import ContrastiveModel

MOCO_QUERY_PREFIXES = ("module.encoder_q.", "encoder_q.")
PRETEXT_METHODS = ("simclr", "moco_v2")


@dataclass
class ImportReport:
    """What ``import_pretext_weights`` loaded, left at initialisation, and ignored."""

    layout: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: int = 0

    def summary(self, path: str | Path) -> str:
        """One line naming the checkpoint layout, the counts and the first few odd keys."""
        text = f"imported {len(self.loaded)} tensors from {path} ({self.layout} layout)"
        if self.missing:
            text += f"; {len(self.missing)} missing, kept at initialisation: {_first(self.missing)}"
        if self.unexpected:
            text += f"; {len(self.unexpected)} unexpected, skipped: {_first(self.unexpected)}"
        if self.ignored:
            text += f"; {self.ignored} momentum-encoder/queue entries ignored"
        return text


def _first(keys: list[str], count: int = 3) -> str:
    """``a, b, c, ...`` for the first ``count`` keys."""
    return ", ".join(keys[:count]) + (", ..." if len(keys) > count else "")


def check_pretext_source(method: str, checkpoint: str | None, preset: str) -> None:
    """Refuse an unknown pretext method, or an imported-weights method without a checkpoint file."""
    if method not in PRETEXT_METHODS:
        raise ConfigError(
            f"unknown pretext.method {method!r}; choose one of: {', '.join(PRETEXT_METHODS)}"
        )
    if method != "simclr" and not checkpoint:
        raise ConfigError(
            f"{preset} uses {method} pretext weights that scanlearn does not train; pass "
            "--pretext-checkpoint FILE (e.g. the MoCo v2 ResNet-50 moco_v2_800ep_pretrain.pth.tar)"
        )


def read_external_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint file (``state_dict`` / ``model`` key or the file itself)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"pretext checkpoint {path} does not exist; pass an existing file")
    try:
        data = load_without_code(path)
    except UnsafeFileError as exc:
        raise UnsafeFileError(
            f"{exc}; re-save only its weights with torch.save(checkpoint['state_dict'], FILE) and pass that FILE"
        ) from None
    except CheckpointError:
        raise CheckpointError(f"cannot read pretext checkpoint {path} (not a PyTorch file); pass a .pth/.pt file") from None
    for key in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not any(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path} holds no state dict; pass a MoCo v2 or torchvision checkpoint")
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}


@dataclass
class RenamedState:
    """A checkpoint's tensors under ``ContrastiveModel`` keys, with each key's name in the file."""

    tensors: dict[str, torch.Tensor]
    source_names: dict[str, str]
    layout: str
    ignored: int = 0


def to_contrastive_keys(state: dict[str, torch.Tensor]) -> RenamedState:
    """Rename MoCo v2 / torchvision / DDP-wrapped / scanlearn checkpoint keys to ``ContrastiveModel`` keys."""
    query = next((p for p in MOCO_QUERY_PREFIXES if any(k.startswith(p) for k in state)), None)
    if query is not None:
        strip, layout = query, "MoCo v2"
    elif state and all(k.startswith("module.") for k in state):
        strip, layout = "module.", "torchvision"
    else:
        strip, layout = "", "torchvision"
    names = {k[len(strip):]: k for k in state if k.startswith(strip)}
    ignored = len(state) - len(names)
    if any(k.startswith(("backbone.", "head.")) for k in names):
        return RenamedState({k: state[n] for k, n in names.items()}, names, "scanlearn", ignored)
    ours = {("head." + k[len("fc."):] if k.startswith("fc.") else "backbone." + k): n for k, n in names.items()}
    return RenamedState({k: state[n] for k, n in ours.items()}, ours, layout, ignored)


def import_pretext_weights(
    model: ContrastiveModel, path: str | Path, backbone_name: str = "the configured backbone"
) -> ImportReport:
    """Load backbone (and projection head when it fits) weights from ``path`` into ``model``.

    Every backbone weight must be present with the right shape, else ``CheckpointError``
    (the file belongs to another architecture or width). A head that does not fit (e.g. a
    torchvision classifier) is skipped; missing/unexpected keys are reported in one warning.
    """
    renamed = to_contrastive_keys(read_external_state(path))
    incoming, layout = renamed.tensors, renamed.layout
    own = model.state_dict()
    usable = {k: v for k, v in incoming.items() if k in own and own[k].shape == v.shape}
    wrong_shape = [k for k in incoming if k in own and own[k].shape != incoming[k].shape]
    bad_backbone = [k for k in own if k.startswith("backbone.") and k not in usable]
    if bad_backbone:
        shaped = sum(1 for k in bad_backbone if k in wrong_shape)
        raise CheckpointError(
            f"{path} ({layout} layout) does not fit {backbone_name}: {len(bad_backbone) - shaped} "
            f"backbone weights missing, {shaped} of another shape (first: {bad_backbone[0]}); "
            "pass a checkpoint of this architecture or set model.backbone / model.width to match it"
        )
    report = ImportReport(
        layout=layout,
        loaded=sorted(usable),
        missing=[k for k in own if k not in usable],
        unexpected=[renamed.source_names[k] for k in incoming if k not in usable],
        ignored=renamed.ignored,
    )
    if report.missing or report.unexpected:
        warnings.warn(report.summary(path), stacklevel=2)
    model.load_state_dict(usable, strict=False)
    return report

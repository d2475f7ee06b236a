"""One entry point for every backbone: registered ResNets by name, pretrained library models by prefix."""

from __future__ import annotations

from .backbones import BACKBONES, Backbone
from .pretrained import build_pretrained, is_pretrained


def build_backbone(
    name: str, width: int = 64, in_channels: int = 3, weights: str | None = None, input_size: int | None = None
) -> Backbone:
    """Instantiate ``name``: a registered backbone, or ``timm:``/``torchvision:`` pretrained ones.

    ``weights`` (a local file) and ``input_size`` apply to pretrained backbones only; without a
    file their weights come from the library's own download.
    """
    if is_pretrained(name):
        return build_pretrained(name, in_channels=in_channels, weights=weights, input_size=input_size)
    return BACKBONES.get(name)(width=width, in_channels=in_channels)


def list_backbones() -> list[str]:
    """Names accepted by ``build_backbone`` (plus any ``timm:<model>`` / ``torchvision:<model>``)."""
    return BACKBONES.names() + ["timm:<model>", "torchvision:<model>"]

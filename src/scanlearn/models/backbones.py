"""Backbones built on torchvision's ResNet, chosen by name from one registry.

``resnet18-cifar``: 3x3 stride-1 stem, no max-pool (32x32 and 28x28 inputs);
``resnet18-stl``: 3x3 stride-1 stem followed by a max-pool (96x96);
``resnet18`` / ``resnet50``: torchvision's standard ImageNet stem.
A width multiplier (``width``: channels of the first stage, 64 in the paper) makes narrow
ResNets for CPUs. Names with a ``timm:`` or ``torchvision:`` prefix resolve to pretrained
library models (``pretrained.py``); ``factory.build_backbone`` builds either.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from ..registry import Registry

BACKBONES: Registry[Callable[..., "Backbone"]] = Registry("backbone")


class Backbone(nn.Module):
    """A feature extractor mapping images (B, C, H, W) to vectors (B, ``out_dim``)."""

    out_dim: int


class ScalableResNet(ResNet, Backbone):
    """torchvision ResNet with a configurable stem, first-stage width and input channels."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        width: int = 64,
        in_channels: int = 3,
        stem: str = "imagenet",
    ) -> None:
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, 64
        self.conv1, self.maxpool = _make_stem(stem, in_channels, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Identity()
        self.out_dim = width * 8 * block.expansion
        _init_weights(self)

    def multiscale_features(self, x: torch.Tensor, grid: int = 1) -> torch.Tensor:
        """Outputs of stages 2-4, each average-pooled to ``grid`` x ``grid`` cells, flattened,
        L2-normalised, and concatenated (equal weight per stage).

        Mining on them finds neighbours that also agree on mid-level parts (collars, zips, straps);
        a grid above 1 also keeps where those parts are, which helps for centred objects.
        """
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        pooled = []
        for stage in (self.layer2, self.layer3, self.layer4):
            x = stage(x)
            cells = nn.functional.adaptive_avg_pool2d(x.float(), grid).flatten(1)
            pooled.append(nn.functional.normalize(cells, dim=1))
        return torch.cat(pooled, dim=1)

    def multiscale_widths(self, grid: int = 1) -> list[int]:
        """Widths of the three blocks ``multiscale_features`` concatenates: each stage doubles the channels."""
        return [self.out_dim // 4 * grid * grid, self.out_dim // 2 * grid * grid, self.out_dim * grid * grid]


def _make_stem(stem: str, in_channels: int, width: int) -> tuple[nn.Conv2d, nn.Module]:
    """First convolution and pooling for the given input scale."""
    if stem == "cifar":
        return nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.Identity()
    if stem == "stl":
        return nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.MaxPool2d(3, 2, 1)
    if stem == "imagenet":
        return nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), nn.MaxPool2d(3, 2, 1)
    raise ValueError(f"unknown stem {stem!r}; choose cifar, stl or imagenet")


def _init_weights(model: nn.Module) -> None:
    """He initialisation for convolutions, unit/zero for batch norm, as torchvision does."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _resnet(block, layers, stem):
    def build(width: int = 64, in_channels: int = 3) -> ScalableResNet:
        return ScalableResNet(block, layers, width=width, in_channels=in_channels, stem=stem)

    return build


BACKBONES.register("resnet18-cifar")(_resnet(BasicBlock, [2, 2, 2, 2], "cifar"))
BACKBONES.register("resnet18-stl")(_resnet(BasicBlock, [2, 2, 2, 2], "stl"))
BACKBONES.register("resnet18")(_resnet(BasicBlock, [2, 2, 2, 2], "imagenet"))
BACKBONES.register("resnet50")(_resnet(Bottleneck, [3, 4, 6, 3], "imagenet"))


class MultiscaleFeatures(nn.Module):
    """A registered ResNet whose output is its ``multiscale_features`` (what multiscale mining searched), so that
    heads on the mined space sit on a network like any other."""

    def __init__(self, backbone: ScalableResNet, grid: int = 1) -> None:
        super().__init__()
        self.backbone, self.grid = backbone, grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.multiscale_features(x, grid=self.grid)


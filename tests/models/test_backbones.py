"""Backbones: multiscale pooled features used for neighbour mining."""

import pytest
import torch

from scanlearn.models import build_backbone


def stage_outputs_by_hooks(backbone, x):
    """Outputs of layer2-4 captured by forward hooks during the ordinary forward pass."""
    captured = {}
    handles = [getattr(backbone, name).register_forward_hook(
        lambda module, args, out, name=name: captured.__setitem__(name, out)) for name in ("layer2", "layer3", "layer4")]
    backbone(x)
    for handle in handles:
        handle.remove()
    return [captured[name] for name in ("layer2", "layer3", "layer4")]


@pytest.mark.parametrize("name, size", [("resnet18-cifar", 20), ("resnet18-stl", 32), ("resnet50", 64)])
def test_multiscale_features_are_normalised_pooled_stage_outputs(name, size):
    torch.manual_seed(0)
    backbone = build_backbone(name, width=4, in_channels=1).eval()
    x = torch.randn(5, 1, size, size)
    with torch.no_grad():
        features = backbone.multiscale_features(x)
        expected = []
        for out in stage_outputs_by_hooks(backbone, x):
            pooled = out.mean((2, 3))
            expected.append(pooled / pooled.norm(dim=1, keepdim=True))
    widths = [e.shape[1] for e in expected]
    assert features.shape == (5, sum(widths))
    assert widths[-1] == backbone.out_dim
    assert backbone.multiscale_widths() == widths
    torch.testing.assert_close(features, torch.cat(expected, 1), rtol=1e-5, atol=1e-6)
    slices = features.split(widths, dim=1)
    for part in slices:
        torch.testing.assert_close(part.norm(dim=1), torch.ones(5))


def test_multiscale_grid_keeps_each_quadrant_separately():
    torch.manual_seed(0)
    backbone = build_backbone("resnet18-cifar", width=4, in_channels=1).eval()
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        features = backbone.multiscale_features(x, grid=2)
        expected = []
        for out in stage_outputs_by_hooks(backbone, x):
            b, c, h, w = out.shape
            quadrants = out.reshape(b, c, 2, h // 2, 2, w // 2).mean((3, 5)).flatten(1)
            expected.append(quadrants / quadrants.norm(dim=1, keepdim=True))
    assert features.shape == (3, 4 * (2 + 4 + 8) * 4)
    assert backbone.multiscale_widths(grid=2) == [e.shape[1] for e in expected]
    torch.testing.assert_close(features, torch.cat(expected, 1), rtol=1e-5, atol=1e-6)

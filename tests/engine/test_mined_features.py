"""Which features the neighbours are mined on."""

import numpy as np
import torch

from scanlearn.config import resolve
from scanlearn.data.images import TensorImageSet
from scanlearn.engine.mined_features import mining_features
from scanlearn.engine.splits import data_spec
from scanlearn.models import ContrastiveModel, build_backbone


def test_multiscale_mining_embeds_normalised_images_with_the_backbone_stages_on_the_configured_grid():
    torch.manual_seed(0)
    overrides = ["mine.features=multiscale", "mine.grid=3", "runtime.progress=false", "runtime.precision=32"]
    config = resolve("fashion-mnist", None, overrides)
    backbone = build_backbone("resnet18-cifar", width=4, in_channels=1)
    model = ContrastiveModel(backbone, backbone.out_dim, 16).eval()
    pixels = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    features = mining_features(model, TensorImageSet(pixels, np.zeros(6, int)), config)
    spec = data_spec(config)
    with torch.no_grad():
        expected = backbone.multiscale_features((pixels.float() / 255 - spec.mean[0]) / spec.std[0], grid=3)
    assert features.shape == (6, 4 * (2 + 4 + 8) * 9)
    np.testing.assert_allclose(features, expected.numpy(), rtol=1e-4, atol=1e-5)

"""Hand-made descriptors mined beside the learned features: values derived by hand for plain images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scanlearn.data.descriptors import colour_histogram, image_descriptors, small_pixels
from scanlearn.data.images import TensorImageSet
from scanlearn.errors import ConfigError
from scanlearn.mining import fit_whitening

pytestmark = pytest.mark.timeout(60)


def plain(rgb: tuple[int, int, int], side: int = 64) -> np.ndarray:
    """One image of a single colour, (1, side, side, 3) in [0, 1]."""
    return np.broadcast_to(np.array(rgb, dtype=np.float64) / 255, (1, side, side, 3)).copy()


def test_colour_histogram_puts_a_plain_image_in_its_one_bin():
    # red: hue 0, saturation 1 -> bin 3 of 4, value 1 -> bin 3 of 4: (0 * 4 + 3) * 4 + 3 = 15
    assert colour_histogram(plain((255, 0, 0)))[0].argmax() == 15
    # mid grey: hue 0, saturation 0, value 0.5 -> bin 2: (0 * 4 + 0) * 4 + 2 = 2
    grey = colour_histogram(plain((128, 128, 128)))[0]
    assert grey[2] == 1.0 and grey.sum() == pytest.approx(1.0)


def test_descriptor_widths_and_a_flat_image():
    images = TensorImageSet(torch.full((2, 3, 48, 48), 200, dtype=torch.uint8), np.array([-1, -1]))
    features, widths = image_descriptors(images, ("hog", "colour", "pixels"))
    # HOG at 64 px: 8 x 8 cells of 8 px, 7 x 7 blocks of 2 x 2 cells, 9 orientations: 7 * 7 * 4 * 9
    assert widths == [1764, 128, 3 * 32 * 32]
    assert features.shape == (2, sum(widths))
    assert np.abs(features[:, :1764]).max() == 0.0  # no gradient anywhere
    np.testing.assert_allclose(features[:, 1764 + 128:], 200 / 255, atol=1e-6)


def test_grey_images_get_the_same_descriptors_as_their_rgb_copy():
    grey = torch.randint(0, 256, (3, 1, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    one = image_descriptors(TensorImageSet(grey, np.full(3, -1)), ("hog", "pixels"))[0]
    three = image_descriptors(TensorImageSet(grey.expand(-1, 3, -1, -1).contiguous(), np.full(3, -1)), ("hog", "pixels"))[0]
    np.testing.assert_allclose(one, three, atol=1e-6)


def test_small_pixels_average_two_halves():
    image = np.zeros((1, 64, 64, 3))
    image[:, :, 32:] = 1.0  # left half black, right half white
    row = small_pixels(image).reshape(3, 32, 32)
    # halving the side: every small pixel but the two at the edge sees one colour only
    assert row[:, :, :15].max() == pytest.approx(0.0, abs=1e-6) and row[:, :, 17:].min() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(row[:, :, 15] + row[:, :, 16], 1.0, atol=1e-6)  # the edge, shared symmetrically


def test_unknown_descriptor_is_one_config_error():
    with pytest.raises(ConfigError, match="unknown descriptor 'sift'"):
        image_descriptors(TensorImageSet(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), np.array([-1])), ("sift",))


def test_balanced_blocks_weigh_the_same_and_keep_their_axes():
    rng = np.random.default_rng(0)
    big = rng.normal(size=(200, 4)) * np.array([1000.0, 100.0, 10.0, 1.0])
    small = rng.normal(size=(200, 3)) * 0.01
    mapped = fit_whitening(np.hstack([big, small]), [4, 3], scale_axes=False)(np.hstack([big, small]))
    np.testing.assert_allclose(np.linalg.norm(mapped[:, :4], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(mapped[:, 4:], axis=1), 1.0, rtol=1e-5)
    # without scaling, the dominant axis of the big block still dominates it (whitening would flatten it)
    assert np.abs(mapped[:, 0]).mean() > 0.9

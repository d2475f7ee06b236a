"""Tests for scanlearn.data.transforms: shapes, ranges, randomness, PIL/torchvision references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps
from torchvision.transforms.v2 import functional as TF

from scanlearn.data import transforms as T
from scanlearn.errors import ConfigError, DataError

MEAN3, STD3 = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def random_batch(batch: int, channels: int, size: int = 12, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, channels, size, size), dtype=torch.uint8,
                         generator=generator)


def smooth_batch(batch: int, channels: int, size: int = 12, seed: int = 0) -> torch.Tensor:
    """Images with gradients and a limited intensity range, so contrast ops have room to act."""
    generator = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, size)
    base = ramp.view(1, 1, 1, -1) * ramp.view(1, 1, -1, 1)
    noise = torch.rand(batch, channels, size, size, generator=generator)
    levels = 40 + 150 * (0.7 * base + 0.3 * noise)
    return levels.round().to(torch.uint8)


def to_pil(image: torch.Tensor) -> Image.Image:
    array = image.permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)


def from_pil(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def pil_reference(batch: torch.Tensor, pil_op) -> torch.Tensor:
    return torch.stack([from_pil(pil_op(to_pil(image))) for image in batch])


ALL_TRANSFORMS = {
    "eval": lambda: T.EvalTransform(MEAN3, STD3),
    "simclr": lambda: T.SimCLRAugment(MEAN3, STD3),
    "strong": lambda: T.StrongAugment(MEAN3, STD3, cutout=4),
}


# --- normalisation ---------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_eval_with_zero_mean_unit_std_is_exactly_x_over_255(channels):
    x = random_batch(4, channels)
    out = T.EvalTransform((0.0,), (1.0,))(x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert torch.equal(out, x.float() / 255)


def test_normalize_uses_per_channel_statistics():
    x = random_batch(2, 3)
    out = T.Normalize(MEAN3, STD3)(x)
    expected = (x.float() / 255 - torch.tensor(MEAN3).view(1, 3, 1, 1)) / torch.tensor(
        STD3).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected)


def test_normalize_averages_three_values_for_one_channel_and_broadcasts_one_value():
    gray = random_batch(2, 1)
    out = T.Normalize(MEAN3, STD3)(gray)
    expected = (gray.float() / 255 - sum(MEAN3) / 3) / (sum(STD3) / 3)
    torch.testing.assert_close(out, expected)
    rgb = random_batch(2, 3)
    torch.testing.assert_close(T.Normalize((0.5,), (0.25,))(rgb), (rgb.float() / 255 - 0.5) / 0.25)


def test_normalize_rejects_bad_statistics_and_inputs():
    with pytest.raises(ConfigError):
        T.Normalize((0.1, 0.2), (1.0,))
    with pytest.raises(ConfigError):
        T.Normalize((0.1,), (0.0,))
    with pytest.raises(DataError):
        T.EvalTransform((0.5,), (0.5,))(torch.zeros(2, 3, 4, 4))
    with pytest.raises(DataError):
        T.EvalTransform((0.5,), (0.5,))(torch.zeros(2, 2, 4, 4, dtype=torch.uint8))


# --- shapes, ranges, randomness ----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ALL_TRANSFORMS))
@pytest.mark.parametrize("channels", [1, 3])
def test_transform_output_shape_dtype_and_finite(name, channels):
    torch.manual_seed(0)
    x = random_batch(6, channels, size=16)
    out = ALL_TRANSFORMS[name]()(x)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("transform", [T.SimCLRAugment((0.5,), (0.5,)),
                                       T.StrongAugment((0.5,), (0.5,))])
@pytest.mark.parametrize("channels", [1, 3])
def test_unnormalised_augmented_output_lies_in_unit_interval(transform, channels):
    torch.manual_seed(1)
    out = transform.augment(random_batch(16, channels, size=16))
    assert out.dtype == torch.float32 and out.shape == (16, channels, 16, 16)
    assert out.min() >= 0 and out.max() <= 1
    assert out.std() > 0.05


@pytest.mark.parametrize("name", ["simclr", "strong"])
def test_identical_inputs_get_different_augmentations(name):
    torch.manual_seed(2)
    x = random_batch(1, 3, size=16).expand(8, -1, -1, -1).contiguous()
    out = ALL_TRANSFORMS[name]()(x)
    distinct = {tuple(sample.flatten().tolist()) for sample in out}
    assert len(distinct) == len(out)


@pytest.mark.parametrize("name", ["simclr", "strong"])
def test_same_seed_gives_same_output(name):
    x = random_batch(8, 3, size=16)
    transform = ALL_TRANSFORMS[name]()
    torch.manual_seed(3)
    first = transform(x)
    torch.manual_seed(3)
    second = transform(x)
    third = transform(x)
    assert torch.equal(first, second)
    assert not torch.equal(first, third)


@pytest.mark.parametrize("name", ["simclr", "strong"])
def test_channels_last_input_and_autocast_give_the_same_float32_output(name):
    x = random_batch(4, 3, size=16)
    transform = ALL_TRANSFORMS[name]()
    torch.manual_seed(4)
    reference = transform(x)
    torch.manual_seed(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = transform(x.contiguous(memory_format=torch.channels_last))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference)


# --- SimCLR augmentation -----------------------------------------------------------------------


def no_op_simclr(**overrides) -> T.SimCLRAugment:
    settings = dict(crop_scale=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0)
    settings.update(overrides)
    return T.SimCLRAugment(MEAN3, STD3, **settings)


@pytest.mark.parametrize("channels", [1, 3])
def test_simclr_without_augmentation_equals_eval(channels):
    torch.manual_seed(5)
    x = random_batch(4, channels)
    torch.testing.assert_close(no_op_simclr()(x), T.EvalTransform(MEAN3, STD3)(x),
                               atol=1e-5, rtol=0)


def test_simclr_flip_with_probability_one_mirrors_horizontally():
    torch.manual_seed(6)
    x = random_batch(4, 3)
    expected = torch.flip(T.EvalTransform(MEAN3, STD3)(x), dims=[3])
    torch.testing.assert_close(no_op_simclr(flip_p=1.0)(x), expected, atol=1e-5, rtol=0)


def test_simclr_grayscale_with_probability_one_gives_equal_channels():
    torch.manual_seed(7)
    out = no_op_simclr(grayscale_p=1.0).augment(random_batch(4, 3))
    torch.testing.assert_close(out[:, 0], out[:, 1], atol=0, rtol=0)
    torch.testing.assert_close(out[:, 1], out[:, 2], atol=0, rtol=0)


def test_simclr_crop_zooms_in():
    torch.manual_seed(8)
    boxes = T.sample_resized_crop_boxes(2000, 32, 24, (0.2, 0.5), (3 / 4, 4 / 3))
    centre_x, centre_y, box_w, box_h = boxes.unbind(1)
    area = box_w * box_h / (32 * 24)
    assert area.min() >= 0.2 - 1e-5 and area.max() <= 0.5 + 1e-5
    ratio = box_w / box_h
    assert ratio.min() >= 3 / 4 - 1e-5 and ratio.max() <= 4 / 3 + 1e-5
    assert (centre_x - box_w / 2).min() >= 0 and (centre_x + box_w / 2).max() <= 24 + 1e-4
    assert (centre_y - box_h / 2).min() >= 0 and (centre_y + box_h / 2).max() <= 32 + 1e-4


def test_resized_crop_of_quadrant_upsamples_that_quadrant():
    """Edge pixels of the output blend in the neighbours just outside the box (sub-pixel crop)."""
    x = torch.zeros(1, 1, 8, 8)
    x[..., :4, 4:] = 1.0
    box = torch.tensor([[6.0, 2.0, 4.0, 4.0]])
    out = T.resized_crop(x, box, torch.tensor([False]))
    inner = out[..., 1:-1, 1:-1]
    torch.testing.assert_close(inner, torch.ones_like(inner))
    assert out.min() >= 0.5


@pytest.mark.parametrize("channels", [1, 3])
def test_simclr_crop_size_resizes_the_whole_image_like_bilinear_interpolation(channels):
    """A full-image box with ``crop_size`` is plain bilinear down-sampling (no antialias)."""
    torch.manual_seed(10)
    x = random_batch(4, channels)
    out = no_op_simclr(crop_size=14).augment(x)
    expected = F.interpolate(x.float() / 255, size=14, mode="bilinear", align_corners=False)
    assert out.shape == (4, channels, 14, 14)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_gaussian_blur_matches_torchvision_per_sample_sigma():
    x = random_batch(3, 3).float() / 255
    sigmas = torch.tensor([0.3, 1.0, 2.0])
    out = T.gaussian_blur(x, sigmas, 7)
    expected = torch.stack([TF.gaussian_blur(image, [7, 7], [float(s), float(s)]) for image, s in zip(x, sigmas)])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_simclr_blur_with_probability_one_smooths_every_image_and_keeps_its_mean():
    torch.manual_seed(11)
    x = random_batch(6, 1)
    plain = no_op_simclr().augment(x)
    blurred = no_op_simclr(blur_p=1.0, blur_sigma=(1.0, 1.0)).augment(x)
    roughness = lambda img: (img[..., 1:] - img[..., :-1]).abs().mean(dim=(1, 2, 3))  # noqa: E731
    assert (roughness(blurred) < 0.6 * roughness(plain)).all()
    torch.testing.assert_close(blurred.mean(dim=(1, 2, 3)), plain.mean(dim=(1, 2, 3)), atol=0.02, rtol=0)


@pytest.mark.parametrize("jitter", [(0.4, 0.0, 0.0, 0.0), (0.0, 0.4, 0.0, 0.0),
                                    (0.0, 0.0, 0.4, 0.0), (0.0, 0.0, 0.0, 0.1)])
def test_each_jitter_part_changes_colour_but_keeps_range(jitter):
    torch.manual_seed(9)
    x = smooth_batch(8, 3)
    out = no_op_simclr(jitter=jitter, jitter_p=1.0).augment(x)
    assert out.min() >= 0 and out.max() <= 1
    assert (out - x.float() / 255).abs().amax(dim=(1, 2, 3)).min() > 1e-3


def test_hue_matches_torchvision_adjust_hue():
    x = random_batch(3, 3).float() / 255
    shifts = torch.tensor([-0.1, 0.05, 0.37])
    out = T.adjust_hue(x, shifts)
    expected = torch.stack([TF.adjust_hue(image, float(s)) for image, s in zip(x, shifts)])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_saturation_and_hue_are_identity_on_one_channel():
    x = random_batch(2, 1).float() / 255
    assert torch.equal(T.adjust_saturation(x, torch.tensor([0.0, 2.0])), x)
    assert torch.equal(T.adjust_hue(x, torch.tensor([0.1, -0.1])), x)


@pytest.mark.parametrize("kwargs", [dict(crop_scale=(0.0, 1.0)), dict(crop_scale=(0.8, 0.2)),
                                    dict(flip_p=1.5), dict(jitter=(0.4, 0.4, 0.4, 0.6)),
                                    dict(jitter=(-0.1, 0.0, 0.0, 0.0)), dict(crop_size=-1),
                                    dict(blur_p=1.5), dict(blur_sigma=(0.0, 1.0))])
def test_simclr_rejects_invalid_settings(kwargs):
    with pytest.raises(ConfigError):
        T.SimCLRAugment(MEAN3, STD3, **kwargs)


# --- strong ops against references ---------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_posterize_matches_pil(channels):
    x = random_batch(5, channels)
    bits = torch.tensor([1, 4, 5, 7, 8])
    out = T.posterize(x, bits)
    expected = torch.stack([from_pil(ImageOps.posterize(to_pil(image), int(b)))
                            for image, b in zip(x, bits)])
    assert torch.equal(out, expected)


@pytest.mark.parametrize("channels", [1, 3])
def test_solarize_matches_pil(channels):
    x = random_batch(4, channels)
    thresholds = [0, 77, 128, 255]
    out = T.solarize(x.float() / 255, torch.tensor(thresholds, dtype=torch.float32) / 255)
    expected = torch.stack([from_pil(ImageOps.solarize(to_pil(image), t))
                            for image, t in zip(x, thresholds)])
    assert torch.equal(T.to_uint8(out), expected)


@pytest.mark.parametrize("channels", [1, 3])
def test_autocontrast_matches_pil(channels):
    x = smooth_batch(4, channels)
    x[1] = 90
    out = T.autocontrast(x.float() / 255) * 255
    expected = pil_reference(x, ImageOps.autocontrast).float()
    assert (out - expected).abs().max() < 1.0 + 1e-3
    assert torch.equal(out[1], x[1].float())


@pytest.mark.parametrize("channels", [1, 3])
def test_equalize_matches_pil_and_flattens_the_histogram(channels):
    x = smooth_batch(4, channels, size=32)
    x[3] = 17
    out = T.equalize(x)
    assert torch.equal(out, pil_reference(x, ImageOps.equalize))
    assert torch.equal(out[3], x[3])
    quartile_counts = torch.stack([(out[0] // 64 == q).sum() for q in range(4)]).float()
    assert quartile_counts.min() > 0.15 * out[0].numel()
    assert quartile_counts.max() < 0.35 * out[0].numel()


@pytest.mark.parametrize(
    ("function", "pil_enhancer"),
    [(T.adjust_brightness, ImageEnhance.Brightness), (T.adjust_contrast, ImageEnhance.Contrast),
     (T.adjust_saturation, ImageEnhance.Color), (T.adjust_sharpness, ImageEnhance.Sharpness)],
)
def test_enhance_ops_match_pil(function, pil_enhancer):
    x = smooth_batch(3, 3)
    factors = torch.tensor([0.05, 0.5, 0.95])
    out = function(x.float() / 255, factors) * 255
    expected = torch.stack([from_pil(pil_enhancer(to_pil(image)).enhance(float(f)))
                            for image, f in zip(x, factors)]).float()
    assert (out - expected).abs().max() <= 2.0


def test_rotate_by_90_degrees_matches_pil():
    x = random_batch(2, 3, size=9)
    out = T.to_uint8(T.rotate(x.float() / 255, torch.tensor([90.0, -90.0])))
    expected = torch.stack([from_pil(to_pil(x[0]).rotate(90)),
                            from_pil(to_pil(x[1]).rotate(-90))])
    assert torch.equal(out, expected)


def test_rotate_keeps_the_centre_and_blanks_the_corners():
    x = torch.ones(1, 1, 15, 15)
    out = T.rotate(x, torch.tensor([30.0]))
    assert out[0, 0, 7, 7] == pytest.approx(1.0, abs=1e-5)
    assert out[0, 0, 0, 0] == 0


def test_shear_keeps_the_middle_row_or_column():
    x = random_batch(1, 3, size=11).float() / 255
    sheared_x = T.shear_x(x, torch.tensor([0.1]))
    torch.testing.assert_close(sheared_x[..., 5, :], x[..., 5, :], atol=1e-5, rtol=0)
    assert not torch.allclose(sheared_x[..., 0, :], x[..., 0, :], atol=1e-3)
    sheared_y = T.shear_y(x, torch.tensor([0.1]))
    torch.testing.assert_close(sheared_y[..., :, 5], x[..., :, 5], atol=1e-5, rtol=0)
    assert not torch.allclose(sheared_y[..., :, 0], x[..., :, 0], atol=1e-3)


def shifted_reference(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Move content right by dx and down by dy, filling with 0 (independent slicing version)."""
    height, width = x.shape[-2:]
    padded = torch.nn.functional.pad(x, (width, width, height, height))
    return padded[..., height - dy:2 * height - dy, width - dx:2 * width - dx]


def test_translate_by_whole_pixels_shifts_content():
    x = random_batch(2, 3).float() / 255
    out = T.translate(x, torch.tensor([3.0, -2.0]), torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(out[:1], shifted_reference(x[:1], 3, 0), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1:], shifted_reference(x[1:], -2, 1), atol=1e-5, rtol=0)


def test_flip_and_shift_equals_flip_then_padded_crop():
    x = random_batch(2, 1).float() / 255
    out = T.flip_and_shift(x, torch.tensor([True, False]), torch.tensor([2, -4]),
                           torch.tensor([-1, 3]))
    flipped = torch.flip(x[:1], dims=[3])
    torch.testing.assert_close(out[:1], shifted_reference(flipped, -2, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1:], shifted_reference(x[1:], 4, -3), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list(T.STRONG_OPS))
@pytest.mark.parametrize("channels", [1, 3])
def test_every_strong_op_keeps_shape_and_range(name, channels):
    torch.manual_seed(10)
    x = smooth_batch(6, channels).float() / 255
    out = T.apply_strong_op(x, name, torch.rand(6))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("name", [n for n in T.STRONG_OPS if n not in ("identity", "color")])
def test_every_strong_op_except_identity_changes_a_grayscale_image(name):
    x = smooth_batch(4, 1, size=32).float() / 255
    out = T.apply_strong_op(x, name, torch.tensor([0.0, 0.3, 0.7, 0.99]))
    assert (out - x).abs().amax(dim=(1, 2, 3)).max() > 1e-3


def test_strong_op_list_has_fourteen_ops_and_unknown_names_fail():
    assert len(T.STRONG_OPS) == 14
    with pytest.raises(ConfigError, match="posterize"):
        T.apply_strong_op(torch.zeros(1, 1, 4, 4), "cutout", torch.zeros(1))


def test_strong_without_ops_or_cutout_is_flip_and_crop_only():
    torch.manual_seed(11)
    x = random_batch(16, 3)
    out = T.StrongAugment((0.0,), (1.0,), n_ops=0, cutout=0, crop_padding=0)(x)
    reference = x.float() / 255
    for image, original in zip(out, reference):
        same = torch.allclose(image, original, atol=1e-5)
        mirrored = torch.allclose(image, torch.flip(original, dims=[2]), atol=1e-5)
        assert same or mirrored


def test_strong_ops_are_drawn_per_sample():
    torch.manual_seed(14)
    x = smooth_batch(1, 3, size=16).expand(70, -1, -1, -1).contiguous()
    out = T.StrongAugment((0.0,), (1.0,), n_ops=1, cutout=0, crop_padding=0).augment(x)
    original = x[0].float() / 255
    unchanged = [torch.allclose(image, original, atol=1e-5)
                 or torch.allclose(image, torch.flip(original, dims=[2]), atol=1e-5)
                 for image in out]
    assert 1 <= sum(unchanged) <= 20


# --- cutout --------------------------------------------------------------------------------------


def test_cutout_zeroes_a_square_of_the_given_side():
    x = torch.ones(2, 3, 20, 20)
    out = T.cutout(x, 6, torch.tensor([10, 0]), torch.tensor([8, 19]))
    expected_first = torch.ones(3, 20, 20)
    expected_first[:, 7:13, 5:11] = 0
    assert torch.equal(out[0], expected_first)
    expected_second = torch.ones(3, 20, 20)
    expected_second[:, 0:3, 16:20] = 0
    assert torch.equal(out[1], expected_second)


def test_strong_augment_applies_one_cutout_hole_per_image():
    torch.manual_seed(12)
    x = torch.full((32, 3, 16, 16), 255, dtype=torch.uint8)
    out = T.StrongAugment((0.0,), (1.0,), n_ops=0, crop_padding=0, cutout=6)(x)
    holes = (out == 0).all(dim=1)
    sizes = holes.sum(dim=(1, 2))
    assert sizes.min() >= 3 * 3 and sizes.max() == 36
    rows, columns = holes.any(dim=2).sum(1), holes.any(dim=1).sum(1)
    assert torch.equal(rows * columns, sizes)


def test_cutout_of_odd_side_removes_the_next_smaller_even_square():
    out = T.cutout(torch.ones(1, 1, 12, 12), torch.tensor([5]), torch.tensor([6]), torch.tensor([6]))
    expected = torch.ones(1, 1, 12, 12)
    expected[..., 4:8, 4:8] = 0
    assert torch.equal(out, expected)


def test_random_cutout_side_is_uniform_over_one_to_the_length():
    torch.manual_seed(20)
    sides = T.StrongAugment(MEAN3, STD3, cutout=16, cutout_random_side=True).cutout_sides(10_000, torch.device("cpu"))
    counts = torch.bincount(sides, minlength=17)
    assert counts[0] == 0 and counts[1:].sum() == 10_000
    chi_square = (((counts[1:].float() - 625.0) ** 2) / 625.0).sum()
    assert chi_square < 37.7  # 99.9 % quantile of chi-square with 15 degrees of freedom


def expected_cutout_fraction(size: int, sides: list[int]) -> float:
    """Mean fraction of a size x size image inside the hole [c - L//2, c + L//2)^2, by counting pixels."""
    fractions = []
    for side in sides:
        covered = [len(set(range(c - side // 2, c + side // 2)) & set(range(size))) for c in range(size)]
        fractions.append((sum(covered) / size) ** 2 / size**2)
    return sum(fractions) / len(fractions)


@pytest.mark.parametrize(("random_side", "sides"), [(True, list(range(1, 17))), (False, [16])])
def test_cutout_removes_the_expected_fraction_of_a_32_pixel_image(random_side, sides):
    torch.manual_seed(21)
    x = torch.full((10_000, 1, 32, 32), 255, dtype=torch.uint8)
    out = T.StrongAugment((0.0,), (1.0,), n_ops=0, crop_padding=0, cutout=16, cutout_random_side=random_side)(x)
    removed = float((out == 0).float().mean())
    expected = expected_cutout_fraction(32, sides)
    assert removed == pytest.approx(expected, abs=0.004)
    assert expected == pytest.approx(0.068 if random_side else 0.191, abs=0.002)


def test_posterize_keeps_four_to_seven_bits():
    white = torch.ones(400, 1, 2, 2)
    out = T.apply_strong_op(white, "posterize", torch.linspace(0, 0.9999, 400))
    levels = sorted({round(float(v) * 255) for v in out.flatten()})
    assert levels == [256 - 2 ** (8 - bits) for bits in (4, 5, 6, 7)]


def test_strong_ops_round_every_result_to_eight_bits():
    torch.manual_seed(22)
    out = T.StrongAugment((0.0,), (1.0,), n_ops=3, cutout=0, crop_padding=0).augment(smooth_batch(64, 3, size=16))
    torch.testing.assert_close(out * 255, (out * 255).round(), atol=1e-3, rtol=0)


def test_strong_crop_is_a_window_of_the_input_at_a_random_position():
    torch.manual_seed(23)
    x = torch.arange(8 * 8, dtype=torch.uint8).view(1, 1, 8, 8).expand(200, 3, 8, 8).contiguous()
    out = T.StrongAugment((0.0,), (1.0,), n_ops=0, cutout=0, crop_padding=0, crop_size=6)(x)
    assert out.shape == (200, 3, 6, 6)
    pixels = (out[:, 0] * 255).round().long()
    corners = set()
    for image in pixels:
        image = image if image[0, 0] < image[0, 1] else image.flip(-1)
        top, left = divmod(int(image[0, 0]), 8)
        assert torch.equal(image, x[0, 0, top:top + 6, left:left + 6].long())
        corners.add((top, left))
    assert corners == {(t, l) for t in range(3) for l in range(3)}


def test_eval_crop_is_the_centre_window():
    x = random_batch(2, 3, size=10)
    out = T.EvalTransform((0.0,), (1.0,), crop_size=6)(x)
    torch.testing.assert_close(out, x[..., 2:8, 2:8].float() / 255)
    with pytest.raises(DataError, match="data.resize"):
        T.EvalTransform((0.0,), (1.0,), crop_size=12)(x)


def test_strong_rejects_invalid_settings():
    with pytest.raises(ConfigError):
        T.StrongAugment(MEAN3, STD3, n_ops=-1)
    with pytest.raises(ConfigError):
        T.StrongAugment(MEAN3, STD3, cutout=2.5)


# --- composition and factory ---------------------------------------------------------------------


def test_multiview_returns_one_independent_view_per_transform():
    torch.manual_seed(13)
    x = random_batch(4, 3)
    views = T.MultiView(T.SimCLRAugment(MEAN3, STD3), T.SimCLRAugment(MEAN3, STD3),
                        T.EvalTransform(MEAN3, STD3))(x)
    assert isinstance(views, tuple) and len(views) == 3
    assert all(view.shape == x.shape for view in views)
    assert not torch.equal(views[0], views[1])
    assert torch.equal(views[2], T.EvalTransform(MEAN3, STD3)(x))


def test_build_transform_builds_each_name_and_rejects_unknown_ones():
    assert isinstance(T.build_transform("eval", MEAN3, STD3), T.EvalTransform)
    simclr = T.build_transform("simclr", MEAN3, STD3, grayscale_p=0.5)
    assert isinstance(simclr, T.SimCLRAugment) and simclr.grayscale_p == 0.5
    strong = T.build_transform("strong", MEAN3, STD3, cutout=8)
    assert isinstance(strong, T.StrongAugment) and strong.cutout == 8
    with pytest.raises(ConfigError, match="eval, simclr, strong"):
        T.build_transform("randaugment", MEAN3, STD3)
    with pytest.raises(ConfigError, match="n_ops"):
        T.build_transform("strong", MEAN3, STD3, n_op=2)

"""The from-scratch schedule picked from a folder's size and its images' size (read from their headers)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from scanlearn.config import load_preset, with_values
from scanlearn.data.decode import median_shorter_side
from scanlearn.schedule import (FROZEN_SCAN_LR, MIN_PRETEXT_EPOCHS, PRETEXT_PIXELS, SMALL_FOLDER, pretext_epochs,
                                size_schedule, training_side)


def write_images(folder, sides: list[tuple[int, int]]) -> list[str]:
    """One grey PNG per (width, height) in ``sides``; their paths."""
    folder.mkdir(exist_ok=True)
    paths = []
    for i, (w, h) in enumerate(sides):
        path = folder / f"{i}.png"
        Image.fromarray(np.zeros((h, w), np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_pretext_epochs_spend_a_fixed_budget_of_pixels_within_bounds():
    assert pretext_epochs(600, 64, 100) == round(PRETEXT_PIXELS / (600 * 64 * 64)) == 20
    assert pretext_epochs(600, 32, 100) == 80  # a quarter of the pixels per image: four times the epochs
    assert pretext_epochs(10 * PRETEXT_PIXELS // 64 ** 2, 64, 100) == MIN_PRETEXT_EPOCHS
    assert pretext_epochs(10, 64, 100) == 100
    assert pretext_epochs(10, 64, 7) == 7


def test_small_images_train_at_their_own_size_rounded_up():
    assert training_side(28, 64) == 32
    assert training_side(40, 64) == 48
    assert training_side(20, 64) == 32
    assert training_side(64, 64) == 64 and training_side(500, 64) == 64


def test_native_side_is_the_median_shorter_side(tmp_path):
    paths = write_images(tmp_path / "f", [(28, 40), (30, 28), (100, 90), (28, 28), (500, 26)])
    assert median_shorter_side(paths) == 28  # shorter sides 28, 28, 90, 28, 26


def test_small_folder_of_small_images_trains_heads_on_normalised_frozen_features():
    config, said = size_schedule(load_preset("photos"), 600, 28)
    assert config.data.image_size == 32 and config.pretext.epochs == 80
    assert config.scan.freeze_backbone and config.selflabel.freeze_backbone
    assert config.scan.normalize_features and config.scan.optim.lr == FROZEN_SCAN_LR
    assert config.selflabel.augment == config.pretext.augment
    assert said.startswith("schedule for 600 images: 32 px (the images are about 28 px)") and "\n" not in said


def test_large_folder_keeps_full_training_and_the_users_keys_stay():
    config, _ = size_schedule(load_preset("photos"), SMALL_FOLDER, 96)
    assert not config.scan.freeze_backbone and config.scan.epochs == load_preset("photos").scan.epochs
    assert config.data.image_size == 64 and not config.scan.normalize_features
    mine, said = size_schedule(with_values(load_preset("photos"), {"pretext.epochs": 3, "scan.epochs": 4,
                                                                   "data.image_size": 48}), 600, 28,
                               frozenset({"pretext.epochs", "scan.epochs", "data.image_size"}))
    assert (mine.pretext.epochs, mine.scan.epochs, mine.scan.freeze_backbone, mine.data.image_size) == (3, 4, False, 48)
    assert "pretext 3 epochs" in said and "px" not in said

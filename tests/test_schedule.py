"""The from-scratch schedule picked from a folder's size."""

from __future__ import annotations

from scanlearn.config import load_preset, with_values
from scanlearn.schedule import MIN_PRETEXT_EPOCHS, PRETEXT_VIEWS, SMALL_FOLDER, pretext_epochs, size_schedule


def test_pretext_epochs_spend_a_fixed_budget_of_images_within_bounds():
    assert pretext_epochs(600, 100) == round(PRETEXT_VIEWS / 600)
    assert pretext_epochs(10 * PRETEXT_VIEWS, 100) == MIN_PRETEXT_EPOCHS
    assert pretext_epochs(10, 100) == 100
    assert pretext_epochs(10, 7) == 7


def test_small_folder_trains_heads_on_frozen_pretext_features():
    config, said = size_schedule(load_preset("photos"), 600)
    assert config.pretext.epochs == round(PRETEXT_VIEWS / 600)
    assert config.scan.freeze_backbone and config.selflabel.freeze_backbone
    assert said.startswith("schedule for 600 images:") and "frozen" in said and "\n" not in said


def test_large_folder_keeps_full_training_and_the_users_keys_stay():
    config, _ = size_schedule(load_preset("photos"), SMALL_FOLDER)
    assert not config.scan.freeze_backbone and config.scan.epochs == load_preset("photos").scan.epochs
    mine, said = size_schedule(with_values(load_preset("photos"), {"pretext.epochs": 3, "scan.epochs": 4}), 600,
                               frozenset({"pretext.epochs", "scan.epochs"}))
    assert (mine.pretext.epochs, mine.scan.epochs, mine.scan.freeze_backbone) == (3, 4, False)
    assert "pretext 3 epochs" in said

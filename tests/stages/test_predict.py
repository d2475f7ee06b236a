"""Predict on new images: the warning when they are unlike everything the run was trained on."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from scanlearn.stages import predict
from scanlearn.stages.predict import UnlikeTrainingWarning, warn_if_unlike_training


def with_train_features(monkeypatch: pytest.MonkeyPatch, train: np.ndarray) -> None:
    """Make the run's saved mining features of the train split ``train``."""
    monkeypatch.setattr(predict, "train_mining_features", lambda run: (train, None))


def groups(rng: np.random.Generator, centres: np.ndarray, n: int) -> np.ndarray:
    """``n`` non-negative feature rows (as a ResNet's) scattered tightly around the given centres."""
    return np.abs(centres[rng.integers(0, len(centres), n)] + 0.05 * rng.normal(size=(n, centres.shape[1])))


def test_images_like_the_training_ones_pass_quietly(monkeypatch):
    rng = np.random.default_rng(0)
    centres = np.abs(rng.normal(size=(5, 32)))
    with_train_features(monkeypatch, groups(rng, centres, 300))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnlikeTrainingWarning)
        assert warn_if_unlike_training(None, groups(rng, centres, 200)) <= predict.UNLIKE_SHARE


def test_images_unlike_the_training_ones_are_warned_about(monkeypatch):
    rng = np.random.default_rng(0)
    centres = np.abs(rng.normal(size=(5, 32)))
    other = np.abs(rng.normal(size=(5, 32)))  # another kind of image entirely
    with_train_features(monkeypatch, groups(rng, centres, 300))
    with pytest.warns(UnlikeTrainingWarning, match=r"of 200 new images .* lie farther from every training image"):
        assert warn_if_unlike_training(None, groups(rng, other, 200)) > 0.9

"""Training schedule of a from-scratch folder run, picked from the folder's size and its images' size.

The ``photos`` preset's settings suit a few thousand photos of at least 64 px. Smaller images are
not enlarged past their own size (``training_side``: 28 px images train at 32 px, a quarter of the
cost). On a small folder every epoch is a handful of steps, so the pretext stage gets a fixed budget
of image pixels instead (``PRETEXT_PIXELS``: 600 images -> 20 epochs at 64 px, 80 at 32 px), between
``MIN_PRETEXT_EPOCHS`` and the preset's epochs; and below ``SMALL_FOLDER`` images SCAN and
self-labelling train their heads on the frozen pretext features (cached once, L2-normalised),
which costs seconds instead of another full training of the backbone. Keys the user set
explicitly are left alone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace

from .config import AugmentConfig, Config, OptimConfig, validate, with_values

PRETEXT_PIXELS = 12_000 * 64 * 64
MIN_PRETEXT_EPOCHS = 10
MIN_SIDE = 32
SIDE_STEP = 16
SMALL_FOLDER = 5_000
FROZEN_SCAN_EPOCHS = 100
FROZEN_SCAN_LR = 1.0
FROZEN_SELFLABEL_EPOCHS = 10
FROZEN_SELFLABEL_LR = 0.03


def training_side(native: int, preset_side: int) -> int:
    """The preset's side, or for smaller images their own side rounded up to ``SIDE_STEP`` (at least ``MIN_SIDE``)."""
    if native >= preset_side:
        return preset_side
    return max(MIN_SIDE, SIDE_STEP * math.ceil(native / SIDE_STEP))


def pretext_epochs(n_images: int, side: int, preset_epochs: int) -> int:
    """About ``PRETEXT_PIXELS`` pixels seen, at least ``MIN_PRETEXT_EPOCHS`` and at most ``preset_epochs``."""
    budget = PRETEXT_PIXELS / max(1, n_images * side * side)
    return int(min(preset_epochs, max(MIN_PRETEXT_EPOCHS, round(budget))))


FROZEN_SCAN_OPTIM = OptimConfig(name="sgd", lr=FROZEN_SCAN_LR, momentum=0.9, weight_decay=0.0, schedule="constant")


def frozen_scan_values() -> dict[str, object]:
    """SCAN's heads on frozen features, normalised, trained as the frozen recipe trains them (``FROZEN_SCAN_OPTIM``, up
    to ``FROZEN_SCAN_EPOCHS`` epochs), as config keys; the preset's heads, batch and augmentation stay.

    The time budget's frozen shape: the preset's own optimiser (Adam at 3e-4, 5 epochs) barely moves linear heads on
    fixed features (docs/tuning-log.md, "Heads on frozen features under a time budget").
    """
    return {"scan.freeze_backbone": True, "scan.epochs": FROZEN_SCAN_EPOCHS, "scan.normalize_features": True,
            **{f"scan.optim.{key}": value for key, value in asdict(FROZEN_SCAN_OPTIM).items()}}


def frozen_heads(config: Config) -> Config:
    """SCAN and self-labelling on cached frozen features: 50 linear heads on L2-normalised features, SGD.

    The pretrained presets' recipe (SGD, constant rate) at SCAN rate ``FROZEN_SCAN_LR``: at their 5.0 the
    heads collapsed into one cluster on a from-scratch backbone's features, normalised or not; with normalised
    features 1.0 and 2.0 gave the lowest validation SCAN loss. Self-labelling's views are augmented as in the
    pretext stage, the changes this backbone learnt to ignore (on RandAugment views its features lose the
    clusters), at rate ``FROZEN_SELFLABEL_LR``, the one of 0.03-1.0 with the highest neighbour kappa
    (label-free; docs/own-folder.md).
    """
    scan = replace(config.scan, freeze_backbone=True, epochs=FROZEN_SCAN_EPOCHS, batch_size=128, num_heads=50,
                   normalize_features=True,
                   optim=FROZEN_SCAN_OPTIM,
                   augment=AugmentConfig(kind="none"))
    selflabel = replace(config.selflabel, freeze_backbone=True, epochs=FROZEN_SELFLABEL_EPOCHS, batch_size=128,
                        balance=True, cached_views=4, augment=config.pretext.augment,
                        optim=OptimConfig(name="sgd", lr=FROZEN_SELFLABEL_LR, momentum=0.9, weight_decay=0.0,
                                          schedule="constant"))
    return validate(replace(config, scan=scan, selflabel=selflabel))


def size_schedule(config: Config, n_images: int, native: int, fixed: frozenset[str] = frozenset()
                  ) -> tuple[Config, str]:
    """``config``'s schedule fitted to ``n_images`` images of about ``native`` px (their shorter side), leaving
    what the user set (``fixed``: dotted keys), and a one-line account of it.

    Any key the user set in ``scan`` or ``selflabel`` keeps both stages as configured.
    """
    said = []
    sections = {key.split(".")[0] for key in fixed}
    if "data.image_size" not in fixed and config.data.image_size:
        side = training_side(native, config.data.image_size)
        if side != config.data.image_size:
            config = with_values(config, {"data.image_size": side})
            said.append(f"{side} px (the images are about {native} px)")
    if "pretext.epochs" not in fixed:
        epochs = pretext_epochs(n_images, config.data.image_size or native, config.pretext.epochs)
        config = with_values(config, {"pretext.epochs": epochs})
    said.append(f"pretext {config.pretext.epochs} epochs")
    if n_images < SMALL_FOLDER and not sections & {"scan", "selflabel"}:
        config = frozen_heads(config)
        said.append(f"SCAN and self-labelling on the frozen pretext features (fewer than {SMALL_FOLDER} images)")
    else:
        said.append(f"SCAN {config.scan.epochs} and self-labelling {config.selflabel.epochs} epochs")
    return config, f"schedule for {n_images} images: " + ", ".join(said)

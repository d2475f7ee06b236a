"""Training schedule of a from-scratch folder run, picked from the folder's size.

The ``photos`` preset's epochs suit a few thousand images. On a small folder every epoch is a
handful of steps, so the pretext stage gets a fixed budget of image views instead
(``PRETEXT_VIEWS``: 600 images -> 10 epochs), between ``MIN_PRETEXT_EPOCHS`` and the preset's
epochs; and below ``SMALL_FOLDER`` images SCAN and self-labelling train their heads on the frozen
pretext features (cached once, SCAN's frozen-backbone recipe), which costs seconds instead of
another full training of the backbone. Keys the user set explicitly are left alone.
"""

from __future__ import annotations

from dataclasses import replace

from .config import AugmentConfig, Config, OptimConfig, validate, with_values

PRETEXT_VIEWS = 6_000
MIN_PRETEXT_EPOCHS = 10
SMALL_FOLDER = 5_000
FROZEN_SCAN_EPOCHS = 30
FROZEN_SELFLABEL_EPOCHS = 10


def pretext_epochs(n_images: int, preset_epochs: int) -> int:
    """About ``PRETEXT_VIEWS`` images seen, at least ``MIN_PRETEXT_EPOCHS`` and at most ``preset_epochs``."""
    return int(min(preset_epochs, max(MIN_PRETEXT_EPOCHS, round(PRETEXT_VIEWS / max(1, n_images)))))


def frozen_heads(config: Config) -> Config:
    """SCAN and self-labelling on cached frozen features: 50 linear heads, SGD as in the pretrained presets."""
    scan = replace(config.scan, freeze_backbone=True, epochs=FROZEN_SCAN_EPOCHS, batch_size=128, num_heads=50,
                   optim=OptimConfig(name="sgd", lr=5.0, momentum=0.9, weight_decay=0.0, schedule="constant"),
                   augment=AugmentConfig(kind="none"))
    selflabel = replace(config.selflabel, freeze_backbone=True, epochs=FROZEN_SELFLABEL_EPOCHS, batch_size=128,
                        balance=True, cached_views=4,
                        optim=OptimConfig(name="sgd", lr=1.0, momentum=0.9, weight_decay=0.0, schedule="constant"))
    return validate(replace(config, scan=scan, selflabel=selflabel))


def size_schedule(config: Config, n_images: int, fixed: frozenset[str] = frozenset()) -> tuple[Config, str]:
    """``config``'s schedule fitted to ``n_images``, leaving what the user set (``fixed``: dotted keys), and a
    one-line account of it.

    Any key the user set in ``scan`` or ``selflabel`` keeps both stages as configured.
    """
    said = []
    sections = {key.split(".")[0] for key in fixed}
    if "pretext.epochs" not in fixed:
        config = with_values(config, {"pretext.epochs": pretext_epochs(n_images, config.pretext.epochs)})
    said.append(f"pretext {config.pretext.epochs} epochs")
    if n_images < SMALL_FOLDER and not sections & {"scan", "selflabel"}:
        config = frozen_heads(config)
        said.append(f"SCAN and self-labelling on the frozen pretext features (fewer than {SMALL_FOLDER} images)")
    else:
        said.append(f"SCAN {config.scan.epochs} and self-labelling {config.selflabel.epochs} epochs")
    return config, f"schedule for {n_images} images: " + ", ".join(said)

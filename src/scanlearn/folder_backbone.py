"""Which backbone a folder of the user's own images gets by default: pretrained when possible.

A frozen pretrained backbone clusters far better than one trained from scratch on a few hundred
images, and in minutes instead of hours. It is used when its weights are at hand: a local file
(``--weights``), the model library's download cache (timm: the Hugging Face hub cache; torchvision:
torch hub's checkpoints), or a download the user allows (its size is said first) or agrees to when
asked (``download_consent``). Otherwise the run trains from scratch (the ``photos`` preset) and says
so. The choice is saved in the run directory (``CHOICE_FILE``) so that a rerun resumes with the same
backbone.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, TypeVar

from .config import load_preset
from .data.decode import median_shorter_side
from .data.pathlists import read_path_list
from .download_consent import DownloadOffer
from .engine.run import Run
from .errors import ConfigError
from .models.pretrained import cached_weights, download_folders, download_megabytes
from .schedule import size_schedule
from .runs.artefacts import read_json, write_json

LOG = logging.getLogger(__name__)

PRETRAINED_PRESETS = ("dinov2-vits14", "clip-vitb16", "dinov2-vitb14", "resnet50-imagenet")
SCRATCH_PRESET = "photos"
CHOICE_FILE = "backbone.json"
T = TypeVar("T")


@dataclass(frozen=True)
class BackboneChoice:
    """The preset a folder run starts from, where its weights come from, and why.

    ``source`` is ``file`` (``--weights``), ``cache``, ``download`` or ``scratch``; ``weights`` the
    file to load (None: the library's download, or no pretrained weights at all).
    """

    preset: str
    backbone: str
    source: str
    weights: str | None
    reason: str

    @property
    def pretrained(self) -> bool:
        return self.source != "scratch"


def preset_backbone(preset: str) -> str:
    """The backbone named by ``preset``."""
    return load_preset(preset).model.backbone


def choose_backbone(weights: str | None = None, allow_download: bool = False,
                    candidates: tuple[str, ...] = PRETRAINED_PRESETS,
                    ask: Callable[[DownloadOffer], bool] | None = None) -> BackboneChoice:
    """The first pretrained preset whose weights are at hand, else its download when allowed or, asked through
    ``ask``, agreed to, else training from scratch.

    A model library that is not installed counts as weights not at hand.
    """
    first = preset_backbone(candidates[0])
    if weights:
        return BackboneChoice(candidates[0], first, "file", weights, f"frozen {first} with weights from {weights}")
    for preset in candidates:
        backbone = preset_backbone(preset)
        found = _installed(cached_weights, backbone)
        if found:
            return BackboneChoice(preset, backbone, "cache", found, f"frozen {backbone} with cached weights {found}")
    size = _installed(download_megabytes, first)
    offer = None if size is None else DownloadOffer(candidates[0], first, size, tuple(download_folders(first)))
    if offer is not None and (allow_download or (ask is not None and ask(offer))):
        return BackboneChoice(candidates[0], first, "download", None,
                              f"frozen {first}: downloading its weights (about {offer.megabytes:.0f} MB, once) into "
                              f"{offer.where}")
    how = f"--allow-download ({first}, {size:.0f} MB once)" if size is not None else "`pip install timm` and --allow-download"
    return BackboneChoice(
        SCRATCH_PRESET, preset_backbone(SCRATCH_PRESET), "scratch", None,
        f"no pretrained weights at hand (no --weights, none cached, downloads not allowed); for better results in "
        f"minutes rerun with {how} or --weights FILE",
    )


def _installed(lookup: Callable[[str], T], backbone: str) -> T | None:
    """``lookup(backbone)``, or None when the backbone's model library is not installed."""
    try:
        return lookup(backbone)
    except ConfigError:
        return None


@dataclass(frozen=True)
class FolderDefaults:
    """What a folder run without a preset adapts: the backbone choice, keeping the keys the user set."""

    choice: BackboneChoice
    fixed: frozenset[str] = frozenset()


def apply_folder_defaults(run: Run, defaults: FolderDefaults, record: bool = True) -> Run:
    """Say which backbone is used; from scratch, fit the schedule to the folder's size (the run returned has it);
    record both in the run."""
    config, choice = run.config, defaults.choice
    schedule = ""
    if choice.pretrained:
        LOG.info(f"backbone: {choice.reason}")
    else:
        paths = read_path_list(config.data.files)
        config, schedule = size_schedule(config, len(paths), median_shorter_side(paths), defaults.fixed)
        LOG.info(f"{schedule}")
    if record:
        write_json(run.directory / CHOICE_FILE, {**asdict(choice), "schedule": schedule})
    return run.with_config(config)


def read_choice(run_dir: str | Path) -> BackboneChoice | None:
    """The choice recorded in ``run_dir``, or None (a run not started this way); a damaged record is refused."""
    saved = read_json(Path(run_dir) / CHOICE_FILE)
    return BackboneChoice(**{f.name: saved[f.name] for f in fields(BackboneChoice)}) if saved else None

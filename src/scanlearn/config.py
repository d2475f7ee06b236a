"""Typed configuration: one frozen dataclass per stage, YAML presets, ``key=value`` overrides.

Defaults are the paper's CIFAR-10 settings (docs/method.md); a preset YAML under
``scanlearn/configs/`` lists only what differs. Where the authors' released code behaves
otherwise than scanlearn (docs/fidelity.md), the switch defaults to scanlearn's behaviour and the
paper presets choose the authors'. Unknown keys and wrongly typed values are errors, never
silently dropped. A config is validated once when it is made and never changed after: code that needs
other values makes a new one (``with_values``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import yaml

from .data.datasets import dataset_info
from .errors import ConfigError
from .registry import preset_names
from .models import BACKBONES
from .models.pretrained import is_pretrained
from .runs.artefacts import verified_bytes
from .runs.fsutil import atomic_write_bytes


@dataclass(frozen=True)
class DataConfig:
    """Which images, where they live and how they are loaded.

    ``files`` names a text file listing the images to use, one path per line: ``scanlearn run``
    writes it for image folders (readable files only) so every stage sees the same images.
    ``resize`` decodes image files at that side (shorter side resized, centre square) and the
    transforms then crop ``image_size`` from it: the centre for clean views, a random window for
    strong views (the authors' ImageNet preprocessing: 256, then 224). ``fit`` makes image files
    square: ``crop`` resizes the shorter side and cuts the centre (the authors' presets), ``pad``
    keeps the whole image on a neutral background (the ImageNet mean colour), then resizes; null
    means pad for image folders (``--data``), crop for every other dataset.
    """

    dataset: str = "cifar10"
    root: str | None = None
    download: bool = False
    image_size: int | None = None
    limit: int | None = None
    labels_from_folders: bool = False
    files: str | None = None
    num_workers: int = 2
    resize: int | None = None
    fit: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    """Backbone architecture; ``pretext_checkpoint`` imports external weights (e.g. MoCo v2).

    ``backbone`` may name a pretrained library model (``timm:<model>``, ``torchvision:<model>``,
    ``a+b`` to concatenate); its ``weights`` come from a local file (``+``-joined, one per model)
    or the library's download, and ``input_size`` overrides its pretrained input side.
    """

    backbone: str = "resnet18-cifar"
    width: int = 64
    proj_dim: int = 128
    pretext_checkpoint: str | None = None
    weights: str | None = None
    input_size: int | None = None


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and learning-rate schedule (cosine decays to ``lr * final_lr_ratio``).

    ``interval``: the schedule changes the rate every ``step`` or once per ``epoch`` (the authors').
    """

    name: str = "adam"
    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "constant"
    final_lr_ratio: float = 1e-3
    warmup_epochs: float = 0.0
    interval: str = "step"


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation: ``simclr`` (crop/flip/jitter/grey), ``strong`` (4 random ops + Cutout), ``none``.

    ``crop_size`` (simclr only) is the side of the output crops in pixels; 0 keeps the input size.
    ``blur_p`` / ``blur_sigma`` (simclr only): Gaussian blur probability and sigma range in pixels.
    ``cutout_random_side`` (strong only): draw the Cutout hole's side from 1..``cutout`` for every
    image, the authors' rule (the paper presets), instead of always ``cutout``.
    """

    kind: str = "simclr"
    crop_scale: tuple[float, float] = (0.2, 1.0)
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    n_ops: int = 4
    cutout: int = 16
    crop_padding: int = 4
    crop_size: int = 0
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    cutout_random_side: bool = False


@dataclass(frozen=True)
class PretextConfig:
    """Pretext features: ``simclr`` trains them here; ``moco_v2`` imports ``model.pretext_checkpoint``."""

    method: str = "simclr"
    epochs: int = 500
    batch_size: int = 512
    temperature: float = 0.1
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(name="sgd", lr=0.4, weight_decay=1e-4, schedule="cosine")
    )
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class MineConfig:
    """Nearest-neighbour mining on the pretext features.

    ``features``: ``projection`` (SimCLR head output), ``backbone`` (pooled last stage) or
    ``multiscale`` (pooled outputs of the last three ResNet stages, each L2-normalised, side by side;
    ``grid`` > 1 pools each stage over grid x grid cells, keeping where parts are in the image).
    ``index``: ``flat`` (exact) or ``ivf`` (inverted lists, for large N); ``nlist``/``nprobe``
    0 pick them from N. IVF reports its recall against exact search on ``recall_queries``
    sampled queries. ``whiten`` PCA-whitens the features before the search (each multiscale stage on its own,
    fitted on the train split), so that a few dominant directions no longer decide who is a neighbour.
    ``descriptors`` (``hog``, ``colour``, ``pixels``; ``data/descriptors.py``) are mined beside the learned
    features, each block centred, reduced to its principal axes and L2-normalised so that all weigh the same.
    """

    k: int = 20
    val_k: int = 5
    features: str = "projection"
    grid: int = 1
    whiten: bool = False
    descriptors: tuple[str, ...] = ()
    index: str = "flat"
    nlist: int = 0
    nprobe: int = 0
    recall_queries: int = 1000


@dataclass(frozen=True)
class ScanConfig:
    """SCAN clustering-head training.

    ``uniform_prior`` shifts the kept head's biases after training so that its mean prediction over
    the training images is uniform, the prior SCAN's entropy term assumes (balanced classes only).
    ``prior``: the cluster sizes the entropy term pulls towards, ``uniform`` (the paper's), ``estimated``
    from k-means on the mined features or ``graph`` from k-means sub-clusters merged along the mined
    neighbours (KL to those sizes; for imbalanced data).
    ``select_epoch`` keeps the epoch whose lowest head SCAN loss on the validation split (its mined
    neighbours, entropy weight 1; no labels) is lowest, else the last epoch. ``selection_split`` is the
    split scored for that and for the kept head: ``train`` (its ``mine.val_k`` nearest neighbours; the
    default, so the test split chooses nothing) or ``test`` (the authors' validation split, paper presets). ``separate_passes`` feeds
    anchors and neighbours through the network in two passes (batch-norm statistics per pass, the
    authors' way) instead of one. ``cached_views`` (frozen backbone): draw every anchor's and
    neighbour's features from that many cached views augmented with ``augment`` (0: clean features).
    ``normalize_features``: the heads see L2-normalised backbone features (as pretrained backbones give
    them), so the frozen-head learning rate does not depend on a from-scratch backbone's feature scale.
    ``head_features`` (frozen backbone): what the heads read, the ``backbone``'s pooled features or the ``mined``
    space, the rows the neighbours were searched among (``mine.features``, whitened as mining whitened them); the
    heads carry that map, so they apply to new images as they are.
    """

    epochs: int = 50
    batch_size: int = 128
    num_heads: int = 1
    entropy_weight: float = 5.0
    neighbor_includes_anchor: bool = True
    freeze_backbone: bool = False
    head_search: int = 0
    head_search_epochs: int = 10
    recalibrate_bn: bool = False
    uniform_prior: bool = False
    prior: str = "uniform"
    select_epoch: bool = True
    selection_split: str = "train"
    separate_passes: bool = False
    cached_views: int = 0
    normalize_features: bool = False
    head_features: str = "backbone"
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(kind="strong"))


@dataclass(frozen=True)
class SelfLabelConfig:
    """Self-labelling on confident predictions; ``uniform_prior`` as in ``ScanConfig``.

    ``prior``: class balancing gives every class equal weight (``uniform``, the paper's) or weight in
    proportion to the cluster sizes estimated as for ``ScanConfig.prior`` (``estimated``, ``graph``),
    matched to the clusters by size.
    ``pseudo_label_mode``: the network's mode for the weak-view predictions, ``train`` (batch
    statistics, the authors') or ``eval`` (running statistics). ``ema_write_back``: write the
    exponential average back into the training network after every step (the authors'), instead
    of keeping it apart as the final model.
    """

    epochs: int = 200
    batch_size: int = 1000
    threshold: float = 0.99
    min_confident_fraction: float = 0.0
    balance: bool = True
    ema: float = 0.0
    ema_write_back: bool = False
    pseudo_label_mode: str = "eval"
    freeze_backbone: bool = False
    cached_views: int = 4
    recalibrate_bn: bool = False
    uniform_prior: bool = False
    prior: str = "uniform"
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(kind="strong"))

    @property
    def embedded_views(self) -> int:
        """Augmented views worth embedding on a frozen backbone: an image is drawn once per epoch, so a run of
        fewer epochs than ``cached_views`` never needs them all (one epoch: exactly one view)."""
        return max(1, min(self.cached_views, self.epochs))


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how training runs: devices, precision, seeds, logging, checkpoints."""

    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    sync_batchnorm: bool = False
    dist_timeout_minutes: int = 120
    precision: str = "auto"
    channels_last: bool | str = "auto"  # auto: where it pays (CUDA, native-bf16 CPUs); see execution.py
    seed: int = 0
    deterministic: bool = False
    progress: bool = True
    checkpoint_every_n_steps: int = 0
    log_every_n_steps: int = 20


@dataclass(frozen=True)
class Config:
    """Everything one run needs; saved as ``config.yaml`` next to every checkpoint."""

    name: str = "cifar10"
    num_clusters: int | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretext: PretextConfig = field(default_factory=PretextConfig)
    mine: MineConfig = field(default_factory=MineConfig)
    scan: ScanConfig = field(default_factory=ScanConfig)
    selflabel: SelfLabelConfig = field(default_factory=SelfLabelConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) suitable for YAML/JSON."""
    return yaml.safe_load(yaml.safe_dump(_plain(dataclasses.asdict(config)), sort_keys=False))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def from_dict(data: dict[str, Any], base: Config | None = None) -> Config:
    """A new config: nested ``data`` overlaid on ``base`` (default: paper defaults), keys and types checked."""
    return _merged(base if base is not None else Config(), data, prefix="")


def _merged(target: Any, data: dict[str, Any], prefix: str) -> Any:
    """A copy of the dataclass ``target`` with ``data``'s values (nested sections merged, not replaced)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(type(target))
    changes = {}
    for key, value in data.items():
        if key not in hints:
            valid = ", ".join(prefix + k for k in hints)
            raise ConfigError(f"unknown config key {prefix + key!r}; valid keys here: {valid}")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _merged(current, value, prefix + key + ".")
        else:
            changes[key] = coerce(value, hints[key], prefix + key)
    return dataclasses.replace(target, **changes)


def nested(values: dict[str, Any]) -> dict[str, Any]:
    """``{'scan.epochs': 5, 'scan.batch_size': 64}`` -> ``{'scan': {'epochs': 5, 'batch_size': 64}}``."""
    tree: dict[str, Any] = {}
    for key, value in values.items():
        *sections, last = key.split(".")
        branch = tree
        for section in sections:
            branch = branch.setdefault(section, {})
        branch[last] = value
    return tree


def with_values(config: Config, values: dict[str, Any]) -> Config:
    """A new validated config: ``config`` with the dotted keys of ``values`` set (checked like ``--set``)."""
    return validate(from_dict(nested(values), config)) if values else config


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against type ``hint`` (converting int->float, list->tuple)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key} must be {_describe(hint)}, got {value!r}; fix the value (e.g. --set {key}=...)")
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}; fix it with --set {key}=[...]")
        return tuple(coerce(v, args[0], key) for v in value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key} must be a list of {len(args)} numbers, got {value!r}")
        return tuple(coerce(v, a, key) for v, a in zip(value, args))
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str) and _is_number(value):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is str and isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)
    if hint is bool and isinstance(value, bool):
        return value
    raise ConfigError(f"{key} must be {_describe(hint)}, got {value!r}; fix the value (e.g. --set {key}=...)")


def _is_number(text: str) -> bool:
    """Whether ``text`` is a plain number YAML left as a string (``1e-4`` lacks the dot YAML 1.1 wants)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _describe(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args and typing.get_origin(hint) is not tuple:
        return " or ".join(_describe(a) for a in args) + " or null"
    return getattr(hint, "__name__", str(hint))


def parse_override(text: str) -> dict[str, Any]:
    """``'scan.epochs=5'`` -> ``{'scan': {'epochs': 5}}`` (the value is parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. scan.epochs=5")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return nested({key.strip(): value})


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Parse a YAML config file into a dict (a run's own ``config.yaml`` verified against its recorded digest), with
    a one-line error when it is malformed or not UTF-8 text."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file")
    try:
        data = yaml.safe_load(verified_bytes(path).decode("utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start} cannot be decoded); save it as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"malformed YAML in {path}{where}; fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys")
    return data


def load_preset(name: str) -> Config:
    """The ``name`` preset on top of the paper defaults, validated."""
    if name not in preset_names():
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(preset_names())}")
    text = (resources.files("scanlearn") / "configs" / f"{name}.yaml").read_text()
    return validate(dataclasses.replace(from_dict(yaml.safe_load(text) or {}), name=name))


def resolve(
    preset: str | None = None, config_file: str | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Preset, then YAML file, then ``key=value`` overrides, each on top of the previous."""
    config = load_preset(preset) if preset else Config()
    if config_file:
        data = read_yaml(config_file)
        config = from_dict(data, config)
        if preset is None and "name" not in data:
            config = dataclasses.replace(config, name=Path(config_file).stem)
    for text in overrides:
        config = from_dict(parse_override(text), config)
    return validate(config)


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically: a crash leaves the old file or the new one)."""
    save_plain_config(to_dict(config), path)


def save_plain_config(plain: dict[str, Any], path: str | Path) -> None:
    """Write a config already made plain (``to_dict``) as YAML, atomically."""
    text = yaml.safe_dump(plain, sort_keys=False).encode()
    atomic_write_bytes(path, lambda f: f.write(text), record=True)


def load_config(path: str | Path) -> Config:
    """Read a config saved by ``save_config``, validated."""
    return saved_config(read_yaml(path))


def saved_config(data: dict[str, Any]) -> Config:
    """A validated config from a saved one's plain dict (``to_dict``: a run's ``config.yaml``, a ``SCAN.save`` file)."""
    return validate(from_dict(data))


# ----------------------------------------------------------------------------- validation
def _at_least(low: float) -> Callable[[Any], bool]:
    return lambda v: v >= low


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _one_of(*names: str) -> Callable[[Any], bool]:
    return lambda v: v in names


def _probability(v: float) -> bool:
    return 0.0 <= v <= 1.0


def parse_devices(devices: str | int) -> str | int | list[int]:
    """``auto``, a device count (``-1``: all) or a list of device indices from ``2`` / ``0,1``; ValueError otherwise."""
    text = str(devices).strip()
    if text == "auto":
        return text
    if "," in text:
        indices = [int(d) for d in text.split(",") if d.strip()]
        if not indices or min(indices) < 0:
            raise ValueError(text)
        return indices
    count = int(text)
    if count < 1 and count != -1:
        raise ValueError(text)
    return count


def _devices(value: str | int) -> bool:
    try:
        parse_devices(value)
    except ValueError:
        return False
    return True


OPTIMIZERS = ("sgd", "adam", "adamw")
PRIORS = ("uniform", "estimated", "graph")
SCHEDULES = ("constant", "cosine")
AUGMENTS = ("simclr", "strong", "none", "eval")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
PRECISIONS = ("auto", "32", "32-true", "64", "64-true", "16", "16-mixed", "16-true", "bf16", "bf16-mixed", "bf16-true")
RULES: list[tuple[str, Callable[[Any], bool], str]] = [
    ("num_clusters", _optional(_at_least(2)), "must be at least 2 (or null for the dataset's class count)"),
    ("data.limit", _optional(_at_least(1)), "must be a positive number of images (or null for all)"),
    ("data.image_size", _optional(_at_least(8)), "must be at least 8 pixels (or null)"),
    ("data.resize", _optional(_at_least(8)), "must be at least 8 pixels (or null: decode at data.image_size)"),
    ("data.num_workers", _at_least(0), "must be 0 or more"),
    ("data.fit", _optional(_one_of("crop", "pad")), "must be crop, pad or null (pad for image folders, else crop)"),
    ("model.width", _at_least(1), "must be a positive channel count"),
    ("model.proj_dim", _at_least(1), "must be a positive dimension"),
    ("pretext.epochs", _at_least(0), "must be 0 or more"),
    ("pretext.batch_size", _at_least(2), "must be at least 2 (contrastive pairs need negatives)"),
    ("pretext.temperature", lambda v: v > 0, "must be positive"),
    ("mine.k", _at_least(1), "must be at least 1"),
    ("mine.val_k", _at_least(1), "must be at least 1"),
    ("mine.features", _one_of("projection", "backbone", "multiscale"), "must be projection, backbone or multiscale"),
    ("mine.grid", _at_least(1), "must be at least 1 (1 pools each stage to one vector)"),
    ("mine.descriptors", lambda v: set(v) <= {"hog", "colour", "pixels"} and len(set(v)) == len(v),
     "must list distinct names among hog, colour, pixels"),
    ("mine.index", _one_of("flat", "ivf"), "must be flat (exact) or ivf (approximate)"),
    ("mine.nlist", _at_least(0), "must be 0 (automatic) or more"),
    ("mine.nprobe", _at_least(0), "must be 0 (automatic) or more"),
    ("mine.recall_queries", _at_least(0), "must be 0 (no recall check) or more"),
    ("scan.epochs", _at_least(1), "must be at least 1"),
    ("scan.batch_size", _at_least(1), "must be at least 1"),
    ("scan.num_heads", _at_least(1), "must be at least 1"),
    ("scan.entropy_weight", _at_least(0), "must be 0 or more"),
    ("scan.selection_split", _one_of("train", "test"), "must be train or test"),
    ("scan.prior", _one_of(*PRIORS), "must be uniform (equal clusters), estimated (k-means cluster sizes) or graph (merged along neighbours)"),
    ("selflabel.prior", _one_of(*PRIORS), "must be uniform (equal classes), estimated (k-means cluster sizes) or graph (merged along neighbours)"),
    ("scan.head_search", _at_least(0), "must be 0 (off) or a number of candidate heads"),
    ("scan.head_search_epochs", _at_least(1), "must be at least 1"),
    ("scan.cached_views", _at_least(0), "must be 0 (clean features) or a number of augmented views"),
    ("scan.head_features", _one_of("backbone", "mined"), "must be backbone (pooled features) or mined (the mined space)"),
    ("selflabel.epochs", _at_least(0), "must be 0 or more"),
    ("selflabel.batch_size", _at_least(1), "must be at least 1"),
    ("selflabel.threshold", lambda v: 0 < v < 1, "must be between 0 and 1 (exclusive), e.g. 0.99"),
    ("selflabel.ema", lambda v: 0 <= v < 1, "must be in [0, 1) (0 turns EMA off)"),
    ("selflabel.cached_views", _at_least(1), "must be at least 1"),
    ("selflabel.pseudo_label_mode", _one_of("train", "eval"), "must be train (batch statistics) or eval (running statistics)"),
    ("runtime.accelerator", _one_of(*ACCELERATORS), f"must be one of {', '.join(ACCELERATORS)}"),
    ("runtime.precision", _one_of(*PRECISIONS), f"must be one of {', '.join(PRECISIONS)}"),
    ("runtime.channels_last", lambda v: v in (True, False, "auto"), "must be auto, true or false"),
    ("runtime.devices", _devices, "must be auto, a device count of 1 or more (-1: all) or device indices such as 0,1 (--devices)"),
    ("runtime.num_nodes", _at_least(1), "must be at least 1"),
    ("runtime.dist_timeout_minutes", _at_least(1), "must be at least 1 minute"),
    ("runtime.seed", lambda v: 0 <= v < 2**32, "must be in [0, 2**32)"),
    ("runtime.checkpoint_every_n_steps", _at_least(0), "must be 0 (epoch ends only) or more"),
    ("runtime.log_every_n_steps", _at_least(1), "must be at least 1"),
]
for _stage in ("pretext", "scan", "selflabel"):
    RULES += [
        (f"{_stage}.optim.name", _one_of(*OPTIMIZERS), f"must be one of {', '.join(OPTIMIZERS)}"),
        (f"{_stage}.optim.lr", lambda v: v > 0, "must be positive"),
        (f"{_stage}.optim.momentum", lambda v: 0 <= v < 1, "must be in [0, 1)"),
        (f"{_stage}.optim.weight_decay", _at_least(0), "must be 0 or more"),
        (f"{_stage}.optim.schedule", _one_of(*SCHEDULES), f"must be one of {', '.join(SCHEDULES)}"),
        (f"{_stage}.optim.final_lr_ratio", _probability, "must be in [0, 1]"),
        (f"{_stage}.optim.warmup_epochs", _at_least(0), "must be 0 or more"),
        (f"{_stage}.optim.interval", _one_of("step", "epoch"), "must be step or epoch"),
        (f"{_stage}.augment.kind", _one_of(*AUGMENTS), f"must be one of {', '.join(AUGMENTS)}"),
        (f"{_stage}.augment.crop_scale", lambda v: 0 < v[0] <= v[1] <= 1, "must be [low, high] with 0 < low <= high <= 1"),
        (f"{_stage}.augment.flip_p", _probability, "must be a probability in [0, 1]"),
        (f"{_stage}.augment.jitter_p", _probability, "must be a probability in [0, 1]"),
        (f"{_stage}.augment.grayscale_p", _probability, "must be a probability in [0, 1]"),
        (f"{_stage}.augment.jitter", lambda v: min(v) >= 0, "must be 4 non-negative strengths"),
        (f"{_stage}.augment.n_ops", _at_least(0), "must be 0 or more"),
        (f"{_stage}.augment.cutout", _at_least(0), "must be 0 or more"),
        (f"{_stage}.augment.crop_padding", _at_least(0), "must be 0 or more"),
        (f"{_stage}.augment.crop_size", _at_least(0), "must be 0 (the input size) or a side in pixels"),
        (f"{_stage}.augment.blur_p", _probability, "must be a probability in [0, 1]"),
        (f"{_stage}.augment.blur_sigma", lambda v: 0 < v[0] <= v[1], "must be [low, high] with 0 < low <= high"),
    ]


_MISSING = object()


def _lookup(config: Any, key: str) -> Any:
    """Value at dotted ``key``, or ``_MISSING`` when the config has no such field."""
    value = config
    for part in key.split("."):
        value = getattr(value, part, _MISSING)
        if value is _MISSING:
            break
    return value


def validate(config: Config) -> Config:
    """Check ranges and names before any work starts, so a typo fails at once, not hours later."""
    for key, check, rule in RULES:
        value = _lookup(config, key)
        if value is not _MISSING and not check(value):
            raise ConfigError(f"{key} {rule}, got {value!r}; fix it with --set {key}=...")
    _check_head_search(config.scan)
    _check_priors(config)
    _check_multiscale(config)
    _check_mined_heads(config)
    _check_registered(config)
    return config


def _check_head_search(scan: ScanConfig) -> None:
    """The search must offer at least as many candidates as there are heads to start."""
    if 0 < scan.head_search < scan.num_heads:
        raise ConfigError(
            f"scan.head_search ({scan.head_search}) is smaller than scan.num_heads ({scan.num_heads}); "
            f"set --set scan.head_search={scan.num_heads} or more (0 turns the search off)"
        )


def _check_priors(config: Config) -> None:
    """A uniform bias shift undoes an estimated prior: the two cannot be combined."""
    for stage in ("scan", "selflabel"):
        section = getattr(config, stage)
        if section.prior != "uniform" and section.uniform_prior:
            raise ConfigError(
                f"{stage}.uniform_prior makes the clusters equally large, which undoes {stage}.prior={section.prior}; "
                f"add --set {stage}.uniform_prior=false (or --set {stage}.prior=uniform)"
            )


def _check_multiscale(config: Config) -> None:
    """Multiscale mining (and its grid) reads the inner stages of a registered ResNet; library models expose none."""
    if config.mine.grid > 1 and config.mine.features != "multiscale":
        raise ConfigError(
            f"mine.grid={config.mine.grid} applies to multiscale features only; "
            "add --set mine.features=multiscale or set mine.grid=1"
        )
    if config.mine.features == "multiscale" and is_pretrained(config.model.backbone):
        raise ConfigError(
            f"mine.features=multiscale needs a registered ResNet backbone, not {config.model.backbone!r}; "
            "use --set mine.features=backbone"
        )


def mined_on_backbone(config: Config) -> bool:
    """Whether the neighbours are mined on the backbone alone (not on the projection head, no descriptors beside it):
    the mined space frozen heads can read."""
    return config.mine.features != "projection" and not config.mine.descriptors


def _check_mined_heads(config: Config) -> None:
    """Heads on the mined space read cached rows of one network (no descriptors, no projection head) on a frozen backbone."""
    if config.scan.head_features != "mined":
        return
    if not (config.scan.freeze_backbone and config.selflabel.freeze_backbone):
        raise ConfigError("scan.head_features=mined trains heads on cached features of a frozen backbone; add --set "
                          "scan.freeze_backbone=true selflabel.freeze_backbone=true or set scan.head_features=backbone")
    if not mined_on_backbone(config):
        raise ConfigError("scan.head_features=mined needs neighbours mined on the backbone alone (mine.features "
                          "backbone or multiscale, no mine.descriptors); set scan.head_features=backbone")


def _check_registered(config: Config) -> None:
    """Dataset and backbone names must be registered (pretrained library names are checked later)."""
    dataset_info(config.data.dataset)
    backbone = config.model.backbone
    if ":" not in backbone and "+" not in backbone:
        BACKBONES.get(backbone)

"""Pretrained backbones from timm and torchvision (DINOv2, CLIP, ImageNet ResNets, ...).

A name is ``<source>:<model>``, e.g. ``timm:vit_small_patch14_dinov2.lvd142m`` or
``torchvision:resnet50``; ``a+b`` concatenates the L2-normalised features of several backbones
(as TURTLE does). Weights come from a local file or, when the machine is online, from the
library's own download; ``none`` means a seeded random initialisation (tests, timing). Preprocessing (input size, mean/std) follows the model's pretrained
config, so no pretext stage is needed.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError, UnsafeFileError
from ..runs.fsutil import load_without_code, unsafe_file_error
from ..registry import Registry
from .backbones import Backbone

CONCAT = "+"
SOURCE_MARK = ":"
NO_WEIGHTS = "none"


@dataclass(frozen=True)
class Preprocessing:
    """What a pretrained model expects: square input side and per-channel normalisation."""

    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class BackboneSource:
    """One model library: its preprocessing lookup and its feature-extractor builder."""

    preprocessing: Callable[[str], Preprocessing]
    build: Callable[[str, int, str | None], tuple[nn.Module, int]]
    version: Callable[[], str]
    cached: Callable[[str], Path | None]
    folder: Callable[[], Path]


SOURCES: Registry[BackboneSource] = Registry("backbone source")


def is_pretrained(name: str) -> bool:
    """True for ``source:model`` names (and concatenations of them)."""
    return SOURCE_MARK in name


def split_name(name: str) -> list[tuple[str, str]]:
    """``'timm:a+torchvision:b'`` -> ``[('timm', 'a'), ('torchvision', 'b')]``, checking each source."""
    parts = []
    for part in name.split(CONCAT):
        source, sep, model = part.strip().partition(SOURCE_MARK)
        if not sep or not model:
            raise ConfigError(
                f"backbone {part!r} in {name!r} needs a source prefix; write e.g. timm:{part} or torchvision:{part}"
            )
        SOURCES.get(source)
        parts.append((source, model))
    return parts


def split_weights(weights: str | None, count: int) -> list[str | None]:
    """One weights file (None = library download, ``none`` = random init) per concatenated backbone."""
    if not weights or weights == NO_WEIGHTS:
        return [weights or None] * count
    files = [w.strip() or None for w in weights.split(CONCAT)]
    if len(files) != count:
        raise ConfigError(
            f"model.weights names {len(files)} files for {count} backbones; give one per backbone joined by '+'"
        )
    return files


def preprocessing(name: str, input_size: int | None = None) -> Preprocessing:
    """Input size and normalisation for ``name``; a concatenation uses the first model's statistics."""
    specs = [SOURCES.get(source).preprocessing(model) for source, model in split_name(name)]
    size = input_size or max(s.input_size for s in specs)
    return Preprocessing(int(size), specs[0].mean, specs[0].std)


def library_version(name: str) -> str:
    """Versions of the libraries providing ``name`` (part of the feature-cache key)."""
    return " ".join(sorted({f"{s} {SOURCES.get(s).version()}" for s, _ in split_name(name)}))


def cached_weights(name: str) -> str | None:
    """Weights of ``name`` already in the model libraries' download caches (``+``-joined), or None if any is missing."""
    found = [SOURCES.get(source).cached(model) for source, model in split_name(name)]
    return CONCAT.join(str(path) for path in found) if all(found) else None


def download_folders(name: str) -> list[Path]:
    """The folders the model libraries of ``name`` download weights into (each once)."""
    return list(dict.fromkeys(SOURCES.get(source).folder() for source, _ in split_name(name)))


def download_megabytes(name: str) -> float:
    """Size of the float32 weights a download of ``name`` fetches, counted on a weight-free build."""
    total = 0
    for source, model_name in split_name(name):
        with torch.random.fork_rng(devices=[]):
            model, _ = SOURCES.get(source).build(model_name, SOURCES.get(source).preprocessing(model_name).input_size,
                                                 NO_WEIGHTS)
        total += sum(p.numel() for p in model.state_dict().values())
    return total * 4 / 1e6


def build_pretrained(
    name: str, in_channels: int = 3, weights: str | None = None, input_size: int | None = None
) -> Backbone:
    """Feature extractor for ``name`` taking images normalised with ``preprocessing(name)``."""
    parts = split_name(name)
    incoming = preprocessing(name, input_size)
    branches = []
    for (source, model_name), file in zip(parts, split_weights(weights, len(parts))):
        own = SOURCES.get(source).preprocessing(model_name)
        size = input_size or own.input_size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model, dim = SOURCES.get(source).build(model_name, size, file)
        branches.append(PretrainedBackbone(model, dim, Preprocessing(size, own.mean, own.std), incoming, in_channels))
    return branches[0] if len(branches) == 1 else ConcatBackbone(branches)


class PretrainedBackbone(Backbone):
    """A library model as a feature extractor: renormalise, resize, embed, L2-normalise."""

    def __init__(
        self, model: nn.Module, out_dim: int, own: Preprocessing, incoming: Preprocessing, in_channels: int
    ) -> None:
        super().__init__()
        self.model = model
        self.out_dim = out_dim
        self.input_size = own.input_size
        in_mean, in_std = _channel_stats(incoming, in_channels)
        own_mean, own_std = torch.tensor(own.mean), torch.tensor(own.std)
        self.renormalise = in_channels != 3 or not (torch.equal(in_mean, own_mean) and torch.equal(in_std, own_std))
        self.register_buffer("scale", (in_std / own_std).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", ((in_mean - own_mean) / own_std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.renormalise:
            x = x * self.scale.to(x.dtype) + self.shift.to(x.dtype)
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True, align_corners=False)
        return F.normalize(self.model(x).float(), dim=1)


class ConcatBackbone(Backbone):
    """Several pretrained backbones side by side; features are their L2-normalised outputs concatenated."""

    def __init__(self, branches: Sequence[PretrainedBackbone]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.out_dim = sum(b.out_dim for b in branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


def _channel_stats(spec: Preprocessing, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Statistics the incoming images were normalised with (averaged to one value for grey images)."""
    mean, std = torch.tensor(spec.mean), torch.tensor(spec.std)
    if channels == 1:
        return mean.mean().view(1), std.mean().view(1)
    return mean, std


def _library(module: str):
    """Import a model library, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"backbone source {module} is not installed; run `pip install {module}`") from None


def _download_failed(source: str, name: str, exc: Exception) -> CheckpointError:
    """One-line error for a failed library download (usually: the machine is offline)."""
    return CheckpointError(
        f"cannot download pretrained weights of {source}:{name} ({type(exc).__name__}; offline?); "
        f"pass a local weights file with --weights FILE"
    )


def _read_state(path: str, reader: Callable[[str], dict]) -> dict[str, torch.Tensor]:
    """Tensor dict of a weights file, with a one-line error when it is missing or unreadable."""
    if not Path(path).is_file():
        raise CheckpointError(f"weights file {path} does not exist; pass an existing file with --weights FILE")
    try:
        return reader(path)
    except Exception as exc:  # noqa: BLE001 - any unpickling/parsing failure means the file is unusable
        refusal = exc if isinstance(exc, UnsafeFileError) else unsafe_file_error(exc, path)
        if refusal is not None:
            raise UnsafeFileError(f"{refusal}; pass a weights file holding tensors only (e.g. .safetensors)") from None
        raise CheckpointError(f"cannot read weights file {path} ({type(exc).__name__}); is it a PyTorch or safetensors file?") from None


def _load_checked(model: nn.Module, state: dict[str, torch.Tensor], path: str, name: str, ignore: Sequence[str]) -> None:
    """Load ``state`` into ``model``: every model weight must be present; extras other than ``ignore`` warn."""
    state = {k: v for k, v in state.items() if not _under(k, ignore)}
    own = {k: v for k, v in model.state_dict().items() if not _under(k, ignore)}
    wrong = [k for k in state if k in own and own[k].shape != state[k].shape]
    missing = [k for k in own if k not in state]
    if wrong or missing:
        first = (wrong or missing)[0]
        raise CheckpointError(
            f"weights file {path} does not fit {name}: {len(missing)} weights missing, {len(wrong)} of another "
            f"shape (first: {first}); pass the weights of this exact model"
        )
    unexpected = [k for k in state if k not in own]
    if unexpected:
        warnings.warn(f"{path}: {len(unexpected)} weights not used by {name} (first: {unexpected[0]})", stacklevel=3)
    model.load_state_dict(state, strict=False)


def _under(key: str, prefixes: Sequence[str]) -> bool:
    """True when ``key`` belongs to one of the modules named in ``prefixes``."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)


# ----------------------------------------------------------------------------- timm
def _timm_preprocessing(name: str) -> Preprocessing:
    """Input size and mean/std from timm's pretrained config of ``name`` (no download)."""
    timm = _library("timm")
    cfg = timm.models.get_pretrained_cfg(name) if timm.is_model(timm.models.split_model_name_tag(name)[0]) else None
    if cfg is None:
        raise ConfigError(f"unknown timm model {name!r}; list the choices with timm.list_models()")
    return Preprocessing(int(cfg.input_size[-1]), tuple(cfg.mean), tuple(cfg.std))


def _timm_create(name: str, input_size: int, pretrained: bool) -> nn.Module:
    """``timm.create_model`` without classifier, at ``input_size`` when the architecture takes one."""
    timm = _library("timm")
    kwargs = {"num_classes": 0, "pretrained": pretrained}
    if input_size != _timm_preprocessing(name).input_size:
        try:
            return timm.create_model(name, img_size=input_size, **kwargs)
        except TypeError:
            pass
    return timm.create_model(name, **kwargs)


def _timm_build(name: str, input_size: int, weights: str | None) -> tuple[nn.Module, int]:
    """A timm model as feature extractor, weights from ``weights`` or timm's download."""
    if weights is None:
        try:
            model = _timm_create(name, input_size, pretrained=True)
        except (OSError, RuntimeError, ValueError) as exc:
            raise _download_failed("timm", name, exc) from None
        return model, int(model.num_features)
    timm = _library("timm")
    model = _timm_create(name, input_size, pretrained=False)
    if weights == NO_WEIGHTS:
        return model, int(model.num_features)
    state = _read_state(weights, timm.models.load_state_dict)
    convert = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if convert is not None:
        state = convert(state, model)
    classifier = model.pretrained_cfg.get("classifier") or ()
    _load_checked(model, state, weights, f"timm:{name}", [classifier] if isinstance(classifier, str) else list(classifier))
    return model, int(model.num_features)


def _timm_version() -> str:
    return _library("timm").__version__


def _timm_cached(name: str) -> Path | None:
    """timm's weights file of ``name`` in the Hugging Face hub cache (``HF_HUB_CACHE``), else None."""
    hub_id = _library("timm").models.get_pretrained_cfg(name).hf_hub_id
    if not hub_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    for file in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(hub_id, file, cache_dir=_timm_folder())
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def _timm_folder() -> Path:
    """Where timm's downloads go: the Hugging Face hub cache (``HF_HUB_CACHE``, else the hub's default)."""
    from huggingface_hub import constants

    return Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE)


SOURCES.register("timm")(BackboneSource(_timm_preprocessing, _timm_build, _timm_version, _timm_cached, _timm_folder))


# ----------------------------------------------------------------------------- torchvision
def _torchvision_models():
    """``torchvision.models`` (imported on first use)."""
    return _library("torchvision.models")


def _torchvision_preprocessing(name: str) -> Preprocessing:
    """Crop size and mean/std of the default torchvision weights of ``name`` (ImageNet's if none)."""
    models = _torchvision_models()
    if name not in models.list_models(module=models):
        raise ConfigError(f"unknown torchvision model {name!r}; list the choices with torchvision.models.list_models()")
    try:
        transform = models.get_model_weights(name).DEFAULT.transforms()
    except (ValueError, AttributeError):
        return Preprocessing(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    return Preprocessing(int(transform.crop_size[0]), tuple(transform.mean), tuple(transform.std))


def _last_linear(model: nn.Module) -> str:
    """Dotted name of the model's final ``nn.Linear`` (its classifier)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ConfigError("this torchvision model has no linear classifier to remove; pick a classification model")
    return names[-1]


def _replace(model: nn.Module, dotted: str, module: nn.Module) -> None:
    """Swap the submodule at ``dotted`` for ``module``."""
    parent, _, child = dotted.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _torchvision_state(path: str) -> dict[str, torch.Tensor]:
    """State dict of a ``.pth`` / ``.safetensors`` file (``state_dict`` / ``model`` key or the file itself)."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    data = load_without_code(path)
    for key in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict):
        raise TypeError("no state dict")
    return {k.removeprefix("module."): v for k, v in data.items()}


def _torchvision_build(name: str, input_size: int, weights: str | None) -> tuple[nn.Module, int]:
    """A torchvision classifier with its final linear layer removed; weights from file or download."""
    models = _torchvision_models()
    if weights is None:
        try:
            model = models.get_model(name, weights="DEFAULT")
        except (OSError, RuntimeError) as exc:
            raise _download_failed("torchvision", name, exc) from None
    else:
        model = models.get_model(name, weights=None)
    classifier = _last_linear(model)
    if weights not in (None, NO_WEIGHTS):
        _load_checked(model, _read_state(weights, _torchvision_state), weights, f"torchvision:{name}", [classifier])
    dim = int(model.get_submodule(classifier).in_features)
    _replace(model, classifier, nn.Identity())
    return model, dim


def _torchvision_version() -> str:
    return _library("torchvision").__version__


def _torchvision_cached(name: str) -> Path | None:
    """torchvision's default weights file of ``name`` in torch hub's checkpoint folder (``TORCH_HOME``), else None."""
    models = _torchvision_models()
    try:
        url = models.get_model_weights(name).DEFAULT.url
    except (ValueError, AttributeError):
        return None
    path = _torchvision_folder() / url.rsplit("/", 1)[-1]
    return path if path.is_file() else None


def _torchvision_folder() -> Path:
    """Where torchvision's downloads go: torch hub's checkpoint folder (``TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


SOURCES.register("torchvision")(BackboneSource(
    _torchvision_preprocessing, _torchvision_build, _torchvision_version, _torchvision_cached, _torchvision_folder,
))

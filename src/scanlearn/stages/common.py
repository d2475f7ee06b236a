"""What every stage shares: run-directory layout, data loading, trainers, artefact I/O."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger
from tqdm.auto import tqdm
from torch.utils.data import DataLoader, Dataset, Sampler

from .. import distributed
from ..config import AugmentConfig, Config, OptimConfig, parse_devices, save_config
from ..progress import epoch_callbacks
from ..data.datasets import (
    FileImageSet, ImageSet, dataset_info, is_image_folder, keep_listed, load_dataset, preload,
)
from ..data.transforms import build_transform
from ..execution import plan_execution, resolve_precision
from ..errors import CheckpointError, ConfigError, DataError, StageOrderError
from ..fsutil import atomic_write_bytes, load_verified, with_digest
from .resume import (
    AtomicCheckpointIO, BatchKey, ResumableSampler, RollingCheckpoint, find_resume_checkpoint, fit_resumable, preserve_logs,
)
from ..models.pretrained import is_pretrained, preprocessing

STAGES = ("pretext", "mine", "scan", "selflabel")
DONE_FILE = "done.json"


# ----------------------------------------------------------------------------- run directory
def stage_dir(run_dir: str | Path, stage: str) -> Path:
    """``run_dir/<stage>``, created on demand."""
    path = Path(run_dir) / stage
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_complete(run_dir: str | Path, stage: str) -> bool:
    """True when ``stage`` finished in ``run_dir`` (its completion marker exists)."""
    return (Path(run_dir) / stage / DONE_FILE).is_file()


def require_stage(run_dir: str | Path, stage: str, needed_by: str) -> Path:
    """The directory of the finished ``stage``, or a clear error telling which command to run."""
    if not is_complete(run_dir, stage):
        raise StageOrderError(
            f"{needed_by} needs the {stage} stage, which has not finished in {run_dir}; "
            f"run `scanlearn {stage} --run-dir {run_dir}` (or `scanlearn run`) first"
        )
    return Path(run_dir) / stage


def write_json(path: str | Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    atomic_write_bytes(path, lambda f: f.write(json.dumps(data, indent=2).encode()))


def read_json(path: str | Path) -> Any:
    """Parse a JSON file, or ``{}`` when it does not exist; a damaged one is a one-line ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        state = "empty" if not path.stat().st_size else f"truncated or not JSON: {type(exc).__name__}"
        raise CheckpointError(f"{path} is damaged ({state}); {rerun_hint(path)}") from None


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """Atomically save a NumPy array."""
    atomic_write_bytes(path, lambda f: np.save(f, array))


def save_torch(path: str | Path, obj: Any) -> None:
    """Atomically ``torch.save`` an object; a dict gets a digest so that corruption is caught on load."""
    payload = with_digest(obj) if isinstance(obj, dict) else obj
    atomic_write_bytes(path, lambda f: torch.save(payload, f))


class SavedState(dict):
    """A stage's saved dict whose missing entries raise a one-line ``CheckpointError`` (not ``KeyError``)."""

    def __init__(self, data: dict, path: Path) -> None:
        super().__init__(data)
        self.path = path

    def __missing__(self, key: str) -> Any:
        raise CheckpointError(f"{self.path} lacks its {key!r} entry, so it was not written by this stage; {rerun_hint(self.path)}")


def load_torch(path: str | Path) -> SavedState:
    """A stage's saved dict, loaded without running code, with a clear error for a missing, corrupt or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; run the stage that writes it")
    try:
        state = load_verified(path)
    except CheckpointError as exc:
        raise type(exc)(f"{exc}; {rerun_hint(path)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds no saved state of this stage; {rerun_hint(path)}")
    return SavedState(state, path)


def rerun_hint(path: Path) -> str:
    """How to rebuild a damaged artefact: rerun the stage whose directory holds it (else, for a run-level
    file, rewrite it without discarding the finished stages, or start over)."""
    stage = next((part for part in reversed(Path(path).parts[-3:-1]) if part in STAGES), None)
    if stage:
        return f"rerun `scanlearn {stage} --restart`"
    return "delete it and rerun the same command to rewrite it, or start over with `scanlearn run --restart`"


def load_npy(path: str | Path) -> np.ndarray:
    """``np.load`` with a clear error for a missing or damaged array file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; run the stage that writes it")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise CheckpointError(f"{path} is corrupt or truncated ({type(exc).__name__}); {rerun_hint(path)}") from None


def finish_stage(run_dir: str | Path, stage: str, config: Config, metrics: dict[str, Any]) -> None:
    """Write the stage's resolved config and metrics, then its completion marker (last)."""
    directory = stage_dir(run_dir, stage)
    save_config(config, directory / "config.yaml")
    write_json(directory / "metrics.json", metrics)
    write_json(directory / DONE_FILE, {"stage": stage})


def record_run_metrics(run_dir: str | Path, key: str, metrics: dict[str, float]) -> None:
    """Merge ``metrics`` under ``key`` into ``run_dir/metrics.json``."""
    path = Path(run_dir) / "metrics.json"
    data = read_json(path)
    data[key] = metrics
    write_json(path, data)


# ----------------------------------------------------------------------------- data
@dataclass
class DataSpec:
    """Static facts about the configured dataset, needed to build models and transforms."""

    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop: int = 0


def data_spec(config: Config) -> DataSpec:
    """Channels, size, normalisation and class count of ``config.data.dataset``.

    A pretrained backbone's own preprocessing replaces the dataset's mean/std, and image
    folders are loaded at the backbone's input size.
    """
    info = dataset_info(config.data.dataset)
    size = config.data.image_size or info.image_size
    crop = size if config.data.resize else 0
    if crop and config.data.resize < crop:
        raise ConfigError(f"data.resize ({config.data.resize}) is smaller than the {crop}-pixel input; "
                          f"set --set data.resize={crop} or more (or null)")
    spec = DataSpec(info.num_classes, info.channels, size, tuple(info.mean), tuple(info.std), crop)
    if not is_pretrained(config.model.backbone):
        return spec
    model = preprocessing(config.model.backbone, config.model.input_size)
    return replace(spec, image_size=load_image_size(config) or size, mean=model.mean, std=model.std)


def load_image_size(config: Config) -> int | None:
    """Side to decode images at: ``data.resize`` or ``data.image_size``, else a pretrained backbone's input size for folders."""
    if config.data.resize:
        return config.data.resize
    if config.data.image_size or not (is_pretrained(config.model.backbone) and is_image_folder(config.data.dataset)):
        return config.data.image_size
    return preprocessing(config.model.backbone, config.model.input_size).input_size


def decode_size(config: Config) -> int:
    """Side new images are decoded at to match training: ``data.resize`` (the transforms then crop), else the input side."""
    return load_image_size(config) or data_spec(config).image_size


def num_clusters(config: Config, images: ImageSet | None = None) -> int:
    """Clusters to find: the config's value, else the dataset's class count."""
    if config.num_clusters:
        return config.num_clusters
    classes = data_spec(config).num_classes or 0
    if classes < 2 and images is not None and images.classes:
        classes = len(images.classes)
    if classes < 2:
        raise DataError("the number of clusters is unknown for this data; pass --clusters K (or --set num_clusters=K)")
    return classes


def fit_mode(config: Config) -> str:
    """How image files are made square: ``data.fit``, else pad for image folders and crop otherwise."""
    return config.data.fit or ("pad" if is_image_folder(config.data.dataset) else "crop")


def find_split(config: Config, split: str) -> ImageSet:
    """The ``split`` of the configured dataset as found on disk, not yet filtered or decoded."""
    data = config.data
    images = load_dataset(
        data.dataset, split, root=data.root, download=data.download, image_size=load_image_size(config),
        labels_from_folders=data.labels_from_folders,
    )
    return images.fitted(fit_mode(config)) if isinstance(images, FileImageSet) else images


def load_split(config: Config, split: str) -> ImageSet:
    """The ``split`` of the configured dataset, cut to ``data.limit`` images when set."""
    data = config.data
    images = find_split(config, split)
    if data.files:
        images = keep_listed(images, data.files)
    if len(images) == 0:
        raise DataError(f"the {split} split of {data.dataset} is empty; check --data-root")
    if data.limit and data.limit < len(images):
        keep = np.sort(np.random.default_rng(0).permutation(len(images))[: data.limit])
        images = images.subset(keep)
    if is_image_folder(data.dataset):
        images = preload(images, progress=config.runtime.progress)
    return images


class BatchFetchDataset(Dataset):
    """Dataset indexed by a list of indices, returning whole batches (fast for in-memory data)."""

    def __init__(self, fetch: Callable[[np.ndarray], tuple], length: int) -> None:
        self.fetch = fetch
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: Sequence[int] | BatchKey) -> tuple:
        if not isinstance(key, BatchKey):
            return self.fetch(np.asarray(key, dtype=np.int64))
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(key.seed)
            return self.fetch(np.asarray(key.indices, dtype=np.int64))


def fetch_images(images: ImageSet) -> Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Batch fetcher ``indices -> (uint8 images, targets, indices)`` for any ImageSet."""
    targets = torch.as_tensor(np.asarray(images.targets), dtype=torch.long)
    tensor = getattr(images, "images", None)

    def fetch(idx: np.ndarray):
        index = torch.from_numpy(idx)
        if isinstance(tensor, torch.Tensor):
            batch = tensor[index]
        else:
            batch = torch.stack([images[int(i)][0] for i in idx])
        return batch, targets[index], index

    return fetch


class GlobalBatchSampler(Sampler[list[int]]):
    """Batches of indices where ``batch_size`` is the global batch, split over the ranks.

    Every epoch draws one permutation (seeded by ``seed + epoch``, identical on all ranks)
    and cuts it into global batches; rank r takes the r-th contiguous slice of each. Step b
    of a W-process run therefore sees exactly global batch b of a one-process run, in the
    same order once gathered. The world size is read at iteration time, so a loader built
    before Lightning creates the process group still shards. ``shard=False`` gives every
    rank all batches (inference).
    """

    def __init__(self, length: int, batch_size: int, shuffle: bool, seed: int = 0, drop_last: bool = False, shard: bool = True) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        self.length = length
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last and length > batch_size
        self.shard = shard
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` (Lightning calls this before every epoch)."""
        self.epoch = epoch

    def _world(self) -> tuple[int, int]:
        """(world size, rank) to split batches over; checks that the global batch splits evenly."""
        if not (self.shard and distributed.is_distributed()):
            return 1, 0
        world = distributed.world_size()
        if self.batch_size % world:
            raise ConfigError(
                f"batch size {self.batch_size} is the global batch and must be divisible by the "
                f"{world} processes; choose a multiple of {world}"
            )
        return world, distributed.rank()

    def _batch_sizes(self, world: int) -> list[int]:
        """Global size of each batch of an epoch (the last one cut to a multiple of ``world``)."""
        full, rest = divmod(self.length, self.batch_size)
        sizes = [self.batch_size] * full
        rest -= rest % world
        if rest and not self.drop_last:
            sizes.append(rest)
        return sizes

    def __len__(self) -> int:
        return len(self._batch_sizes(self._world()[0]))

    def __iter__(self) -> Iterator[list[int]]:
        world, rank = self._world()
        if self.shuffle:
            order = torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.length)
        start = 0
        for size in self._batch_sizes(world):
            part = size // world
            yield order[start + rank * part: start + (rank + 1) * part].tolist()
            start += size


def batch_loader(
    dataset: BatchFetchDataset, batch_size: int, shuffle: bool, num_workers: int, seed: int = 0,
    drop_last: bool = False, shard: bool = True,
) -> DataLoader:
    """DataLoader drawing whole batches from ``dataset``; ``batch_size`` is split over the ranks under DDP."""
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=ResumableSampler(GlobalBatchSampler(len(dataset), batch_size, shuffle, seed, drop_last, shard), seed),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


def image_loader(
    images: ImageSet, batch_size: int, shuffle: bool, config: Config, drop_last: bool = False, shard: bool = True
) -> DataLoader:
    """Loader of (uint8 images, targets, indices) batches; workers only help for file-backed data."""
    workers = 0 if isinstance(getattr(images, "images", None), torch.Tensor) else config.data.num_workers
    dataset = BatchFetchDataset(fetch_images(images), len(images))
    return batch_loader(dataset, batch_size, shuffle, workers, config.runtime.seed, drop_last, shard)


def augmenter(augment: AugmentConfig, spec: DataSpec) -> torch.nn.Module:
    """Batch augmentation module (uint8 in, normalised float out) for an ``AugmentConfig``.

    With ``spec.crop`` (images decoded larger than the input) every view is cut to that side.
    """
    if augment.kind in ("none", "eval"):
        return build_transform("eval", spec.mean, spec.std, crop_size=spec.crop)
    if augment.kind == "simclr":
        return build_transform(
            "simclr", spec.mean, spec.std, crop_scale=tuple(augment.crop_scale), flip_p=augment.flip_p,
            jitter=tuple(augment.jitter), jitter_p=augment.jitter_p, grayscale_p=augment.grayscale_p,
            crop_size=augment.crop_size or spec.crop, blur_p=augment.blur_p, blur_sigma=tuple(augment.blur_sigma),
        )
    return build_transform(
        augment.kind, spec.mean, spec.std, n_ops=augment.n_ops, cutout=augment.cutout, crop_padding=augment.crop_padding,
        cutout_random_side=augment.cutout_random_side, crop_size=spec.crop,
    )


# ----------------------------------------------------------------------------- devices and training
def build_trainer(config: Config, directory: Path, max_epochs: int, callbacks: list | None = None) -> L.Trainer:
    """Lightning Trainer for one stage: devices, precision, logs and per-epoch checkpoints."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    runtime = config.runtime
    checkpoint = RollingCheckpoint(directory / "checkpoints", runtime.checkpoint_every_n_steps)
    preserve_logs(directory / "logs")
    devices = parse_devices(runtime.devices)
    return L.Trainer(
        accelerator=runtime.accelerator,
        devices=devices,
        num_nodes=runtime.num_nodes,
        strategy=runtime.strategy,
        sync_batchnorm=runtime.sync_batchnorm,
        precision=resolve_precision(runtime),
        max_epochs=max_epochs,
        deterministic=runtime.deterministic,
        logger=CSVLogger(directory, name="logs", version=""),
        callbacks=[checkpoint, *(callbacks or []), *epoch_callbacks()],
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=runtime.progress,
        enable_model_summary=False,
        log_every_n_steps=runtime.log_every_n_steps,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        default_root_dir=directory,
    )


def resume_checkpoint(directory: Path) -> str | None:
    """The newest intact checkpoint of an interrupted stage, to resume from (damaged ones are skipped)."""
    found = find_resume_checkpoint(Path(directory) / "checkpoints")
    return str(found[0]) if found else None


def fit_stage(config: Config, directory: Path, module: L.LightningModule, loader: DataLoader, max_epochs: int,
              callbacks: list | None = None) -> L.Trainer:
    """Build the stage's trainer and fit, resuming exactly where an interrupted run stopped.

    Every submodule is put in train mode first: Lightning keeps the mode each submodule had, and
    a backbone loaded for inference would otherwise train with frozen batch-norm statistics.
    """
    module.train()
    trainer = build_trainer(config, directory, max_epochs, callbacks)
    fit_resumable(trainer, module, loader, directory / "checkpoints")
    return trainer


def make_optimizer(params: Iterator[torch.nn.Parameter], optim: OptimConfig) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov off) or Adam, with weight decay."""
    if optim.name == "sgd":
        return torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    if optim.name == "adam":
        return torch.optim.Adam(params, lr=optim.lr, weight_decay=optim.weight_decay)
    if optim.name == "adamw":
        return torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)
    raise ValueError(f"unknown optimiser {optim.name!r}; choose sgd, adam or adamw")


def lr_factor(step: int, total_steps: int, warmup_steps: int, optim: OptimConfig) -> float:
    """Multiplier of the base lr at ``step``: linear warm-up, then constant or cosine decay."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if optim.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    floor = optim.final_lr_ratio
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def optimizer_with_schedule(module: L.LightningModule, params, optim: OptimConfig) -> dict:
    """Lightning ``configure_optimizers`` result; the schedule advances every step or every epoch (``optim.interval``)."""
    optimizer = make_optimizer(params, optim)
    epochs = max(1, module.trainer.max_epochs)
    if optim.interval == "epoch":
        total, warmup = epochs, int(optim.warmup_epochs)
    else:
        total = int(module.trainer.estimated_stepping_batches)
        warmup = int(optim.warmup_epochs * max(1, total // epochs))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup, optim))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": optim.interval}}


@torch.inference_mode()
def embed(
    fn: Callable[[torch.Tensor], torch.Tensor],
    images: ImageSet,
    config: Config,
    transform: torch.nn.Module,
    batch_size: int = 512,
    device: torch.device | None = None,
) -> np.ndarray:
    """Apply ``fn`` (a model in eval mode) to every image after ``transform``; float32 numpy out."""
    plan = plan_execution(config.runtime)
    device = device or plan.device
    outputs = []
    loader = image_loader(images, batch_size, shuffle=False, config=config, shard=False)
    for batch, _, _ in tqdm(loader, desc="embedding", unit="batch", leave=False, disable=not config.runtime.progress):
        x = transform(batch.to(device, non_blocking=True))
        with plan.autocast():
            outputs.append(fn(x).float().cpu())
    return torch.cat(outputs).numpy()


def recalibrate_batch_norm(network: torch.nn.Module, images: ImageSet, config: Config, transform: torch.nn.Module) -> None:
    """Recompute the running statistics of every batch-norm layer of ``network`` as the average over one
    pass of ``images`` after ``transform``, and leave it in eval mode.

    Training gathers them on strongly augmented views; predictions are made on clean images.
    """
    layers = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
    embed(network.train(), images, config, transform)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    network.eval()


def embed_distributed(
    fn: Callable[[torch.Tensor], torch.Tensor],
    images: ImageSet,
    config: Config,
    transform: torch.nn.Module,
    batch_size: int = 512,
    to_all: bool = True,
) -> np.ndarray | None:
    """``embed`` with every rank embedding its contiguous shard; rows gathered in order to all ranks
    (or to rank 0 only, the others getting None, when ``to_all`` is False)."""
    if not distributed.is_distributed() or len(images) < distributed.world_size():
        return embed(fn, images, config, transform, batch_size)
    start, stop = distributed.shard_bounds(len(images))[distributed.rank()]
    local = embed(fn, images.subset(np.arange(start, stop)), config, transform, batch_size)
    return distributed.gather_rows(local, len(images), to_all)

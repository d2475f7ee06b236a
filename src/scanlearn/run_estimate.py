"""Estimate of a whole run's duration from a short measured step of each stage.

On a batch of the run's own images, with each stage's own augmentation and in the run's execution plan
(device, precision, layout), it times one embedding pass, the augmentation alone, a training pass
(forward + backward) of the backbone for SCAN and self-labelling, a whole pretext step (both views,
projection head, loss, optimiser step), and the descriptors mining adds. Two short real fits
(``fit_stage``) of heads on random features of the width the heads read, at each stage's batch size, time
a SCAN and a self-labelling step (Lightning's per-step logging and the optimiser step included), an
epoch's checkpoint and logs, and SCAN's per-epoch validation scoring; an epoch of the head search
(``scan.head_search`` linear heads, ``fit_linear_heads``) is timed the same way, on random features.
Each stage's cost is then its number of image passes times the measured cost per image, plus its steps
and epochs at the measured fit costs; feature views the run directory's cache already holds are not
embedded again. The block map of ``mine.descriptors`` and the neighbour search of each split are timed
on a sample of rows and scaled to the run's images. It reflects the machine's load at the time it measures.
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Callable

import lightning as L
import numpy as np
import torch

from .clustering.heads import fit_linear_heads, frozen_head_probabilities, head_losses, pair_dataset
from .clustering.kmeans import descriptor_widths
from .config import Config, MineConfig, with_values
from .data.datasets import ImageSet
from .data.descriptors import image_descriptors
from .engine import distributed
from .engine.embedding import EMBED_BATCH
from .engine.features import CLEAN, head_cache, rows
from .engine.mined_features import mines_cached_features
from .engine.loaders import augmenter, batch_loader
from .engine.run import Run
from .engine.splits import data_spec
from .engine.execution import ExecutionPlan, plan_execution
from .engine.trained import build_contrastive_model, eval_transform, heads_read_multiscale
from .engine.training import fit_stage, lightning_info_hidden, make_optimizer
from .losses import nt_xent_loss
from .mining import bf16_exact_neighbors, fit_whitening, search_neighbors, uses_bf16_search
from .models import build_backbone
from .models.heads import BlockWhitening, ClusterHeads
from .models.pretrained import NO_WEIGHTS, is_pretrained
from .runs.artefacts import is_complete
from .stages.scan import ScanModule, ValidationLoss

# Images a measured pass runs on. Per image, a pass over few images costs more than the run's batches do: a pretext
# training pass of ResNet-18 on fashion-mnist (2 AVX2 cores) took 2.05 ms an image on 32 images, 1.63 on 64, 1.21-1.50
# on 128 and 1.22-1.48 on 256, and a real epoch 1.29-1.58; at 32 the estimate put a 20-minute demo's pretext epochs
# at about 250 s where they took about 165 s.
SAMPLE = 128
# Embedding passes are timed on a whole batch of the size the stages embed at (``EMBED_BATCH``): per image, 512 at
# once cost 0.62-0.70 ms against 0.54-0.64 ms for 128 (fashion-mnist, 2 cores capped to AVX2), and the estimate on 128
# put mining's and self-labelling's embedding about 14% under what they took.
# The block map of ``mine.descriptors`` (``mining.fit_whitening`` on the learned and descriptor blocks side by side)
# is fitted by mining and again by the SCAN stage's k-means check. Its cost is timed on up to BLOCK_MAP_SAMPLE random
# rows and scaled by the number of images to the power BLOCK_MAP_POWER: on 2 AVX-512 cores (fp32), blocks 512 + 1,764
# + 128 + 3,072 wide took 0.08, 0.36, 0.89, 2.13 and 5.81 s on 100, 250, 500, 1,000 and 2,000 rows (about rows^1.4).
BLOCK_MAP_SAMPLE = 256
BLOCK_MAP_POWER = 1.4
# Mining searches every split's rows among themselves. The search is timed on up to SEARCH_SAMPLE random rows of the
# mined width, by the route the run's index takes, and scaled by the rows to the power SEARCH_POWER: exact search
# compares every pair (on 2 AVX-512 cores capped to AVX2, 224 wide: 0.25, 1.09 and 4.40 s on 4,096, 8,192 and 16,384
# rows, 53-59 s when scaled to 60,000, where the fashion-mnist run's 60,000 rows took 44 s); an inverted-list index
# compares each row with about sqrt(rows) cells' rows (not measured: an approximate scaling).
SEARCH_SAMPLE = 4096
SEARCH_POWER = {"flat": 2.0, "ivf": 1.5}
PROBE_STEPS = 2  # training steps per epoch of a fit probe
# epochs of a fit probe: the first warms up, the quickest of the others is timed (a probe of milliseconds, scaled to a
# whole epoch of 60,000 images, turns one stall into seconds: one 2521c90 demo read 9.2 s an epoch for 1.6 s)
PROBE_EPOCHS = 3


@dataclass(frozen=True)
class FitCosts:
    """Measured seconds of a stage's fit of heads on cached features: the trainer's start and end, one training step,
    an epoch's own overhead (checkpoint, logs) and the validation scoring per image (zero: not measured)."""

    start: float = 0.0
    step: float = 0.0
    epoch: float = 0.0
    score: float = 0.0


@dataclass(frozen=True)
class StepCosts:
    """Measured seconds per image: embedding (no gradient), one training pass and the augmentation alone under each
    stage's augmentation; fits of heads per stage; and the feature-cache entries the run directory already holds."""

    embed: float
    train: dict[str, float]
    describe: float = 0.0  # ``mine.descriptors`` of one image
    augment: dict[str, float] = field(default_factory=dict)
    fits: dict[str, FitCosts] = field(default_factory=dict)  # "scan", "selflabel"
    held: dict[str, int] = field(default_factory=dict)  # "clean": 0/1; "scan", "selflabel": augmented views cached
    block_map: float = 0.0  # one fit of the descriptors' block map on the run's images
    search: float = 0.0  # the neighbour search of the mined rows, per row to the power SEARCH_POWER[mine.index]
    test_images: int = 0  # images of the test split, which the stages embed to score and mining searches


def sample_batch(images: ImageSet, size: int = SAMPLE) -> torch.Tensor:
    """The first ``size`` images as one uint8 batch (N, C, H, W)."""
    return torch.stack([images[i][0] for i in range(min(size, len(images)))])


def measure(run: Run) -> StepCosts:
    """Seconds per image of an embedding pass, of each stage's augmentation and training pass, of the descriptors;
    the fits of heads; and which feature views the run's feature cache holds already. Every pass runs as the stages
    run theirs: on the run's device, in the precision and layout of its execution plan."""
    config, spec, images, tests = run.config, run.spec, run.split("train"), run.split("test")
    model = config.model
    plan = plan_execution(config.runtime)
    backbone = plan.apply(build_backbone(model.backbone, width=model.width, in_channels=spec.channels,
                                         weights=NO_WEIGHTS if is_pretrained(model.backbone) else None,
                                         input_size=model.input_size).to(plan.device))
    plain = eval_transform(spec)
    backbone.eval()
    whole = sample_batch(images, EMBED_BATCH).to(plan.device)
    with torch.inference_mode():
        embed = timed(lambda: settled(plan, lambda: embedded(backbone, plain(whole), plan))) / len(whole)
    batch = whole[:SAMPLE]
    backbone.train()
    train, augment = {}, {}
    for stage in ("pretext", "scan", "selflabel"):
        transform = augmenter(getattr(config, stage).augment, spec)
        augment[stage] = timed(lambda: settled(plan, lambda: transform(batch))) / len(batch)
        if stage != "pretext":
            passed = timed(lambda: settled(plan, lambda: backward_pass(backbone, transform(batch), plan)))
            train[stage] = passed / len(batch)
    # per view (the stage's formula counts both); a pretrained backbone has no pretext to train
    train["pretext"] = 0.0 if is_pretrained(model.backbone) else pretext_step(run, plan, batch) / 2
    describe, block_map = 0.0, 0.0
    if config.mine.descriptors:
        sample = images.subset(list(range(len(batch))))
        described: list[tuple[np.ndarray, list[int]]] = []
        describe = timed(lambda: described.append(image_descriptors(sample, config.mine.descriptors))) / len(batch)
        block_map = block_map_probe([backbone.out_dim, *described[-1][1]], len(images))
    search = search_probe(mined_width(config, backbone), len(images), config.mine)
    fits = head_fits(config, *heads_input(config, backbone))
    return StepCosts(embed, train, describe, augment, fits, held_views(run), block_map, search, len(tests))


def settled(plan: ExecutionPlan, step: Callable[[], object]) -> object:
    """``step()``, returning only once the device has finished it (CUDA runs asynchronously)."""
    result = step()
    if plan.device.type == "cuda":
        torch.cuda.synchronize(plan.device)
    return result


def embedded(network: torch.nn.Module, views: torch.Tensor, plan: ExecutionPlan) -> torch.Tensor:
    """A forward pass in the plan's precision."""
    with plan.autocast():
        return network(views)


def backward_pass(network: torch.nn.Module, views: torch.Tensor, plan: ExecutionPlan) -> None:
    """A forward pass in the plan's precision and the backward pass of a stand-in loss."""
    embedded(network, views, plan).float().sum().backward()


def pretext_step(run: Run, plan: ExecutionPlan, batch: torch.Tensor) -> float:
    """Seconds per image of one whole pretext training step on ``batch``: its two augmented views, the contrastive
    model's forward and backward pass, the NT-Xent loss and the optimiser's step, as the stage trains (the
    backbone's passes alone leave out the projection head, the loss and the optimiser)."""
    config = run.config
    model = plan.apply(build_contrastive_model(config, run.spec).to(plan.device)).train()
    optimizer = make_optimizer(model.parameters(), config.pretext.optim)
    transform = augmenter(config.pretext.augment, run.spec)

    def step() -> None:
        z1, z2 = embedded(model, torch.cat([transform(batch), transform(batch)]), plan).float().chunk(2)
        nt_xent_loss(z1, z2, config.pretext.temperature).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return timed(lambda: settled(plan, step)) / len(batch)


def run_seconds(run: Run) -> dict[str, float]:
    """Estimated seconds of each stage of ``run``, measured on its own training images."""
    return stage_seconds(run.config, len(run.split("train")), measure(run))


def timed(step: Callable[[], object], repeats: int = 2) -> float:
    """Wall seconds of the fastest of ``repeats`` calls of ``step`` (the first also warms up)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - started)
    return best


class Timed:
    """``fn`` that records the wall seconds of each call (the probe's validation scoring)."""

    def __init__(self, fn: Callable[[], list[float]]) -> None:
        self.fn = fn
        self.seconds: list[float] = []

    def __call__(self) -> list[float]:
        started = time.perf_counter()
        result = self.fn()
        self.seconds.append(time.perf_counter() - started)
        return result


class FitClock(L.Callback):
    """When each epoch of a fit starts and training ends, and each training batch's seconds per epoch: from the end
    of the batch before (or the epoch's start) to its own end, so that fetching the batch is part of its step."""

    def __init__(self) -> None:
        self.marks: list[float] = []
        self.batches: list[list[float]] = []
        self.last_end = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.marks.append(time.perf_counter())
        self.batches.append([])
        self.last_end = self.marks[-1]

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        ended = time.perf_counter()
        self.batches[-1].append(ended - self.last_end)
        self.last_end = ended

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.marks.append(time.perf_counter())


def heads_input(config: Config, backbone: torch.nn.Module) -> tuple[int, BlockWhitening | None]:
    """The width of the rows frozen heads read and a stand-in of the fixed map they apply first: the backbone's
    features, or the mined space's rows (multiscale, or the pooled backbone's) through a whitening of the same blocks
    (its cost, not its values)."""
    if config.scan.head_features != "mined":
        return backbone.out_dim, None
    widths = backbone.multiscale_widths(config.mine.grid) if heads_read_multiscale(config) else [backbone.out_dim]
    return sum(widths), BlockWhitening(widths, widths)


def head_fits(config: Config, dim: int, input_map: BlockWhitening | None = None) -> dict[str, FitCosts]:
    """Fit costs of SCAN's heads (``scan.num_heads``, each logged, validation scoring), of self-labelling's single
    head (stood in for by one unlogged SCAN head: same trainer, step and checkpoint, a few values logged) and, with
    ``scan.head_search``, of the search's heads ("search").

    Self-labelling's probe runs first and takes the process's first-trainer costs; SCAN's start serves both. None in a
    multi-process run: a trainer of the estimate's own would meet the run's process group.
    """
    if distributed.wants_processes(config.runtime) or distributed.is_distributed():
        return {}
    probe = with_values(config, {"runtime.devices": 1, "runtime.num_nodes": 1, "runtime.strategy": "auto",
                                 "runtime.progress": False})
    single = fit_probe(probe, dim, 1, config.selflabel.batch_size, scored=False, input_map=input_map)
    scan = fit_probe(probe, dim, config.scan.num_heads, config.scan.batch_size, scored=True, input_map=input_map)
    fits = {"scan": scan, "selflabel": FitCosts(scan.start, single.step, single.epoch)}
    if config.scan.head_search:
        fits["search"] = head_search_probe(probe, dim, input_map)
    return fits


def head_search_probe(config: Config, dim: int, input_map: BlockWhitening | None = None) -> FitCosts:
    """Seconds of one step of the head search (``scan.head_search`` heads trained by ``fit_linear_heads``, no
    trainer) and of scoring one row under every candidate, on ``PROBE_STEPS`` batches of random ``dim``-wide rows;
    the quickest of ``PROBE_EPOCHS`` one-epoch fits counts."""
    scan = config.scan
    n = PROBE_STEPS * scan.batch_size
    generator = np.random.default_rng(config.runtime.seed)
    features = generator.standard_normal((n, dim), dtype=np.float32)
    neighbors = generator.integers(n, size=(n, config.mine.k))
    clusters = config.num_clusters or 2
    fitted: list[ClusterHeads] = []
    with torch.random.fork_rng(devices=[]):
        epoch = timed(lambda: fitted.append(fit_linear_heads(features, neighbors, clusters, scan.head_search, 1, scan,
                                                             config.runtime.seed, input_map=input_map)),
                      repeats=PROBE_EPOCHS)
    scoring = timed(lambda: head_losses(frozen_head_probabilities(fitted[-1], features), neighbors))
    return FitCosts(step=epoch / PROBE_STEPS, score=scoring / n)


def fit_probe(config: Config, dim: int, heads: int, batch_size: int, scored: bool,
              input_map: BlockWhitening | None = None) -> FitCosts:
    """Time a real fit (``fit_stage``, in a scratch directory) of ``heads`` SCAN heads on random ``dim``-wide
    features (through ``input_map`` first, when the heads apply one): ``PROBE_EPOCHS`` epochs of ``PROBE_STEPS``
    steps of ``batch_size``, each step timed with the fetching of its batch; ``scored``: the heads scored every
    epoch, as the SCAN stage does."""
    n = PROBE_STEPS * batch_size
    generator = np.random.default_rng(config.runtime.seed)
    features = generator.standard_normal((n, dim), dtype=np.float32)
    neighbors = generator.integers(n, size=(n, config.mine.k))
    clusters = config.num_clusters or 2  # the count barely moves the cost; 2 while ``--clusters auto`` chooses it
    model = ClusterHeads(dim, clusters, heads, config.scan.normalize_features, copy.deepcopy(input_map))
    validation = ValidationLoss(lambda: frozen_head_probabilities(model, features), neighbors[:, :config.mine.val_k])
    scoring = Timed(validation)
    module = ScanModule(None, model, config, data_spec(config), validation=scoring if scored else None)
    loader = batch_loader(pair_dataset(lambda idx: rows(features, idx), neighbors, True), batch_size, shuffle=True,
                          num_workers=0, seed=config.runtime.seed, drop_last=True)
    clock = FitClock()
    with (TemporaryDirectory() as scratch, torch.random.fork_rng(devices=[]), lightning_info_hidden(),
          warnings.catch_warnings()):
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        fit_stage(config, Path(scratch), module, loader, PROBE_EPOCHS, callbacks=[clock])
        whole = time.perf_counter() - started
    timed = range(1, PROBE_EPOCHS)
    scores = [scoring.seconds[e] if scored else 0.0 for e in timed]
    overheads = [clock.marks[e + 1] - clock.marks[e] - sum(clock.batches[e]) - score for e, score in zip(timed, scores)]
    return FitCosts(start=whole - (clock.marks[-1] - clock.marks[0]),
                    step=min(sum(clock.batches[e]) / len(clock.batches[e]) for e in timed),
                    epoch=max(0.0, min(overheads)), score=min(scores) / n)


def held_views(run: Run) -> dict[str, int]:
    """The feature-cache entries of the run's training images the stages will read instead of embedding: the clean
    features and how many of SCAN's and self-labelling's augmented views, once the cached backbone's weights are known
    (pretrained, or the pretext finished) and it is the one both stages use (self-labelling after frozen SCAN)."""
    config, images = run.config, run.split("train")
    if not (is_pretrained(config.model.backbone) or is_complete(run.directory, "pretext")):
        return {}
    cache = head_cache(run)
    held = {"clean": int(cache.holds(images, CLEAN)),
            "scan": sum(cache.holds(images, cache.augmented_view(config.scan.augment, v))
                        for v in range(config.scan.cached_views))}
    if config.scan.freeze_backbone:
        held["selflabel"] = sum(cache.holds(images, cache.augmented_view(config.selflabel.augment, v))
                                for v in range(config.selflabel.embedded_views))
    return held


def pretext_images_per_epoch(n: int, batch_size: int) -> int:
    """Images the pretext stage trains on per epoch: whole batches only (the last partial one is dropped), or
    every image in one batch when the set is no larger than a batch (``engine.loaders``)."""
    return n if n <= batch_size else (n // batch_size) * batch_size


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Training steps of an epoch over ``n`` rows (whole batches, or one batch of all when ``n`` is no larger)."""
    return pretext_images_per_epoch(n, batch_size) // min(n, batch_size)


def block_map_probe(widths: list[int], n: int) -> float:
    """Seconds of one fit of the block map on ``n`` images with blocks ``widths`` wide: timed on up to
    ``BLOCK_MAP_SAMPLE`` random rows, scaled to ``n`` (``BLOCK_MAP_POWER``)."""
    rows = min(n, BLOCK_MAP_SAMPLE)
    sample = np.random.default_rng(0).standard_normal((rows, sum(widths)), dtype=np.float32)
    seconds = timed(lambda: fit_whitening(sample, widths, scale_axes=False), repeats=1)
    return seconds * (n / rows) ** BLOCK_MAP_POWER


def mined_width(config: Config, backbone: torch.nn.Module) -> int:
    """Columns of the rows mining searches (before whitening, which can only narrow them): the learned features
    (``mine.features``; a pretrained backbone's cached ones) and ``mine.descriptors`` beside them."""
    if mines_cached_features(config) or config.mine.features == "backbone":
        learned = backbone.out_dim
    elif config.mine.features == "multiscale":
        learned = sum(backbone.multiscale_widths(config.mine.grid))
    else:
        learned = config.model.proj_dim
    return learned + sum(descriptor_widths(config))


def search_probe(width: int, n: int, mine: MineConfig) -> float:
    """Seconds per row to the power ``SEARCH_POWER`` of the neighbour search of ``n`` rows ``width`` wide, timed on
    up to ``SEARCH_SAMPLE`` random rows by the route ``n`` rows take (exact bf16 on CPUs with native bf16, else
    faiss with the configured index)."""
    rows = min(n, SEARCH_SAMPLE)
    if rows < 2:
        return 0.0
    sample = np.random.default_rng(0).standard_normal((rows, width), dtype=np.float32)
    k = min(mine.k, rows - 1)
    if uses_bf16_search(n, mine.index):
        seconds = timed(lambda: bf16_exact_neighbors(sample, k))
    else:
        seconds = timed(lambda: search_neighbors(sample, k, mine.index))
    return seconds / rows ** SEARCH_POWER[mine.index]


def search_seconds(config: Config, rows: int, costs: StepCosts) -> float:
    """Seconds of the neighbour search among ``rows`` mined rows."""
    return costs.search * rows ** SEARCH_POWER[config.mine.index]


def block_map_seconds(config: Config, costs: StepCosts) -> float:
    """Seconds of one fit of the descriptors' block map (none without ``mine.descriptors``)."""
    return costs.block_map if config.mine.descriptors else 0.0


def fit_seconds(fit: FitCosts, epochs: int, n: int, batch_size: int, per_epoch: float = 0.0) -> float:
    """Seconds of a head fit: the trainer's start and, each epoch, its steps, its overhead and ``per_epoch``."""
    return fit.start + epochs * (steps_per_epoch(n, batch_size) * fit.step + fit.epoch + per_epoch)


def embedding_seconds(views: int, n: int, costs: StepCosts, stage: str) -> float:
    """Seconds to embed ``views`` augmented views of ``n`` images under ``stage``'s augmentation (cached views)."""
    return views * n * (costs.embed + costs.augment.get(stage, 0.0))


def pretext_seconds(config: Config, n: int, costs: StepCosts) -> float:
    """The pretext's training passes (two views an image) and its scoring pass of both splits."""
    if is_pretrained(config.model.backbone) or config.pretext.epochs == 0:
        return 0.0
    scoring = (n + costs.test_images) * costs.embed
    if config.model.pretext_checkpoint:  # weights read from a file: only the scoring pass is left
        return scoring
    trained = pretext_images_per_epoch(n, config.pretext.batch_size)
    return scoring + config.pretext.epochs * trained * 2 * costs.train["pretext"]


def mine_seconds(config: Config, n: int, costs: StepCosts) -> float:
    """Embedding and describing the train and test splits (a pretrained backbone's cached train features once), the
    descriptors' block map, and the search of each split's neighbours among its own rows."""
    m = costs.test_images
    embedded = (1 - costs.held.get("clean", 0)) * n if is_pretrained(config.model.backbone) else n + m
    searched = search_seconds(config, n, costs) + search_seconds(config, m, costs)
    return embedded * costs.embed + (n + m) * costs.describe + block_map_seconds(config, costs) + searched


def head_search_seconds(config: Config, n: int, costs: StepCosts) -> float:
    """The head search (``scan.head_search``): its heads trained ``scan.head_search_epochs`` epochs on the cached
    features of ``n`` images, then every candidate scored once on them."""
    scan, search = config.scan, costs.fits.get("search", FitCosts())
    if not scan.head_search:
        return 0.0
    return fit_seconds(search, scan.head_search_epochs, n, scan.batch_size) + n * search.score


def scan_seconds(config: Config, n: int, costs: StepCosts) -> float:
    """SCAN's head search, training, per-epoch validation scoring of the selection split (``n`` images), evaluation
    and the k-means check (which fits the block map again): on cached features, or through the whole network."""
    scan, fit = config.scan, costs.fits.get("scan", FitCosts())
    fixed = block_map_seconds(config, costs) + head_search_seconds(config, n, costs)  # k-means check, head search
    unheld = 0 if scan.head_features == "mined" else 1 - costs.held.get("clean", 0)  # mining embedded those rows
    if scan.freeze_backbone:
        embedded = unheld * n * costs.embed + embedding_seconds(
            scan.cached_views - costs.held.get("scan", 0), n, costs, "scan")
        scoring = n * fit.score
        return (embedded + fit_seconds(fit, scan.epochs, n, scan.batch_size, scoring if scan.select_epoch else 0.0)
                + (0.0 if scan.select_epoch else scoring) + fixed)
    searched_on = unheld * n * costs.embed if scan.head_search else 0.0  # the search's heads read clean features
    scoring = n * costs.embed  # the heads score images through the network
    per_epoch = n * 2 * costs.train["scan"] + (scoring if scan.select_epoch else 0.0)
    scored = (n + costs.test_images) * costs.embed  # the k-means check's train split and the evaluation's test split
    return fit_seconds(fit, scan.epochs, n, scan.batch_size, per_epoch) + scored + fixed + searched_on


def selflabel_seconds(config: Config, n: int, costs: StepCosts) -> float:
    """Self-labelling's training: on cached features (embedding the views the cache lacks), or through the whole
    network (a weak and a strong pass an image), then its evaluation."""
    selflabel, fit = config.selflabel, costs.fits.get("selflabel", FitCosts())
    if selflabel.freeze_backbone:
        missing = selflabel.embedded_views - costs.held.get("selflabel", 0)
        return embedding_seconds(missing, n, costs, "selflabel") + fit_seconds(fit, selflabel.epochs, n,
                                                                               selflabel.batch_size)
    per_epoch = n * (costs.embed + costs.train["selflabel"])
    scored = (n + costs.test_images) * costs.embed  # the prior's train split and the evaluation's test split
    return fit_seconds(fit, selflabel.epochs, n, selflabel.batch_size, per_epoch) + scored


def stage_seconds(config: Config, n: int, costs: StepCosts) -> dict[str, float]:
    """Estimated seconds of each stage for ``n`` training images (each stage's evaluation included)."""
    return {"pretext": pretext_seconds(config, n, costs), "mine": mine_seconds(config, n, costs),
            "scan": scan_seconds(config, n, costs), "selflabel": selflabel_seconds(config, n, costs)}

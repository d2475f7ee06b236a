"""Suggest a number of clusters without labels: cheap SCAN heads on the run's mined features.

For every K in the range, ``heads`` linear heads are trained with the SCAN loss (docs/method.md,
stage 3) on the features the mine stage searched (``mine/features_train.npy``, whitened as mining
whitened them, unit rows: the k-means baseline's space), with the neighbours it mined there. The run's
own pretext and mine stages are run first when needed, so estimate-k embeds nothing of its own.
The best head (lowest SCAN loss, entropy weight 1) of each K is scored by

* ``used``: clusters holding at least ``min_share`` of an even share (N / K) of the images;
* ``confident``: fraction of images whose largest probability exceeds ``threshold``;
* ``agreement``: fraction of mined neighbour pairs given the same cluster;
* ``coherence``: the same fraction for the *worst* cluster — of the neighbours of its members,
  the share that lies in the cluster too.

Criterion: the suggested K is the largest K whose clusters are all coherent, i.e. whose worst
cluster keeps at least ``min_coherence`` (default 0.8) of its members' neighbours inside; when
no K qualifies, the smallest K. SCAN assumes that an image and its mined neighbours share a
class; a cluster made by splitting one natural group in two loses that property first, because
the neighbours of its members spill into the twin cluster. The entropy term keeps every cluster
in use, so occupancy alone cannot tell; coherence can. The default 0.8 was set by looking at
Fashion-MNIST (docs/estimate_k.md); on other data read the table rather than trust one number.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .config import Config, with_values
from .engine.progress import clock
from .engine.run import Run
from .errors import CheckpointError, DataError
from .pipeline import run_stage
from .runs.artefacts import is_complete, load_npy, read_json, save_npy, stage_dir, write_json
from .stages.prepare import prepare_images
from .clustering.heads import fit_linear_heads, frozen_head_probabilities, head_terms
from .clustering.kmeans import train_mined_space

DIRECTORY = "estimate_k"
MINED_STAGES = ("pretext", "mine")  # what the sweep reads: the run's mined features and neighbours
LOG = logging.getLogger(__name__)


@dataclass
class KScore:
    """How well SCAN heads with ``k`` clusters fit the data (see the module docstring)."""

    k: int
    loss: float
    consistency: float
    balance: float
    used: int
    confident: float
    agreement: float
    coherence: float


@dataclass
class KEstimate:
    """The suggested K, the rule that chose it, and every K's scores."""

    best: int
    criterion: str
    scores: list[KScore]
    labels: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def table(self) -> str:
        """Plain-text table of the scores, the suggestion marked with ``<``."""
        rows = [f"{'K':>4} {'loss':>8} {'consist':>8} {'balance':>8} {'used':>5} {'confident':>9} "
                f"{'agree':>7} {'coherence':>9}"]
        for s in self.scores:
            mark = "  <" if s.k == self.best else ""
            rows.append(f"{s.k:>4} {s.loss:>8.4f} {s.consistency:>8.4f} {s.balance:>8.4f} {s.used:>5} "
                        f"{s.confident:>9.3f} {s.agreement:>7.3f} {s.coherence:>9.3f}{mark}")
        return "\n".join(rows)


@dataclass(frozen=True)
class SweepSettings:
    """Training and scoring settings of the sweep."""

    heads: int = 3
    epochs: int = 30
    min_steps: int = 1000
    batch_size: int = 512
    lr: float = 1e-3
    entropy_weight: float = 5.0
    threshold: float = 0.9
    min_share: float = 0.25
    min_coherence: float = 0.8
    seed: int = 0


def estimate_k(run: Run, ks: Sequence[int], settings: SweepSettings | None = None) -> KEstimate:
    """Train the pretext stage if needed, then sweep ``ks`` and suggest one (saved to ``RUN/estimate_k/``)."""
    config = run.config
    settings = settings or SweepSettings(entropy_weight=config.scan.entropy_weight, seed=config.runtime.seed)
    features, neighbors = sweep_inputs(run)
    if max(ks) * 2 > len(features):
        raise DataError(f"{len(features)} images are too few for K up to {max(ks)}; narrow --range")
    directory = stage_dir(run.directory, DIRECTORY)
    scores, labels = sweep(features, neighbors, ks, settings, directory)
    estimate = choose_k(scores, settings)
    estimate.labels = labels
    write_json(directory / "scores.json",
               {"best": estimate.best, "criterion": estimate.criterion, "scores": [asdict(s) for s in scores]})
    return estimate


def auto_range(n_images: int) -> list[int]:
    """K tried by ``--clusters auto``: 2 up to 20, at most one cluster per 20 images (estimate-k needs 2 per K)."""
    return list(range(2, max(3, min(20, n_images // 20)) + 1))


def auto_estimate(run: Run) -> KEstimate:
    """``--clusters auto``: estimate-k over ``auto_range`` of the run's training images."""
    return estimate_k(run, auto_range(len(run.split("train"))))


def sweep(features: torch.Tensor, neighbors: np.ndarray, ks: Sequence[int], settings: SweepSettings,
          directory: Path) -> tuple[list[KScore], dict[int, np.ndarray]]:
    """Score every K of ``ks``, one logged line per K with the time left (the mean time per K so far times the
    Ks to go); each K's result is kept in ``directory`` as it finishes, so a stopped search resumes there."""
    key = sweep_key(features, neighbors, settings)
    scores, labels, spent = [], {}, []
    for done, k in enumerate(ks, 1):
        kept = read_k(directory, k, key)
        if kept is not None:
            scores.append(kept[0])
            labels[k] = kept[1]
            LOG.info(f"estimate-k: K={k} ({done}/{len(ks)}) kept from the stopped search")
            continue
        started = time.perf_counter()
        score, labels[k] = score_k(features, neighbors, k, settings)
        scores.append(score)
        write_json(directory / f"k{k}.json", {"key": key, "score": asdict(score)})
        save_npy(directory / f"k{k}.npy", labels[k])
        spent.append(time.perf_counter() - started)
        left = float(np.mean(spent)) * (len(ks) - done)
        LOG.info(f"estimate-k: K={k} ({done}/{len(ks)}) used={score.used} coherence={score.coherence:.3f} "
                 f"in {clock(spent[-1])}; about {clock(left)} left")
    return scores, labels


def sweep_key(features: torch.Tensor, neighbors: np.ndarray, settings: SweepSettings) -> str:
    """A digest of the sweep's inputs and settings: a kept K is reused only for the same search."""
    digest = hashlib.sha256(json.dumps(asdict(settings), sort_keys=True).encode())
    digest.update(features.numpy().tobytes())
    digest.update(np.ascontiguousarray(neighbors).tobytes())
    return digest.hexdigest()


def read_k(directory: Path, k: int, key: str) -> tuple[KScore, np.ndarray] | None:
    """A K's kept score and clusters when they belong to the search ``key``, else None (damaged ones too)."""
    try:
        saved = read_json(directory / f"k{k}.json")
        if saved.get("key") != key:
            return None
        return KScore(**saved["score"]), load_npy(directory / f"k{k}.npy")
    except (CheckpointError, KeyError, TypeError):
        return None


def sweep_inputs(run: Run) -> tuple[torch.Tensor, np.ndarray]:
    """The train split's features in the space ``mine`` searched (standardised) and the neighbours it mined there:
    the run's own pretext and mine stages, run first when not complete, so every K is scored on the graph SCAN trains
    on and no image is embedded for estimate-k alone."""
    todo = [stage for stage in MINED_STAGES if not is_complete(run.directory, stage)]
    for stage in todo:
        run_stage(run, stage, check=stage == todo[0])
    run = prepare_images(run)
    neighbors = load_npy(stage_dir(run.directory, "mine") / "neighbors_train.npy")
    return standardise(train_mined_space(run)), neighbors


def standardise(features: np.ndarray) -> torch.Tensor:
    """Zero mean, unit variance per dimension (so one learning rate suits every backbone)."""
    tensor = torch.from_numpy(np.asarray(features)).float()
    return (tensor - tensor.mean(0)) / tensor.std(0).clamp_min(1e-6)


def train_heads(features: torch.Tensor, neighbors: np.ndarray, k: int, settings: SweepSettings,
                prior: torch.Tensor | None = None) -> torch.Tensor:
    """Linear SCAN heads on fixed features (``clustering.heads.fit_linear_heads``: Adam at a constant rate, the anchor
    among its partners) for ``epochs`` epochs and at least ``min_steps`` steps; probabilities (H, N, K).
    With ``prior`` (K shares) the entropy term is the divergence from it, as in the SCAN stage."""
    array = features.numpy()
    batch = min(settings.batch_size, len(array))
    epochs = max(settings.epochs, -(-settings.min_steps // (len(array) // batch)))
    scan = with_values(Config(), {"scan.batch_size": batch, "scan.entropy_weight": settings.entropy_weight,
                                  "scan.neighbor_includes_anchor": True,
                                  "scan.optim": {"name": "adam", "lr": settings.lr, "weight_decay": 0.0}}).scan
    torch.manual_seed(settings.seed + k)
    heads = fit_linear_heads(array, neighbors, k, settings.heads, epochs, scan, settings.seed + k, prior=prior)
    return frozen_head_probabilities(heads, array)


def score_k(
    features: torch.Tensor, neighbors: np.ndarray, k: int, settings: SweepSettings
) -> tuple[KScore, np.ndarray]:
    """Train heads for ``k`` clusters; score the lowest-loss head (entropy weight 1); return its clusters too."""
    probs = train_heads(features, neighbors, k, settings)
    consistencies, spreads = head_terms(probs, neighbors)
    losses = consistencies + spreads
    best = int(torch.argmin(losses))  # the first of equal losses, as a strict comparison in head order keeps
    loss, consistency, entropy, head = float(losses[best]), float(consistencies[best]), -float(spreads[best]), probs[best]
    clusters = head.argmax(1).numpy()
    sizes = np.bincount(clusters, minlength=k)
    same = clusters[:, None] == clusters[neighbors]
    score = KScore(
        k=k, loss=loss, consistency=consistency, balance=entropy / float(np.log(k)),
        used=int((sizes >= settings.min_share * len(clusters) / k).sum()),
        confident=float((head.max(1).values > settings.threshold).float().mean()),
        agreement=float(same.mean()),
        coherence=min(float(same[clusters == c].mean()) if sizes[c] else 0.0 for c in range(k)),
    )
    return score, clusters


def choose_k(scores: list[KScore], settings: SweepSettings) -> KEstimate:
    """The largest K whose worst cluster keeps ``min_coherence`` of its members' neighbours inside."""
    ordered = sorted(scores, key=lambda s: s.k)
    coherent = [s.k for s in ordered if s.coherence >= settings.min_coherence]
    best = coherent[-1] if coherent else ordered[0].k
    criterion = f"largest K whose every cluster keeps >= {settings.min_coherence:g} of its members' neighbours inside"
    return KEstimate(best, criterion, ordered)

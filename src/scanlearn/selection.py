"""Label-free selection: score candidate clusterings of the same images and keep one, without labels.

Candidates come either from finished runs (their final model's clustering of the train split) or
from cheap SCAN heads trained on one run's frozen backbone features, differing in seed, entropy
weight, number of mined neighbours and head (``CandidateGrid``; the pretext and mine stages are
shared). Every candidate is scored by the criteria of `scanlearn.criteria` against one shared
list of mined neighbours:

- ``neighbour_kappa`` (higher is better): chance-corrected share of neighbour pairs kept together;
- ``scan_loss`` (lower): the SCAN loss at entropy weight 1, the authors' validation loss, the same
  weight for every candidate so that candidates trained with different weights compare;
- ``stability`` (higher): mean adjusted Rand index to the other candidates;
- ``generalisation`` (higher): TURTLE-style held-out agreement of a linear classifier (needs features).

``DEFAULT_CRITERION`` is the one whose ranking of 32 Fashion-MNIST candidates agreed best with
their accuracy (Spearman 0.43; docs/label_free.md, BENCHMARKS.md "Label-free selection"); labels
scored the criteria there, never a candidate here. It needs at least two candidates.

Only the candidates that fill the most clusters compete, as in the run's own check
(`scanlearn.clustering.choice`): heads that merge the same small groups agree with each other, so
stability alone would favour a candidate that leaves asked-for clusters empty (issue 31).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import criteria
from .config import load_config
from .consensus import Consensus, consensus
from .errors import ConfigError, DataError
from .estimate_k import SweepSettings, standardise, train_heads
from .pipeline import run_stage
from .report import plot_criteria
from .runs.artefacts import is_complete, load_npy, read_json, require_stage, save_npy, stage_dir, write_json
from .engine.run import Run
from .clustering.answer import chosen_stage, run_probabilities
from .stages.prepare import prepare_images
from .clustering.heads import clean_features, scan_prior
from .clustering.kmeans import train_mined_space

DIRECTORY = "select"
CRITERIA_FILE = "criteria.json"
LOG = logging.getLogger(__name__)
HIGHER_IS_BETTER = {"neighbour_kappa": True, "scan_loss": False, "stability": True, "generalisation": True}
DEFAULT_CRITERION = "stability"


@dataclass(frozen=True)
class Candidate:
    """One clustering of the training images: a name, what made it (``params``), probabilities (N, C)."""

    name: str
    params: dict[str, Any]
    probabilities: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        """Most probable cluster of every image."""
        return self.probabilities.argmax(1)


@dataclass(frozen=True)
class CandidateGrid:
    """Candidates to train on frozen features: every combination of seed, entropy weight and mined-neighbour
    count, ``heads`` heads each (each head is one candidate), ``epochs`` passes over the data but at least
    ``min_steps`` steps of ``batch_size`` (as ``scanlearn.estimate_k`` trains its heads)."""

    seeds: tuple[int, ...] = (0, 1)
    entropy_weights: tuple[float, ...] = (4.0,)
    ks: tuple[int, ...] = (20,)
    heads: int = 2
    epochs: int = 30
    min_steps: int = 1000
    batch_size: int = 512

    def __post_init__(self) -> None:
        if not (self.seeds and self.entropy_weights and self.ks) or min(self.heads, self.epochs, self.batch_size) < 1:
            raise ConfigError("the candidate grid needs at least one seed, entropy weight and k, "
                              "and heads, epochs, batch size >= 1")
        if min(self.ks) < 1 or min(self.entropy_weights) < 0:
            raise ConfigError(f"neighbour counts must be >= 1 and entropy weights >= 0; "
                              f"got {self.ks}, {self.entropy_weights}")


@dataclass
class Selection:
    """Every candidate's criteria, the criterion used and the index of the chosen candidate."""

    candidates: list[Candidate]
    scores: list[dict[str, float]]
    criterion: str
    best: int
    consensus: Consensus | None = field(default=None, repr=False)
    prior: list[float] | None = None

    @property
    def clusters_used(self) -> list[int]:
        """How many clusters each candidate fills."""
        return [criteria.clusters_used(c.labels) for c in self.candidates]

    @property
    def chosen(self) -> Candidate:
        return self.candidates[self.best]

    def table(self) -> str:
        """Plain-text table of the candidates' criteria, the chosen one marked with ``<``."""
        names = list(self.scores[0])
        width = max(9, *(len(c.name) for c in self.candidates))
        rows = [f"{'candidate':<{width}} " + " ".join(f"{n:>15}" for n in names)]
        for i, (candidate, score) in enumerate(zip(self.candidates, self.scores)):
            mark = "  <" if i == self.best else ""
            rows.append(f"{candidate.name:<{width}} " + " ".join(f"{score[n]:>15.4f}" for n in names) + mark)
        return "\n".join(rows)

    def summary(self) -> dict[str, Any]:
        """What ``criteria.json`` records: the rule, the choice, and every candidate's params and criteria."""
        record: dict[str, Any] = {
            "criterion": self.criterion, "higher_is_better": HIGHER_IS_BETTER[self.criterion],
            "chosen": self.chosen.name,
            "candidates": [{"name": c.name, "params": c.params, "criteria": s}
                           for c, s in zip(self.candidates, self.scores)],
        }
        for entry, used in zip(record["candidates"], self.clusters_used):
            entry["clusters_used"] = used
        if self.prior is not None:
            record["prior"] = self.prior
        if self.consensus is not None:
            record["consensus"] = {"unanimous_fraction": float(self.consensus.unanimous.mean()),
                                   "mean_agreement": float(self.consensus.agreement.mean())}
        return record


def score_candidates(candidates: Sequence[Candidate], neighbors: np.ndarray,
                     features: np.ndarray | None = None, seed: int = 0) -> list[dict[str, float]]:
    """Every label-free criterion of every candidate (``generalisation`` only when ``features`` are given)."""
    if len({len(c.probabilities) for c in candidates}) != 1 or len(candidates[0].probabilities) != len(neighbors):
        raise DataError(f"candidates must cluster the same {len(neighbors)} images the neighbours were mined for")
    labelings = [c.labels for c in candidates]
    stable = criteria.stability_each(labelings) if len(candidates) > 1 else np.ones(1)
    scores = []
    for candidate, stability in zip(candidates, stable):
        score = {
            "neighbour_kappa": criteria.neighbour_kappa(candidate.labels, neighbors),
            "scan_loss": criteria.scan_objective(candidate.probabilities.clip(1e-8), neighbors, entropy_weight=1.0),
            "stability": float(stability),
        }
        if features is not None:
            score["generalisation"] = criteria.generalisation(features, candidate.labels, seed=seed)
        scores.append(score)
    return scores


def choose(scores: Sequence[dict[str, float]], criterion: str = DEFAULT_CRITERION,
           clusters_used: Sequence[int] | None = None) -> int:
    """Index of the best candidate by ``criterion`` (the first of equals); with ``clusters_used``, only among the
    candidates that fill the most clusters."""
    if criterion not in HIGHER_IS_BETTER or criterion not in scores[0]:
        valid = ", ".join(n for n in HIGHER_IS_BETTER if n in scores[0])
        raise ConfigError(f"unknown or unavailable criterion {criterion!r}; choose one of {valid}")
    values = np.array([s[criterion] for s in scores]) * (1.0 if HIGHER_IS_BETTER[criterion] else -1.0)
    if clusters_used is not None:
        used = np.asarray(clusters_used)
        values = np.where(used == used.max(), values, -np.inf)
    return int(np.argmax(values))


def select(candidates: Sequence[Candidate], neighbors: np.ndarray, features: np.ndarray | None = None,
           criterion: str = DEFAULT_CRITERION, with_consensus: bool = False, seed: int = 0) -> Selection:
    """Score ``candidates`` and choose one by ``criterion`` among those filling the most clusters; with
    ``with_consensus`` also combine them all (aligned to the chosen one, which breaks ties)."""
    if not candidates:
        raise ConfigError("selection needs at least one candidate")
    scores = score_candidates(candidates, neighbors, features, seed)
    best = choose(scores, criterion, [criteria.clusters_used(c.labels) for c in candidates])
    agreed = consensus([c.labels for c in candidates], reference=best) if with_consensus else None
    return Selection(list(candidates), scores, criterion, best, agreed)


def train_candidates(features: np.ndarray, neighbors: np.ndarray, clusters: int, grid: CandidateGrid,
                     prior: torch.Tensor | None = None) -> list[Candidate]:
    """SCAN heads on frozen ``features`` for every grid point; neighbour count k uses the first k of ``neighbors``.
    With ``prior`` (the run's ``scan.prior`` shares) the heads pull towards those cluster sizes, as SCAN would."""
    if max(grid.ks) > neighbors.shape[1]:
        raise ConfigError(f"k up to {max(grid.ks)} needs at least that many mined neighbours; the run has "
                          f"{neighbors.shape[1]}: rerun `scanlearn mine` with --set mine.k={max(grid.ks)}")
    inputs = standardise(features)
    candidates = []
    for seed, weight, k in itertools.product(grid.seeds, grid.entropy_weights, grid.ks):
        settings = SweepSettings(heads=grid.heads, epochs=grid.epochs, min_steps=grid.min_steps,
                                 batch_size=grid.batch_size, entropy_weight=weight, seed=seed)
        probs = train_heads(inputs, np.ascontiguousarray(neighbors[:, :k]), clusters, settings, prior).numpy()
        for head, head_probs in enumerate(probs):
            params = {"seed": seed, "entropy_weight": weight, "k": k, "head": head}
            candidates.append(Candidate(f"s{seed}-w{weight:g}-k{k}-h{head}", params, head_probs))
        LOG.info(f"select: trained seed {seed}, entropy weight {weight:g}, k {k}")
    return candidates


def run_candidates(run_dirs: Sequence[str | Path]) -> list[Candidate]:
    """The chosen clustering (``clustering.answer``) of the train split of every finished run in ``run_dirs``."""
    candidates = []
    for run_dir in map(Path, run_dirs):
        require_stage(run_dir, "scan", "select")
        run = Run(load_config(run_dir / "config.yaml"), run_dir)
        config, stage = run.config, chosen_stage(run_dir)
        probs = run_probabilities(run, run.split("train"))
        params = {"run_dir": str(run_dir), "stage": stage, "seed": config.runtime.seed,
                  "entropy_weight": config.scan.entropy_weight, "k": config.mine.k}
        candidates.append(Candidate(run_dir.name, params, probs))
    return candidates


def shared_inputs(run: Run) -> tuple[np.ndarray, np.ndarray, int]:
    """The train split's features the run's heads read (clean backbone features, or the mined space with
    ``scan.head_features=mined``), their mined neighbours and the number of clusters (pretext and mine run if missing)."""
    for stage in ("pretext", "mine"):
        if not is_complete(run.directory, stage):
            run_stage(run, stage)
    run = prepare_images(run)
    images = run.split("train")
    neighbors = load_npy(run.directory / "mine" / "neighbors_train.npy")
    if len(neighbors) != len(images):
        raise DataError(f"neighbours were mined for {len(neighbors)} images but the data has {len(images)}; "
                        "rerun `scanlearn mine`")
    mined = run.config.scan.head_features == "mined"
    return (train_mined_space(run) if mined else np.array(clean_features(run, images))), neighbors, run.clusters


def select_in_run(run: Run, grid: CandidateGrid | None = None, runs: Sequence[str | Path] = (),
                  criterion: str = DEFAULT_CRITERION, with_consensus: bool = False) -> Selection:
    """Train the ``grid``'s candidates on the run's frozen features (or take the finished ``runs``),
    choose one without labels and record everything in ``RUN/select/``."""
    features, neighbors, clusters = shared_inputs(run)
    if runs:
        prior, candidates = None, run_candidates(runs)
    else:
        prior = scan_prior(run)
        candidates = train_candidates(features, neighbors, clusters, grid or CandidateGrid(), prior)
    selection = select(candidates, neighbors, features, criterion, with_consensus, run.config.runtime.seed)
    selection.prior = None if prior is None else prior.tolist()
    write_selection(selection, stage_dir(run.directory, DIRECTORY))
    return selection


def write_selection(selection: Selection, directory: Path) -> None:
    """``criteria.json``, ``criteria.png``, the chosen candidate's ``probabilities.npy`` (and ``consensus.npy``)."""
    write_json(directory / CRITERIA_FILE, selection.summary())
    save_npy(directory / "probabilities.npy", selection.chosen.probabilities.astype(np.float32))
    if selection.consensus is not None:
        save_npy(directory / "consensus.npy", selection.consensus.labels)
    values = {name: [score[name] for score in selection.scores] for name in selection.scores[0]}
    better = {name: HIGHER_IS_BETTER[name] for name in values}
    title = f"label-free criteria; chosen by {selection.criterion}: {selection.chosen.name}"
    plot_criteria([c.name for c in selection.candidates], values, better, selection.best,
                  directory / "criteria.png", title)


def chosen_params(run_dir: str | Path) -> dict[str, Any]:
    """What made the candidate `scanlearn select` chose in ``run_dir`` (seed, entropy weight, k, head)."""
    record = read_json(Path(run_dir) / DIRECTORY / CRITERIA_FILE)
    return next(c["params"] for c in record["candidates"] if c["name"] == record["chosen"])

"""The run's own baseline: k-means on the features the neighbours were mined on, and which clustering to use.

SCAN and self-labelling can make a clustering worse than plain k-means on the pretext features
(imbalanced data, issue 31). After each of them the run scores every candidate clustering of the
train split without labels, by ``criteria.neighbour_kappa`` on the mined train neighbours: how much
more often an image and its mined neighbours share a cluster than chance given the cluster sizes.
Each stage keeps its score in ``<stage>/candidate.json`` (k-means: ``mine/kmeans.json``, beside its
centroids in ``mine/kmeans.npz``), so a rerun stage drops its stale score with its directory;
``candidates.json`` at the top of the run summarises them. ``predict`` uses the best-scoring one among
those that fill the most clusters: kappa can rise when a stage merges groups (fewer, larger clusters
agree more often), but a clustering that leaves asked-for clusters empty where another fills them
does not answer the question asked.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..criteria import clusters_used, neighbour_kappa
from ..errors import ScanlearnWarning
from ..runs.artefacts import is_complete, load_npy, read_json, write_json
from ..engine.inference import predict_probabilities
from ..engine.run import Run
from .kmeans import feature_kmeans

KMEANS = "kmeans"
CANDIDATES = (KMEANS, "scan", "selflabel")  # in order of refinement: near-ties go to the later one
CRITERION = "neighbour_kappa"
USED = "clusters_used"
CANDIDATES_FILE = "candidates.json"
# Kappa differences smaller than this are noise, not a worse stage: on the balanced Fashion-MNIST preset (3 seeds)
# self-labelling changed few assignments and moved kappa by -0.0016 to +0.0002, which printed "(0.893 < 0.893)".
# Stages that really cluster worse lost 0.02 to 0.07 (docs/imbalance.md). k-means is scored on the neighbours of its
# own feature space, which favours it: at 0.005, two 20-minute demos answered with k-means 0.007 and 0.009 ahead of
# self-labelling, which scored 9.0 and 6.5 ACC points better (docs/tuning-log.md, "Time budgets on Fashion-MNIST").
MARGIN = 0.01
# Neighbour kappa below WEAK_KAPPA: pairs of mined neighbours share a cluster little more often than chance;
# from STRONG_KAPPA up, mostly (balanced Fashion-MNIST reaches 0.89, docs/imbalance.md).
WEAK_KAPPA, STRONG_KAPPA = 0.3, 0.6
SCORE_FILES = {KMEANS: Path("mine") / "kmeans.json", "scan": Path("scan") / "candidate.json",
               "selflabel": Path("selflabel") / "candidate.json"}


class WorseThanFeaturesWarning(ScanlearnWarning):
    """A trained stage scores below an earlier candidate (k-means on its own features) by the label-free criterion."""


def score_stage(run: Run, stage: str) -> dict[str, float]:
    """Score ``stage``'s clustering of the train split (and k-means', once) by neighbour kappa; update the summary."""
    run_dir = run.directory
    neighbors = load_npy(run_dir / "mine" / "neighbors_train.npy")
    if not (run_dir / SCORE_FILES[KMEANS]).is_file():
        write_json(run_dir / SCORE_FILES[KMEANS], candidate_score(feature_kmeans(run).labels, neighbors))
    probs = predict_probabilities(run, stage, run.split("train"))
    write_json(run_dir / SCORE_FILES[stage], candidate_score(probs.argmax(1), neighbors))
    return write_candidates(run_dir)


def candidate_score(labels: np.ndarray, neighbors: np.ndarray) -> dict[str, float | int]:
    """A candidate clustering's neighbour kappa and how many clusters it fills."""
    return {CRITERION: neighbour_kappa(labels, neighbors), USED: clusters_used(labels)}


def scored_candidates(run_dir: str | Path) -> dict[str, dict]:
    """The saved score of every candidate whose stage has finished and been scored."""
    run_dir = Path(run_dir)
    owners = {KMEANS: "mine", "scan": "scan", "selflabel": "selflabel"}
    return {name: read_json(run_dir / SCORE_FILES[name]) for name in CANDIDATES
            if is_complete(run_dir, owners[name]) and (run_dir / SCORE_FILES[name]).is_file()}


def candidate_scores(run_dir: str | Path) -> dict[str, float]:
    """Label-free score of every candidate whose stage has finished and been scored."""
    return {name: float(saved[CRITERION]) for name, saved in scored_candidates(run_dir).items()}


def candidate_usage(run_dir: str | Path) -> dict[str, int]:
    """How many clusters each scored candidate fills (scores saved before this was recorded have no entry)."""
    return {name: int(saved[USED]) for name, saved in scored_candidates(run_dir).items() if USED in saved}


def eligible(scores: dict[str, float], used: dict[str, int]) -> set[str]:
    """The candidates that fill as many clusters as the fullest one; a candidate without a count stays in."""
    most = max(used.values(), default=0)
    return {name for name in scores if used.get(name, most) == most}


def best_candidate(scores: dict[str, float], used: dict[str, int] | None = None) -> str:
    """Among the candidates filling the most clusters, the most refined one that scores within ``MARGIN`` of the
    highest score."""
    allowed = [name for name in CANDIDATES if name in eligible(scores, used or {})]
    top = max(scores[name] for name in allowed)
    return next(name for name in reversed(allowed) if scores[name] >= top - MARGIN)


def write_candidates(run_dir: Path) -> dict[str, float]:
    """Write ``candidates.json`` (criterion, split, scores, clusters filled, best) and return the scores."""
    scores, used = candidate_scores(run_dir), candidate_usage(run_dir)
    write_json(run_dir / CANDIDATES_FILE, {"criterion": CRITERION, "split": "train", "scores": scores,
                                           USED: used, "best": best_candidate(scores, used) if scores else None})
    return scores


def final_stage(run_dir: str | Path) -> str:
    """The most refined finished clustering stage of a run (selflabel, else scan)."""
    return "selflabel" if is_complete(run_dir, "selflabel") else "scan"


def chosen_clustering(run_dir: str | Path, final: str) -> str:
    """What ``predict`` uses: the best-scoring candidate, or ``final`` when no stage was scored."""
    scores = candidate_scores(run_dir)
    return best_candidate(scores, candidate_usage(run_dir)) if final in scores else final


def choice_reason(run_dir: str | Path, final: str) -> str:
    """Which clustering the run answers with and why, in one line (its label-free scores, higher is better)."""
    scores, used = candidate_scores(run_dir), candidate_usage(run_dir)
    if final not in scores:
        return f"{final}, the last finished stage (no label-free scores recorded)"
    chosen = best_candidate(scores, used)
    shown = ", ".join(f"{'k-means' if name == KMEANS else name} {scores[name]:.3f}" for name in CANDIDATES if name in scores)
    return f"{'k-means' if chosen == KMEANS else chosen}, the best by the label-free neighbour kappa ({shown}; higher is better)"


def trust_words(run_dir: str | Path, final: str) -> str | None:
    """How far to trust the run's clustering, in words, from its label-free scores alone (None when unscored).

    Weak when mined neighbours share a cluster barely more often than chance (kappa below ``WEAK_KAPPA``), when
    the trained stages clearly score below k-means on the mined features (the network learnt little of what the
    neighbours share), or when, short of ``STRONG_KAPPA``, they did no better (within ``MARGIN``): then the
    clusters are whatever the features give, which may be colour or background rather than content. A k-means
    answer scores high kappa on its own neighbours by construction, so kappa alone does not make it consistent.
    """
    scores, used = candidate_scores(run_dir), candidate_usage(run_dir)
    if final not in scores:
        return None
    chosen = best_candidate(scores, used)
    kappa = scores[chosen]
    if kappa < WEAK_KAPPA:
        return (f"weak: the features barely separate the images (mined neighbours share a cluster little more often "
                f"than chance: neighbour kappa {kappa:.2f}, below {WEAK_KAPPA:g}); check the report's galleries")
    trained = max(scores[name] for name in scores if name != KMEANS)
    if KMEANS in scores and trained < scores[KMEANS] - MARGIN:
        return (f"weak: the trained network's clusters agree with the mined neighbours less than k-means on the mined "
                f"features does (neighbour kappa {trained:.2f} against {scores[KMEANS]:.2f}), so the answer is k-means: "
                "only as good as those features; check the report's galleries")
    if KMEANS in scores and trained <= scores[KMEANS] + MARGIN and kappa < STRONG_KAPPA:
        return (f"weak: training added nothing to k-means on the features (neighbour kappa {trained:.2f} against "
                f"k-means' {scores[KMEANS]:.2f}); the clusters are only as good as the features")
    if kappa < STRONG_KAPPA:
        return f"moderate: neighbour kappa {kappa:.2f}; look through the report's galleries before relying on it"
    return f"consistent: neighbour kappa {kappa:.2f} (mined neighbours mostly share a cluster)"


def worse_than_message(run_dir: str | Path, final: str) -> str | None:
    """One line when the run's final stage scores below another candidate or fills fewer clusters, else None."""
    scores, used = candidate_scores(run_dir), candidate_usage(run_dir)
    if final not in scores or best_candidate(scores, used) == final:
        return None
    best = best_candidate(scores, used)
    name = "k-means on its own pretext features" if best == KMEANS else best
    if final not in eligible(scores, used):
        most = max(used.values())
        return (f"{final} fills only {used[final]} clusters of the training images where {name} fills {used.get(best, most)}; "
                f"predict uses {best} (see {CANDIDATES_FILE})")
    return (f"{final} clusters the training images worse than {name} by the label-free neighbour kappa "
            f"({scores[final]:.3f} < {scores[best]:.3f}); predict uses {best} (see {CANDIDATES_FILE})")


def warn_if_worse(run_dir: str | Path, final: str) -> str | None:
    """Warn (one line) when the final stage is worse than another candidate; returns the message."""
    message = worse_than_message(run_dir, final)
    if message:
        warnings.warn(message, WorseThanFeaturesWarning, stacklevel=2)
    return message


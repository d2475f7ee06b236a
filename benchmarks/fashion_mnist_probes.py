"""Label-free inference and model variants probed on finished `fashion-mnist` runs, scored on the TRAIN split.

    .venv/bin/python benchmarks/fashion_mnist_probes.py mirror RUN_DIR STAGE
    .venv/bin/python benchmarks/fashion_mnist_probes.py bn-recalibration RUN_DIR STAGE
    .venv/bin/python benchmarks/fashion_mnist_probes.py heads RUN_DIR
    .venv/bin/python benchmarks/fashion_mnist_probes.py mining-recalibration RUN_DIR
    .venv/bin/python benchmarks/fashion_mnist_probes.py mining-whitening RUN_DIR
    .venv/bin/python benchmarks/fashion_mnist_probes.py coherent-selflabel NAME --base runs/tune/rbn --seeds 0 1 2 --min-coherence 0.9

``mirror`` averages each image's cluster probabilities with those of its mirror image; ``bn-recalibration``
recomputes the batch-norm statistics on clean train images (training gathers them on augmented ones);
``heads`` scores every head of SCAN's last checkpoint (batch norm recalibrated as in the stage) and the average of
their probabilities after matching each head's clusters to the kept head's (and, with the stage's uniform prior, of
their averaged logits, which one merged linear head would give); ``mining-recalibration`` compares the
neighbour precision of the mined multiscale features before and after recomputing the pretext backbone's batch-norm
statistics on clean 28x28 train images (it trained on augmented 20x20 crops); ``mining-whitening`` compares it
on the raw multiscale features, whitened per stage (``mine.whiten``) and whitened as one block;
``coherent-selflabel`` reruns self-labelling with no pseudo-labels from the clusters whose members keep, on average,
less than ``--min-coherence`` of their mined neighbours in the same cluster.
Only whitening became an option (docs/tuning-log.md, sixth, seventh, eleventh and thirteenth rounds); the test split is
never read. The multiscale-head probe of the tuning log patched SCAN's backbone builder, which the stage no longer
has; it was removed (issue 43) rather than kept broken.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

import scanlearn.stages.selflabel
from scanlearn.cli import main as cli_main
from scanlearn.runs.fsutil import load_without_code
from scanlearn.engine.trained import load_backbone
from scanlearn.config import resolve
from scanlearn.metrics import evaluate_clustering, hungarian_mapping
from scanlearn.mining import fit_whitening, mine_neighbors, neighbor_precision
from scanlearn.models import ClusteringModel, uniform_prior_log_weights
from scanlearn.engine.run import Run
from scanlearn.engine.splits import data_spec
from scanlearn.engine.embedding import embed, recalibrate_batch_norm
from scanlearn.engine.inference import predict_probabilities
from scanlearn.engine.mined_features import mining_features
from scanlearn.engine.trained import load_contrastive_model
from scanlearn.engine.trained import eval_transform, load_clustering_model
from scanlearn.clustering.heads import head_losses

OVERRIDES = ["runtime.progress=false"]
STAGES = ("pretext", "mine", "scan", "selflabel")


class Mirror(torch.nn.Module):
    """Flip images left-right (the last axis)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-1)


def probabilities(model, config, images, transform) -> np.ndarray:
    return torch.from_numpy(embed(lambda x: model(x)[0], images, config, transform)).softmax(-1).numpy()


def report(label: str, probs: np.ndarray, reference: np.ndarray, targets: np.ndarray) -> None:
    scores = evaluate_clustering(probs, targets, 10)
    agree = float((probs.argmax(1) == reference.argmax(1)).mean())
    print(f"{label}: train ACC {scores['acc']:.4f} NMI {scores['nmi']:.4f} (same cluster as plain: {agree:.4f})", flush=True)


def load_probe(run: Path, stage: str):
    """Config, train images, their labels, the stage's model, the clean transform and its plain probabilities."""
    config = resolve("fashion-mnist", None, OVERRIDES)
    images = Run(config, run).split("train")
    model = load_clustering_model(Run(config, run), stage)
    clean = eval_transform(data_spec(config))
    return config, images, np.asarray(images.targets), model, clean, probabilities(model, config, images, clean)


def probe_mirror(run: Path, stage: str) -> None:
    config, images, targets, model, clean, plain = load_probe(run, stage)
    mirrored = probabilities(model, config, images, torch.nn.Sequential(clean, Mirror()))
    report(f"{run} {stage} plain", plain, plain, targets)
    report(f"{run} {stage} mirror-averaged", (plain + mirrored) / 2, plain, targets)


def probe_bn_recalibration(run: Path, stage: str) -> None:
    config, images, targets, model, clean, plain = load_probe(run, stage)
    recalibrate_batch_norm(model.backbone, images, config, clean)
    report(f"{run} {stage} saved statistics", plain, plain, targets)
    report(f"{run} {stage} recalibrated", probabilities(model.eval(), config, images, clean), plain, targets)


def rerun_stage(name: str, base: Path, seed: int, stage: str) -> Path:
    """Run ``stage`` of seed ``seed`` in ``runs/tune/NAME`` on copies of ``base``'s earlier stages; its run dir."""
    run = Path("runs/tune") / name / f"seed{seed}"
    shutil.rmtree(run, ignore_errors=True)
    for earlier in STAGES[: STAGES.index(stage)]:
        shutil.copytree(base / f"seed{seed}" / earlier, run / earlier)
    args = [stage, "--preset", "fashion-mnist", "--run-dir", str(run), "--seed", str(seed)]
    if cli_main(args + [item for o in OVERRIDES for item in ("--set", o)]) != 0:
        sys.exit(f"{stage} failed for seed {seed}")
    return run


def all_heads_model(config, run: Path) -> ClusteringModel:
    """SCAN's last Lightning checkpoint as a clustering model with all its heads (the stage saves only the best);
    the checkpoint's backbone weights replace the pretext ones."""
    state = load_without_code(run / "scan" / "checkpoints" / "last.ckpt")["state_dict"]
    backbone = load_backbone(Run(config, run))
    num_heads, clusters, _ = state["heads.weight"].shape
    model = ClusteringModel(backbone, backbone.out_dim, clusters, num_heads)
    model.load_state_dict({k: v for k, v in state.items() if k.startswith(("backbone.", "heads."))})
    return model


def matching_order(probs: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The column order that makes the clusters of ``probs`` (N, C) best match the hard ``reference`` clusters (N,)."""
    clusters = probs.shape[1]
    return np.argsort(hungarian_mapping(probs.argmax(1), reference, clusters, clusters))


def with_uniform_prior(logits: torch.Tensor) -> np.ndarray:
    """Probabilities of ``logits`` (N, C) after the stage's uniform-prior bias shift."""
    return (logits + uniform_prior_log_weights(logits.softmax(-1))).softmax(-1).numpy()


def probe_heads(run: Path) -> None:
    config = resolve("fashion-mnist", None, OVERRIDES)
    images = Run(config, run).split("train")
    targets = np.asarray(images.targets)
    model = all_heads_model(config, run)
    clean = eval_transform(data_spec(config))
    recalibrate_batch_norm(model.backbone, images, config, clean)
    logits = torch.from_numpy(embed(lambda x: model(x).transpose(0, 1), images, config, clean)).permute(1, 0, 2)
    probs = logits.softmax(-1)
    losses = head_losses(probs, np.load(run / "mine" / "neighbors_train.npy")).numpy()
    order = losses.argsort()
    for h in range(len(probs)):
        scores = evaluate_clustering(probs[h].numpy(), targets, 10)
        prior = evaluate_clustering(with_uniform_prior(logits[h]), targets, 10)
        print(f"{run} head {h}: SCAN loss {losses[h]:.4f} train ACC {scores['acc']:.4f} NMI {scores['nmi']:.4f}, "
              f"with the uniform prior {prior['acc']:.4f} / {prior['nmi']:.4f}" + (" (kept)" if h == order[0] else ""),
              flush=True)
    reference = probs[order[0]].numpy().argmax(1)
    matched_logits = torch.stack([lg[:, matching_order(p.numpy(), reference)] for lg, p in zip(logits, probs)])
    for count in range(2, len(probs) + 1):
        kept = order[:count]
        scores = evaluate_clustering(matched_logits[kept].softmax(-1).mean(0).numpy(), targets, 10)
        merged = evaluate_clustering(with_uniform_prior(matched_logits[kept].mean(0)), targets, 10)
        print(f"{run} average of the {count} lowest-loss heads: train ACC {scores['acc']:.4f} NMI {scores['nmi']:.4f}; "
              f"their logits averaged (one merged linear head) with the uniform prior {merged['acc']:.4f} / "
              f"{merged['nmi']:.4f}", flush=True)


def cluster_coherence(clusters: np.ndarray, neighbors: np.ndarray) -> np.ndarray:
    """Per cluster, the mean fraction of its members' neighbours predicted in the same cluster (NaN if empty)."""
    same = (clusters[neighbors] == clusters[:, None]).mean(axis=1)
    counts = np.bincount(clusters, minlength=10)
    return np.bincount(clusters, weights=same, minlength=10) / np.where(counts > 0, counts, np.nan)


def probe_coherent_selflabel(name: str, base: Path, seeds: list[int], min_coherence: float) -> None:
    thresholds_of = scanlearn.stages.selflabel.cluster_thresholds
    current: dict[str, np.ndarray] = {}

    def coherent_thresholds(probs, threshold, min_fraction):
        thresholds = thresholds_of(probs, threshold, min_fraction)
        coherence = cluster_coherence(probs.argmax(1), current["neighbors"])
        print(f"{name}: cluster coherence {np.round(coherence, 3).tolist()}", flush=True)
        return torch.where(torch.from_numpy(coherence >= min_coherence), thresholds, torch.tensor(float("inf")))

    scanlearn.stages.selflabel.cluster_thresholds = coherent_thresholds
    config = resolve("fashion-mnist", None, OVERRIDES)
    images = Run(config, base).split("train")
    for seed in seeds:
        current["neighbors"] = np.load(base / f"seed{seed}" / "mine" / "neighbors_train.npy")
        run = rerun_stage(name, base, seed, "selflabel")
        probs = predict_probabilities(Run(config, run), "selflabel", images)
        scores = evaluate_clustering(probs, np.asarray(images.targets), 10)
        sizes = np.bincount(probs.argmax(1), minlength=10).tolist()
        print(f"{name} seed {seed}: train ACC {scores['acc']:.4f} NMI {scores['nmi']:.4f} cluster sizes {sizes}", flush=True)


def mining_probe_inputs(run: Path):
    """The preset's config, the train images, their labels and the run's pretext model."""
    config = resolve("fashion-mnist", None, OVERRIDES)
    images = Run(config, run).split("train")
    return config, images, np.asarray(images.targets), load_contrastive_model(Run(config, run))


def print_precision(what: str, features: np.ndarray, config, targets: np.ndarray) -> None:
    """Neighbour precision @K of exact top-K mining on ``features``."""
    neighbors = mine_neighbors(features, config.mine.k, "flat", 1, 1)
    print(f"{what}: neighbour precision @{config.mine.k} {neighbor_precision(neighbors, targets):.4f}", flush=True)


def probe_mining_recalibration(run: Path) -> None:
    config, images, targets, model = mining_probe_inputs(run)
    for label in ("saved statistics", "recalibrated"):
        if label == "recalibrated":
            recalibrate_batch_norm(model.backbone, images, config, eval_transform(data_spec(config)))
        print_precision(f"{run} pretext backbone, {label}", mining_features(model, images, config), config, targets)


def probe_mining_whitening(run: Path) -> None:
    config, images, targets, model = mining_probe_inputs(run)
    features = mining_features(model, images, config)
    widths = model.backbone.multiscale_widths(config.mine.grid)
    variants = {
        "raw": features,
        "whitened per stage (mine.whiten)": fit_whitening(features, widths, config.runtime.seed)(features),
        "whitened as one block": fit_whitening(features, [features.shape[1]], config.runtime.seed)(features),
    }
    for label, rows in variants.items():
        print_precision(f"{run} multiscale features, {label}", rows, config, targets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="probe", required=True)
    for probe, handler in (("mirror", probe_mirror), ("bn-recalibration", probe_bn_recalibration)):
        p = sub.add_parser(probe)
        p.add_argument("run", type=Path)
        p.add_argument("stage", choices=["scan", "selflabel"])
        p.set_defaults(call=lambda a, handler=handler: handler(a.run, a.stage))
    for probe, handler in (("heads", probe_heads), ("mining-recalibration", probe_mining_recalibration),
                           ("mining-whitening", probe_mining_whitening)):
        p = sub.add_parser(probe)
        p.add_argument("run", type=Path)
        p.set_defaults(call=lambda a, handler=handler: handler(a.run))
    p = sub.add_parser("coherent-selflabel")
    p.add_argument("name")
    p.add_argument("--base", type=Path, default=Path("runs/tune/rbn"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--min-coherence", type=float, default=0.9)
    p.set_defaults(call=lambda a: probe_coherent_selflabel(a.name, a.base, a.seeds, a.min_coherence))
    args = parser.parse_args()
    args.call(args)


if __name__ == "__main__":
    main()

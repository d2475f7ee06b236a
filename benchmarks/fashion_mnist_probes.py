"""Label-free inference and model variants probed on finished `fashion-mnist` runs, scored on the TRAIN split.

    .venv/bin/python benchmarks/fashion_mnist_probes.py mirror RUN_DIR STAGE
    .venv/bin/python benchmarks/fashion_mnist_probes.py bn-recalibration RUN_DIR STAGE
    .venv/bin/python benchmarks/fashion_mnist_probes.py multiscale-head NAME --base runs/bench-fm-v6 --seeds 0 1 2

``mirror`` averages each image's cluster probabilities with those of its mirror image; ``bn-recalibration``
recomputes the batch-norm statistics on clean train images (training gathers them on augmented ones);
``multiscale-head`` retrains SCAN with its heads on the multiscale features (stages 2-4) instead of stage 4.
None of them became an option (BENCHMARKS.md, sixth round); the test split is never read.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

import scanlearn.features
import scanlearn.stages.scan
from scanlearn.cli import main as cli_main
from scanlearn.config import resolve
from scanlearn.metrics import evaluate_clustering
from scanlearn.stages.common import data_spec, embed, load_split, recalibrate_batch_norm
from scanlearn.stages.evaluate import predict_probabilities
from scanlearn.stages.scan import eval_transform, load_clustering_model

OVERRIDES = ["runtime.progress=false"]


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
    images = load_split(config, "train")
    model = load_clustering_model(config, run, stage)
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


def with_multiscale_output(backbone):
    """Make a ResNet's forward return its multiscale features (stages 2-4, 14 x width dims)."""
    backbone.forward = backbone.multiscale_features
    backbone.out_dim = backbone.out_dim // 8 * 14
    return backbone


def probe_multiscale_head(name: str, base: Path, seeds: list[int]) -> None:
    load, build = scanlearn.features.load_backbone, scanlearn.stages.scan.build_backbone
    scanlearn.features.load_backbone = scanlearn.stages.scan.load_backbone = lambda *a, **k: with_multiscale_output(load(*a, **k))
    scanlearn.stages.scan.build_backbone = lambda *a, **k: with_multiscale_output(build(*a, **k))
    config = resolve("fashion-mnist", None, OVERRIDES)
    images = load_split(config, "train")
    for seed in seeds:
        run = Path("runs/tune") / name / f"seed{seed}"
        shutil.rmtree(run, ignore_errors=True)
        for stage in ("pretext", "mine"):
            shutil.copytree(base / f"seed{seed}" / stage, run / stage)
        args = ["scan", "--preset", "fashion-mnist", "--run-dir", str(run), "--seed", str(seed)]
        if cli_main(args + [item for o in OVERRIDES for item in ("--set", o)]) != 0:
            sys.exit(f"SCAN failed for seed {seed}")
        scores = evaluate_clustering(predict_probabilities(config, run, "scan", images), np.asarray(images.targets), 10)
        loss = min(json.loads((run / "scan" / "metrics.json").read_text())["head_losses"])
        print(f"{name} seed {seed}: train ACC {scores['acc']:.4f} NMI {scores['nmi']:.4f} kept-head loss {loss:.4f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="probe", required=True)
    for probe in ("mirror", "bn-recalibration"):
        p = sub.add_parser(probe)
        p.add_argument("run", type=Path)
        p.add_argument("stage", choices=["scan", "selflabel"])
    p = sub.add_parser("multiscale-head")
    p.add_argument("name")
    p.add_argument("--base", type=Path, default=Path("runs/bench-fm-v6"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    if args.probe == "mirror":
        probe_mirror(args.run, args.stage)
    elif args.probe == "bn-recalibration":
        probe_bn_recalibration(args.run, args.stage)
    else:
        probe_multiscale_head(args.name, args.base, args.seeds)


if __name__ == "__main__":
    main()

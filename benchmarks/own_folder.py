"""A new user's folder: Fashion-MNIST test images as PNG files, clustered by ``scanlearn run``.

``write`` puts ``--per-class`` test images of each of ``--classes`` Fashion-MNIST categories into
``DIR/<category>/<index>.png`` (28x28 grey, as stored; the first images of each class in file
order, so the folder is the same on every machine). ``score`` reads a finished run on that
folder and compares its clustering with k-means on the pixels and k-means on the run's own
pretext features; the labels come from the subfolder names and are used for scoring only.
``sweep`` retrains the frozen heads of a finished run at other settings (raw or normalised
features and SGD rates for SCAN; views and rates for self-labelling) and prints each one's
label-free score beside its ACC: the evidence behind ``scanlearn.schedule`` (docs/own-folder.md).

    .venv/bin/python benchmarks/own_folder.py write /tmp/fashion-folder
    /usr/bin/time -v scanlearn run --data /tmp/fashion-folder --clusters 5 --run-dir /tmp/fashion-run
    .venv/bin/python benchmarks/own_folder.py score /tmp/fashion-folder /tmp/fashion-run --time-log time.txt
    .venv/bin/python benchmarks/own_folder.py sweep /tmp/fashion-folder /tmp/fashion-run
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.cluster import KMeans

from scanlearn.config import OptimConfig, load_preset, resolve
from scanlearn.criteria import neighbour_kappa
from scanlearn.engine.features import FeatureCache
from scanlearn.engine.trained import load_frozen_heads
from scanlearn.losses import confidence_cross_entropy
from scanlearn.clustering.heads import fit_linear_heads, frozen_head_probabilities, head_losses
from scanlearn.data.fashion_mnist import read_idx
from scanlearn.metrics import evaluate_clustering
from scanlearn.engine.run import Run
from scanlearn.stages.evaluate import pretext_features

SOURCE = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot")
CHOSEN = (0, 1, 5, 7, 8)
RESULTS = Path(__file__).resolve().parent / "results"


def write_folder(out: Path, per_class: int, classes: tuple[int, ...]) -> int:
    """Write ``per_class`` test images of each class in ``classes`` as PNG files; returns how many."""
    images = read_idx(SOURCE / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(SOURCE / "t10k-labels-idx1-ubyte.gz")
    for c in classes:
        folder = out / CLASSES[c]
        folder.mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(labels == c)[:per_class]:
            Image.fromarray(images[i]).save(folder / f"{i:05d}.png")
    return per_class * len(classes)


def kmeans_scores(features: np.ndarray, targets: np.ndarray, k: int, seed: int = 0) -> dict[str, float]:
    """ACC/NMI/ARI of k-means (10 restarts) on L2-normalised ``features``."""
    normed = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    clusters = KMeans(k, n_init=10, random_state=seed).fit_predict(normed)
    return pick(evaluate_clustering(np.eye(k)[clusters], targets))


def pick(metrics: dict) -> dict[str, float]:
    """The three scores the comparison reports."""
    return {key: round(float(metrics[key]), 4) for key in ("acc", "nmi", "ari")}


def time_figures(path: Path | None) -> dict[str, float]:
    """Wall clock, user+system CPU seconds and peak memory from ``/usr/bin/time -v`` output."""
    if path is None:
        return {}
    text = path.read_text()
    found = lambda pattern: re.search(pattern, text).group(1)  # noqa: E731
    clock = [float(p) for p in found(r"Elapsed \(wall clock\) time.*: ([\d:.]+)").split(":")]
    wall = sum(v * 60 ** (len(clock) - 1 - i) for i, v in enumerate(clock))
    cpu = float(found(r"User time \(seconds\): ([\d.]+)")) + float(found(r"System time \(seconds\): ([\d.]+)"))
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "max_rss_mb": int(found(r"Maximum resident.*: (\d+)")) // 1024}


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (else the platform's machine type)."""
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def score(folder: Path, run_dir: Path, time_log: Path | None) -> dict:
    """The run's scores next to k-means on pixels and on its pretext features."""
    config = resolve(None, str(run_dir / "config.yaml"), [f"data.root={folder}", "data.labels_from_folders=true"])
    run = Run(config, run_dir)
    images = run.split("train")
    targets = np.asarray(images.targets)
    k = config.num_clusters
    pixels = np.stack([np.asarray(Image.open(p).convert("L"), dtype=np.float32).ravel() / 255 for p in images.paths])
    train_f, _ = pretext_features(run, images, images)
    stages = {s: pick(evaluate_clustering(np.load(run_dir / s / "probs_test.npy"), targets))
              for s in ("scan", "selflabel") if (run_dir / s / "probs_test.npy").is_file()}
    return {
        "images": len(images), "clusters": k, "classes": sorted(set(images.classes or [])),
        "scanlearn": stages,
        "kmeans_pixels": kmeans_scores(pixels, targets, k),
        "kmeans_pretext_features": kmeans_scores(train_f, targets, k),
        "schedule": {s: getattr(config, s).epochs for s in ("pretext", "scan", "selflabel")},
        "time": time_figures(time_log),
        "machine": f"{cpu_name()}, {os.cpu_count()} cores shared with other work", "date": str(date.today()),
    }


def scan_sweep(config, features: np.ndarray, neighbors: np.ndarray, targets: np.ndarray) -> list[dict]:
    """50 heads per setting (seed 0, 100 epochs, batch 128): raw or L2-normalised features x SGD rate."""
    rows = []
    for normalize in (False, True):
        for lr in (5.0, 2.0, 1.0, 0.5, 0.2):
            scan = replace(config.scan, normalize_features=normalize, batch_size=128, entropy_weight=5.0,
                           optim=OptimConfig(name="sgd", lr=lr, momentum=0.9, weight_decay=0.0, schedule="constant"))
            heads = fit_linear_heads(features, neighbors, config.num_clusters, 50, 100, scan, seed=0)
            probs = frozen_head_probabilities(heads, features)
            losses = head_losses(probs, neighbors[:, : config.mine.val_k])
            best = int(losses.argmin())
            rows.append({"normalized": normalize, "lr": lr, "scan_loss": round(float(losses[best]), 4),
                         "collapsed_heads": int((losses > -0.01).sum()),
                         **pick(evaluate_clustering(probs[best].numpy(), targets))})
            print(rows[-1], flush=True)
    return rows


def selflabel_sweep(config, run_dir: Path, images, neighbors: np.ndarray, targets: np.ndarray) -> list[dict]:
    """Self-labelling of SCAN's kept head (a plain loop: confident cross-entropy, class-balanced, threshold 0.99,
    10 epochs, batch 128, SGD, no EMA) on 4 cached views augmented for self-labelling (the photos preset's
    RandAugment) or as in the pretext stage, at several rates."""
    cache = FeatureCache(Run(config, run_dir))
    clean = torch.from_numpy(np.asarray(cache.clean(images))).float()
    augments = {"randaugment": load_preset("photos").selflabel.augment, "pretext": config.pretext.augment}
    start = load_frozen_heads(Run(config, run_dir), "scan")
    rows = []
    for name, augment in augments.items():
        views = torch.stack([torch.from_numpy(np.asarray(cache.augmented(images, augment, v))).float() for v in range(4)])
        with torch.no_grad():
            on_view = start(views[0])[0].argmax(1).numpy()
        rows.append({"views": name, "lr": None, "kappa": round(neighbour_kappa(on_view, neighbors), 4),
                     **pick(evaluate_clustering(np.eye(config.num_clusters)[on_view], targets)), "note": "SCAN head on view 0"})
        print(rows[-1], flush=True)
        for lr in (1.0, 0.3, 0.1, 0.03):
            torch.manual_seed(0)
            heads = copy.deepcopy(start).train()
            optimizer = torch.optim.SGD(heads.parameters(), lr=lr, momentum=0.9)
            for _ in range(10):
                order = torch.randperm(len(clean))
                for b in range(0, len(clean) - 127, 128):
                    idx = order[b:b + 128]
                    strong = views[torch.randint(len(views), (len(idx),)), idx]
                    with torch.no_grad():
                        weak = heads(clean[idx])[0]
                    loss = confidence_cross_entropy(weak, heads(strong)[0], 0.99, True).loss
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
            with torch.no_grad():
                labels = heads(clean)[0].argmax(1).numpy()
            rows.append({"views": name, "lr": lr, "kappa": round(neighbour_kappa(labels, neighbors), 4),
                         "clusters_filled": int(len(np.unique(labels))),
                         **pick(evaluate_clustering(np.eye(config.num_clusters)[labels], targets))})
            print(rows[-1], flush=True)
    return rows


def sweep(folder: Path, run_dir: Path) -> dict:
    """Both sweeps on a finished from-scratch run with frozen heads."""
    config = resolve(None, str(run_dir / "config.yaml"), [f"data.root={folder}", "data.labels_from_folders=true"])
    run = Run(config, run_dir)
    images = run.split("train")
    targets = np.asarray(images.targets)
    neighbors = np.load(run_dir / "mine" / "neighbors_train.npy")
    features = np.asarray(FeatureCache(run).clean(images), dtype=np.float32)
    return {"run": str(run_dir), "feature_norm_mean": round(float(np.linalg.norm(features, axis=1).mean()), 2),
            "scan": scan_sweep(config, features, neighbors, targets),
            "selflabel": selflabel_sweep(config, run_dir, images, neighbors, targets),
            "machine": f"{cpu_name()}, {os.cpu_count()} cores", "date": str(date.today())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("write", help="write the folder of PNG files")
    write.add_argument("out", type=Path)
    write.add_argument("--per-class", type=int, default=120)
    write.add_argument("--classes", type=int, nargs="+", default=list(CHOSEN))
    scoring = commands.add_parser("score", help="score a finished run on the folder")
    scoring.add_argument("folder", type=Path)
    scoring.add_argument("run_dir", type=Path)
    scoring.add_argument("--time-log", type=Path, help="output of /usr/bin/time -v for the run")
    scoring.add_argument("--command-line", default="", help="the run's command, recorded in the JSON")
    scoring.add_argument("--out", type=Path, default=RESULTS / "own_folder.json")
    sweeping = commands.add_parser("sweep", help="label-free sweeps of the frozen heads' settings on a finished run")
    sweeping.add_argument("folder", type=Path)
    sweeping.add_argument("run_dir", type=Path)
    sweeping.add_argument("--out", type=Path, default=RESULTS / "own_folder_sweeps.json")
    args = parser.parse_args()
    if args.command == "sweep":
        args.out.write_text(json.dumps(sweep(args.folder, args.run_dir), indent=2) + "\n")
        return
    if args.command == "write":
        print(f"wrote {write_folder(args.out, args.per_class, tuple(args.classes))} PNG files to {args.out}")
        return
    result = {"command": args.command_line, **score(args.folder, args.run_dir, args.time_log)}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

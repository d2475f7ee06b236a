"""A new user's folder: Fashion-MNIST test images as PNG files, clustered by ``scanlearn run``.

``write`` puts ``--per-class`` test images of each of ``--classes`` Fashion-MNIST categories into
``DIR/<category>/<index>.png`` (28x28 grey, as stored; the first images of each class in file
order, so the folder is the same on every machine). ``score`` reads a finished run on that
folder and compares its clustering with k-means on the pixels and k-means on the run's own
pretext features; the labels come from the subfolder names and are used for scoring only.

    .venv/bin/python benchmarks/own_folder.py write /tmp/fashion-folder
    /usr/bin/time -v scanlearn run --data /tmp/fashion-folder --clusters 5 --run-dir /tmp/fashion-run
    .venv/bin/python benchmarks/own_folder.py score /tmp/fashion-folder /tmp/fashion-run --time-log time.txt
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.cluster import KMeans

from scanlearn.config import resolve
from scanlearn.data.fashion_mnist import read_idx
from scanlearn.metrics import evaluate_clustering
from scanlearn.engine.splits import load_split
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
    images = load_split(config, "train")
    targets = np.asarray(images.targets)
    k = config.num_clusters
    pixels = np.stack([np.asarray(Image.open(p).convert("L"), dtype=np.float32).ravel() / 255 for p in images.paths])
    train_f, _ = pretext_features(config, run_dir, images, images)
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
    args = parser.parse_args()
    if args.command == "write":
        print(f"wrote {write_folder(args.out, args.per_class, tuple(args.classes))} PNG files to {args.out}")
        return
    result = {"command": args.command_line, **score(args.folder, args.run_dir, args.time_log)}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

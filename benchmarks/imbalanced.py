"""Imbalanced Fashion-MNIST (issue 31): k-means on the pretext features vs SCAN vs self-label.

The train split is subsampled so that class sizes fall geometrically from the largest class to the
smallest (``--ratio`` largest/smallest, e.g. 10 or 100; 1 keeps the classes equal); which class is
largest, and the order of the others, is drawn from the seed. The test split is subsampled with the
same profile and class order. Every seed trains the pretext and mines once (``seed<S>/base``), then
runs SCAN and self-labelling once per ``--priors`` entry, in a copy named ``<prior>-<recipe>``
(``uniform``: the fashion-mnist preset as it is; ``estimated``: the entropy target and the
self-label balancing follow the class sizes estimated by k-means on the mined features, the preset's
uniform bias shift off; ``graph``: the same with sizes from k-means sub-clusters merged along the
mined neighbours). Labels only score the test split.

Reported per seed and prior (test split, ACC/NMI/ARI): k-means on the backbone features (the
`pretext` row of every run), k-means on the mined features (the run's label-free baseline, nearest
centroid), SCAN and SCAN + self-label, plus each candidate's label-free neighbour kappa and which
one `predict` uses. Writes benchmarks/results/imbalanced_ratio<R>_scale<S>_<priors>.json.

    .venv/bin/python benchmarks/imbalanced.py --ratio 10 --seeds 0 1 2
    .venv/bin/python benchmarks/imbalanced.py --ratio 10 --seeds 0 --scale 0.5 --set pretext.epochs=12
    .venv/bin/python benchmarks/imbalanced.py --ratio 10 --scale 0.25 --recipe frozen --set pretext.epochs=40
    .venv/bin/python benchmarks/imbalanced.py --ratio 10 --scale 0.25 --recipe finetune --set pretext.epochs=40 --priors estimated

``--scale`` multiplies the train class sizes (1.0: the largest class keeps its 6,000 images);
``--set`` overrides go to every stage (e.g. shorter schedules). ``--select-weights 1 2 3 4 5`` first lets
`scanlearn select` choose the entropy weight per seed and prior (its candidate heads trained with that prior,
picked by the default label-free criterion), in a run directory named ``<prior>-selected-<recipe>``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
SOURCE = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FROZEN_RECIPE = [  # heads on frozen, L2-normalised pretext features (the small-folder schedule's recipe, docs/own-folder.md)
    "scan.freeze_backbone=true", "scan.normalize_features=true", "scan.epochs=30", "scan.batch_size=128",
    "scan.num_heads=50", "scan.head_search=0", "scan.recalibrate_bn=false", "scan.optim.name=sgd", "scan.optim.lr=1.0",
    "scan.optim.momentum=0.9", "scan.optim.weight_decay=0", "scan.optim.schedule=constant", "scan.augment.kind=none",
    "scan.entropy_weight=4",  # the weight every recorded run used (the fashion-mnist preset's until it moved to 3)
    "selflabel.freeze_backbone=true", "selflabel.epochs=10", "selflabel.batch_size=128", "selflabel.cached_views=4",
    "selflabel.recalibrate_bn=false", "selflabel.optim.name=sgd", "selflabel.optim.lr=0.03",
    "selflabel.optim.momentum=0.9", "selflabel.optim.weight_decay=0", "selflabel.optim.schedule=constant",
    # self-labelling views augmented as the preset's pretext views are
    "selflabel.augment.kind=simclr", "selflabel.augment.crop_scale=[0.3,1.0]", "selflabel.augment.crop_size=20",
    "selflabel.augment.jitter=[0.4,0.4,0.0,0.0]", "selflabel.augment.grayscale_p=0.0", "selflabel.augment.blur_p=0.5",
    "selflabel.augment.blur_sigma=[0.1,1.0]",
]
NETWORK_SELFLABEL = [  # self-labelling as the paper does it: the whole network, strongly augmented images, Adam 1e-4
    "selflabel.freeze_backbone=false", "selflabel.optim.name=adam", "selflabel.optim.lr=0.0001",
    "selflabel.optim.weight_decay=0.0001", "selflabel.recalibrate_bn=true", "selflabel.augment.kind=strong",
    "selflabel.augment.n_ops=2", "selflabel.augment.cutout=8", "selflabel.augment.crop_padding=2",
]
RECIPES = {"preset": [], "frozen": FROZEN_RECIPE, "finetune": FROZEN_RECIPE + NETWORK_SELFLABEL}
PRIOR_OVERRIDES = {
    "uniform": [],
    "estimated": ["scan.prior=estimated", "selflabel.prior=estimated",
                  "scan.uniform_prior=false", "selflabel.uniform_prior=false"],
    "graph": ["scan.prior=graph", "selflabel.prior=graph", "scan.uniform_prior=false", "selflabel.uniform_prior=false"],
}


def geometric_sizes(largest: int, ratio: float, classes: int) -> np.ndarray:
    """Class sizes by rank: ``largest * ratio^(-r / (classes - 1))``, the last being ``largest / ratio``."""
    ranks = np.arange(classes)
    return np.maximum(1, np.round(largest * ratio ** (-ranks / (classes - 1)))).astype(int)


def subsample(labels: np.ndarray, order: np.ndarray, sizes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices keeping ``sizes[r]`` random images of class ``order[r]``."""
    keep = [rng.choice(np.flatnonzero(labels == c), size, replace=False) for c, size in zip(order, sizes)]
    return np.sort(np.concatenate(keep))


def read_idx(path: Path) -> np.ndarray:
    """A uint8 IDX file as an array."""
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzip-compressed IDX file."""
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    path.write_bytes(gzip.compress(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes(), mtime=0))


def make_dataset(folder: Path, ratio: float, seed: int, scale: float) -> dict:
    """Write the imbalanced train and test splits into ``folder``; returns their class sizes."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(10)
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for split, largest in (("train", round(6000 * scale)), ("test", 1000)):
        images, labels = (read_idx(SOURCE / name) for name in FILES[split])
        keep = subsample(labels, order, geometric_sizes(largest, ratio, 10), rng)
        if not (folder / FILES[split][1]).is_file():  # the same seed writes the same files: keep them for reruns
            write_idx(folder / FILES[split][0], images[keep])
            write_idx(folder / FILES[split][1], labels[keep])
        sizes[split] = np.bincount(labels[keep], minlength=10).tolist()
    return {"class_order": order.tolist(), "sizes": sizes}


def cli(command: str, run_dir: Path, data: Path, seed: int, overrides: list[str], *extra: str) -> float:
    """Run one scanlearn command (with ``extra`` flags) in a child process; returns its wall time in seconds."""
    args = [sys.executable, "-m", "scanlearn.cli", command, "--preset", "fashion-mnist", "--run-dir", str(run_dir),
            "--data-root", str(data), "--seed", str(seed), "--set", "runtime.progress=false", *extra]
    for item in overrides:
        args += ["--set", item]
    start = time.perf_counter()
    subprocess.run(args, check=True)
    return time.perf_counter() - start


def shared_stages(root: Path, data: Path, seed: int, overrides: list[str]) -> tuple[Path, dict]:
    """Pretext and mining of one seed, run once for every prior; returns the run directory and wall times."""
    base = root / "base"
    walls = {}
    for stage in ("pretext", "mine"):
        if not (base / stage / "done.json").is_file():
            walls[stage] = cli(stage, base, data, seed, overrides)
    return base, walls


def kmeans_test_scores(run_dir: Path) -> dict:
    """ACC/NMI/ARI of the run's label-free k-means baseline (nearest centroid) on the test split."""
    from scanlearn.config import load_config
    from scanlearn.metrics import evaluate_clustering
    from scanlearn.clustering.kmeans import feature_kmeans, raw_mining_features
    from scanlearn.engine.run import Run

    run = Run(load_config(run_dir / "config.yaml"), run_dir)
    images = run.split("test")
    probs = feature_kmeans(run).probabilities(raw_mining_features(run, images)[0])
    return evaluate_clustering(probs, np.asarray(images.targets))


def choose_weight(run_dir: Path, data: Path, seed: int, overrides: list[str], weights: list[float]) -> float:
    """The entropy weight `scanlearn select` picks (default label-free criterion) among ``weights``, its candidate
    heads trained with the run's prior."""
    from scanlearn.selection import chosen_params

    listed = ",".join(f"{w:g}" for w in weights)
    cli("select", run_dir, data, seed, overrides, "--seeds", str(seed), "--entropy-weights", listed)
    return chosen_params(run_dir)["entropy_weight"]


def run_name(prior: str, recipe: str, selected: bool) -> str:
    """The run directory of one prior and recipe in a seed's folder, e.g. ``estimated-selected-frozen``."""
    return "-".join([prior, *(["selected"] if selected else []), recipe])


def run_prior(base: Path, run_dir: Path, prior: str, data: Path, seed: int, overrides: list[str],
              weights: list[float] | None = None) -> dict:
    """SCAN and self-label with one prior in ``run_dir``, a copy of the seed's pretext/mine run directory; with
    ``weights``, the entropy weight is first chosen among them without labels."""
    if not (run_dir / "selflabel" / "done.json").is_file():
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.copytree(base, run_dir, symlinks=True)
    overrides = overrides + PRIOR_OVERRIDES[prior]
    chosen = None
    if weights:
        chosen = choose_weight(run_dir, data, seed, overrides, weights)
        overrides = overrides + [f"scan.entropy_weight={chosen:g}"]
        print(f"seed {seed}, prior {prior}: label-free choice scan.entropy_weight={chosen:g}")
    wall = cli("run", run_dir, data, seed, overrides)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    candidates = json.loads((run_dir / "candidates.json").read_text())
    estimated = json.loads((run_dir / "scan" / "metrics.json").read_text()).get("prior")
    return {"wall_s": wall, "metrics": metrics, "kmeans_mined": kmeans_test_scores(run_dir),
            "candidates": candidates, "estimated_prior": estimated, "chosen_entropy_weight": chosen}


def table_rows(result: dict) -> list[tuple[str, dict]]:
    """(label, {acc, nmi, ari}) rows of one seed and prior."""
    m = result["metrics"]
    return [("k-means, backbone features", m["pretext"]), ("k-means, mined features", result["kmeans_mined"]),
            ("SCAN", m["scan"]), ("SCAN + self-label", m["selflabel"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=10.0, help="largest / smallest class size (e.g. 10, 100)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--scale", type=float, default=1.0, help="train class sizes x this (1.0: largest class 6,000)")
    parser.add_argument("--priors", nargs="*", default=["uniform", "estimated"], choices=sorted(PRIOR_OVERRIDES))
    parser.add_argument("--run-root", default="runs/bench-imbalanced")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="preset",
                        help="preset: the fashion-mnist preset's SCAN and self-label; frozen: both train heads on "
                             "frozen features; finetune: SCAN as frozen, self-labelling fine-tunes the whole network")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--select-weights", type=float, nargs="+",
                        help="choose scan.entropy_weight per seed and prior among these with `scanlearn select`")
    args = parser.parse_args()
    args.overrides = RECIPES[args.recipe] + args.overrides
    tag = f"ratio{args.ratio:g}_scale{args.scale:g}"
    started = datetime.now(timezone.utc)
    runs = []
    for seed in args.seeds:
        root = Path(args.run_root) / tag / f"seed{seed}"
        data = root / "data"
        dataset = make_dataset(data, args.ratio, seed, args.scale)
        base, walls = shared_stages(root, data, seed, args.overrides)
        for prior in args.priors:
            run_dir = root / run_name(prior, args.recipe, bool(args.select_weights))
            result = run_prior(base, run_dir, prior, data, seed, args.overrides, args.select_weights)
            runs.append({"seed": seed, "prior": prior, "dataset": dataset, "shared_wall_s": walls, **result})
            print(f"\nseed {seed}, prior {prior}  (label-free pick: {result['candidates']['best']})")
            for label, scores in table_rows(result):
                print(f"  {label:<28} ACC {scores['acc']:.4f}  NMI {scores['nmi']:.4f}  ARI {scores['ari']:.4f}")
            print("  neighbour kappa: " + ", ".join(f"{k} {v:.4f}" for k, v in result["candidates"]["scores"].items()))
    RESULTS.mkdir(exist_ok=True)
    recipe = "" if args.recipe == "preset" else f"_{args.recipe}"
    selected = "_selected" if args.select_weights else ""
    out = RESULTS / f"imbalanced_{tag}{recipe}_{'_'.join(args.priors)}{selected}.json"
    out.write_text(json.dumps({
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "started_utc": started.isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}", "ratio": args.ratio,
        "scale": args.scale, "seeds": args.seeds, "overrides": args.overrides, "runs": runs,
    }, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()

"""Issue 44's development folders: the run's answer against simple baselines, in ACC / NMI / ARI and wall time.

For every folder built by ``benchmarks/build_folders.py`` (``ROOT/<name>/`` with ``ROOT/<name>.labels.csv``
beside it, read here only to score):

- simple baselines, each k-means (10 restarts) with 5 seeds on at most 50 PCA dimensions of one feature space:
  ``pixels`` (RGB at 32 px), ``colour`` (a 128-bin HSV histogram, 8 hues x 4 saturations x 4 values, at 64 px),
  ``hog`` (grey 64 px, 8-px cells, 9 orientations, 2x2 blocks; scikit-image, the ``bench`` extra) and
  ``hog+colour`` (both, each scaled to unit total variance); k-means runs on one thread. Images are decoded
  as scanlearn decodes them (transparency over white, padded to a square: ``scanlearn.data.decode``).
- unless ``--baselines-only``, per seed: ``scanlearn run --data DIR --clusters K`` from scratch (no download:
  whatever backbone ``RUN/backbone.json`` records is what the run chose), then ``scanlearn predict`` on the
  folder, whose CSV is the run's answer, and k-means on the run's own pretext features (L2-normalised, then as
  the baselines). ``RUN/assignments.csv``, written by ``run``, is scored too, with the share of images on which
  it agrees with ``predict`` (clusters matched one to one): until a run gives one answer they may differ.
  Each run's wall time covers ``run`` and ``predict``.

Results go to ``benchmarks/results/folders.json`` with the commit, CPU model, ISA flags, core count and torch
version. Each folder's baselines, and each of its runs by seed, are replaced one by one, so baselines and runs
can be measured apart. The table (means over seeds) is printed on stdout, progress on stderr.

    .venv/bin/python benchmarks/build_folders.py
    .venv/bin/python benchmarks/folders.py --baselines-only
    .venv/bin/python benchmarks/folders.py --seeds 0 1 2                     # the runs too (long)
    .venv/bin/python benchmarks/folders.py --only oxygen-128 --seeds 0 --set pretext.epochs=2
    .venv/bin/python benchmarks/folders.py --table                           # the table of the saved results
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from threadpoolctl import threadpool_limits

from provenance import measured
from scanlearn.config import load_config
from scanlearn.data.decode import open_rgb, resize_pad
from scanlearn.engine.run import Run
from scanlearn.metrics import evaluate_clustering
from scanlearn.stages.evaluate import pretext_features

RESULTS = Path(__file__).resolve().parent / "results"
BASELINE_SEEDS = (0, 1, 2, 3, 4)
PCA_DIMS = 50
SCORES = ("acc", "nmi", "ari")


def hog_descriptor(grey: np.ndarray) -> np.ndarray:
    """HOG of one grey image (scikit-image)."""
    from skimage.feature import hog

    return hog(grey, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2), feature_vector=True)


def read_labels(root: Path, name: str) -> tuple[list[Path], np.ndarray, list[str]]:
    """A folder's image paths, integer targets and category names from its labels file."""
    with open(root / f"{name}.labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    categories = sorted({row["category"] for row in rows})
    paths = [root / name / row["path"] for row in rows]
    return paths, np.array([categories.index(row["category"]) for row in rows]), categories


def decoded(paths: list[Path], side: int) -> np.ndarray:
    """Images as scanlearn decodes a folder (RGB, transparency over white, padded square) at ``side`` px, uint8."""
    return np.stack([np.asarray(resize_pad(open_rgb(str(p)), side)) for p in paths])


def pixel_features(paths: list[Path]) -> np.ndarray:
    """RGB pixels at 32 px in [0, 1]."""
    return decoded(paths, 32).reshape(len(paths), -1).astype(np.float32) / 255


def colour_features(paths: list[Path]) -> np.ndarray:
    """128-bin HSV histogram (8 hues x 4 saturations x 4 values) of each image at 64 px, summing to 1."""
    hsv = np.stack([np.asarray(Image.fromarray(image).convert("HSV")) for image in decoded(paths, 64)])
    bins = (hsv[..., 0] // 32) * 16 + (hsv[..., 1] // 64) * 4 + hsv[..., 2] // 64
    counts = np.stack([np.bincount(b.ravel(), minlength=128) for b in bins]).astype(np.float32)
    return counts / counts.sum(1, keepdims=True)


def hog_features(paths: list[Path]) -> np.ndarray:
    """HOG of each image in grey at 64 px."""
    return np.stack([hog_descriptor(np.asarray(Image.fromarray(image).convert("L"), dtype=np.float32) / 255)
                     for image in decoded(paths, 64)]).astype(np.float32)


def unit_variance(features: np.ndarray) -> np.ndarray:
    """Features scaled so that their total variance is 1 (concatenated spaces then weigh the same)."""
    return features / np.sqrt(max(float(features.var(0).sum()), 1e-12))


SPACES: dict[str, Callable[[list[Path]], np.ndarray]] = {
    "pixels": pixel_features,
    "colour": colour_features,
    "hog": hog_features,
}
COMBINED = {"hog+colour": ("hog", "colour")}


def kmeans_scores(features: np.ndarray, targets: np.ndarray, k: int, seeds: tuple[int, ...]) -> dict:
    """ACC/NMI/ARI of k-means (10 restarts per seed) on the first ``PCA_DIMS`` principal components, per seed and
    their mean."""
    dims = min(PCA_DIMS, *features.shape)
    reduced = PCA(dims, svd_solver="full").fit_transform(features.astype(np.float64))
    per_seed = []
    with threadpool_limits(1):  # on shared cores OpenMP's spinning threads made k-means 20x slower
        for seed in seeds:
            clusters = KMeans(k, n_init=10, random_state=seed).fit_predict(reduced)
            per_seed.append(scores_of(clusters, targets, k))
    return summary(per_seed)


def scores_of(clusters: np.ndarray, targets: np.ndarray, k: int) -> dict[str, float]:
    """ACC/NMI/ARI of hard cluster assignments (scanlearn.metrics)."""
    metrics = evaluate_clustering(np.eye(k)[clusters], targets, n_classes=int(targets.max()) + 1)
    return {key: round(metrics[key], 4) for key in SCORES}


def summary(per_seed: list[dict[str, float]]) -> dict:
    """Per-seed scores with their mean and standard deviation."""
    return {"mean": {key: round(float(np.mean([s[key] for s in per_seed])), 4) for key in SCORES},
            "std": {key: round(float(np.std([s[key] for s in per_seed])), 4) for key in SCORES},
            "seeds": per_seed}


def baselines(paths: list[Path], targets: np.ndarray, k: int) -> dict:
    """Every simple baseline's scores and wall time (its features and k-means) on one folder."""
    features, seconds = {}, {}
    for name, features_of in SPACES.items():
        start = time.perf_counter()
        features[name] = features_of(paths)
        seconds[name] = time.perf_counter() - start
    for name, parts in COMBINED.items():
        features[name] = np.hstack([unit_variance(features[part]) for part in parts])
        seconds[name] = sum(seconds[part] for part in parts)
    results = {}
    for name, x in features.items():
        start = time.perf_counter()
        results[name] = kmeans_scores(x, targets, k, BASELINE_SEEDS)
        results[name]["wall_s"] = round(seconds[name] + time.perf_counter() - start, 1)
        print(f"  {name:<11} ACC {results[name]['mean']['acc']:.3f}  NMI {results[name]['mean']['nmi']:.3f}",
              file=sys.stderr)
    return results


def cli(*args: str) -> float:
    """Run one scanlearn command in a child process (its messages on our stderr); returns its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "scanlearn.cli", *args], check=True, stdout=sys.stderr)
    return time.perf_counter() - start


def answer_clusters(csv_path: Path, folder: Path, paths: list[Path]) -> np.ndarray:
    """The cluster a scanlearn CSV (``predict``'s, or the run's ``assignments.csv``) gives each of ``paths``."""
    with open(csv_path, newline="") as f:
        given = {below(row["path"], folder): int(row["cluster"]) for row in csv.DictReader(f)}
    return np.array([given[below(p, folder)] for p in paths])


def below(path: str | Path, folder: Path) -> Path:
    """``path`` relative to ``folder`` (both resolved), the key that matches a CSV row to a labels row."""
    return Path(path).resolve().relative_to(folder.resolve())


def pretext_kmeans(run_dir: Path, folder: Path, paths: list[Path], targets: np.ndarray, k: int) -> dict:
    """k-means on the run's own pretext features, L2-normalised, scored like the baselines."""
    run = Run(load_config(run_dir / "config.yaml"), run_dir)
    images = run.split("train")
    features, _ = pretext_features(run, images, images)
    row = {below(p, folder): i for i, p in enumerate(images.paths)}
    ordered = features[[row[below(p, folder)] for p in paths]]
    normed = ordered / np.maximum(np.linalg.norm(ordered, axis=1, keepdims=True), 1e-12)
    return kmeans_scores(normed, targets, k, BASELINE_SEEDS)


def run_once(folder: Path, paths: list[Path], targets: np.ndarray, k: int, run_dir: Path, seed: int,
             overrides: list[str], from_mine: bool = False) -> dict:
    """One from-scratch ``scanlearn run`` and ``predict`` on ``folder``, scored; the run directory is started anew,
    or with ``from_mine`` its finished pretext stage is kept and mining onwards run again (the wall time then
    leaves the pretext out)."""
    sets = [item for value in ["runtime.progress=false", *overrides] for item in ("--set", value)]
    restart = []
    if from_mine:
        cli("mine", "--run-dir", str(run_dir), "--restart")
    else:
        restart = ["--restart"]
    wall = cli("run", "--data", str(folder), "--clusters", str(k), "--run-dir", str(run_dir), "--seed", str(seed),
               *restart, *sets)
    answer_csv = run_dir / "predictions_bench.csv"
    wall += cli("predict", "--run-dir", str(run_dir), "--data", str(folder), "--output", str(answer_csv))
    read = lambda name: json.loads((run_dir / name).read_text()) if (run_dir / name).is_file() else None  # noqa: E731
    if (read("backbone.json") or {}).get("source") != "scratch":
        print(f"folders: warning: {run_dir} did not train from scratch (RUN/backbone.json)", file=sys.stderr)
    answer = answer_clusters(answer_csv, folder, paths)
    run_csv = answer_clusters(run_dir / "assignments.csv", folder, paths)
    return {"seed": seed, "wall_s": round(wall, 1), "overrides": overrides, **measured(),
            "answer": scores_of(answer, targets, k), "run_csv": scores_of(run_csv, targets, k),
            "csv_matches_predict": scores_of(run_csv, answer, k)["acc"],
            "pretext_kmeans": pretext_kmeans(run_dir, folder, paths, targets, k)["mean"],
            "candidates": read("candidates.json"), "backbone": read("backbone.json"), "timing": read("timing.json"),
            "pretext_reused": from_mine}


def mean_of_runs(runs: list[dict], key: str) -> dict[str, float] | None:
    """Mean ACC/NMI/ARI of ``key`` over the recorded runs (None when there are none)."""
    if not runs:
        return None
    return {s: round(float(np.mean([r[key][s] for r in runs])), 4) for s in SCORES}


def table(results: dict) -> str:
    """One Markdown row per folder: sizes, each baseline's mean ACC / NMI, and the runs' means when recorded
    (with the share of images on which the run's own CSV agrees with ``predict``)."""
    spaces = [*SPACES, *COMBINED]
    header = ["folder", "images", "K", "largest", *spaces, "pretext k-means", "run's answer", "run wall s",
              "assignments.csv = predict"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    fmt = lambda s: f"{s['acc']:.3f} / {s['nmi']:.3f}" if s else "—"  # noqa: E731
    for name, entry in results["folders"].items():
        runs = entry.get("runs", [])
        walls = f"{np.mean([r['wall_s'] for r in runs]):.0f}" if runs else "—"
        agree = f"{np.mean([r['csv_matches_predict'] for r in runs]):.2f}" if runs else "—"
        cells = [name, str(entry["images"]), str(entry["clusters"]), f"{entry['largest_share']:.2f}",
                 *(fmt(entry["baselines"][s]["mean"]) if "baselines" in entry else "—" for s in spaces),
                 fmt(mean_of_runs(runs, "pretext_kmeans")), fmt(mean_of_runs(runs, "answer")), walls, agree]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def measure(name: str, args: argparse.Namespace, entry: dict) -> dict:
    """Baselines and (unless ``--baselines-only``) runs of one folder, updating its earlier entry."""
    paths, targets, categories = read_labels(args.root, name)
    k = len(categories)
    shares = np.bincount(targets) / len(targets)
    entry = {**entry, "images": len(paths), "clusters": k, "largest_share": round(float(shares.max()), 4),
             "categories": categories}
    print(f"{name}: {len(paths)} images, K={k}", file=sys.stderr)
    if not args.runs_only:
        entry["baselines"] = baselines(paths, targets, k)
        entry["baselines_measured"] = measured()
    if not args.baselines_only:
        new = [run_once(args.root / name, paths, targets, k, args.run_root / f"{name}-seed{seed}", seed, args.overrides,
                        args.from_mine) for seed in args.seeds]
        entry["runs"] = merged_runs(entry.get("runs", []), new)
    return entry


def merged_runs(earlier: list[dict], new: list[dict]) -> list[dict]:
    """``earlier`` runs with ``new`` ones added, by seed: a seed measured again replaces its run."""
    by_seed = {run["seed"]: run for run in [*earlier, *new]}
    return [by_seed[seed] for seed in sorted(by_seed)]


def saved_results(path: Path) -> dict:
    """The results saved at ``path``, or an empty set of folders."""
    return json.loads(path.read_text()) if path.is_file() else {"folders": {}}


def chosen_folders(parser: argparse.ArgumentParser, root: Path, only: list[str] | None) -> list[str]:
    """``folder_names``, a problem with them ending the command as a usage error."""
    try:
        return folder_names(root, only)
    except ValueError as problem:
        parser.error(str(problem))


def folder_names(root: Path, only: list[str] | None) -> list[str]:
    """The folders to measure: ``only``, else every folder of ``ROOT/manifest.json`` (ValueError naming what is
    missing)."""
    manifest = root / "manifest.json"
    if not manifest.is_file():
        raise ValueError(f"no {manifest}; build the folders first: benchmarks/build_folders.py --root {root}")
    built = list(json.loads(manifest.read_text()))
    unknown = sorted(set(only or []) - set(built))
    if unknown:
        raise ValueError(f"{', '.join(unknown)} not built in {root}; choose among {', '.join(built)}")
    return only or built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("data/folders"),
                        help="the built folders (default data/folders)")
    parser.add_argument("--only", nargs="+", help="these folders only (default: every folder in ROOT/manifest.json)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the runs (default 0 1 2)")
    parser.add_argument("--run-root", type=Path, default=Path("runs/bench-folders"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE for every run")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--baselines-only", action="store_true", help="the simple baselines only, no scanlearn run")
    only.add_argument("--runs-only", action="store_true", help="the runs only, keeping the recorded baselines")
    only.add_argument("--table", action="store_true", help="print the table of the saved results and stop")
    parser.add_argument("--from-mine", action="store_true",
                        help="keep each run's finished pretext stage and run mining onwards again (wall time without it)")
    parser.add_argument("--out", type=Path, default=RESULTS / "folders.json")
    args = parser.parse_args()
    results = saved_results(args.out)
    if not args.table:
        for name in chosen_folders(parser, args.root, args.only):
            results["folders"][name] = measure(name, args, results["folders"].get(name, {}))
            results.update(command=" ".join([Path(sys.executable).name, *sys.argv]),
                           pca_dims=PCA_DIMS, baseline_seeds=list(BASELINE_SEEDS))
            args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    print(table(results))


if __name__ == "__main__":
    main()

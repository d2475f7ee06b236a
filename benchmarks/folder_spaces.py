"""Issue 44, offline: can a label-free rule over several feature spaces meet the simple baselines on every folder?

No network is trained. For each development folder the finished seed-0 run ``runs/bench-folders/<name>-seed0/``
gives everything a library rule could use without labels:

- ``mine/features_train.npy``: the raw mining rows, the learned projection block then the library's descriptors
  (``mine.descriptors``: HOG, 128-bin HSV colour histogram, pixels at 32 px; ``scanlearn.data.descriptors``);
- the backbone (pretext) features, ``scanlearn.stages.evaluate.pretext_features`` (read from the run's feature
  cache, inference only; kept in ``--cache``);
- the run's answer (``predictions_bench.csv``).

Candidate feature spaces (each a matrix k-means runs on and a 20-nearest-neighbour graph, cosine, is built on):

- ``learned``: backbone features, unit rows, PCA 50 (as ``folders.py:pretext_kmeans``);
- ``hog``, ``colour``, ``pixels``: one descriptor block, PCA 50 (as the baselines);
- ``hog+colour``: both scaled to unit total variance, PCA 50 (as the baseline);
- ``whitened``: HOG, colour and pixels each PCA-whitened (``mining.fit_whitening``: at most one component per 10
  rows, here also at most 50) and L2-normalised, side by side (the lead of docs/tuning-log.md step 6);
- ``mined``: the run's own mined space (``clustering.kmeans.fit_block_transform`` as the run fitted it).

Candidates: k-means (10 restarts, seed s) in each of the 7 spaces, plus the run's answer. Rules (no labels):

- ``agree``     (a) the candidate with the highest mean NMI to the other candidates;
- ``eac-avg``   (a) evidence accumulation: the co-association matrix of the candidates (share of candidates that
                put two images together), average linkage cut at K clusters;
- ``eac-spec``  (a) the same co-association matrix as the affinity of spectral clustering (K clusters, seed s);
- ``stable``    (b) the space whose k-means is most stable: mean ARI between k-means fitted on 5 random 80 %
                subsamples (seeds s..s+4) and applied to all images; its k-means is the answer;
- ``xkappa``    (c) the candidate with the highest neighbour kappa (``criteria.neighbour_kappa``) averaged over
                the neighbour graphs of all 7 spaces (not only its own);
- ``xkappa-loo``    the same, leaving out the candidate's own space's graph (added after the first five rules
                were scored, to test one explanation of their failure; the only variant added after looking).

Each rule runs with k-means seeds 0-4 and its scores are averaged, like the baselines (5 seeds). Labels
(``data/folders/<name>.labels.csv``) are read only to score. The floors are the best baseline's 5-seed mean ACC
and NMI (max over pixels / colour / hog / hog+colour, taken separately for ACC and NMI) and k-means on the
run's pretext features, both from ``benchmarks/results/folders.json``. The ``oracle`` row (the best candidate
space per folder, chosen by labels) is shown only to tell whether any candidate could meet the floors.

    nice -n 19 env OMP_NUM_THREADS=1 PYTHONPATH=src:benchmarks .venv/bin/python benchmarks/folder_spaces.py
    .venv/bin/python benchmarks/folder_spaces.py --table
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.sparse.csgraph import connected_components
from sklearn.cluster import AgglomerativeClustering, KMeans, SpectralClustering
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from threadpoolctl import threadpool_limits

from folders import answer_clusters, read_labels, scores_of, unit_variance
from provenance import measured
from scanlearn.clustering.kmeans import descriptor_widths, fit_block_transform, mined_space
from scanlearn.config import load_config
from scanlearn.criteria import neighbour_kappa
from scanlearn.mining import fit_whitening, l2_normalize, mine_neighbors

RESULTS = Path(__file__).resolve().parent / "results"
SEEDS = (0, 1, 2, 3, 4)
PCA_DIMS = 50
NEIGHBOURS = 20
RESTARTS = 10
SUBSAMPLES, SUBSAMPLE_SHARE = 5, 0.8
SPACES = ("learned", "hog", "colour", "pixels", "hog+colour", "whitened", "mined")
RULES = ("agree", "eac-avg", "eac-spec", "stable", "xkappa", "xkappa-loo")
BASELINES = ("pixels", "colour", "hog", "hog+colour")


# ----------------------------------------------------------------------------- feature spaces
def pca(x: np.ndarray, dims: int = PCA_DIMS) -> np.ndarray:
    """The first ``dims`` principal components of ``x`` (as the baselines reduce)."""
    return PCA(min(dims, *x.shape), svd_solver="full").fit_transform(np.asarray(x, dtype=np.float64))


def whitened_blocks(blocks: list[np.ndarray], seed: int) -> np.ndarray:
    """Each block PCA-whitened (``fit_whitening``, at most ``PCA_DIMS`` components) and L2-normalised, side by side."""
    parts = []
    for block in blocks:
        whitening = fit_whitening(block, [block.shape[1]], seed, scale_axes=True)
        projection = whitening.projections[0][:, :PCA_DIMS]
        parts.append(l2_normalize(((block - whitening.means[0]) @ projection).astype(np.float32)))
    return np.hstack(parts)


def run_spaces(run_dir: Path, cache: Path, seconds: dict[str, float]) -> dict[str, np.ndarray]:
    """The candidate spaces of one run's training images (rows in ``files.txt`` order); the wall time of making
    each (from the raw blocks) goes to ``seconds``."""
    config = load_config(run_dir / "config.yaml")
    raw = np.load(run_dir / "mine" / "features_train.npy")
    names = list(config.mine.descriptors)
    widths = descriptor_widths(config)
    learned_width = raw.shape[1] - sum(widths)
    bounds = np.cumsum([learned_width, *widths])
    block = {name: raw[:, start:stop] for name, start, stop in zip(names, bounds[:-1], bounds[1:])}
    backbone = np.load(cache / f"{run_dir.name}.backbone.npy")
    seed = config.runtime.seed
    makers = {
        "learned": lambda: pca(l2_normalize(backbone)),
        "hog": lambda: pca(block["hog"]),
        "colour": lambda: pca(block["colour"]),
        "pixels": lambda: pca(block["pixels"]),
        "hog+colour": lambda: pca(np.hstack([unit_variance(block["hog"]), unit_variance(block["colour"])])),
        "whitened": lambda: whitened_blocks([block["hog"], block["colour"], block["pixels"]], seed),
        "mined": lambda: mined_space(raw, fit_block_transform(config, raw, [learned_width])).astype(np.float64),
    }
    spaces = {}
    for name, make in makers.items():
        start = time.perf_counter()
        spaces[name] = make()
        seconds[name] = round(time.perf_counter() - start, 2)
    return spaces


def neighbour_graph(x: np.ndarray) -> np.ndarray:
    """Each row's ``NEIGHBOURS`` nearest neighbours by cosine similarity, itself excluded (as mining searches)."""
    return mine_neighbors(l2_normalize(np.ascontiguousarray(x, dtype=np.float32)), min(NEIGHBOURS, len(x) - 1))


def kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means, ``RESTARTS`` seeded starts, one thread."""
    return KMeans(k, n_init=RESTARTS, random_state=seed).fit_predict(x)


# ----------------------------------------------------------------------------- rules
def agree(candidates: dict[str, np.ndarray]) -> str:
    """(a) The candidate with the highest mean NMI to the others."""
    names = list(candidates)
    nmi = np.eye(len(names))
    for i, j in itertools.combinations(range(len(names)), 2):
        nmi[i, j] = nmi[j, i] = normalized_mutual_info_score(candidates[names[i]], candidates[names[j]])
    return names[int(np.argmax(nmi.sum(1)))]


def coassociation(candidates: dict[str, np.ndarray]) -> np.ndarray:
    """(N, N) share of the candidates that put two images in the same cluster."""
    labels = np.stack(list(candidates.values()))
    together = np.zeros((labels.shape[1], labels.shape[1]))
    for row in labels:
        together += row[:, None] == row[None, :]
    return together / len(labels)


def eac_average(together: np.ndarray, k: int) -> np.ndarray:
    """(a) Average linkage on 1 - co-association, cut at ``k`` clusters."""
    return AgglomerativeClustering(k, metric="precomputed", linkage="average").fit(1.0 - together).labels_


def eac_spectral(together: np.ndarray, k: int, seed: int) -> np.ndarray:
    """(a) Spectral clustering with the co-association as affinity (``k`` clusters; seeded)."""
    if connected_components(together > 0)[0] > 1:  # keep the affinity graph connected
        together = together + 1e-6
    spectral = SpectralClustering(k, affinity="precomputed", random_state=seed, assign_labels="kmeans")
    return spectral.fit_predict(together)


def subsample_stability(x: np.ndarray, k: int, seed: int) -> float:
    """(b) Mean pairwise ARI of k-means fitted on ``SUBSAMPLES`` random ``SUBSAMPLE_SHARE`` subsets and applied to
    every image."""
    labelings = []
    for i in range(SUBSAMPLES):
        rows = np.random.default_rng(seed * 1000 + i).choice(len(x), int(SUBSAMPLE_SHARE * len(x)), replace=False)
        labelings.append(KMeans(k, n_init=RESTARTS, random_state=seed + i).fit(x[rows]).predict(x))
    return float(np.mean([adjusted_rand_score(a, b) for a, b in itertools.combinations(labelings, 2)]))


def cross_kappa(candidates: dict[str, np.ndarray], graphs: dict[str, np.ndarray], leave_own_out: bool = False
                ) -> dict[str, float]:
    """(c) Each candidate's neighbour kappa averaged over every space's neighbour graph; with ``leave_own_out``
    the graph of the candidate's own space is left out (added after the first round showed the mined space,
    which mixes all blocks, winning every vote: does the own-graph bonus explain it?)."""
    return {name: float(np.mean([neighbour_kappa(labels, g) for space, g in graphs.items()
                                 if not (leave_own_out and space == name)]))
            for name, labels in candidates.items()}


# ----------------------------------------------------------------------------- one folder
def folder(name: str, args: argparse.Namespace, floors: dict) -> dict:
    """Candidates and rules on one folder, scored; per-step wall times."""
    run_dir = args.runs / f"{name}-seed0"
    paths, targets, categories = read_labels(args.root, name)
    k = len(categories)
    files = [Path(line.strip().strip('"')) for line in (run_dir / "files.txt").read_text().splitlines() if line.strip()]
    order = {p.resolve(): i for i, p in enumerate(files)}
    rows = np.array([order[p.resolve()] for p in paths])  # labels order -> the run's row
    seconds: dict[str, float] = {}
    space_seconds: dict[str, float] = {}
    start = time.perf_counter()
    spaces = {space: x[rows] for space, x in run_spaces(run_dir, args.cache, space_seconds).items()}
    seconds["spaces"] = time.perf_counter() - start
    start = time.perf_counter()
    graphs = {space: neighbour_graph(x) for space, x in spaces.items()}
    seconds["graphs"] = time.perf_counter() - start
    answer = answer_clusters(run_dir / "predictions_bench.csv", args.root / name, paths)
    per_seed = []
    for seed in SEEDS:
        timing = {}
        start = time.perf_counter()
        candidates = {space: kmeans(x, k, seed) for space, x in spaces.items()}
        timing["kmeans_all_spaces"] = time.perf_counter() - start
        candidates["answer"] = answer
        chosen, out = {}, {}
        start = time.perf_counter()
        chosen["agree"] = agree(candidates)
        out["agree"] = candidates[chosen["agree"]]
        timing["agree"] = time.perf_counter() - start
        start = time.perf_counter()
        together = coassociation(candidates)
        out["eac-avg"] = eac_average(together, k)
        timing["eac-avg"] = time.perf_counter() - start
        start = time.perf_counter()
        out["eac-spec"] = eac_spectral(coassociation(candidates), k, seed)
        timing["eac-spec"] = time.perf_counter() - start
        start = time.perf_counter()
        stabilities = {space: subsample_stability(x, k, seed) for space, x in spaces.items()}
        chosen["stable"] = max(stabilities, key=stabilities.get)
        out["stable"] = candidates[chosen["stable"]]
        timing["stable"] = time.perf_counter() - start
        start = time.perf_counter()
        kappas = cross_kappa(candidates, graphs)
        chosen["xkappa"] = max(kappas, key=kappas.get)
        out["xkappa"] = candidates[chosen["xkappa"]]
        timing["xkappa"] = time.perf_counter() - start
        loo = cross_kappa(candidates, graphs, leave_own_out=True)
        chosen["xkappa-loo"] = max(loo, key=loo.get)
        out["xkappa-loo"] = candidates[chosen["xkappa-loo"]]
        own_kappa = {space: neighbour_kappa(candidates[space], graphs[space]) for space in SPACES}
        per_seed.append({
            "seed": seed, "chosen": chosen, "timing_s": {key: round(v, 3) for key, v in timing.items()},
            "stability": {key: round(v, 4) for key, v in stabilities.items()},
            "cross_kappa": {key: round(v, 4) for key, v in kappas.items()},
            "own_kappa": {key: round(v, 4) for key, v in own_kappa.items()},
            "candidates": {key: scores_of(labels, targets, k) for key, labels in candidates.items()},
            "rules": {key: scores_of(labels, targets, k) for key, labels in out.items()},
            "clusters_used": {key: int(len(np.unique(labels))) for key, labels in out.items()},
        })
        print(f"  seed {seed}: chosen {chosen}", file=sys.stderr)
    mean = lambda key, item: {s: round(float(np.mean([r[key][item][s] for r in per_seed])), 4)  # noqa: E731
                              for s in ("acc", "nmi", "ari")}
    candidates_mean = {c: mean("candidates", c) for c in [*SPACES, "answer"]}
    rules_mean = {rule: mean("rules", rule) for rule in RULES}
    oracle_space = max(SPACES, key=lambda c: min(candidates_mean[c]["acc"] - floors["acc"],
                                                 candidates_mean[c]["nmi"] - floors["nmi"]))
    return {"images": len(paths), "clusters": k, "floors": floors,
            "seconds": {k_: round(v, 2) for k_, v in seconds.items()},
            "space_seconds": space_seconds,
            "candidates": candidates_mean, "rules": rules_mean, "oracle_space": oracle_space, "per_seed": per_seed}


def floors_of(entry: dict) -> dict:
    """The floors of one folder (folders.json): best baseline mean ACC and NMI, each over the four spaces, and
    k-means on the run's pretext features (seed 0's run)."""
    best = {s: max(BASELINES, key=lambda b: entry["baselines"][b]["mean"][s]) for s in ("acc", "nmi")}
    base = {s: entry["baselines"][best[s]]["mean"][s] for s in ("acc", "nmi")}
    pretext = entry["runs"][0]["pretext_kmeans"]
    answer = entry["runs"][0]["answer"]
    return {"baseline_acc": base["acc"], "baseline_nmi": base["nmi"],
            "baseline_acc_space": best["acc"], "baseline_nmi_space": best["nmi"],
            "baseline_acc_std": entry["baselines"][best["acc"]]["std"]["acc"],
            "baseline_nmi_std": entry["baselines"][best["nmi"]]["std"]["nmi"],
            "pretext_acc": pretext["acc"], "pretext_nmi": pretext["nmi"],
            "acc": max(base["acc"], pretext["acc"]), "nmi": max(base["nmi"], pretext["nmi"]),
            "answer_recorded": answer}


def meets(score: dict, floors: dict) -> bool:
    """Whether ``score`` reaches both floors (best baseline and pretext k-means) in ACC and in NMI."""
    return score["acc"] >= floors["acc"] and score["nmi"] >= floors["nmi"]


def table(results: dict) -> str:
    """Markdown: per folder the floors, the answer and each rule's ACC / NMI with (in brackets) the margins to the
    best baseline's ACC / NMI, ✓ when both floors (best baseline and pretext k-means) are met; then the count of
    folders meeting both floors and the mean NMI margin to the best baseline."""
    rows = [*RULES, "oracle"]
    header = ["folder", "best baseline ACC / NMI", "pretext k-means", "answer", *rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    count = {r: 0 for r in ["answer", *rows]}
    margin = {r: [] for r in ["answer", *rows]}
    cell = lambda s, f: (f"{s['acc']:.3f} / {s['nmi']:.3f} ({s['acc'] - f['baseline_acc']:+.3f} / "  # noqa: E731
                         f"{s['nmi'] - f['baseline_nmi']:+.3f})" + (" ✓" if meets(s, f) else ""))
    for name, entry in results["folders"].items():
        f = entry["floors"]
        scores = {"answer": entry["candidates"]["answer"], **entry["rules"],
                  "oracle": entry["candidates"][entry["oracle_space"]]}
        for r, s in scores.items():
            count[r] += meets(s, f)
            margin[r].append(s["nmi"] - f["baseline_nmi"])
        lines.append("| " + " | ".join([
            name, f"{f['baseline_acc']:.3f} / {f['baseline_nmi']:.3f}",
            f"{f['pretext_acc']:.3f} / {f['pretext_nmi']:.3f}",
            cell(scores["answer"], f), *(cell(scores[r], f) + (f" [{entry['oracle_space']}]" if r == "oracle" else "")
                                          for r in rows)]) + " |")
    lines.append("| folders meeting both floors | | | " + " | ".join(str(count[r]) for r in ["answer", *rows]) + " |")
    lines.append("| mean NMI margin to the best baseline | | | "
                 + " | ".join(f"{np.mean(margin[r]):+.3f}" for r in ["answer", *rows]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("data/folders"),
                        help="the built folders (default data/folders)")
    parser.add_argument("--runs", type=Path, default=Path("runs/bench-folders"),
                        help="the seed-0 runs (default runs/bench-folders)")
    parser.add_argument("--folders-json", type=Path, default=RESULTS / "folders.json")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/wt44cache"),
                        help="where <run>.backbone.npy (pretext_features of the train split, files.txt order) are")
    parser.add_argument("--only", nargs="+")
    parser.add_argument("--out", type=Path, default=RESULTS / "folder_spaces.json")
    parser.add_argument("--table", action="store_true", help="print the table of the saved results and stop")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return
    recorded = json.loads(args.folders_json.read_text())["folders"]
    ensure_backbone_features(args)
    results = {"folders": {}, "seeds": list(SEEDS), "spaces": list(SPACES), "rules": list(RULES),
               "command": " ".join([Path(sys.executable).name, *sys.argv]), **measured()}
    with threadpool_limits(1):
        for name in args.only or list(recorded):
            print(name, file=sys.stderr)
            results["folders"][name] = folder(name, args, floors_of(recorded[name]))
            args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


def ensure_backbone_features(args: argparse.Namespace) -> None:
    """Embed (or read from the run's feature cache) every run's backbone features once into ``--cache``."""
    from scanlearn.engine.splits import load_split
    from scanlearn.stages.evaluate import pretext_features

    args.cache.mkdir(parents=True, exist_ok=True)
    for run_dir in sorted(args.runs.glob("*-seed0")):
        out = args.cache / f"{run_dir.name}.backbone.npy"
        if out.is_file():
            continue
        config = load_config(run_dir / "config.yaml")
        images = load_split(config, "train")
        features, _ = pretext_features(config, run_dir, images, images)
        np.save(out, np.asarray(features, dtype=np.float32))


if __name__ == "__main__":
    main()

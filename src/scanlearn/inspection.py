"""Inspect a finished run: probabilities and features of its images, then the HTML report.

``write_run_outputs`` is what ``scanlearn run`` does last: ``RUN/report.html`` with its figures
in ``RUN/figures/`` and, for image folders, ``RUN/assignments.csv``.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .config import Config
from .criteria import clusters_used
from .data.datasets import ImageSet, is_image_folder
from .data.decode import read_image
from .engine.inference import ImagePass
from .engine.run import Run
from .groups import DUPLICATE_BITS, DUPLICATE_LEVEL, least_confident, near_duplicates, nearest_clusters
from .metrics import contingency, hungarian_mapping
from .prototypes import members_by_confidence, prototypes
from .report import (
    ClusterPanel, DuplicatePair, plot_cluster_sizes, plot_confusion, plot_training_curves, read_curves, ReportPage, save_galleries, Tile, write_html,
)
from .runs.artefacts import read_json
from .clustering.answer import answer_output, chosen_stage
from .clustering.choice import choice_reason, final_stage, KMEANS, trust_words, worse_than_message
from .runs.rundir import unlinked
from .stages.predict import write_assignments
from .stages.prepare import read_skipped

LOG = logging.getLogger(__name__)

REPORT_FILE = "report.html"
FIGURES_DIR = "figures"
CURVE_STAGES = ("pretext", "scan", "selflabel")
DUPLICATE_RULE = (f"difference hashes within {DUPLICATE_BITS} of 64 bits, thumbnails within {DUPLICATE_LEVEL:g} "
                  "grey levels")
METRIC_COLUMNS = {
    "acc": "ACC", "acc_many_to_one": "ACC many-to-one", "nmi": "NMI", "ari": "ARI", "ami": "AMI",
    "top5": "top-5", "knn_acc": "kNN ACC",
}


@dataclass
class RunView:
    """A run's chosen clustering of one split: images, probabilities (N, K), pretext features (N, D), which clustering."""

    images: ImageSet
    probs: np.ndarray
    features: np.ndarray
    stage: str
    split: str


def inspect_run(run: Run, split: str = "test") -> RunView:
    """Cluster probabilities under the run's chosen clustering (``clustering.answer``) and backbone features of
    ``split``, from one pass over its images."""
    images = run.split(split)
    one = ImagePass(run, images)
    probs, features = answer_output(one), one.backbone()
    one.embed()
    return RunView(images, probs(), features(), chosen_stage(run.directory), split)


@dataclass
class RunOutputs:
    """What ``write_run_outputs`` wrote and the clustering it shows."""

    report: Path
    assignments: Path | None
    view: RunView


def write_run_outputs(run: Run) -> RunOutputs:
    """The report (and, for image folders, ``assignments.csv`` of every image)."""
    config = run.config
    view = inspect_run(run)
    report = write_run_report(run, view)
    LOG.info(f"report: {report}")
    csv_path = None
    if is_image_folder(config.data.dataset):
        out = run.directory / "assignments.csv"
        csv_path = write_assignments(out, view.images, view.probs, config.selflabel.threshold)
        LOG.info(f"cluster of every image: {csv_path}")
    return RunOutputs(report, csv_path, view)


def run_summary(run_dir: str | Path, outputs: RunOutputs) -> list[str]:
    """The closing lines of ``scanlearn run`` on stdout: clusters and sizes, the answer and why, where the files are."""
    probs = outputs.view.probs
    sizes = np.bincount(probs.argmax(1), minlength=probs.shape[1])
    order = np.argsort(-sizes, kind="stable")
    listed = ", ".join(f"{int(k)}: {int(sizes[k])}" for k in order if sizes[k])
    lines = [
        f"clusters: {int((sizes > 0).sum())} of {len(sizes)} used on {len(probs)} images "
        f"({outputs.view.split} split; images per cluster, largest first: {listed})",
        f"answer: {choice_reason(run_dir, outputs.view.stage)}",
        f"trust: {trust_words(run_dir, outputs.view.stage) or 'unknown (no label-free scores recorded)'}",
        f"report: {outputs.report}",
    ]
    if outputs.assignments is not None:
        lines.append(f"assignments: {outputs.assignments}")
    return lines


def write_run_report(run: Run, view: RunView | None = None, per_cluster: int = 12, top: int = 20) -> Path:
    """Write ``RUN/report.html`` and its figures as PNG files in ``RUN/figures/``."""
    config, run_dir = run.config, run.directory
    view = view or inspect_run(run)
    figures = unlinked(run_dir / FIGURES_DIR, folder=True)
    threshold = config.selflabel.threshold
    panels = cluster_panels(view, threshold, per_cluster, top)
    shown = figure_list(run_dir, view, threshold, figures)
    shown.append(("Prototype (first column) and most confident images per cluster",
                  save_galleries(panels, figures / "galleries.png")))
    duplicates, duplicate_total = duplicate_pairs(view)
    k_scores, k_note = estimate_k_rows(run_dir)
    page = ReportPage(
        title=f"scanlearn report — {report_subject(config)}",
        summary=summary_rows(run, view, threshold),
        metrics_rows=metrics_rows(read_json(run_dir / "metrics.json")) if view.images.has_labels else [],
        figures=shown,
        panels=panels,
        skipped=read_skipped(run_dir),
        duplicates=duplicates, duplicate_total=duplicate_total, duplicate_rule=DUPLICATE_RULE,
        k_scores=k_scores, k_note=k_note,
    )
    return write_html(page, unlinked(run_dir / REPORT_FILE))


def report_subject(config: Config) -> str:
    """What the report is about: the image folder's name, else the preset or config name."""
    if is_image_folder(config.data.dataset) and config.data.root:
        return Path(config.data.root).name or config.data.root
    return config.name


def figure_list(run_dir: Path, view: RunView, threshold: float, figures: Path) -> list[tuple[str, Path]]:
    """Cluster sizes, training curves and (with labels) the confusion matrix, saved as PNG files."""
    k = view.probs.shape[1]
    clusters, confident = view.probs.argmax(1), view.probs.max(1) > threshold
    sizes = np.bincount(clusters, minlength=k)
    shown = [("Images per cluster", plot_cluster_sizes(sizes, np.bincount(clusters[confident], minlength=k),
                                                      figures / "cluster_sizes.png", threshold))]
    curves = {s: read_curves(run_dir / s / "logs" / "metrics.csv") for s in CURVE_STAGES}
    training = plot_training_curves(curves, figures / "training_curves.png")
    if training is not None:
        shown.append(("Training curves (per epoch)", training))
    if view.images.has_labels:
        shown.append(("Confusion matrix, normalised per true class", confusion_figure(view, figures / "confusion.png")))
    return shown


def confusion_figure(view: RunView, path: Path) -> Path:
    """True class (rows, normalised) against cluster, clusters ordered by their Hungarian-matched class."""
    targets = np.asarray(view.images.targets)
    n_classes = max(int(targets.max()) + 1, len(view.images.classes or []))
    clusters, k = view.probs.argmax(1), view.probs.shape[1]
    mapping = hungarian_mapping(clusters, targets, k, n_classes)
    order = sorted(range(k), key=lambda c: (mapping[c] < 0, mapping[c], c))
    table = contingency(clusters, targets, k, n_classes).T[:, order].astype(np.float64)
    matrix = table / np.maximum(table.sum(axis=1, keepdims=True), 1)
    names = class_names(view.images, n_classes)
    columns = [f"{c} ({names[mapping[c]]})" if mapping[c] >= 0 else str(c) for c in order]
    accuracy = float((mapping[clusters] == targets).mean())
    return plot_confusion(matrix, names, path, title=f"{view.stage}: Hungarian ACC {accuracy:.3f}", columns=columns,
                          xlabel="cluster (its Hungarian-matched class)")


def class_names(images: ImageSet, n_classes: int) -> list[str]:
    """Class names of ``images``, or their indices when the set has none."""
    classes = images.classes or []
    return list(classes) if len(classes) == n_classes else [str(c) for c in range(n_classes)]


def cluster_panels(
    view: RunView, threshold: float, per_cluster: int = 12, top: int = 20, uncertain: int = 6
) -> list[ClusterPanel]:
    """Per cluster, largest first: prototype, most confident images, least confident ones, nearest other cluster."""
    members = members_by_confidence(view.probs)
    protos = prototypes(view.features, view.probs, top)
    doubtful = least_confident(view.probs, uncertain)
    nearest = nearest_clusters(view.features, view.probs.argmax(1), view.probs.shape[1])
    confidence = view.probs.max(1)
    panels = []
    for k, indices in enumerate(members):
        proto = int(protos[k])
        shown = [int(i) for i in indices if i != proto][:per_cluster]
        unsure = [int(i) for i in doubtful[k] if i != proto and int(i) not in shown]
        panels.append(ClusterPanel(
            index=k, size=len(indices), confident=int((confidence[indices] > threshold).sum()),
            prototype=make_tile(view, proto, "prototype") if proto >= 0 else None,
            tiles=[make_tile(view, i) for i in shown], note=purity_note(view, indices),
            uncertain=[make_tile(view, i) for i in unsure],
            nearest=f"nearest other cluster: {nearest[k][0]} (centre cosine {nearest[k][1]:.2f})" if nearest[k] else "",
        ))
    return sorted(panels, key=lambda p: (-p.size, p.index))


def duplicate_pairs(view: RunView, shown: int = 24) -> tuple[list[DuplicatePair], int]:
    """The ``shown`` closest near-duplicate pairs by image content (``groups.near_duplicates``) and how many there are."""
    pairs = near_duplicates(np.stack([hash_thumbnail(view.images, i) for i in range(len(view.images))]))
    return [DuplicatePair(make_tile(view, i), make_tile(view, j), bits) for i, j, bits in pairs[:shown]], len(pairs)


def hash_thumbnail(images: ImageSet, index: int) -> np.ndarray:
    """Image ``index`` as a grey (8, 9) thumbnail in 0..255 (box-filtered), the input of the difference hash."""
    pixels = images[index][0].permute(1, 2, 0).numpy()
    picture = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).convert("L")
    return np.asarray(picture.resize((9, 8), Image.Resampling.BOX), dtype=np.float32)


def estimate_k_rows(run_dir: Path) -> tuple[list[dict[str, str]], str]:
    """The candidates and scores of ``--clusters auto`` (``RUN/estimate_k/scores.json``), with its choice."""
    saved = read_json(run_dir / "estimate_k" / "scores.json")
    if not saved:
        return [], ""
    rows = [{"K": f"{s['k']}{' (chosen)' if s['k'] == saved['best'] else ''}", "loss": f"{s['loss']:.4f}",
             "clusters used": str(s["used"]), "confident": f"{s['confident']:.3f}",
             "neighbour agreement": f"{s['agreement']:.3f}", "worst-cluster coherence": f"{s['coherence']:.3f}"}
            for s in saved["scores"]]
    return rows, f"{saved['best']} clusters chosen: {saved['criterion']}."


def make_tile(view: RunView, index: int, label: str = "") -> Tile:
    """Thumbnail of image ``index`` captioned with its confidence (and true class when known)."""
    caption = label or f"{view.probs[index].max():.2f}"
    if view.images.has_labels:
        names = view.images.classes or []
        target = int(view.images.targets[index])
        caption += f" · {names[target] if target < len(names) else target}"
    tooltip = view.images.paths[index] if view.images.paths else f"image #{index} of the {view.split} split"
    return Tile(thumbnail(view.images, index), caption, tooltip)


def thumbnail(images: ImageSet, index: int, side: int = 112) -> Image.Image:
    """The original file cropped to a square (photos), else the stored image itself (small data)."""
    if images.paths and images.image_size < side:
        try:
            return ImageOps.fit(read_image(images.paths[index], draft_size=side), (side, side))
        except (OSError, ValueError, SyntaxError):
            pass
    pixels = images[index][0].permute(1, 2, 0).numpy()
    return Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)


def purity_note(view: RunView, indices: np.ndarray) -> str:
    """``'mostly Coat (83%)'`` for labelled data, else nothing."""
    if not view.images.has_labels or len(indices) == 0:
        return ""
    targets = np.asarray(view.images.targets)[indices]
    top = int(np.bincount(targets).argmax())
    names = class_names(view.images, max(int(targets.max()) + 1, len(view.images.classes or [])))
    return f"mostly {names[top]} ({(targets == top).mean():.0%} of the cluster)"


def summary_rows(run: Run, view: RunView, threshold: float) -> list[tuple[str, str]]:
    """Key facts of the run for the report's header table."""
    config, run_dir = run.config, run.directory
    k = view.probs.shape[1]
    used = clusters_used(view.probs.argmax(1))
    confident = float((view.probs.max(1) > threshold).mean())
    source = config.data.root if is_image_folder(config.data.dataset) else f"{config.data.dataset} ({view.split} split)"
    rows = [
        ("run directory", str(run_dir.resolve())),
        ("images", f"{len(view.images)} from {source}"),
        ("clusters", f"{k} requested, {used} non-empty"),
        ("model", f"{'k-means on the mined features' if view.stage == KMEANS else f'{view.stage} stage'}, "
                  f"{config.model.backbone} width {config.model.width}"),
        ("confident", f"{confident:.1%} of images have probability > {threshold:g}"),
        ("generated", datetime.datetime.now().strftime("%Y-%m-%d %H:%M")),
    ]
    worse = worse_than_message(run_dir, final_stage(run_dir))
    if worse:
        rows.insert(3, ("label-free check", worse))
    trust = trust_words(run_dir, view.stage)
    if trust:
        rows.insert(3, ("how far to trust it", trust))
    skipped = read_skipped(run_dir)
    if skipped:
        rows.insert(2, ("skipped", f"{len(skipped)} unreadable files (listed at the end and in skipped.txt)"))
    return rows


def metrics_rows(metrics: dict) -> list[dict[str, str]]:
    """One table row per evaluated stage with every clustering score it has (a column only when some stage has it)."""
    evaluated = {stage: metrics[stage] for stage in CURVE_STAGES if "acc" in (metrics.get(stage) or {})}
    columns = {key: name for key, name in METRIC_COLUMNS.items() if any(key in scores for scores in evaluated.values())}
    rows = []
    for stage, scores in evaluated.items():
        row = {"stage": "k-means on pretext features" if stage == "pretext" else stage}
        row.update({name: f"{scores[key]:.4f}" if key in scores else "—" for key, name in columns.items()})
        rows.append(row)
    return rows

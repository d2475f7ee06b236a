"""Figures and the HTML report of a run (written as PNG files and one self-contained page).

Everything here works on plain arrays and PIL images; ``inspection.py`` gathers them from
a run directory. The page embeds every image as a base64 ``data:`` URI and uses no script, so it
opens from disk in any browser.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

Curve = tuple[list[float], list[float]]


def plot_confusion(
    matrix: np.ndarray,
    classes: Sequence[str] | None,
    path: str | Path,
    title: str = "",
    columns: Sequence[str] | None = None,
    xlabel: str = "predicted class (Hungarian-matched cluster)",
) -> Path:
    """Heat map of a row-normalised confusion matrix (true class per row; columns may differ)."""
    rows, cols = matrix.shape
    names = list(classes) if classes and len(classes) == rows else [str(i) for i in range(rows)]
    if columns and len(columns) == cols:
        col_names = list(columns)
    else:
        col_names = names if cols == rows else [str(j) for j in range(cols)]
    width, height = max(4.0, 0.45 * cols + 2.5), max(4.0, 0.45 * rows + 2)
    fig, ax = plt.subplots(figsize=(width, height * 0.95))
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(cols), col_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(rows), names, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("true class")
    if rows * cols <= 600:
        for i in range(rows):
            for j in range(cols):
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if matrix[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_cluster_sizes(sizes: np.ndarray, confident: np.ndarray, path: str | Path, threshold: float) -> Path:
    """Bar chart of images per cluster, the confident part (max probability > threshold) darker."""
    k = len(sizes)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.32 * k + 2), 3.2))
    ax.bar(range(k), sizes, color="#9ecae1", label="all images")
    ax.bar(range(k), confident, color="#3182bd", label=f"confidence > {threshold:g}")
    ax.set_xticks(range(k), [str(i) for i in range(k)], fontsize=8 if k <= 40 else 5)
    ax.set_xlabel("cluster")
    ax.set_ylabel("images")
    ax.set_title("Cluster sizes")
    ax.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def read_curves(metrics_csv: str | Path) -> dict[str, Curve]:
    """Per-epoch series (``loss`` and, when logged, ``confident``) from a Lightning ``metrics.csv``."""
    path = Path(metrics_csv)
    if not path.is_file():
        return {}
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    wanted = {"loss": ("loss_epoch", "loss"), "confident": ("confident_epoch", "confident")}
    curves: dict[str, Curve] = {}
    for name, keys in wanted.items():
        key = next((k for k in keys if any(r.get(k) for r in rows)), None)
        if key is not None:
            points = [(float(r["epoch"]), float(r[key])) for r in rows if r.get(key) and r.get("epoch")]
            curves[name] = ([x + 1 for x, _ in points], [y for _, y in points])
    return curves


def plot_training_curves(curves: dict[str, dict[str, Curve]], path: str | Path) -> Path | None:
    """One panel per stage: its loss per epoch (and the confident fraction for self-labelling)."""
    stages = [s for s, c in curves.items() if c]
    if not stages:
        return None
    fig, axes = plt.subplots(1, len(stages), figsize=(3.6 * len(stages) + 0.6, 3.0), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        series = curves[stage]
        if "loss" in series:
            ax.plot(*series["loss"], marker="o", markersize=3, color="#3182bd")
            ax.set_ylabel("loss")
        if "confident" in series:
            twin = ax.twinx()
            twin.plot(*series["confident"], marker="s", markersize=3, color="#e6550d")
            twin.set_ylabel("confident fraction", color="#e6550d")
            twin.set_ylim(0, 1.02)
        ax.set_title(stage)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


@dataclass
class Tile:
    """One gallery image: the thumbnail, its caption and a tooltip (e.g. the file path)."""

    image: Image.Image
    caption: str
    tooltip: str = ""


@dataclass
class ClusterPanel:
    """What the report shows for one cluster."""

    index: int
    size: int
    confident: int
    prototype: Tile | None
    tiles: list[Tile] = field(default_factory=list)
    note: str = ""
    uncertain: list[Tile] = field(default_factory=list)
    nearest: str = ""


@dataclass
class DuplicatePair:
    """Two images that look alike: their difference hashes differ in ``bits`` of 64 bits (near-duplicates)."""

    first: Tile
    second: Tile
    bits: int


def save_galleries(panels: Sequence[ClusterPanel], path: str | Path, side: int = 64) -> Path:
    """One row per cluster (prototype first, then its most confident images) as a PNG montage."""
    columns = 1 + max((len(p.tiles) for p in panels), default=0)
    label_width, gap = 70, 4
    sheet = Image.new("RGB", (label_width + columns * (side + gap), max(1, len(panels)) * (side + gap)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, panel in enumerate(panels):
        top = row * (side + gap)
        draw.text((4, top + side // 2 - 6), f"cluster {panel.index}", fill="black")
        tiles = ([panel.prototype] if panel.prototype else []) + panel.tiles
        for col, tile in enumerate(tiles):
            left = label_width + col * (side + gap)
            sheet.paste(tile.image.convert("RGB").resize((side, side), Image.Resampling.NEAREST
                        if min(tile.image.size) < side else Image.Resampling.BILINEAR), (left, top))
            if col == 0 and panel.prototype is not None:
                draw.rectangle((left, top, left + side - 1, top + side - 1), outline="#e6550d", width=2)
    sheet.save(path)
    return Path(path)


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """``data:`` URI embedding ``data`` (base64)."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image_data_uri(image: Image.Image) -> str:
    """A PIL image as an embedded PNG (small or grey images) or JPEG (photos) data URI."""
    buffer = io.BytesIO()
    if image.mode in ("L", "1") or max(image.size) <= 48:
        image.save(buffer, format="PNG", optimize=True)
        return data_uri(buffer.getvalue())
    image.convert("RGB").save(buffer, format="JPEG", quality=85)
    return data_uri(buffer.getvalue(), "image/jpeg")


@dataclass
class ReportPage:
    """Everything on the report page; figures are paths of PNG files to embed."""

    title: str
    summary: list[tuple[str, str]]
    metrics_rows: list[dict[str, str]]
    figures: list[tuple[str, Path]]
    panels: list[ClusterPanel]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[DuplicatePair] = field(default_factory=list)
    duplicate_total: int = 0
    duplicate_rule: str = ""
    k_scores: list[dict[str, str]] = field(default_factory=list)
    k_note: str = ""


STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;max-width:1200px;
color:#222;padding:0 16px}
h1{font-size:24px;margin-bottom:4px}h2{font-size:19px;margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.summary td{text-align:left}.figure{margin:12px 0}.figure img{max-width:100%;border:1px solid #eee}
.cluster{border:1px solid #ddd;border-radius:6px;padding:10px;margin:14px 0}
.cluster h3{margin:0 0 8px 0;font-size:16px}.row{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start}
.tile{width:82px;text-align:center;font-size:10px;color:#555;overflow:hidden}
.tile img{width:80px;height:80px;object-fit:cover;border:1px solid #ccc}.tile img.small{image-rendering:pixelated}
.proto img{border:3px solid #e6550d;width:76px;height:76px}.proto{font-weight:bold;color:#e6550d}
.note{color:#777;font-size:13px}details{margin-top:8px}code{font-size:12px}
.label{font-size:12px;color:#555;margin:8px 0 4px 0}.pair{display:inline-flex;gap:4px;margin:4px 12px 4px 0;
align-items:center}.pair .cos{font-size:11px;color:#555}
"""


def render_html(page: ReportPage) -> str:
    """The report as one HTML document with every image inlined."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(page.title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{esc(page.title)}</h1>", _summary_table(page.summary),
    ]
    if page.metrics_rows:
        parts += ["<h2>Scores on labelled images</h2>", _metrics_table(page.metrics_rows)]
    parts.append("<h2>Figures</h2>")
    for caption, path in page.figures:
        uri = data_uri(Path(path).read_bytes())
        parts.append(f'<div class="figure"><div>{esc(caption)}</div><img src="{uri}" alt="{esc(caption)}"></div>')
    if page.k_scores:
        parts += ["<h2>Number of clusters (estimate-k)</h2>", f'<p class="note">{esc(page.k_note)}</p>',
                  _metrics_table(page.k_scores)]
    parts.append("<h2>Clusters</h2><p class=\"note\">Largest first. Orange frame: the prototype (the image nearest "
                 "to the mean feature of the cluster's most confident members); then its most typical (most "
                 "confident) images, and below them its least confident ones.</p>")
    parts += [_cluster_html(panel) for panel in page.panels]
    parts.append(_duplicates_html(page))
    if page.skipped:
        items = "".join(f"<li><code>{esc(p)}</code> — {esc(r)}</li>" for p, r in page.skipped)
        parts.append(f"<h2>Skipped files</h2><details><summary>{len(page.skipped)} unreadable files were "
                     f"left out</summary><ul>{items}</ul></details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _summary_table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="summary">{body}</table>'


def _metrics_table(rows: list[dict[str, str]]) -> str:
    header = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row.values()) + "</tr>" for row in rows)
    return f"<table><tr>{header}</tr>{body}</table>"


def _tile_html(tile: Tile, css: str = "tile") -> str:
    esc = html.escape
    small = ' class="small"' if max(tile.image.size) < 80 else ""
    return (f'<div class="{css}" title="{esc(tile.tooltip)}"><img{small} src="{image_data_uri(tile.image)}" '
            f'alt="{esc(tile.caption)}"><div>{esc(tile.caption)}</div></div>')


def _cluster_html(panel: ClusterPanel) -> str:
    head = f"cluster {panel.index} — {panel.size} images, {panel.confident} confident"
    tiles = [_tile_html(panel.prototype, "tile proto")] if panel.prototype else []
    tiles += [_tile_html(t) for t in panel.tiles]
    body = "".join(tiles) if tiles else '<span class="note">empty cluster</span>'
    notes = [n for n in (panel.note, panel.nearest) if n]
    note = "".join(f'<div class="note">{html.escape(n)}</div>' for n in notes)
    parts = [f'<div class="cluster" id="cluster-{panel.index}"><h3>{html.escape(head)}</h3>{note}',
             f'<div class="label">most typical</div><div class="row typical">{body}</div>']
    if panel.uncertain:
        parts.append('<div class="label">least confident</div><div class="row uncertain">'
                     + "".join(_tile_html(t) for t in panel.uncertain) + "</div>")
    return "".join(parts) + "</div>"


def _duplicates_html(page: ReportPage) -> str:
    """The near-duplicate section: how many pairs, and the most similar ones side by side."""
    pairs = "pair" if page.duplicate_total == 1 else "pairs"
    head = (f'<h2>Near-duplicates</h2><p class="note">{page.duplicate_total} {pairs} of images that look alike '
            f"({html.escape(page.duplicate_rule)})")
    if not page.duplicate_total:
        return head + ".</p>"
    shown = "" if len(page.duplicates) == page.duplicate_total else f"; the {len(page.duplicates)} most similar shown"
    tiles = "".join(f'<div class="pair">{_tile_html(d.first)}{_tile_html(d.second)}<span class="cos">'
                    f"{d.bits} bits</span></div>" for d in page.duplicates)
    return f'{head}{shown}.</p><div class="duplicates">{tiles}</div>'


def write_html(page: ReportPage, path: str | Path) -> Path:
    """Render ``page`` and write it to ``path`` (UTF-8)."""
    Path(path).write_text(render_html(page), encoding="utf-8")
    return Path(path)


def plot_criteria(names: Sequence[str], values: dict[str, Sequence[float]], higher_is_better: dict[str, bool],
                  chosen: int, path: str | Path, title: str = "") -> Path:
    """One bar chart per criterion over the candidates ``names``, the ``chosen`` one in a second colour."""
    fig, axes = plt.subplots(len(values), 1, figsize=(max(6.0, 0.35 * len(names)), 2.2 * len(values)),
                             sharex=True, squeeze=False)
    colours = ["tab:orange" if i == chosen else "tab:blue" for i in range(len(names))]
    for ax, (criterion, column) in zip(axes[:, 0], values.items()):
        ax.bar(range(len(names)), column, color=colours)
        ax.set_ylabel(f"{criterion}\n({'higher' if higher_is_better[criterion] else 'lower'} is better)", fontsize=8)
    axes[-1, 0].set_xticks(range(len(names)), list(names), rotation=90, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)

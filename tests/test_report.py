"""Report building blocks: prototypes, training curves, figures and the self-contained HTML page."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scanlearn.data.images import TensorImageSet
from scanlearn.prototypes import members_by_confidence, prototypes
from scanlearn.report import (
    ClusterPanel, ReportPage, Tile, plot_cluster_sizes, plot_confusion, plot_training_curves, read_curves,
    render_html, save_galleries,
)
from scanlearn.inspection import RunView, cluster_panels, confusion_figure, metrics_rows


def test_members_are_sorted_by_confidence_within_each_cluster():
    probs = np.array([[0.6, 0.4], [0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    members = members_by_confidence(probs)
    assert members[0].tolist() == [1, 3, 0]
    assert members[1].tolist() == [2]


def test_prototype_is_nearest_to_the_mean_of_the_most_confident_members():
    features = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [5.0, 0.1], [-1.0, 0.0]])
    probs = np.array([[0.9, 0.1], [0.85, 0.15], [0.6, 0.4], [0.55, 0.45], [0.1, 0.9]])
    assert prototypes(features, probs, top=3).tolist() == [2, 4]
    assert prototypes(features, probs, top=1).tolist() == [0, 4]


def test_empty_cluster_has_no_prototype():
    probs = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0]])
    assert prototypes(np.eye(2), probs).tolist()[2] == -1
    with pytest.raises(ValueError):
        prototypes(np.eye(2), probs, top=0)


def test_read_curves_takes_epoch_values_from_lightning_csv(tmp_path: Path):
    csv = tmp_path / "metrics.csv"
    csv.write_text("epoch,loss_epoch,loss_step,step\n0,,5.0,9\n0,4.5,,9\n1,,3.9,19\n1,3.5,,19\n")
    curves = read_curves(csv)
    assert curves == {"loss": ([1.0, 2.0], [4.5, 3.5])}
    selflabel = tmp_path / "self.csv"
    selflabel.write_text("confident,epoch,step\n0.25,0,9\n0.5,1,19\n")
    assert read_curves(selflabel)["confident"] == ([1.0, 2.0], [0.25, 0.5])
    assert read_curves(tmp_path / "missing.csv") == {}


def test_figures_are_written_as_png(tmp_path: Path):
    matrix = np.array([[0.8, 0.2, 0.0], [0.1, 0.6, 0.3]])
    paths = [
        plot_confusion(matrix, ["a", "b"], tmp_path / "confusion.png", columns=["0 (a)", "1 (b)", "2"]),
        plot_cluster_sizes(np.array([5, 3, 0]), np.array([2, 1, 0]), tmp_path / "sizes.png", 0.99),
        plot_training_curves({"pretext": {"loss": ([1, 2], [5.0, 4.0])}, "scan": {}}, tmp_path / "curves.png"),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_training_curves({"scan": {}}, tmp_path / "none.png") is None


def small_view(labelled: bool = True) -> RunView:
    """Six 8x8 grey images in two clusters, with labels when asked."""
    images = torch.arange(6, dtype=torch.uint8)[:, None, None, None].expand(6, 1, 8, 8) * 40
    targets = [0, 0, 0, 1, 1, 1] if labelled else [-1] * 6
    probs = np.array([[0.99, 0.01], [0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9], [0.6, 0.4]])
    features = np.array([[1, 0], [1, 0.1], [0.9, 0], [0, 1], [0.1, 1], [0.5, 0.5]], dtype=np.float32)
    return RunView(TensorImageSet(images.contiguous(), targets, ["shoes", "bags"] if labelled else None),
                   probs, features, "selflabel", "test")


def test_panels_show_prototype_then_confident_images_with_class_names():
    panels = cluster_panels(small_view(), threshold=0.85, per_cluster=2)
    assert [p.size for p in panels] == [4, 2]
    assert [p.confident for p in panels] == [2, 1]
    first = panels[0]
    assert first.prototype is not None and first.prototype.caption.startswith("prototype")
    assert len(first.tiles) == 2 and "shoes" in first.tiles[0].caption
    assert "mostly shoes (75% of the cluster)" == first.note


def test_confusion_figure_is_row_normalised_per_true_class(tmp_path: Path):
    path = confusion_figure(small_view(), tmp_path / "confusion.png")
    assert path.is_file() and path.stat().st_size > 1000


def test_metrics_rows_list_hungarian_and_many_to_one_accuracy():
    rows = metrics_rows({"scan": {"acc": 0.5, "acc_many_to_one": 0.75, "nmi": 0.1}, "mine": {"precision": 1}})
    assert rows == [{"stage": "scan", "ACC": "0.5000", "ACC many-to-one": "0.7500", "NMI": "0.1000"}]
    # A column appears once any stage has the score; stages without it show a dash.
    rows = metrics_rows({"scan": {"acc": 0.5, "top5": 0.9}, "selflabel": {"acc": 0.6}})
    assert rows == [{"stage": "scan", "ACC": "0.5000", "top-5": "0.9000"},
                    {"stage": "selflabel", "ACC": "0.6000", "top-5": "—"}]


def test_html_is_self_contained(tmp_path: Path):
    figure = plot_cluster_sizes(np.array([2, 1]), np.array([1, 0]), tmp_path / "sizes.png", 0.99)
    tile = Tile(Image.new("RGB", (64, 64), "red"), "0.99", "/photos/a <b>.jpg")
    panels = [ClusterPanel(0, 2, 1, tile, [tile]), ClusterPanel(1, 0, 0, None)]
    page = ReportPage("report <run>", [("images", "3")], [{"stage": "scan", "ACC": "0.5"}], [("sizes", figure)],
                      panels, skipped=[("/photos/bad.png", "not a recognised image file")])
    text = render_html(page)
    sources = re.findall(r'src="([^"]*)"', text)
    assert len(sources) == 3 and all(s.startswith("data:image/") for s in sources)
    assert "http://" not in text and "https://" not in text and "<script" not in text
    assert "report &lt;run&gt;" in text and "a &lt;b&gt;.jpg" in text
    assert "empty cluster" in text and "bad.png" in text
    gallery = save_galleries(panels, tmp_path / "galleries.png")
    assert Image.open(gallery).size[1] == 2 * (64 + 4)


def page_with_groups(tmp_path: Path) -> ReportPage:
    """A report of the small view: clusters with least confident images, a near-duplicate pair, an estimate-k table."""
    from scanlearn.inspection import DUPLICATE_RULE, duplicate_pairs

    view = small_view()
    pixels = torch.stack([view.images[i][0] for i in range(len(view.images))])
    pixels[1] = pixels[0]  # two identical images; the others are flat greys 40 levels apart
    view.images = TensorImageSet(pixels, view.images.targets, view.images.classes)
    panels = cluster_panels(view, threshold=0.85, per_cluster=1, uncertain=2)
    duplicates, total = duplicate_pairs(view)
    figure = plot_cluster_sizes(np.array([4, 2]), np.array([2, 1]), tmp_path / "sizes.png", 0.85)
    return ReportPage("groups", [("images", "6")], [], [("sizes", figure)], panels, duplicates=duplicates,
                      duplicate_total=total, duplicate_rule=DUPLICATE_RULE, k_scores=[{"K": "2 (chosen)", "loss": "-1.0"}], k_note="2 clusters chosen")


def test_panels_are_sorted_by_size_with_least_confident_images_and_nearest_cluster():
    view = small_view()
    view.probs = view.probs[:, ::-1].copy()
    panels = cluster_panels(view, threshold=0.85, per_cluster=1, uncertain=2)
    assert [p.index for p in panels] == [1, 0] and [p.size for p in panels] == [4, 2]
    big = panels[0]
    assert [t.caption.split(" ")[0] for t in big.uncertain] == ["0.60", "0.80"]
    assert big.nearest.startswith("nearest other cluster: 0 (centre cosine")


def test_page_answers_what_is_in_each_group(tmp_path: Path):
    text = render_html(page_with_groups(tmp_path))
    order = [int(i) for i in re.findall(r'id="cluster-(\d+)"', text)]
    assert order == [0, 1]
    assert text.count('class="row typical"') == 2 and text.count('class="row uncertain"') == 1
    assert "nearest other cluster: 1" in text
    assert "1 pair of images that look alike (difference hashes within 4 of 64 bits" in text
    assert text.count('class="pair"') == 1 and "0 bits" in text and "Number of clusters (estimate-k)" in text and "2 (chosen)" in text


def test_page_renders_in_headless_chromium(tmp_path: Path):
    """The page as a browser shows it: a screenshot saved next to the test's other output."""
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium); the HTML checks above still run")
    page = tmp_path / "report.html"
    page.write_text(render_html(page_with_groups(tmp_path)))
    shot = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    image = Image.open(shot)
    assert image.size == (1200, 1600)
    assert len(np.unique(np.asarray(image.convert("L").resize((60, 80))))) > 8

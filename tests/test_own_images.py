"""A folder of your own images through the CLI: run, skipped files, report, predict and export."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from fakes import error_lines
from scanlearn.cli import main
from scanlearn.data.datasets import load_dataset
from scanlearn.data.pathlists import read_path_list
from scanlearn.errors import ConfigError, DataError
from scanlearn.metrics import evaluate_clustering
from scanlearn.stages.predict import export_clusters, export_targets
from scanlearn.stages.prepare import read_skipped
from shapes import CLASSES, add_bad_files, write_shape_folder

FAST = [  # small and quick; colour is what tells the classes apart, so no greyscale and no colour-destroying ops
    "--set", "data.image_size=32", "--set", "model.width=8",
    "--set", "pretext.epochs=30", "--set", "pretext.batch_size=32", "--set", "pretext.augment.grayscale_p=0",
    "--set", "mine.k=10",
    "--set", "scan.epochs=20", "--set", "scan.batch_size=32", "--set", "scan.num_heads=1", "--set", "scan.optim.lr=0.001",
    "--set", "scan.augment.kind=simclr", "--set", "scan.augment.grayscale_p=0",
    "--set", "selflabel.epochs=5", "--set", "selflabel.batch_size=32", "--set", "selflabel.threshold=0.9",
    "--set", "selflabel.augment.kind=simclr", "--set", "selflabel.augment.grayscale_p=0",
    "--set", "runtime.progress=false",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """40 images per shape class in nested folders and mixed formats, plus two unreadable files."""
    root = write_shape_folder(tmp_path_factory.mktemp("photos") / "my photos", per_class=40)
    return root, add_bad_files(root)


@pytest.fixture(scope="module")
def run(folder: tuple[Path, list[Path]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole pipeline on the folder, scored with labels read from the folder names."""
    run_dir = tmp_path_factory.mktemp("runs") / "shapes"
    args = ["run", "--data", str(folder[0]), "--clusters", "3", "--labels-from-folders", "--run-dir", str(run_dir)]
    args += FAST
    assert main(args) == 0
    return run_dir


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_run_skips_exactly_the_two_unreadable_files(run: Path, folder: tuple[Path, list[Path]]):
    skipped = dict(read_skipped(run))
    assert set(skipped) == {str(p) for p in folder[1]}
    assert all(reason for reason in skipped.values())
    kept = read_path_list(run / "files.txt")
    assert len(kept) == 120 and not set(kept) & set(skipped)


def test_run_recovers_the_shape_classes(run: Path):
    rows = read_rows(run / "assignments.csv")
    assert len(rows) == 120 and set(rows[0]) == {"path", "cluster", "confidence", "confident"}
    targets = np.array([next(i for i, c in enumerate(CLASSES) if f"{os.sep}{c}{os.sep}" in r["path"]) for r in rows])
    clusters = np.array([int(r["cluster"]) for r in rows])
    scores = evaluate_clustering(np.eye(3)[clusters], targets, 3)
    # 30 epochs on 120 images is chaotic: the same seed reached 1.0 in fp32 on AVX2 and in bf16, 0.68 in fp32 with
    # AVX-512 kernels (two classes partly merged). What holds on every CPU is a clear win over chance (1/3).
    assert scores["acc"] >= 0.6, scores
    assert {r["confident"] for r in rows} <= {"yes", "no"}


def test_run_writes_a_self_contained_report_with_figures(run: Path):
    html = (run / "report.html").read_text()
    assert html.count('src="data:image/') >= 3 + 3 and "<script" not in html
    assert "cluster 2" in html and "Confusion matrix" in html and "truncated.jpg" in html
    for name in ("cluster_sizes", "training_curves", "confusion", "galleries"):
        assert (run / "figures" / f"{name}.png").stat().st_size > 1000, name


def test_predict_new_folder_writes_csv_and_exports(run: Path, folder: tuple[Path, list[Path]], tmp_path: Path):
    new = write_shape_folder(tmp_path / "new", per_class=4, seed=7, nested=True)
    (new / "broken.webp").write_bytes(b"RIFF0000WEBPjunk")
    out, export = tmp_path / "out.csv", tmp_path / "sorted"
    args = ["predict", "--run-dir", str(run), "--data", str(new), "--output", str(out), "--export", str(export),
            "--set", "runtime.progress=false"]
    assert main(args) == 0
    rows = read_rows(out)
    assert len(rows) == 12 and all(0 <= float(r["confidence"]) <= 1 for r in rows)
    assert "broken.webp" in (tmp_path / "out_skipped.txt").read_text()
    exported = sorted(p for p in export.rglob("*") if p.is_file())
    assert len(exported) == 12
    for row in rows:  # each file keeps its path below the folder, and the CSV says where it went
        relative = Path(row["path"]).relative_to(new)
        assert Path(row["exported_path"]) == export / f"cluster_{row['cluster']}" / relative
        assert Path(row["exported_path"]).read_bytes() == Path(row["path"]).read_bytes()
        assert len(relative.parts) > 1


def test_predict_leaves_the_runs_own_assignments_alone(run: Path, tmp_path: Path):
    before = (run / "assignments.csv").read_bytes()
    new = write_shape_folder(tmp_path / "incoming", per_class=2, seed=3, nested=False)
    assert main(["predict", "--run-dir", str(run), "--data", str(new), "--set", "runtime.progress=false"]) == 0
    assert (run / "assignments.csv").read_bytes() == before
    assert len(read_rows(run / "predictions_incoming.csv")) == 6


def test_report_command_rewrites_the_report(run: Path):
    (run / "report.html").unlink()
    assert main(["report", "--run-dir", str(run), "--set", "runtime.progress=false"]) == 0
    assert (run / "report.html").stat().st_size > 10_000


def test_export_keeps_subfolders_renames_nothing_and_refuses_a_non_empty_folder(tmp_path: Path):
    source = tmp_path / "in" / "a.png"
    (tmp_path / "in" / "b").mkdir(parents=True)
    source.write_bytes(b"x")
    (tmp_path / "in" / "b" / "a.png").write_bytes(b"y")
    paths = [str(source), str(tmp_path / "in" / "b" / "a.png")]
    targets = export_targets(paths, np.array([1, 1]), tmp_path / "in", tmp_path / "out")
    assert targets == [tmp_path / "out" / "cluster_1" / "a.png", tmp_path / "out" / "cluster_1" / "b" / "a.png"]
    methods = export_clusters(paths, targets, tmp_path / "out")
    assert sum(methods.values()) == 2
    assert [t.read_bytes() for t in targets] == [b"x", b"y"]
    with pytest.raises(DataError, match="not empty"):
        export_clusters([str(source)], [tmp_path / "out" / "cluster_0" / "a.png"], tmp_path / "out")


def test_folder_labels_only_when_asked(folder: tuple[Path, list[Path]]):
    plain = load_dataset("folder", "train", root=folder[0])
    assert not plain.has_labels and plain.classes is None
    labelled = load_dataset("folder", "train", root=folder[0], labels_from_folders=True)
    assert labelled.classes == sorted(CLASSES)
    with pytest.raises(ConfigError, match="labels-from-folders"):
        load_dataset("cifar10", "train", labels_from_folders=True)


def test_folder_run_without_clusters_is_a_one_line_error(folder: tuple[Path, list[Path]], tmp_path: Path, capsys):
    assert main(["run", "--data", str(folder[0]), "--run-dir", str(tmp_path / "r"), *FAST]) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "--clusters" in err[0]


def test_data_without_preset_picks_the_photos_preset(folder: tuple[Path, list[Path]], tmp_path: Path):
    run_dir = tmp_path / "photos"
    quick = ["--set", "pretext.epochs=1", "--set", "scan.epochs=1", "--set", "selflabel.epochs=1",
             "--set", "mine.k=5", "--set", "runtime.progress=false", "--set", "model.width=8"]
    assert main(["run", "--data", str(folder[0]), "--clusters", "3", "--run-dir", str(run_dir), *quick]) == 0
    config = (run_dir / "config.yaml").read_text()
    # The shapes are 40-72 px (median shorter side 48): below the preset's 64 px they train at their own size.
    assert "name: photos" in config and "image_size: 48" in config and "resnet18-stl" in config
    assert (run_dir / "report.html").is_file() and "Confusion matrix" not in (run_dir / "report.html").read_text()
    assert len(read_rows(run_dir / "assignments.csv")) == 120


def test_a_finished_folder_run_notices_added_images(tmp_path: Path, capsys):
    root = write_shape_folder(tmp_path / "pics", per_class=5, seed=2, nested=False)
    run_dir = tmp_path / "run"
    quick = ["--clusters", "3", "--run-dir", str(run_dir), "--set", "pretext.epochs=1", "--set", "scan.epochs=1",
             "--set", "selflabel.epochs=1", "--set", "mine.k=3", "--set", "mine.val_k=3", "--set", "data.image_size=16",
             "--set", "model.width=4", "--set", "runtime.progress=false"]
    assert main(["run", "--data", str(root), *quick]) == 0
    extra = write_shape_folder(tmp_path / "extra", per_class=1, seed=9, nested=False)
    added = next(extra.rglob("*.*"))
    added.rename(root / f"zz_new{added.suffix}")
    capsys.readouterr()
    assert main(["run", "--data", str(root), *quick]) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and "1 added, 0 removed, 0 changed" in errors[0] and "--restart" in errors[0]
    assert main(["run", "--data", str(root), *quick, "--restart"]) == 0
    assert len(read_rows(run_dir / "assignments.csv")) == 16

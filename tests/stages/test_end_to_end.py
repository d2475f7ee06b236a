"""Every stage through the CLI on Fashion-MNIST-format files of synthetic images (never the machine's own copy)."""

import json
from pathlib import Path

import numpy as np
import pytest

from fakes import error_lines, write_fashion_mnist
from scanlearn.cli import main
from scanlearn.runs.artefacts import write_json

TRAIN_IMAGES, TEST_IMAGES, LIMIT = 600, 500, 400


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """Tiny IDX files of blobs in Fashion-MNIST's format: the same on every machine."""
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"), TRAIN_IMAGES, TEST_IMAGES)


FAST = [
    "--set", f"data.limit={LIMIT}", "--set", "model.width=8", "--set", "pretext.epochs=1",
    "--set", "pretext.batch_size=128", "--set", "scan.epochs=1", "--set", "scan.batch_size=128",
    "--set", "selflabel.epochs=1", "--set", "selflabel.batch_size=128", "--set", "runtime.progress=false",
    "--set", "mine.k=10",
]


def test_every_stage_through_the_cli(tmp_path, data_root, capsys):
    run = tmp_path / "run"
    common = ["--preset", "fashion-mnist", "--run-dir", str(run), "--data-root", str(data_root), *FAST]
    for stage in ("pretext", "mine", "scan", "selflabel"):
        assert main([stage, *common]) == 0, stage
        assert (run / stage / "done.json").is_file()
        assert (run / stage / "config.yaml").is_file()
    for stage in ("pretext", "scan", "selflabel"):
        assert (run / stage / "model.pt").is_file()
        assert (run / stage / "checkpoints" / "last.ckpt").is_file()
    neighbors = np.load(run / "mine" / "neighbors_train.npy")
    assert neighbors.shape == (LIMIT, 10)
    assert not (neighbors == np.arange(LIMIT)[:, None]).any()
    metrics = json.loads((run / "metrics.json").read_text())
    for stage in ("pretext", "scan", "selflabel"):
        for key in ("acc", "nmi", "ari", "ami"):
            assert -1e-9 <= metrics[stage][key] <= 1.0 + 1e-9 or key in ("ari", "ami")  # NMI may round above 1
    assert 0 <= metrics["mine"]["precision_train@10"] <= 1
    assert (run / "scan" / "confusion_test.png").stat().st_size > 1000

    assert main(["predict", "--run-dir", str(run), "--data-root", str(data_root), *FAST]) == 0
    rows = (run / "predictions_test.csv").read_text().splitlines()
    assert rows[0] == "path,cluster,confidence,confident" and len(rows) == 1 + min(LIMIT, TEST_IMAGES)

    candidates = json.loads((run / "candidates.json").read_text())
    assert set(candidates["scores"]) == {"kmeans", "scan", "selflabel"}
    fullest = max(candidates["clusters_used"].values())
    eligible = [n for n in ("kmeans", "scan", "selflabel") if candidates["clusters_used"][n] == fullest]
    top = max(candidates["scores"][n] for n in eligible)
    level = [n for n in eligible if candidates["scores"][n] >= top - 0.01]  # choice.MARGIN
    assert candidates["best"] == level[-1]
    write_json(run / "mine" / "kmeans.json", {"neighbour_kappa": 2.0})  # k-means now scores best
    assert main(["predict", "--run-dir", str(run), "--data-root", str(data_root), *FAST]) == 0
    rows = [row.split(",") for row in (run / "predictions_test.csv").read_text().splitlines()[1:]]
    saved = np.load(run / "mine" / "kmeans.npz")
    confidences = np.array([float(row[2]) for row in rows])  # k-means answers are soft (feature_kmeans.soft_assignments)
    assert (confidences >= 1 / len(saved["centroids"]) - 1e-4).all() and (confidences <= 1).all()
    assert len({row[1] for row in rows}) <= len(saved["centroids"])


def test_run_skips_completed_stages_and_prints_table(tmp_path, data_root, capsys):
    run = tmp_path / "run"
    args = ["run", "--preset", "fashion-mnist", "--run-dir", str(run), "--data-root", str(data_root), *FAST]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "k-means" in first and "selflabel" in first and "ACC" in first
    assert main(args) == 0
    second = capsys.readouterr().err
    assert second.count("already complete") == 4


def test_stage_before_its_input_is_a_clear_error(tmp_path, data_root, capsys):
    code = main(["scan", "--run-dir", str(tmp_path / "empty"), "--data-root", str(data_root), *FAST])
    assert code == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "mine" in err[0]

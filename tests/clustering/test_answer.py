"""One answer per run: when the label-free check prefers k-means, the run's CSV, its report, the API and
``predict`` all give k-means' assignment of every image."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from scanlearn import SCAN
from scanlearn.cli import main
from scanlearn.clustering import choice
from scanlearn.clustering.answer import chosen_stage
from scanlearn.clustering.choice import final_stage, KMEANS
from scanlearn.clustering.kmeans import feature_kmeans
from scanlearn.config import load_config
from scanlearn.engine import embedding
from scanlearn.engine.inference import predict_probabilities
from scanlearn.engine.run import Run
from shapes import write_shape_folder

TINY = dict(
    data__image_size=32, model__width=4, pretext__epochs=2, pretext__batch_size=30, mine__k=5, mine__val_k=3,
    scan__epochs=2, scan__batch_size=30, scan__num_heads=1, selflabel__epochs=1, selflabel__batch_size=30,
    selflabel__threshold=0.5, verbose=False,
)


def prefer_kmeans(scores: dict[str, float], used: dict[str, int] | None = None) -> str:
    """The check's rule made to pick k-means whenever it has been scored (the real rule picks it on imbalanced data)."""
    return KMEANS if KMEANS in scores else max(scores, key=scores.get)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[SCAN, Path, Path]:
    """A folder of 60 shapes fitted through the API in a kept run directory, with the check preferring k-means."""
    folder = write_shape_folder(tmp_path_factory.mktemp("shapes") / "photos", per_class=20, nested=False)
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(choice, "best_candidate", prefer_kmeans)
        model = SCAN(n_clusters=3, preset="photos", run_dir=str(run_dir), **TINY).fit(folder)
        yield model, run_dir, folder


def clusters_by_path(path: Path) -> dict[str, int]:
    """``path -> cluster`` of an assignments CSV."""
    with open(path, newline="") as handle:
        return {row["path"]: int(row["cluster"]) for row in csv.DictReader(handle)}


def report_sizes(path: Path) -> dict[int, int]:
    """``cluster -> number of images`` as the HTML report's cluster panels state them."""
    found = re.findall(r"cluster (\d+) — (\d+) images", path.read_text())
    return {int(k): int(n) for k, n in found}


def test_csv_report_api_and_predict_give_the_chosen_kmeans_assignment(fitted, tmp_path):
    model, run_dir, folder = fitted
    assert chosen_stage(run_dir) == KMEANS
    run = Run(load_config(run_dir / "config.yaml"), run_dir)
    images = run.split("train")
    kmeans = feature_kmeans(run).labels  # fitted on these images by the check; no path shared with the answer
    final = predict_probabilities(run, final_stage(run_dir), images).argmax(1)
    assert (kmeans != final).any(), "the final stage must cluster differently, or the test could not fail"
    expected = dict(zip(images.paths, kmeans.tolist()))

    assert dict(zip(model.paths_, model.labels_.tolist())) == expected
    assert model.predict(folder).tolist() == model.labels_.tolist()
    assert main(["report", "--run-dir", str(run_dir)]) == 0
    assert clusters_by_path(run_dir / "assignments.csv") == expected
    sizes = Counter(kmeans.tolist())
    assert report_sizes(run_dir / "report.html") == {k: sizes.get(k, 0) for k in range(3)}
    output = tmp_path / "predicted.csv"
    assert main(["predict", "--run-dir", str(run_dir), "--data", str(folder), "--output", str(output)]) == 0
    assert clusters_by_path(output) == expected


@pytest.mark.parametrize("answer", [KMEANS, "selflabel"])
def test_predict_embeds_new_images_once(fitted, tmp_path, monkeypatch, answer):
    model, run_dir, folder = fitted
    monkeypatch.setattr(choice, "best_candidate", lambda scores, used=None: answer)
    passes = []
    real = embedding.image_loader
    monkeypatch.setattr(embedding, "image_loader", lambda images, *args, **kwargs: passes.append(len(images)) or
                        real(images, *args, **kwargs))
    output = tmp_path / "predicted.csv"
    assert main(["predict", "--run-dir", str(run_dir), "--data", str(folder), "--output", str(output)]) == 0
    assert chosen_stage(run_dir) == answer
    assert passes == [60], "one pass feeds the answer and the distance check"


def test_a_saved_and_loaded_estimator_answers_with_kmeans_too(fitted, tmp_path):
    model, run_dir, folder = fitted
    assert model.clustering_ == KMEANS
    loaded = SCAN.load(model.save(tmp_path / "model.scan"))
    assert loaded.clustering_ == KMEANS and loaded.run_dir_ is None
    assert loaded.predict(folder).tolist() == model.labels_.tolist()
    assert np.allclose(loaded.predict_proba(folder), model.probabilities_, atol=1e-5)
    assert np.allclose(SCAN.load(loaded.save(tmp_path / "again.scan")).predict_proba(folder), model.probabilities_, atol=1e-5)

"""The scikit-learn style estimator on a small array of shapes."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone, is_clusterer
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import check_estimator

import scanlearn
from scanlearn import SCAN
from scanlearn.api import _materialise
from scanlearn.cli import main
from scanlearn.config import nested
from scanlearn.errors import BudgetError, ClusterCollapseWarning, ConfigError, DataError, ScanlearnWarning
from shapes import shape_arrays, write_shape_folder

TINY = dict(
    model__width=4, pretext__epochs=2, pretext__batch_size=30, mine__k=5, mine__val_k=3,
    scan__epochs=2, scan__batch_size=30, selflabel__epochs=1, selflabel__batch_size=30,
    selflabel__threshold=0.5, verbose=False,
)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    """90 RGB images (N, 24, 24, 3) of three shape classes."""
    return shape_arrays(per_class=30, side=24)[0]


@pytest.fixture(scope="module")
def fitted(data: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> SCAN:
    """A SCAN estimator fitted on ``data`` with tiny settings, its run kept in a temporary folder."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ClusterCollapseWarning)
        return SCAN(n_clusters=3, run_dir=tmp_path_factory.mktemp("api") / "run", **TINY).fit(data)


def test_scan_is_exported_and_init_only_stores_arguments(tmp_path: Path):
    model = scanlearn.SCAN(n_clusters=4, run_dir=tmp_path / "never", pretext__epochs=1)
    assert model.get_params()["pretext__epochs"] == 1 and model.n_clusters == 4
    assert not (tmp_path / "never").exists()
    assert "n_clusters=4" in repr(model)


def test_set_params_round_trips_through_get_params(tmp_path: Path):
    model = scanlearn.SCAN(n_clusters=4, run_dir=tmp_path / "never", pretext__epochs=1)
    assert model.set_params(n_clusters=6, random_state=3, scan__epochs=2) is model
    params = model.get_params()
    assert (params["n_clusters"], params["random_state"], params["scan__epochs"], params["pretext__epochs"]) == (6, 3, 2, 1)
    assert scanlearn.SCAN(**params).get_params() == params  # what sklearn.base.clone does
    with pytest.raises(ConfigError, match="no parameter 'epochs'"):
        model.set_params(epochs=3)
    assert not (tmp_path / "never").exists()


def test_predict_before_fit_raises_not_fitted(data: np.ndarray):
    with pytest.raises(NotFittedError, match="fit"):
        SCAN().predict(data)
    with pytest.raises(AttributeError):
        SCAN().predict_proba(data)


def test_fit_sets_labels_and_predict_matches(fitted: SCAN, data: np.ndarray):
    assert fitted.labels_.shape == (90,) and fitted.labels_.max() < 3
    assert fitted.probabilities_.shape == (90, 3)
    assert fitted.n_clusters_ == len(np.unique(fitted.labels_))
    assert fitted.config_.data.dataset == "array" and fitted.config_.data.image_size == 24
    proba = fitted.predict_proba(data[:10])
    assert proba.shape == (10, 3) and np.allclose(proba.sum(1), 1, atol=1e-4)
    assert np.array_equal(fitted.predict(data[:10]), proba.argmax(1))
    assert np.allclose(proba, fitted.probabilities_[:10], atol=1e-4)
    assert (Path(fitted.run_dir_) / "selflabel" / "done.json").is_file()


def test_other_layouts_and_a_dataset_give_the_same_predictions(fitted: SCAN, data: np.ndarray):
    expected = fitted.predict_proba(data[:6])
    nchw = torch.from_numpy(data[:6]).permute(0, 3, 1, 2).contiguous()
    assert np.allclose(fitted.predict_proba(nchw), expected, atol=1e-4)
    assert np.allclose(fitted.predict_proba(data[:6].astype(np.float32) / 255), expected, atol=1e-2)

    class Pictures(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 6

        def __getitem__(self, i: int):
            return Image.fromarray(data[i]), i

    assert np.allclose(fitted.predict_proba(Pictures()), expected, atol=1e-4)


def test_save_and_load_round_trip(fitted: SCAN, data: np.ndarray, tmp_path: Path):
    path = fitted.save(tmp_path / "model.scan")
    loaded = SCAN.load(path)
    assert loaded.n_clusters == 3 and np.array_equal(loaded.labels_, fitted.labels_)
    assert loaded.clustering_ == fitted.clustering_
    assert np.allclose(loaded.predict_proba(data[:8]), fitted.predict_proba(data[:8]), atol=1e-5)
    (tmp_path / "junk.scan").write_bytes(b"not a model")
    with pytest.raises(DataError, match="SCAN.save"):
        SCAN.load(tmp_path / "junk.scan")


def test_predict_on_the_training_arrays_gives_labels_and_other_encodings_agree(fitted: SCAN, data: np.ndarray):
    assert np.array_equal(fitted.predict(data), fitted.labels_)
    as_floats = fitted.predict_proba(data.astype(np.float32) / 255)  # floats in [0, 1], the other accepted encoding
    assert np.abs(as_floats - fitted.probabilities_).max() < 1e-2
    grey_alpha = np.concatenate([data, np.full(data.shape[:3] + (1,), 255, np.uint8)], axis=3)  # opaque RGBA
    assert np.array_equal(fitted.predict(grey_alpha), fitted.labels_)
    with pytest.raises(DataError, match="uint8"):
        fitted.predict(data.astype(np.float32))  # 0..255 floats are refused, not silently clipped


def test_scan_is_a_scikit_learn_clusterer(tmp_path: Path):
    model = SCAN(n_clusters=4, run_dir=tmp_path / "never", pretext__epochs=1)
    copy = clone(model)
    assert is_clusterer(model) and copy is not model and copy.get_params() == model.get_params()
    assert not (tmp_path / "never").exists()


# Checks of scikit-learn's suite that cannot apply to SCAN, and why. Tagging SCAN as not taking 2-D arrays would
# make sklearn skip every check, the API ones included, so the tag stays and the test names each exception.
TABLES = ("fits on a table (n_samples, n_features) of floats; SCAN's samples are images ((N,H,W), (N,H,W,C) or "
          "(N,C,H,W), uint8 or floats in [0, 1]) and its fit refuses a table with a DataError naming the shapes")
ONE_CLUSTER = "fits n_clusters=1 on a table; SCAN needs at least 2 clusters and images (see TABLES)"
NOT_APPLICABLE = {
    **{name: TABLES for name in (
        "check_fit_score_takes_y", "check_estimators_overwrite_params", "check_estimators_fit_returns_self",
        "check_readonly_memmap_input", "check_n_features_in_after_fitting", "check_positive_only_tag_during_fit",
        "check_estimators_dtypes", "check_complex_data", "check_dtype_object", "check_estimators_empty_data_messages",
        "check_pipeline_consistency", "check_estimators_nan_inf", "check_estimator_sparse_tag",
        "check_estimator_sparse_array", "check_estimator_sparse_matrix", "check_estimators_pickle",
        "check_f_contiguous_array_estimator", "check_clustering", "check_methods_sample_order_invariance",
        "check_dict_unchanged", "check_fit_idempotent", "check_fit_check_is_fitted", "check_n_features_in",
    )},
    **{name: ONE_CLUSTER for name in (
        "check_dont_overwrite_parameters", "check_methods_subset_invariance", "check_fit2d_1sample",
        "check_fit2d_1feature", "check_fit2d_predict1d",
    )},
    "check_do_not_raise_errors_in_init_or_set_params": (
        "it passes every name of the signature, the **overrides catch-all too, to set_params; a config override "
        "must be section__key, and any other unknown name is refused as sklearn's own set_params refuses it"),
}


def test_scan_passes_every_scikit_learn_check_that_applies():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(SCAN(verbose=False), on_fail=None)
    failed = {r["check_name"] for r in results if r["status"] == "failed"}
    passed = {r["check_name"] for r in results if r["status"] == "passed"}
    assert failed == set(NOT_APPLICABLE)
    assert {"check_estimator_cloneable", "check_no_attributes_set_in_init", "check_get_params_invariance",
            "check_set_params", "check_estimators_unfitted", "check_parameters_default_constructible",
            "check_mixin_order", "check_estimator_repr"} <= passed


QUIET_FIT = """
import sys, warnings
import numpy as np
from scanlearn import SCAN
warnings.simplefilter("ignore")
SCAN(n_clusters=3, run_dir=sys.argv[2], **eval(sys.argv[3])).fit(np.load(sys.argv[1]))
"""


def test_fitting_with_messages_on_prints_nothing_on_stdout_and_no_lightning_chatter(data: np.ndarray, tmp_path: Path):
    # A fresh interpreter: under pytest, Lightning adds no handler of its own, so its chatter would not show here.
    np.save(tmp_path / "images.npy", data[::3])
    settings = {**TINY, "verbose": True, "pretext__epochs": 1, "scan__epochs": 1}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(scanlearn.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", QUIET_FIT, str(tmp_path / "images.npy"), str(tmp_path / "run"),
                           repr(settings)], capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == ""
    assert "scanlearn: pretext:" in done.stderr and "Epoch 0" in done.stderr, "messages and progress bars go to stderr"
    for chatter in ("GPU available", "weights_only", "Tip", "TPU available"):
        assert chatter not in done.stderr, chatter


def test_fewer_clusters_than_requested_warns():
    model = SCAN(n_clusters=5)
    model.n_clusters_ = 2
    with pytest.warns(ClusterCollapseWarning, match="only 2 distinct clusters of the 5"):
        model._warn_if_collapsed()


def test_grey_and_channel_first_arrays_become_rgb_squares():
    grey = np.zeros((4, 20, 30), dtype=np.uint8)
    assert _materialise(grey, None, False).shape == (4, 3, 20, 20)
    big = np.zeros((2, 3, 100, 100), dtype=np.uint8)
    assert _materialise(big, None, False).shape == (2, 3, 64, 64)
    rgba = np.full((1, 8, 8, 4), 255, dtype=np.uint8)
    assert _materialise(rgba, 16, False).shape == (1, 3, 16, 16)


def test_bad_inputs_are_clear_errors(tmp_path: Path):
    with pytest.raises(DataError, match="uint8"):
        _materialise(np.full((2, 8, 8), 300, dtype=np.int32), None, False)
    with pytest.raises(DataError, match="shape"):
        _materialise(np.zeros((2, 5, 8, 8, 3), dtype=np.uint8), None, False)
    with pytest.raises(DataError, match="folder path"):
        _materialise([1, 2, 3], None, False)
    with pytest.raises(ConfigError, match="n_clusters"):
        SCAN(n_clusters=1, run_dir=tmp_path).fit(np.zeros((4, 8, 8), dtype=np.uint8))


def test_a_time_budget_too_small_is_refused_before_training(data: np.ndarray, tmp_path: Path, monkeypatch):
    import scanlearn.budget as budget
    from scanlearn.run_estimate import StepCosts

    monkeypatch.setattr(budget, "measure", lambda made: StepCosts(0.01, {s: 0.05 for s in budget.SPLIT}))
    model = SCAN(n_clusters=3, run_dir=tmp_path / "run", time_budget="2s", **TINY)
    assert model.get_params()["time_budget"] == "2s"
    with pytest.raises(BudgetError, match="needs at least"):
        model.fit(data)
    assert not (tmp_path / "run" / "pretext").exists()
    with pytest.raises(ConfigError, match="longer than zero"):
        SCAN(n_clusters=3, run_dir=tmp_path / "other", time_budget=0, **TINY).fit(data)


def test_nested_overrides():
    assert nested({"pretext.optim.lr": 0.1, "num_clusters": 3}) == {"pretext": {"optim": {"lr": 0.1}}, "num_clusters": 3}


@pytest.mark.timeout(240)
def test_fit_leaves_the_report_assignments_and_summary_scanlearn_run_leaves(tmp_path: Path, capsys):
    """One after-run sequence (``runner.run_whole``): the same files and summary, printed by the CLI only."""
    folder = write_shape_folder(tmp_path / "pics", per_class=6, seed=3, nested=False)
    settings = {"pretext.epochs": 1, "pretext.batch_size": 6, "scan.epochs": 1, "scan.batch_size": 6,
                "selflabel.epochs": 1, "selflabel.batch_size": 6, "mine.k": 3, "mine.val_k": 3,
                "data.image_size": 16, "model.width": 4, "runtime.progress": False}
    runs = {"cli": tmp_path / "cli", "api": tmp_path / "api"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScanlearnWarning)
        flags = [part for key, value in settings.items() for part in ("--set", f"{key}={value}")]
        assert main(["run", "--preset", "photos", "--data", str(folder), "--clusters", "3",
                     "--run-dir", str(runs["cli"]), *flags]) == 0
        printed = capsys.readouterr().out.split("Summary:\n", 1)[1].splitlines()
        model = SCAN(n_clusters=3, preset="photos", run_dir=runs["api"], verbose=False,
                     **{key.replace(".", "__"): value for key, value in settings.items()}).fit(folder)
    assert capsys.readouterr().out == "", "the estimator prints nothing"
    assert [line.replace(str(runs["api"]), "RUN") for line in model.summary_] == \
        [line.replace(str(runs["cli"]), "RUN") for line in printed]
    assert [line.split(":")[0] for line in model.summary_] == ["clusters", "answer", "trust", "report", "assignments"]
    for name in ("assignments.csv", "candidates.json"):
        assert (runs["api"] / name).read_text() == (runs["cli"] / name).read_text(), name
    figures = {name: sorted(p.name for p in (run / "figures").iterdir()) for name, run in runs.items()}
    assert figures["api"] == figures["cli"] and "galleries.png" in figures["api"]
    assert "scanlearn report — pics" in (runs["api"] / "report.html").read_text()

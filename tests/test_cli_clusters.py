"""``--clusters K`` or ``--clusters auto`` (estimate-k first, its answer used and shown in the report)."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from scanlearn import arguments, cli, estimate_k, runner
from scanlearn.clustering.kmeans import train_mined_space
from scanlearn.config import load_config, load_preset
from scanlearn.engine.run import Run
from scanlearn.estimate_k import auto_range, KEstimate, KScore, standardise, SweepSettings, sweep_key
from scanlearn.inspection import estimate_k_rows
from shapes import write_shape_folder


def test_clusters_takes_a_number_or_auto():
    assert arguments.clusters_value("7") == 7 and arguments.clusters_value("auto") == "auto"
    with pytest.raises(argparse.ArgumentTypeError):
        arguments.clusters_value("many")
    assert cli.build_parser().parse_args(["run", "--clusters", "auto"]).clusters == "auto"


def test_auto_range_keeps_twenty_images_per_cluster():
    assert auto_range(600) == list(range(2, 21))
    assert auto_range(100) == [2, 3, 4, 5]
    assert auto_range(30) == [2, 3]


def test_auto_clusters_uses_estimate_k_and_the_run_prints_its_table(monkeypatch, tmp_path: Path):
    seen = {}
    score = KScore(k=4, loss=-1.0, consistency=0.5, balance=0.9, used=4, confident=0.8, agreement=0.9, coherence=0.85)

    def fake_estimate(run, ks):
        seen["ks"] = ks
        return KEstimate(4, "largest coherent K", [score])

    monkeypatch.setattr(estimate_k, "estimate_k", fake_estimate)
    monkeypatch.setattr(Run, "split", lambda run, name: [0] * 100)
    run, estimates = Run(load_preset("photos"), tmp_path), []
    assert runner.chosen_count(estimates, run) == 4
    assert seen["ks"] == [2, 3, 4, 5]
    out = cli.finished_text(runner.Finished(run, estimates[0], summary=("clusters: 4 of 4 used",)))
    assert "--clusters auto: using 4 clusters (largest coherent K)" in out and "coherence" in out
    assert out.endswith("Summary:\nclusters: 4 of 4 used")


def test_auto_leaves_the_number_of_clusters_open_for_the_pipeline(tmp_path: Path):
    args = cli.build_parser().parse_args(["run", "--preset", "photos", "--data", str(tmp_path), "--clusters", "auto",
                                          "--set", "num_clusters=9"])
    assert cli.run_from_args(args).config.num_clusters is None


def test_report_rows_list_every_candidate_and_mark_the_chosen(tmp_path: Path):
    assert estimate_k_rows(tmp_path) == ([], "")
    (tmp_path / "estimate_k").mkdir()
    scores = [dict(k=k, loss=-k / 10, consistency=0.1, balance=1.0, used=k, confident=0.5, agreement=0.9,
                   coherence=1 - k / 10) for k in (2, 3)]
    (tmp_path / "estimate_k" / "scores.json").write_text(json.dumps({"best": 3, "criterion": "rule", "scores": scores}))
    rows, note = estimate_k_rows(tmp_path)
    assert [r["K"] for r in rows] == ["2", "3 (chosen)"] and rows[1]["worst-cluster coherence"] == "0.700"
    assert note == "3 clusters chosen: rule."


def test_clusters_auto_runs_end_to_end_on_a_folder(tmp_path: Path, capsys):
    root = write_shape_folder(tmp_path / "pics", per_class=10, seed=4, nested=False)
    run_dir = tmp_path / "run"
    quick = ["--run-dir", str(run_dir), "--set", "pretext.epochs=1", "--set", "scan.epochs=1",
             "--set", "selflabel.epochs=1", "--set", "mine.k=3", "--set", "mine.val_k=3", "--set", "data.image_size=16",
             "--set", "model.width=4", "--set", "runtime.progress=false"]
    assert cli.main(["run", "--data", str(root), "--clusters", "auto", *quick]) == 0
    out, err = capsys.readouterr()
    chosen = json.loads((run_dir / "estimate_k" / "scores.json").read_text())["best"]
    assert f"--clusters auto: using {chosen} clusters" in out and chosen in (2, 3)  # 30 images: K in 2..3
    assert "estimate-k: K=3 (2/2)" in err and "left" in err
    assert err.count("mine: starting") == 1 and "mine: already complete" in err, "estimate-k ran the run's own mine stage"
    config = load_config(run_dir / "config.yaml")
    settings = SweepSettings(entropy_weight=config.scan.entropy_weight, seed=config.runtime.seed)
    mined = standardise(train_mined_space(Run(config, run_dir))), np.load(run_dir / "mine" / "neighbors_train.npy")
    assert json.loads((run_dir / "estimate_k" / "k2.json").read_text())["key"] == sweep_key(*mined, settings)
    assert f"num_clusters: {chosen}" in (run_dir / "config.yaml").read_text()
    assert json.loads((run_dir / "run.json").read_text())["config"]["num_clusters"] == chosen
    assert len(list(csv.DictReader(open(run_dir / "assignments.csv", newline="")))) == 30
    assert cli.main(["run", "--data", str(root), "--clusters", "auto", *quick]) == 0  # a rerun finds its work
    assert "already complete" in capsys.readouterr().err

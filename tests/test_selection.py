"""Label-free selection: scores and choice on constructed candidates, heads trained on blobs, and the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from fakes import write_fashion_mnist
from scanlearn import criteria
from scanlearn.cli import main
from scanlearn.errors import ConfigError
from scanlearn.mining import mine_neighbors
from scanlearn.selection import (Candidate, CandidateGrid, choose, chosen_params, score_candidates, select,
                                 train_candidates)


def blobs(groups: int = 3, per_group: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of ``groups`` separated Gaussian blobs, their 8 mined neighbours and the blob of each point."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 8, size=(groups, 6))
    points = np.concatenate([c + rng.normal(0, 1, size=(per_group, 6)) for c in centres]).astype(np.float32)
    return points, mine_neighbors(points, 8), np.repeat(np.arange(groups), per_group)


def one_hot(labels: np.ndarray, clusters: int) -> np.ndarray:
    probs = np.full((len(labels), clusters), 0.01)
    probs[np.arange(len(labels)), labels] = 1 - 0.01 * (clusters - 1)
    return probs


def test_scores_are_the_criteria_of_each_candidate():
    features, neighbors, truth = blobs()
    noisy = truth.copy()
    noisy[::4] = (noisy[::4] + 1) % 3
    candidates = [Candidate("truth", {}, one_hot(truth, 3)), Candidate("noisy", {}, one_hot(noisy, 3))]
    scores = score_candidates(candidates, neighbors, features)
    assert scores[0]["neighbour_kappa"] == pytest.approx(criteria.neighbour_kappa(truth, neighbors))
    assert scores[1]["scan_loss"] == pytest.approx(criteria.scan_objective(one_hot(noisy, 3), neighbors, 1.0))
    assert scores[0]["stability"] == scores[1]["stability"] == pytest.approx(criteria.stability([truth, noisy]))
    assert scores[0]["generalisation"] > scores[1]["generalisation"]


@pytest.mark.parametrize("criterion", ["neighbour_kappa", "scan_loss", "generalisation"])
def test_every_criterion_prefers_the_true_blobs_to_a_noisy_copy(criterion: str):
    features, neighbors, truth = blobs()
    noisy = truth.copy()
    noisy[::4] = (noisy[::4] + 1) % 3
    candidates = [Candidate("noisy", {}, one_hot(noisy, 3)), Candidate("truth", {}, one_hot(truth, 3))]
    selection = select(candidates, neighbors, features, criterion=criterion)
    assert selection.chosen.name == "truth"
    assert "  <" in selection.table().splitlines()[2]


def test_choose_respects_direction_and_refuses_unknown_criteria():
    scores = [{"neighbour_kappa": 0.2, "scan_loss": 1.0}, {"neighbour_kappa": 0.5, "scan_loss": 2.0}]
    assert choose(scores, "neighbour_kappa") == 1
    assert choose(scores, "scan_loss") == 0
    with pytest.raises(ConfigError, match="generalisation"):
        choose(scores, "generalisation")


def test_choose_passes_over_candidates_that_fill_fewer_clusters():
    scores = [{"stability": 0.9}, {"stability": 0.6}, {"stability": 0.7}]
    assert choose(scores, "stability") == 0
    assert choose(scores, "stability", clusters_used=[2, 3, 3]) == 2
    assert choose([{"scan_loss": 1.0}, {"scan_loss": 2.0}], "scan_loss", clusters_used=[2, 3]) == 1


def test_stability_does_not_choose_agreeing_candidates_that_merge_groups():
    features, neighbors, truth = blobs()
    merged = np.where(truth == 2, 1, truth)  # groups 1 and 2 as one cluster, cluster 2 left empty
    noisy = truth.copy()
    noisy[::5] = (noisy[::5] + 1) % 3
    candidates = [Candidate(f"merged{i}", {}, one_hot(merged, 3)) for i in range(3)]
    candidates += [Candidate("truth", {}, one_hot(truth, 3)), Candidate("noisy", {}, one_hot(noisy, 3))]
    selection = select(candidates, neighbors, features)
    stable = [s["stability"] for s in selection.scores]
    assert int(np.argmax(stable)) < 3  # the three merged copies agree best with each other
    assert selection.chosen.name == "truth"
    assert selection.clusters_used == [2, 2, 2, 3, 3]
    assert [c["clusters_used"] for c in selection.summary()["candidates"]] == [2, 2, 2, 3, 3]


def test_candidates_trained_on_blobs_find_them():
    features, neighbors, truth = blobs()
    grid = CandidateGrid(seeds=(0,), entropy_weights=(2.0, 4.0), ks=(4, 8), heads=2, epochs=100,
                         min_steps=0, batch_size=60)
    candidates = train_candidates(features, neighbors, 3, grid)
    assert len(candidates) == 8
    assert {c.name for c in candidates} >= {"s0-w2-k4-h0", "s0-w4-k8-h1"}
    selection = select(candidates, neighbors, features, with_consensus=True)
    # Stability, and neighbour kappa, pick the candidate closest to the blobs, without seeing them.
    closeness = [criteria.stability([c.labels, truth]) for c in candidates]
    assert closeness[selection.best] == max(closeness) > 0.85
    assert closeness[choose(selection.scores, "neighbour_kappa")] == max(closeness)
    assert selection.consensus.labels.shape == truth.shape
    with pytest.raises(ConfigError, match="mine.k=9"):
        train_candidates(features, neighbors, 3, CandidateGrid(ks=(9,)))


def test_select_command_records_every_candidate(tmp_path, capsys):
    root = write_fashion_mnist(tmp_path / "data", 200, 100, seed=0)
    run = tmp_path / "run"
    sets = ["model.width=4", "pretext.epochs=1", "pretext.batch_size=50", "mine.k=5", "mine.val_k=3",
            "runtime.progress=false", "runtime.precision=32-true"]
    args = ["select", "--preset", "fashion-mnist", "--run-dir", str(run), "--data-root", str(root),
            "--seeds", "0,1", "--entropy-weights", "2,4", "--neighbours", "3,5", "--heads", "1", "--steps", "20", "--consensus"]
    assert main(args + [a for s in sets for a in ("--set", s)]) == 0
    out = capsys.readouterr().out
    assert "chosen by stability" in out
    record = json.loads((run / "select" / "criteria.json").read_text())
    assert len(record["candidates"]) == 8
    assert set(record["candidates"][0]["criteria"]) == {"neighbour_kappa", "scan_loss", "stability", "generalisation"}
    used = np.array([c["clusters_used"] for c in record["candidates"]])
    stable = np.array([c["criteria"]["stability"] for c in record["candidates"]])
    fullest = np.where(used == used.max(), stable, -np.inf)
    assert record["chosen"] == record["candidates"][int(np.argmax(fullest))]["name"]
    assert chosen_params(run) == record["candidates"][int(np.argmax(fullest))]["params"]
    assert np.load(run / "select" / "probabilities.npy").shape == (200, 10)
    assert np.load(run / "select" / "consensus.npy").shape == (200,)
    assert (run / "select" / "criteria.png").stat().st_size > 0

    # Finished runs as candidates: frozen-backbone SCAN stages of two entropy weights on the same features.
    frozen = ["scan.freeze_backbone=true", "scan.head_search=0", "scan.epochs=1", "scan.batch_size=50"]
    base = ["--preset", "fashion-mnist", "--data-root", str(root)] + [a for s in sets + frozen for a in ("--set", s)]
    assert main(["scan", "--run-dir", str(run), "--set", "scan.entropy_weight=2", *base]) == 0
    other = tmp_path / "other"
    shutil.copytree(run, other)
    assert main(["scan", "--run-dir", str(other), "--set", "scan.entropy_weight=3", "--restart", *base]) == 0
    assert main(["select", "--run-dir", str(run), "--runs", str(run), str(other), "--criterion", "scan_loss"]) == 0
    record = json.loads((run / "select" / "criteria.json").read_text())
    assert [c["name"] for c in record["candidates"]] == ["run", "other"]
    assert [c["params"]["entropy_weight"] for c in record["candidates"]] == [2, 3]
    assert record["criterion"] == "scan_loss" and record["chosen"] in ("run", "other")
    assert "prior" not in record

    # With an estimated prior the candidates train towards it, and the record says which shares they used.
    assert main(["select", "--run-dir", str(run), "--entropy-weights", "2", "--heads", "1", "--steps", "20",
                 "--set", "scan.prior=estimated", "--set", "scan.uniform_prior=false"]) == 0
    record = json.loads((run / "select" / "criteria.json").read_text())
    assert len(record["prior"]) == 10 and sum(record["prior"]) == pytest.approx(1.0, abs=1e-5)


def test_a_malformed_list_is_one_error_line(tmp_path, capsys):
    assert main(["select", "--run-dir", str(tmp_path / "run"), "--seeds", "0,x"]) == 2
    assert "--seeds must be a comma-separated list" in capsys.readouterr().err


def test_candidates_pull_towards_the_prior_they_are_given():
    """Blobs of 160, 40 and 40 points: with the uniform entropy term at a high weight the heads cut the large blob
    to even the sizes out; given the blobs' shares as the prior, they keep it whole."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 8, size=(3, 6))
    sizes = (160, 40, 40)
    points = np.concatenate([c + rng.normal(0, 1, size=(n, 6)) for c, n in zip(centres, sizes)]).astype(np.float32)
    truth = np.repeat(np.arange(3), sizes)
    neighbors = mine_neighbors(points, 8)
    grid = CandidateGrid(seeds=(0,), entropy_weights=(8.0,), ks=(8,), heads=2, epochs=100, min_steps=0, batch_size=60)
    uniform = train_candidates(points, neighbors, 3, grid)
    shares = train_candidates(points, neighbors, 3, grid, prior=torch.tensor([4 / 6, 1 / 6, 1 / 6]))
    closeness = {name: max(criteria.stability([c.labels, truth]) for c in found)
                 for name, found in (("uniform", uniform), ("prior", shares))}
    assert closeness["prior"] > 0.9 > closeness["uniform"]

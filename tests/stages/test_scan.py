"""The SCAN stage's head search (candidates on frozen features, the lowest-loss ones start SCAN) and the
batch-norm recalibration after SCAN and self-labelling."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fakes import write_fashion_mnist
from scanlearn.cli import main
from scanlearn.config import Config, resolve, with_values
from scanlearn.data.images import TensorImageSet
from scanlearn.errors import ConfigError
from scanlearn.engine.features import FeatureCache
from scanlearn.models import ClusterHeads
from scanlearn.runs.rundir import MARKER_FILE
from scanlearn.engine.run import Run
from scanlearn.engine.splits import data_spec
from scanlearn.engine.embedding import recalibrate_batch_norm
from scanlearn.engine.inference import ImagePass, predict_probabilities
from scanlearn.engine.features import random_view_rows, rows
from scanlearn.engine.loaders import batch_loader
from scanlearn.engine.training import fit_stage
from scanlearn.clustering.heads import fit_linear_heads, frozen_head_probabilities, head_losses, pair_dataset
from scanlearn.stages.scan import ScanModule, ValidationLoss, head_probabilities, search_heads
from scanlearn.engine.trained import (build_clustering_model, eval_transform, head_shape, load_clustering_model,
                                     load_contrastive_model)
from scanlearn.engine.mined_features import mining_features
from scanlearn.clustering.answer import answer_output
from scanlearn.engine.inference import model_probabilities
from scanlearn.clustering.kmeans import mined_space
from scanlearn.mining import Whitening

FAST = [
    "data.limit=300", "model.width=8", "pretext.epochs=1", "pretext.batch_size=100", "scan.epochs=1",
    "scan.batch_size=100", "runtime.progress=false", "mine.k=5",
]


def flags(overrides: list[str]) -> list[str]:
    return [part for o in overrides for part in ("--set", o)]


@pytest.fixture(scope="module")
def mined_run(tmp_path_factory) -> tuple[Path, Path]:
    """A run directory with pretext and mine done on tiny Fashion-MNIST-format files."""
    root = write_fashion_mnist(tmp_path_factory.mktemp("fmnist"), 300, 100)
    run = tmp_path_factory.mktemp("run")
    for stage in ("pretext", "mine"):
        assert main([stage, "--preset", "fashion-mnist", "--run-dir", str(run), "--data-root", str(root),
                     *flags(FAST)]) == 0
    return run, root


def copy_of_mined_run(mined_run: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A fresh run directory holding copies of ``mined_run``'s pretext and mine stages, and the data root."""
    mined, root = mined_run
    run = tmp_path / "run"
    for stage in ("pretext", "mine"):
        shutil.copytree(mined / stage, run / stage)
    shutil.copy(mined / MARKER_FILE, run / MARKER_FILE)
    return run, root


def test_keep_selects_heads_in_the_given_order():
    heads = ClusterHeads(4, 3, num_heads=4)
    weights = [w.clone() for w in heads.weight.detach()]
    heads.keep([2, 0])
    assert len(heads) == 2
    assert torch.equal(heads.weight[0], weights[2]) and torch.equal(heads.weight[1], weights[0])


def test_search_returns_the_lowest_loss_candidates_best_first(mined_run, tmp_path):
    run, root = mined_run
    config = resolve("fashion-mnist", None, FAST + ["scan.head_search=6", "scan.num_heads=2",
                                                    "scan.head_search_epochs=2", f"data.root={root}"])
    images = Run(config, run).split("train")
    neighbors = np.load(run / "mine" / "neighbors_train.npy")
    features = FeatureCache(Run(config, run)).clean(images)
    torch.manual_seed(0)
    heads, losses = search_heads(config, features, 10, neighbors)
    assert len(losses) == 6 and len(heads) == 2
    kept = head_losses(frozen_head_probabilities(heads, features), neighbors)
    np.testing.assert_allclose(kept.numpy(), sorted(losses)[:2], rtol=1e-5)
    torch.manual_seed(0)
    assert search_heads(config, features, 10, neighbors)[1] == losses  # seeded: the same search again


def test_linear_heads_train_exactly_as_the_scan_stage_does_on_frozen_features(tmp_path):
    """The one head trainer: ``fit_linear_heads`` (head search, estimate-k, select) gives the weights that the
    SCAN stage's ``ScanModule`` reaches through the Lightning Trainer on the same features and seed."""
    config = resolve("fashion-mnist", None, FAST + ["scan.batch_size=32", "runtime.precision=32-true",
                                                    "scan.optim.schedule=cosine"])
    features = np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32)
    neighbors = np.random.default_rng(1).integers(0, 200, size=(200, 5))
    torch.manual_seed(12345)  # whatever drew from the process's generator before: the seed alone starts the heads
    torch.rand(7)
    plain = fit_linear_heads(features, neighbors, 4, 3, 2, config.scan, config.runtime.seed)
    torch.manual_seed(config.runtime.seed)
    heads = ClusterHeads(16, 4, 3)
    initial = {name: value.clone() for name, value in heads.state_dict().items()}
    loader = batch_loader(pair_dataset(lambda idx: rows(features, idx), neighbors, True), 32, shuffle=True,
                          num_workers=0, seed=config.runtime.seed, drop_last=True)
    fit_stage(config, tmp_path, ScanModule(None, heads, config, data_spec(config)), loader, 2)
    trained = heads.state_dict()
    assert not torch.equal(trained["weight"], initial["weight"])  # training moved the weights
    for name, value in plain.state_dict().items():
        torch.testing.assert_close(value, trained[name], rtol=1e-5, atol=1e-6)


def test_scan_with_head_search_records_every_candidate(mined_run, tmp_path):
    run, root = mined_run
    args = ["scan", "--preset", "fashion-mnist", "--run-dir", str(run), "--data-root", str(root),
            *flags(FAST + ["scan.head_search=5", "scan.num_heads=2"])]
    assert main(args) == 0
    metrics = json.loads((run / "scan" / "metrics.json").read_text())
    assert len(metrics["search_losses"]) == 5 and len(metrics["head_losses"]) == 2
    assert min(metrics["search_losses"]) > -np.log(10) - 1e-6


def test_head_search_smaller_than_num_heads_is_a_config_error():
    with pytest.raises(ConfigError, match="scan.head_search"):
        resolve("fashion-mnist", None, ["scan.head_search=2", "scan.num_heads=5"])


def test_recalibrated_batch_norm_holds_the_average_batch_statistics_of_clean_images():
    torch.manual_seed(0)
    config = resolve("fashion-mnist", None, ["runtime.progress=false", "runtime.precision=32"])
    network = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3, momentum=0.1))
    network[1].running_mean.fill_(5.0)
    pixels = torch.randint(0, 256, (1024, 1, 8, 8), dtype=torch.uint8)
    transform = eval_transform(data_spec(config))
    recalibrate_batch_norm(network, TensorImageSet(pixels, np.zeros(1024, int)), config, transform)
    with torch.no_grad():
        outputs = network[0](transform(pixels)).transpose(0, 1).reshape(3, 2, -1)  # channel, batch of 512, values
    torch.testing.assert_close(network[1].running_mean, outputs.mean(-1).mean(-1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(network[1].running_var, outputs.var(-1, unbiased=True).mean(-1), rtol=1e-4, atol=1e-5)
    assert network[1].momentum == 0.1 and not network.training


def test_scan_and_selflabel_save_batch_norm_statistics_of_clean_train_images_when_asked(mined_run, tmp_path):
    run, root = copy_of_mined_run(mined_run, tmp_path)
    overrides = FAST + ["scan.recalibrate_bn=true", "selflabel.recalibrate_bn=true", "selflabel.epochs=1",
                        "selflabel.batch_size=100", "runtime.precision=32", f"data.root={root}"]
    config = resolve("fashion-mnist", None, overrides)
    images = Run(config, run).split("train")
    for stage in ("scan", "selflabel"):
        assert main([stage, "--preset", "fashion-mnist", "--run-dir", str(run), *flags(overrides)]) == 0
        model = load_clustering_model(Run(config, run), stage)
        saved = {k: v.clone() for k, v in model.backbone.state_dict().items() if "running" in k}
        recalibrate_batch_norm(model.backbone, images, config, eval_transform(data_spec(config)))
        for key, value in saved.items():
            torch.testing.assert_close(model.backbone.state_dict()[key], value, rtol=1e-3, atol=1e-3, msg=lambda m: f"{stage} {key}: {m}")


def test_scan_and_selflabel_with_uniform_prior_save_models_whose_mean_train_prediction_is_uniform(mined_run, tmp_path):
    run, root = copy_of_mined_run(mined_run, tmp_path)
    overrides = FAST + ["scan.uniform_prior=true", "selflabel.uniform_prior=true", "selflabel.epochs=1",
                        "selflabel.batch_size=100", "selflabel.min_confident_fraction=0.2", "runtime.precision=32",
                        f"data.root={root}"]
    config = resolve("fashion-mnist", None, overrides)
    images = Run(config, run).split("train")
    for stage in ("scan", "selflabel"):
        assert main([stage, "--preset", "fashion-mnist", "--run-dir", str(run), *flags(overrides)]) == 0
        mean = predict_probabilities(Run(config, run), stage, images).mean(0)
        np.testing.assert_allclose(mean, np.full(10, 0.1), atol=1e-3, err_msg=stage)


@pytest.mark.parametrize("prior", ["estimated", "graph"])
def test_scan_and_selflabel_with_an_estimated_prior_record_the_estimated_cluster_sizes(mined_run, tmp_path, prior):
    run, root = copy_of_mined_run(mined_run, tmp_path)
    overrides = FAST + [f"scan.prior={prior}", f"selflabel.prior={prior}", "scan.uniform_prior=false",
                        "selflabel.uniform_prior=false", "selflabel.epochs=1", "selflabel.batch_size=100",
                        f"data.root={root}"]
    for stage in ("scan", "selflabel"):
        assert main([stage, "--preset", "fashion-mnist", "--run-dir", str(run), *flags(overrides)]) == 0
    if prior == "estimated":
        labels = np.load(run / "mine" / "kmeans.npz")["labels"]
        shares = np.bincount(labels, minlength=10) / len(labels)
    else:
        shares = np.load(run / "mine" / "graph_prior.npy")
    sizes = np.sort(shares)[::-1]
    assert sizes.sum() == pytest.approx(1.0)
    scan_prior = json.loads((run / "scan" / "metrics.json").read_text())["prior"]
    selflabel_prior = json.loads((run / "selflabel" / "metrics.json").read_text())["prior"]
    np.testing.assert_allclose(scan_prior, sizes, atol=1e-6)
    np.testing.assert_allclose(sorted(selflabel_prior, reverse=True), sizes, atol=1e-6)


def test_head_losses_with_a_uniform_prior_are_the_paper_ones_plus_log_c():
    probs = torch.rand(2, 30, 4, generator=torch.Generator().manual_seed(0)).softmax(-1)
    neighbors = np.random.default_rng(0).integers(0, 30, size=(30, 3))
    plain = head_losses(probs, neighbors)
    uniform = head_losses(probs, neighbors, torch.full((4,), 0.25))
    torch.testing.assert_close(uniform - plain, torch.full((2,), float(np.log(4))))


def test_an_estimated_prior_with_a_uniform_bias_shift_is_a_config_error():
    with pytest.raises(ConfigError, match="scan.uniform_prior=false"):
        resolve("fashion-mnist", None, ["scan.prior=estimated"])
    assert resolve("photos", None, ["scan.prior=estimated"]).scan.prior == "estimated"
    for preset in ("cifar10", "cifar20", "stl10", "imagenet50", "fashion-mnist", "photos"):
        config = resolve(preset, None, [])
        assert (config.scan.prior, config.selflabel.prior) == ("uniform", "uniform"), preset


class ScriptedValidation:
    """Stands in for ``ValidationLoss``: returns the next scripted per-head losses and remembers the heads then."""

    def __init__(self, heads: ClusterHeads, losses: list[list[float]]) -> None:
        self.heads, self.losses, self.seen = heads, iter(losses), []

    def __call__(self) -> list[float]:
        self.seen.append({k: v.clone() for k, v in self.heads.state_dict().items()})
        return next(self.losses)


def test_the_epoch_kept_is_the_lowest_validation_loss_one_with_its_losses(tmp_path):
    config = resolve(None, None, ["runtime.progress=false", "runtime.precision=32-true", "runtime.channels_last=false",
                                  "scan.batch_size=16", "scan.optim.lr=0.05"])
    torch.manual_seed(0)
    features = np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32)
    neighbors = np.random.default_rng(1).integers(0, 64, size=(64, 3))
    heads = ClusterHeads(6, 4, num_heads=2)
    scripted = ScriptedValidation(heads, [[3.0, 2.0], [2.5, 1.5], [1.9, 2.2], [2.0, 1.95]])
    module = ScanModule(None, heads, config, data_spec(config), validation=scripted)
    loader = batch_loader(pair_dataset(lambda idx: torch.from_numpy(features[idx]), neighbors, True), 16,
                          shuffle=True, num_workers=0, drop_last=True)
    fit_stage(config, tmp_path, module, loader, 4)
    assert module.best_epoch == 1 and module.best_loss == 1.5
    assert not torch.equal(heads.weight, scripted.seen[1]["weight"])
    assert module.restore_best() == [2.5, 1.5]
    for key, value in scripted.seen[1].items():
        torch.testing.assert_close(heads.state_dict()[key], value, rtol=0, atol=0)


def test_validation_loss_scores_each_image_against_itself_and_its_validation_neighbours():
    """Hand-made example: 3 images, 1 neighbour each; the anchor itself counts as a partner."""
    probs = torch.tensor([[[0.9, 0.1], [0.8, 0.2], [0.2, 0.8]]])
    neighbors = np.array([[1], [0], [0]])
    pairs = [(0, 0), (0, 1), (1, 1), (1, 0), (2, 2), (2, 0)]
    agreement = [float(probs[0, i] @ probs[0, j]) for i, j in pairs]
    mean = probs[0].mean(0)
    expected = -np.mean(np.log(agreement)) + float((mean * mean.log()).sum())
    losses = ValidationLoss(lambda: probs, neighbors)()
    assert losses == pytest.approx([expected], rel=1e-5)


@pytest.mark.parametrize("split", ["train", "test"])
def test_scan_stage_keeps_and_records_the_lowest_validation_loss_epoch_and_head(mined_run, tmp_path, split):
    run, root = copy_of_mined_run(mined_run, tmp_path)
    overrides = FAST + ["scan.epochs=3", "scan.num_heads=2", "scan.head_search=0", "scan.recalibrate_bn=false",
                        "scan.uniform_prior=false", "runtime.precision=32-true", "runtime.channels_last=false",
                        f"data.root={root}", f"scan.selection_split={split}"]
    assert main(["scan", "--preset", "fashion-mnist", "--run-dir", str(run), *flags(overrides)]) == 0
    metrics = json.loads((run / "scan" / "metrics.json").read_text())
    per_epoch = metrics["validation_loss_per_epoch"]
    assert len(per_epoch) == 3 and metrics["best_epoch"] == int(np.argmin(per_epoch))
    assert metrics["best_head"] == int(np.argmin(metrics["head_losses"]))
    assert min(metrics["head_losses"]) == pytest.approx(min(per_epoch))
    config = resolve("fashion-mnist", None, overrides)
    model = load_clustering_model(Run(config, run), "scan")
    scored = Run(config, run).split(split)
    neighbours = np.load(run / "mine" / f"neighbors_{split}.npy")[:, : config.mine.val_k]
    saved = ValidationLoss(lambda: head_probabilities(model, config, scored, data_spec(config)), neighbours)()
    assert saved == pytest.approx([min(per_epoch)], rel=1e-4)


def test_separate_passes_normalise_anchors_and_neighbours_with_their_own_batch_statistics():
    torch.manual_seed(0)
    anchors, partners = torch.randn(8, 3), torch.randn(8, 3) * 3 + 2
    heads = ClusterHeads(3, 2, num_heads=1)
    for separate in (True, False):
        config = with_values(Config(), {"scan.separate_passes": separate})
        module = ScanModule(torch.nn.BatchNorm1d(3, affine=False), heads, config, data_spec(config)).train()
        got_anchors, got_partners = module.head_logits(anchors, partners)
        both = torch.cat([anchors, partners])
        reference = [anchors, partners] if separate else list(both.split(8))
        stats = [(anchors, partners), (both, both)][not separate]
        for got, x, batch in zip((got_anchors, got_partners), reference, stats):
            normalised = (x - batch.mean(0)) / (batch.var(0, unbiased=False) + 1e-5).sqrt()
            torch.testing.assert_close(got, heads(normalised), rtol=1e-4, atol=1e-5)


def test_cached_views_are_drawn_uniformly_for_every_row():
    torch.manual_seed(0)
    views = [np.full((50, 2), float(v), dtype=np.float32) for v in range(3)]
    picked = random_view_rows(views)(np.arange(50).repeat(60))
    assert torch.equal(picked[:, 0], picked[:, 1])
    counts = np.bincount(picked[:, 0].numpy().astype(int), minlength=3)
    assert counts.sum() == 3000 and np.all(np.abs(counts - 1000) < 120)


def test_heads_on_the_mined_space_carry_its_whitening_and_answer_as_it_maps_the_mined_rows(mined_run, tmp_path):
    run, root = copy_of_mined_run(mined_run, tmp_path)
    overrides = FAST + ["scan.freeze_backbone=true", "selflabel.freeze_backbone=true", "scan.head_features=mined",
                        "scan.normalize_features=true", "selflabel.epochs=1", "selflabel.batch_size=100",
                        "runtime.precision=32", f"data.root={root}"]
    for stage in ("scan", "selflabel"):
        assert main([stage, "--preset", "fashion-mnist", "--run-dir", str(run), *flags(overrides)]) == 0
    config = resolve("fashion-mnist", None, overrides)
    one = Run(config, run)
    images = one.split("train")
    kmeans = np.load(run / "mine" / "kmeans.npz")
    whitening = Whitening([kmeans["mean_0"], kmeans["mean_1"], kmeans["mean_2"]],
                          [kmeans["projection_0"], kmeans["projection_1"], kmeans["projection_2"]])
    mined = mined_space(np.load(run / "mine" / "features_train.npy"), whitening)  # the rows the neighbours were searched in
    for stage in ("scan", "selflabel"):
        saved = torch.load(run / stage / "model.pt", weights_only=True)
        assert saved["frozen_backbone"] and saved["input_blocks"][1] == [w.shape[1] for w in whitening.projections]
        logits = mined @ saved["heads"]["weight"][0].numpy().T / np.linalg.norm(mined, axis=1, keepdims=True)
        expected = torch.from_numpy(logits + saved["heads"]["bias"][0].numpy()).softmax(-1).numpy()
        np.testing.assert_allclose(predict_probabilities(one, stage, images), expected, atol=1e-4)
        model = load_clustering_model(one, stage)
        rebuilt = build_clustering_model(config, head_shape(model.heads))
        rebuilt.load_state_dict(model.state_dict())
        np.testing.assert_allclose(model_probabilities(rebuilt, config, images), expected, atol=1e-4)
    new_images = one.split("test").subset(list(range(37)))  # images no cache holds
    one_pass = ImagePass(one, new_images)
    answer, mined_rows = answer_output(one_pass), one_pass.mined()
    assert len(one_pass.networks) == 1  # the rows the heads read and the mined rows: one computation
    one_pass.embed()
    assert answer().shape == (37, one.clusters)
    np.testing.assert_allclose(mined_rows(), mining_features(load_contrastive_model(one), new_images, config, False),
                               atol=1e-4)


def test_heads_on_the_mined_space_of_a_network_that_is_not_frozen_is_a_config_error():
    with pytest.raises(ConfigError, match="scan.head_features=mined"):
        resolve("fashion-mnist", None, ["scan.head_features=mined"])
    with pytest.raises(ConfigError, match="no mine.descriptors"):
        resolve("fashion-mnist", None, ["scan.head_features=mined", "scan.freeze_backbone=true",
                                        "selflabel.freeze_backbone=true", "mine.descriptors=[hog]"])

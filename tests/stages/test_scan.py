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
from scanlearn.config import resolve
from scanlearn.data.datasets import TensorImageSet
from scanlearn.errors import ConfigError
from scanlearn.features import FeatureCache
from scanlearn.models import ClusterHeads
from scanlearn.stages.common import data_spec, load_split, recalibrate_batch_norm
from scanlearn.stages.evaluate import predict_probabilities
from scanlearn.stages.scan import (
    eval_transform, frozen_head_probabilities, head_losses, load_clustering_model, search_heads,
)

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
    return run, root


def test_keep_selects_heads_in_the_given_order():
    heads = ClusterHeads(4, 3, num_heads=4)
    weights = [h.weight.detach().clone() for h in heads.heads]
    heads.keep([2, 0])
    assert len(heads.heads) == 2
    assert torch.equal(heads.heads[0].weight, weights[2]) and torch.equal(heads.heads[1].weight, weights[0])


def test_search_returns_the_lowest_loss_candidates_best_first(mined_run, tmp_path):
    run, root = mined_run
    config = resolve("fashion-mnist", None, FAST + ["scan.head_search=6", "scan.num_heads=2",
                                                    "scan.head_search_epochs=2", f"data.root={root}"])
    images = load_split(config, "train")
    neighbors = np.load(run / "mine" / "neighbors_train.npy")
    features = FeatureCache(config, run).clean(images)
    heads, losses = search_heads(config, tmp_path, features, 10, neighbors)
    assert len(losses) == 6 and len(heads.heads) == 2
    kept = head_losses(frozen_head_probabilities(heads, features), neighbors)
    np.testing.assert_allclose(kept.numpy(), sorted(losses)[:2], rtol=1e-5)
    assert (tmp_path / "search" / "checkpoints" / "last.ckpt").is_file()


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
    images = load_split(config, "train")
    for stage in ("scan", "selflabel"):
        assert main([stage, "--preset", "fashion-mnist", "--run-dir", str(run), *flags(overrides)]) == 0
        model = load_clustering_model(config, run, stage)
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
    images = load_split(config, "train")
    for stage in ("scan", "selflabel"):
        assert main([stage, "--preset", "fashion-mnist", "--run-dir", str(run), *flags(overrides)]) == 0
        mean = predict_probabilities(config, run, stage, images).mean(0)
        np.testing.assert_allclose(mean, np.full(10, 0.1), atol=1e-3, err_msg=stage)

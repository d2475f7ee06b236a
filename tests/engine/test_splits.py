"""Shared stage machinery as the authors run it: per-epoch schedules and ImageNet's 256 -> 224 geometry."""

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from scanlearn.data.imagenet import read_subset_file
from scanlearn.config import AugmentConfig, OptimConfig, load_preset, resolve
from scanlearn.errors import ConfigError
from scanlearn.engine.loaders import augmenter
from scanlearn.engine.splits import data_spec, decode_size, load_split
from scanlearn.engine.training import optimizer_with_schedule

pytestmark = pytest.mark.filterwarnings("ignore:imagenet_50. 49 of 50 listed classes are missing")


def learning_rates(optim: OptimConfig, epochs: int, steps_per_epoch: int) -> list[float]:
    """The rate of every step of a run, stepping the scheduler as Lightning does for ``optim.interval``."""
    module = SimpleNamespace(trainer=SimpleNamespace(max_epochs=epochs, estimated_stepping_batches=epochs * steps_per_epoch))
    setup = optimizer_with_schedule(module, [torch.nn.Parameter(torch.zeros(1))], optim)
    optimizer, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(epochs):
        for _ in range(steps_per_epoch):
            rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if setup["lr_scheduler"]["interval"] == "step":
                scheduler.step()
        if setup["lr_scheduler"]["interval"] == "epoch":
            scheduler.step()
    return rates


def test_epoch_interval_cosine_is_the_authors_rate_held_for_the_whole_epoch():
    optim = OptimConfig(name="sgd", lr=0.4, schedule="cosine", final_lr_ratio=1e-3, interval="epoch")
    rates = learning_rates(optim, epochs=5, steps_per_epoch=3)
    floor = 0.4 * 1e-3
    for epoch in range(5):
        expected = floor + (0.4 - floor) * (1 + math.cos(math.pi * epoch / 5)) / 2
        assert rates[3 * epoch: 3 * epoch + 3] == pytest.approx([expected] * 3)


def test_step_interval_cosine_changes_within_an_epoch():
    optim = OptimConfig(name="sgd", lr=0.4, schedule="cosine", final_lr_ratio=1e-3, interval="step")
    rates = learning_rates(optim, epochs=2, steps_per_epoch=3)
    assert rates[0] > rates[1] > rates[2]


def test_unknown_schedule_interval_is_a_config_error():
    with pytest.raises(ConfigError, match="pretext.optim.interval"):
        resolve("cifar10", None, ["pretext.optim.interval=batch"])


def imagenet_config(root: Path):
    """The imagenet50 preset (resize 256, input 224) on a one-image ImageNet tree."""
    wnid = read_subset_file("imagenet_50")[0][0]
    for split in ("train", "val"):
        folder = root / split / wnid
        folder.mkdir(parents=True)
        rng = np.random.default_rng(0)
        pixels = rng.integers(0, 256, size=(384, 512, 3), dtype=np.uint8)  # height 384, width 512
        Image.fromarray(pixels).save(folder / f"{split}.png")
    return resolve("imagenet50", None, [f"data.root={root}", "runtime.progress=false"])


def test_imagenet_clean_view_is_the_centre_224_of_the_short_side_256_resize(tmp_path):
    config = imagenet_config(tmp_path)
    images = load_split(config, "train")
    spec = data_spec(config)
    assert images.image_size == 256 and spec.crop == 224
    view = augmenter(AugmentConfig(kind="none"), spec)(images[0][0][None])
    reference = TF.center_crop(TF.resize(Image.open(images.paths[0]), 256), [224, 224])
    expected = torch.from_numpy(np.asarray(reference).copy()).permute(2, 0, 1)
    normalised = (expected.float() / 255 - torch.tensor(spec.mean).view(3, 1, 1)) / torch.tensor(spec.std).view(3, 1, 1)
    assert view.shape == (1, 3, 224, 224)
    assert (view[0] - normalised).abs().max() < 1.5 / 255 / min(spec.std)


def test_imagenet_augmented_views_are_224_crops_of_the_256_image(tmp_path):
    config = imagenet_config(tmp_path)
    spec = data_spec(config)
    image = load_split(config, "train")[0][0][None]
    for augment in (config.scan.augment, config.selflabel.augment):
        assert augmenter(augment, spec)(image).shape == (1, 3, 224, 224)


def test_resize_smaller_than_the_input_is_a_config_error():
    config = load_preset("imagenet50")
    config.data.resize = 200
    with pytest.raises(ConfigError, match="data.resize"):
        data_spec(config)


@pytest.mark.parametrize(("preset", "side"), [("imagenet50", 256), ("cifar10", 32), ("fashion-mnist", 28)])
def test_new_images_are_decoded_at_the_training_decode_size(preset, side):
    assert decode_size(load_preset(preset)) == side

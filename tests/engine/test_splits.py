"""Shared stage machinery as the authors run it (per-epoch schedules, ImageNet's 256 -> 224 geometry), and splits decoded once."""

import math
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from shapes import write_shape_folder

from scanlearn.cli import main
from scanlearn.config import AugmentConfig, OptimConfig, from_dict, load_preset, resolve
from scanlearn.data import images as image_sets
from scanlearn.data.imagenet import read_subset_file
from scanlearn.engine.loaders import augmenter
from scanlearn.engine.run import Run
from scanlearn.engine.splits import data_spec, decode_size
from scanlearn.engine.training import optimizer_with_schedule
from scanlearn.errors import ConfigError

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
    images = Run(config, tmp_path / "run").split("train")
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
    image = Run(config, tmp_path / "run").split("train")[0][0][None]
    for augment in (config.scan.augment, config.selflabel.augment):
        assert augmenter(augment, spec)(image).shape == (1, 3, 224, 224)


def test_resize_smaller_than_the_input_is_a_config_error():
    config = from_dict({"data": {"resize": 200}}, load_preset("imagenet50"))  # not validated: data_spec must refuse it
    with pytest.raises(ConfigError, match="data.resize"):
        data_spec(config)


@pytest.mark.parametrize(("preset", "side"), [("imagenet50", 256), ("cifar10", 32), ("fashion-mnist", 28)])
def test_new_images_are_decoded_at_the_training_decode_size(preset, side):
    assert decode_size(data_spec(load_preset(preset))) == side


def test_a_run_decodes_each_image_of_a_folder_once_for_its_pixels(tmp_path, monkeypatch):
    """Every stage loads its splits, but a folder's pixels are decoded once per run (plus the one readability
    check of the prepare step), not once per call as before (about 13 times per run)."""
    folder = write_shape_folder(tmp_path / "photos", per_class=6, nested=False)
    pixels, checks = Counter(), Counter()
    decode_pixels = image_sets.FileImageSet._image
    check = image_sets.decode_problem

    def counted_pixels(self, index):
        pixels[self.paths[index]] += 1
        return decode_pixels(self, index)

    def counted_check(path):
        checks[path] += 1
        return check(path)

    monkeypatch.setattr(image_sets.FileImageSet, "_image", counted_pixels)
    monkeypatch.setattr(image_sets, "decode_problem", counted_check)
    tiny = ["pretext.epochs=1", "pretext.batch_size=6", "mine.k=3", "mine.val_k=3", "scan.epochs=1", "scan.batch_size=6",
            "scan.num_heads=1", "selflabel.epochs=1", "selflabel.batch_size=6", "data.image_size=16", "model.width=4",
            "runtime.progress=false"]
    args = ["run", "--data", str(folder), "--clusters", "3", "--run-dir", str(tmp_path / "run")]
    assert main(args + [a for s in tiny for a in ("--set", s)]) == 0
    files = sorted(str(p) for p in folder.rglob("*") if p.is_file())
    assert len(files) == 18
    assert sorted(pixels) == files and set(pixels.values()) == {1}
    assert sorted(checks) == files and set(checks.values()) == {1}

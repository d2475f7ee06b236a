"""Config: presets, YAML files, typed overrides, round trip."""

import dataclasses

import pytest

from scanlearn.config import Config, load_config, load_preset, preset_names, resolve, save_config, saved_config, with_values
from scanlearn.errors import ConfigError


def test_defaults_are_the_paper_cifar10_settings():
    c = Config()
    assert (c.pretext.epochs, c.pretext.batch_size, c.pretext.optim.lr, c.pretext.temperature) == (500, 512, 0.4, 0.1)
    assert (c.scan.entropy_weight, c.scan.optim.lr, c.mine.k, c.selflabel.threshold) == (5.0, 1e-4, 20, 0.99)


def test_fashion_preset_exists_and_overrides_apply():
    assert "fashion-mnist" in preset_names()
    c = resolve("fashion-mnist", None, ["scan.epochs=7", "pretext.augment.crop_scale=[0.5, 1]", "num_clusters=12"])
    assert c.data.dataset == "fashion-mnist" and c.scan.epochs == 7
    assert c.pretext.augment.crop_scale == (0.5, 1.0) and c.num_clusters == 12


@pytest.mark.parametrize("override, message", [
    ("scan.epoch=3", "unknown config key 'scan.epoch'"),
    ("scan.epochs=three", "scan.epochs must be int"),
    ("scan.epochs", "key=value"),
    ("selflabel.balance=3", "must be bool"),
])
def test_bad_overrides_are_clear_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        resolve("fashion-mnist", None, [override])


def test_unknown_preset_lists_choices():
    with pytest.raises(ConfigError, match="fashion-mnist"):
        load_preset("nope")


def test_malformed_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("scan: [1, 2\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        resolve(None, str(path))


def test_save_and_load_round_trip(tmp_path):
    c = resolve("fashion-mnist", None, ["scan.num_heads=3"])
    save_config(c, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == c


def test_multiscale_mining_needs_a_registered_resnet():
    assert resolve("fashion-mnist", None, ["mine.features=multiscale"]).mine.features == "multiscale"
    with pytest.raises(ConfigError, match="mine.features=multiscale needs a registered ResNet.*mine.features=backbone"):
        resolve("fashion-mnist", None, ["mine.features=multiscale", "model.backbone=timm:vit_small_patch14_dinov2"])


def test_mining_grid_needs_multiscale_features():
    assert resolve("fashion-mnist", None, ["mine.features=multiscale", "mine.grid=3"]).mine.grid == 3
    with pytest.raises(ConfigError, match="mine.grid=2 applies to multiscale features only"):
        resolve("fashion-mnist", None, ["mine.features=backbone", "mine.grid=2"])
    with pytest.raises(ConfigError, match="mine.grid must be at least 1"):
        resolve("fashion-mnist", None, ["mine.grid=0"])


def test_a_config_is_frozen_and_with_values_makes_a_new_validated_one():
    base = resolve("fashion-mnist", None, ["scan.epochs=7"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.scan.epochs = 8
    changed = with_values(base, {"scan.epochs": 9, "runtime.seed": 0, "num_clusters": 4})
    assert (changed.scan.epochs, changed.runtime.seed, changed.num_clusters) == (9, 0, 4)
    assert (base.scan.epochs, base.num_clusters) == (7, None)  # the original is untouched
    assert changed.scan.batch_size == base.scan.batch_size and changed.name == base.name
    with pytest.raises(ConfigError, match="scan.epochs"):
        with_values(base, {"scan.epochs": -1})
    with pytest.raises(ConfigError, match="unknown config key 'scan.epoch'"):
        with_values(base, {"scan.epoch": 1})


def test_a_loaded_config_is_validated_where_it_is_read(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("scan:\n  epochs: -1\n")
    with pytest.raises(ConfigError, match=r"scan.epochs .*fix it with --set scan.epochs=") as error:
        load_config(path)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="scan.epochs"):
        saved_config({"scan": {"epochs": -1}})
    assert saved_config({"scan": {"epochs": 3}}).scan.epochs == 3


@pytest.mark.parametrize("views, epochs, embedded", [(4, 1, 1), (4, 2, 2), (4, 10, 4), (1, 0, 1)])
def test_frozen_self_labelling_embeds_no_more_views_than_it_has_epochs(views, epochs, embedded):
    selflabel = with_values(Config(), {"selflabel.cached_views": views, "selflabel.epochs": epochs}).selflabel
    assert selflabel.embedded_views == embedded

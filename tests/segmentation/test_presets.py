"""Presets: the paper's settings exactly, YAML overrides, validation with helpful errors."""

from __future__ import annotations

import pytest
import yaml

from metsynth.errors import ConfigError
from metsynth.segmentation.presets import PRESETS, segmentation_config


def test_paper_preset_is_the_papers_section_2_4():
    cfg = segmentation_config("paper")
    assert cfg.network.channels == (32, 64, 128, 256, 512)
    assert cfg.network.resolved_strides == (2, 2, 2, 2)  # 5 levels
    assert cfg.patch_size == (64, 96, 96)  # 96 x 96 x 64 (x, y, z) in our (z, y, x) order
    assert (cfg.optim.lr, cfg.optim.momentum) == (0.025, 0.9)
    assert (cfg.optim.lr_decay_real, cfg.optim.lr_decay_synthetic, cfg.optim.patience) == (0.999, 0.99, 200)
    assert (cfg.finetune.lr, cfg.finetune.lr_decay, cfg.finetune.patience) == (0.001, 1.0, 25)


@pytest.mark.parametrize("sources, finetune, expected", [
    (("real",), False, (0.025, 0.999, 200)),
    (("synthetic",), False, (0.025, 0.99, 200)),
    (("harmonized",), False, (0.025, 0.99, 200)),
    (("synthetic", "real"), False, (0.025, 0.99, 200)),
    (("real",), True, (0.001, 1.0, 25)),
])
def test_learning_rate_schedule_follows_the_data(sources, finetune, expected):
    assert segmentation_config("paper").lr_schedule(sources, finetune) == expected


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_valid_and_named(name):
    assert segmentation_config(name).preset == name


def test_yaml_overrides_merge_into_the_preset(tmp_path):
    path = tmp_path / "seg.yaml"
    path.write_text(yaml.safe_dump({"optim": {"patience": 7}, "augment": {"rotate_deg": 5}}))
    cfg = segmentation_config("paper", path, seed=3)
    assert cfg.optim.patience == 7 and cfg.optim.lr == 0.025  # the rest of the section is kept
    assert cfg.augment.rotate_deg == 5 and cfg.seed == 3
    assert cfg.network.channels == (32, 64, 128, 256, 512)


def test_saved_config_reloads_as_itself(tmp_path):
    cfg = segmentation_config("tiny", {"seed": 9, "optim": {"lr": 0.5}})
    cfg.to_yaml(tmp_path / "config.yaml")
    assert segmentation_config(None, tmp_path / "config.yaml") == cfg


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(ConfigError, match="did you mean 'patience'"):
        segmentation_config("cpu", {"optim": {"patiense": 3}})


def test_unknown_preset_suggests_the_right_one():
    with pytest.raises(ConfigError, match="did you mean 'paper'"):
        segmentation_config("papr")


def test_patch_must_fit_the_network_strides():
    with pytest.raises(ConfigError, match="divisible by 16"):
        segmentation_config("paper", {"patch_size": [60, 96, 96]})

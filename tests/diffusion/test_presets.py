"""Presets and settings validation."""

from __future__ import annotations

import pytest
import torch
import yaml

from metsynth.diffusion import presets
from metsynth.diffusion.presets import PRESETS, HarmonizeConfig, diffusion_config
from metsynth.errors import ConfigError


def test_paper_preset_is_section_2_3_2():
    cfg = diffusion_config("paper")
    assert cfg.model.channels == (128, 256, 512)
    assert cfg.model.attention_levels == (False, False, True)
    assert cfg.model.num_head_channels == (0, 0, 512)
    assert cfg.train.patch_size == (48, 96, 96)  # 96 x 96 x 48 (x, y, z) in (z, y, x) order
    assert cfg.noise.num_train_timesteps == 200
    assert (cfg.noise.schedule, cfg.noise.beta_start, cfg.noise.beta_end) == ("linear_beta", 1e-4, 2e-3)
    assert (cfg.train.learning_rate, cfg.train.lr_decay, cfg.train.batch_size) == (1e-4, 0.999, 1)
    assert (cfg.harmonize.start_timestep, cfg.harmonize.ddim_steps) == (40, 50)


def test_lambda_readings_are_documented():
    doc = presets.__doc__
    assert "t = 40" in doc and "start_timestep = 10" in doc and "--start-timestep 10" in doc
    description = HarmonizeConfig.model_fields["start_timestep"].description
    assert "lambda" in description


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_validates_and_builds(name):
    cfg = diffusion_config(name)
    assert cfg.preset == name
    with torch.device("meta"):  # MONAI accepts the settings; no memory or init time spent
        net = cfg.model.build()
    assert sum(p.numel() for p in net.parameters()) > 0


def test_tiny_network_predicts_a_patch_shaped_output():
    cfg = diffusion_config("tiny")
    net = cfg.model.build().eval()
    x = torch.zeros((2, 1, *cfg.train.patch_size))
    with torch.no_grad():
        y = net(x, timesteps=torch.tensor([0, 199]))
    assert y.shape == x.shape


def test_yaml_overrides_merge_into_the_preset(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text(yaml.safe_dump({"harmonize": {"start_timestep": 10}, "train": {"seed": 3}}))
    cfg = diffusion_config("paper", path)
    assert cfg.harmonize.start_timestep == 10 and cfg.harmonize.ddim_steps == 50
    assert cfg.train.seed == 3 and cfg.model.channels == (128, 256, 512)
    # a saved config reloads as itself (its preset key picks the base)
    saved = tmp_path / "saved.yaml"
    cfg.to_yaml(saved)
    assert diffusion_config(overrides=saved) == cfg


@pytest.mark.parametrize("overrides, match", [
    ({"harmonize": {"start_timstep": 3}}, "did you mean 'start_timestep'"),
    ({"model": {"channels": [16, 32, 64]}}, "norm_num_groups"),  # default 32 groups reject 16 channels
    ({"train": {"patch_size": [30, 96, 96]}}, "divisible by 4"),
    ({"harmonize": {"start_timestep": 200}}, "T - 1"),
    ({"harmonize": {"ddim_steps": 201}}, "ddim_steps"),
    ({"model": {"num_head_channels": [0, 0, 0]}}, "middle block"),
    ({"harmonize": {"region": "box"}}, "region"),
])
def test_bad_settings_raise_config_errors_naming_them(overrides, match):
    with pytest.raises(ConfigError, match=match):
        diffusion_config("paper", overrides)


def test_unknown_preset_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'paper'"):
        diffusion_config("papr")

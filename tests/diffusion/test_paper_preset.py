"""The `paper` DDPM preset as configured (MONAI DiffusionModelUNet 128/256/512, attention with one
512-channel head at the deepest level, T = 200, betas 1e-4..2e-3, Adam 1e-4) trained for two steps
and harmonizing a volume on the preset's 50-step DDIM grid on CPU (issue 14 item 4).

Reduced for CPU time only: the patch (16 x 32 x 32 instead of 48 x 96 x 96, a multiple of the 4x
downsampling), the number of steps, the data-loader workers (0), the accelerator (cpu), and the
harmonization: one lesion box (one window) from start timestep 8 (8, 4, 0 on the preset's stride-4
grid) instead of the whole volume from 40; with the paper's settings it took 9 minutes here.
"""

from __future__ import annotations

import json

import numpy as np

from metsynth.diffusion.harmonize import harmonize_set
from metsynth.diffusion.presets import diffusion_config
from metsynth.volume import Volume


def test_paper_ddpm_trains_and_harmonizes_on_cpu(tmp_path, prepared_cohort, builders):
    from metsynth.diffusion.train import train_diffusion

    config = diffusion_config("paper", {"train": {"patch_size": [16, 32, 32], "max_steps": 2, "num_workers": 0,
                                                  "checkpoint_every_n_steps": 1}})
    assert config.model.channels == (128, 256, 512) and config.model.attention_levels == (False, False, True)
    assert config.noise.num_train_timesteps == 200 and config.train.learning_rate == 1e-4
    assert (config.harmonize.start_timestep, config.harmonize.ddim_steps, config.harmonize.region) == (40, 50, "volume")
    result = train_diffusion(prepared_cohort, tmp_path / "ddpm", config, accelerator="cpu", devices=1, progress=False)
    assert result.steps == 2 and result.export.is_file()

    src = builders.write_synthetic_set(tmp_path / "syn", n_volumes=1)
    settings = config.harmonize.model_copy(update={"start_timestep": 8, "region": "lesion", "lesion_margin_mm": 1.0,
                                                    "feather_mm": 1.0})
    summary = harmonize_set(src, tmp_path / "harm", result.export, settings, progress=False)
    assert summary.done_now == 1
    side = json.loads((tmp_path / "harm" / "sidecars" / "syn000.json").read_text())["harmonization"]
    assert side["timesteps"] == [8, 4, 0] and side["ddim_steps"] == 50
    before = Volume.read(src / "images" / "syn000.nii.gz")
    after = Volume.read(tmp_path / "harm" / "images" / "syn000.nii.gz")
    assert after.same_grid(before) and np.isfinite(after.array).all()
    assert not np.array_equal(after.array, before.array), "the lesion box was refined"

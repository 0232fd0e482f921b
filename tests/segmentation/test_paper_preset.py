"""The `paper` U-Net preset as configured (5 levels 32..512, 2 residual units, SGD 0.025, Dice
loss), trained for two steps and used for a sliding-window prediction on CPU (issue 14 item 4).

Reduced for CPU time only: the patch (32^3 instead of 64 x 96 x 96, still a multiple of the
network's 16x downsampling), the number of steps, the data-loader workers (0) and the accelerator
(cpu instead of the preset's GPU precision); network, optimizer, loss and inference are the preset's.
"""

from __future__ import annotations

import numpy as np

from metsynth.segmentation.presets import PRESETS, segmentation_config
from metsynth.volume import Volume


def test_paper_unet_trains_and_predicts_on_cpu(tmp_path, builders):
    import torch

    from metsynth.segmentation.datasets import build_training_set
    from metsynth.segmentation.inference import predict_cohort
    from metsynth.segmentation.train import train_segmentation

    manifest = builders.write_prepared_cohort(tmp_path / "cohort", n_metastatic=2, n_healthy=1)
    config = segmentation_config("paper", {"patch_size": [32, 32, 32], "max_steps": 2, "num_workers": 0,
                                           "val_cases": 0, "trainer": {"accelerator": "cpu", "devices": 1}})
    paper = PRESETS["paper"]
    assert list(config.network.channels) == paper["network"]["channels"] == [32, 64, 128, 256, 512]
    assert config.network.num_res_units == 2 and config.optim.lr == 0.025 and config.optim.momentum == 0.9
    training_set = build_training_set(manifest, "real", val_cases=0, seed=0)
    result = train_segmentation(training_set, tmp_path / "run", config, progress=False)
    assert result.steps == 2
    state = torch.load(result.model, map_location="cpu", weights_only=True)
    assert isinstance(state, dict)
    out = predict_cohort(tmp_path / "run" / "model.pt", manifest, tmp_path / "pred", progress=False)
    from metsynth.cohort import load_cohort

    case = load_cohort(manifest).cases[0]
    mask = Volume.read(out / f"{case.id}.nii.gz")
    assert mask.same_grid(Volume.read(case.image)) and set(np.unique(mask.array)) <= {0, 1}

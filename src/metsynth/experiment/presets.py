"""The named studies (``paper``, ``demo``, ``tiny``) and ``docs/config.md``, the reference of every setting."""

from __future__ import annotations

from typing import Any

from ..config import look_up_option
from .config import ExperimentConfig


def experiment_preset(name: str) -> ExperimentConfig:
    """The named study: ``paper`` (GPU, the paper's settings), ``demo`` (laptop CPU), ``tiny`` (tests)."""
    builder = look_up_option(name, _PRESETS, "experiment preset")
    return ExperimentConfig.from_dict(builder(), source=f"preset {name}")


def _paper() -> dict[str, Any]:
    return {
        "name": "paper",
        "cohort": {"manifest": "cohort.yaml"},
        "prepare": {"spacing": 0.85},
        "synthesis": {"repeats": 10, "min_lesion_mm3": 16.0, "image_storage": "int16", "image_compression_level": 1,
                      "image_layout": "changed_box"},
        "diffusion": {"preset": "paper"},
        # Figure 4 shows lambda 5..50 DDIM steps of stride 4, i.e. training timesteps 20..200
        "sweep": {"timesteps": [0, 10, 20, 40, 80, 160]},
        "splits": {"n_folds": 5},
        "segmentation": {"preset": "paper"},
        "size_study": [100, 500, 2000],
        # the donor null's band for a figure to publish: with 20 draws its 95th percentile moves by 0.04 (one sd),
        # up to 0.08 (docs/realism.md)
        "realism": {"donor_null_splits": 100},
        "trainer": {"accelerator": "gpu", "precision": "16-mixed"},
        "parallel": {"workers": 8},
    }


def _demo() -> dict[str, Any]:
    # The whole study in 7-10 minutes on 2 CPU cores (with its setup); docs/demo.md has the measurements behind
    # each choice (a sweep of variants on the same phantom) and the results over several seeds.
    return {
        "name": "demo",
        # 10 healthy femurs: the synthetic set needs their spread of bone density (4 gave a set whose
        # backgrounds were all denser than half the metastatic cases, and false positives there)
        # 60 test-only cases (cheap: predicted, never trained on, about 1.7 s each): with the 6 held-out metastatic
        # cases every model is scored on 66; at 30 the paired test could detect 0.07-0.14 in Dice, at 66 about
        # 0.05 on three seeds of four (the realism measure keeps its first 24: realism.max_real_cases below)
        "cohort": {"phantom": {"healthy": 10, "metastatic": 6, "test": 60, "preset": "small"}},
        "prepare": {"spacing": 1.7},
        # the paper's 3-5 voxel edge filter is 2.6-4.3 mm at 0.85 mm; at 1.7 mm, 3 voxels is closest.
        # Lesions stay in the femoral region they came from (a shaft lesion keeps marrow around it):
        # pasted uniformly, 70 % landed in the dense bone of the head and trochanter; fewer false
        # positives and a better Synthetic+FT this way (docs/demo.md)
        # edge_model donor: the pasted edge as sharp as the donor's own (the paper's mean filter made it
        # twice as soft and gave the lesions away: realism AUC 0.98 -> 0.53, benchmarks/RESULTS.md)
        # match_donor_contact: each lesion pasted as close to the femur's surface as its donor lay (half the
        # real lesions touch the cortex, uniform placement put almost none there, and that was the first
        # giveaway): synthetic realism AUC 0.65/0.65/0.80/0.72 -> 0.71/0.56/0.73/0.67 on seeds 0-3, Dice of
        # the paper's models level or better pooled, the 40-volume size model worse (benchmarks/RESULTS.md)
        "synthesis": {"repeats": 2, "transform": {"edge_filter_size": [3, 3], "edge_model": "donor"},
                      "placement": {"same_region_as_donor": True, "match_donor_contact": 16}},
        # The DDPM and its start timestep, from the realism sweep (docs/realism.md): a single SDEdit run of a
        # CPU-sized DDPM leaves inside the lesion noise it cannot remove (realism AUC 0.70-0.84 against 0.53-0.75
        # for the synthetic set); draws 2 averages an antithetic pair of runs, which cancels that noise
        # (0.52 and 0.61 at t = 2 on seeds 0 and 1); higher starts smooth the bone's grain more (t = 10: 0.55, 0.68)
        "diffusion": {"preset": "tiny", "overrides": {
            "train": {"max_steps": 200, "checkpoint_every_n_steps": 50, "max_timestep": 10, "ema_decay": 0.99},
            "harmonize": {"start_timestep": 2, "draws": 2}}},
        "sweep": {"timesteps": [0, 2, 5, 10]},
        # under a minute on 2 cores: 3 null splits, 20 CNN epochs (the defaults 5 and 30 took 68 s)
        # the real sample: the metastatic cases and the first 24 test cases (53 lesions); all 60 made the measure
        # 3x slower and the sweep, which harmonizes as many volumes as there are real lesions, too
        "realism": {"null_splits": 3, "cnn_epochs": 20, "max_real_cases": {"test": 24}},
        # 2 folds: 3 real training cases per fold, the few-cases setting where synthetic data should help
        "splits": {"n_folds": 2},
        # every model gets the same compute (40 patches per epoch whatever its set's size); with 3
        # real cases per fold there is none to spare for validation, so the epoch bounds stop training.
        # 60 epochs: the folds training at once made room for 80, which helped every model in the sweep
        # (docs/demo.md); 60 makes room for the on-the-fly models in the same 10 minutes
        "segmentation": {"preset": "cpu", "overrides": {
            "network": {"channels": [8, 16, 32]}, "patch_size": [32, 32, 32], "patches_per_epoch": 40,
            "max_epochs": 60, "finetune": {"max_epochs": 15}, "val_cases": 0, "num_workers": 0}},
        # the paper's five models, then the two drawn on the fly (SyntheticTumors' setting), in one Table 3
        "models": ["real", "synthetic", "synthetic_ft", "harmonized", "harmonized_ft", "online", "online_ft"],
        "size_study": [40],
        # the two folds train at once, one core each: 1.5x the steps of one training on two threads
        # (benchmarks/bench_parallel_trainings.py)
        "parallel": {"workers": 2, "trainings": 2},
        "preview": 4,
    }


def _tiny() -> dict[str, Any]:
    return {
        "name": "tiny",
        "cohort": {"phantom": {"healthy": 2, "metastatic": 4, "test": 1, "preset": "tiny"}},
        "prepare": {"spacing": 2.0, "crop_margin_mm": 4.0},
        "synthesis": {"repeats": 2},
        "diffusion": {"preset": "tiny", "overrides": {"train": {"max_steps": 4}}},
        "splits": {"n_folds": 2},
        "segmentation": {"preset": "tiny", "overrides": {"max_epochs": 2, "val_cases": 1, "num_workers": 0}},
        "size_study": [4],
        "sweep": {"timesteps": [0, 10, 20]},
        "realism": {"folds": 2, "repeats": 1, "cnn_epochs": 2, "bootstrap": 100, "null_splits": 2,
                    "donor_null_splits": 4},
        "parallel": {"trainings": 2},  # the tests kill and resume folds that train at once
        "preview": 2,
    }


_PRESETS = {"paper": _paper, "demo": _demo, "tiny": _tiny}


def config_reference() -> str:
    """``docs/config.md``: every setting of a study with its value in each preset, the settings
    that ``segmentation.overrides`` and ``diffusion.overrides`` may change, and what the sections
    of each study preset resolve to (``metsynth experiment reference``)."""
    from ..config import reference_table
    from ..diffusion.presets import PRESETS as DIFFUSION_PRESETS
    from ..diffusion.presets import diffusion_config
    from ..segmentation.presets import PRESETS as SEGMENTATION_PRESETS
    from ..segmentation.presets import segmentation_config

    studies = {name: experiment_preset(name) for name in _PRESETS}
    parts = [
        "# Configuration reference",
        "",
        "Written by `metsynth experiment reference -o docs/config.md` from the settings models (a test checks",
        "that this file is current). Start from a preset (`metsynth experiment init --preset paper -o my.yaml`),",
        "edit, and run `metsynth experiment run my.yaml --run-dir RUN`; unknown keys are errors that suggest",
        "the closest valid name. Arrays are in (z, y, x) order.",
        "",
        "## The study (`metsynth experiment`)",
        "",
        reference_table(studies),
        "## Segmentation (`segmentation.preset` + `segmentation.overrides`, or `metsynth train --preset/--config`)",
        "",
        "`segmentation.overrides` is deep-merged into the named preset and validated against these settings",
        "when the study is read (an error names the key, e.g. `segmentation.overrides.network.channels`).",
        "In a study every U-Net training runs where the study's `trainer` section says: its `accelerator`,",
        "`devices`, `strategy`, `num_nodes` and `precision` replace the preset's `trainer.*` values of the",
        "same names (the overrides may not set those five); the other `trainer.*` values come from the preset",
        "and the overrides. The study's `seed` seeds every training unless `segmentation.overrides.seed` is set.",
        "",
        reference_table({name: segmentation_config(name) for name in SEGMENTATION_PRESETS}),
        "## Diffusion (`diffusion.preset` + `diffusion.overrides`, or `metsynth diffusion train --preset`, "
        "`metsynth harmonize --preset`)",
        "",
        "`diffusion.overrides` is deep-merged into the named preset and validated the same way. In a study the",
        "DDPM trains where the study's `trainer` section says; the harmonization and the sweep are seeded by",
        "the study's `seed`, the DDPM's training by `train.seed`.",
        "",
        reference_table({name: diffusion_config(name) for name in DIFFUSION_PRESETS}),
        "## What the study presets train with",
        "",
        "The `segmentation` and `diffusion` sections of each study preset above, resolved: the U-Net settings",
        "with the study's `trainer` and `seed` over them, as every training of the study gets them.",
        "",
        reference_table({name: study.segmentation_settings for name, study in studies.items()}),
        reference_table({name: study.diffusion_settings for name, study in studies.items()}),
    ]
    return "\n".join(parts)

"""Diffusion harmonization (section 2.3.2 of the paper): a 3D DDPM trained on healthy femurs,
used SDEdit-style (noise to ``start_timestep``, denoise with DDIM) to refine synthetic volumes.

* :mod:`.presets`: settings and the ``paper``, ``cpu`` and ``tiny`` presets;
* :mod:`.schedule`: DDIM timestep sequences, noising and DDIM steps;
* :mod:`.data`: training patches within the femur mask;
* :mod:`.train`: the Lightning module and :func:`train_diffusion`; :mod:`.callbacks`: its loss
  record and step checkpoints;
* :mod:`.harmonize`: :func:`harmonize_set` (a set, resumable, parallel), and every harmonization
  name, from :mod:`.denoiser` (the network), :mod:`.refine` (SDEdit, :func:`harmonize_volume`),
  :mod:`.regions` (lesion boxes), :mod:`.source_set` (the set read) and :mod:`.harmonize_task`;
* :mod:`.consistency`: lesion contrast before/after (flags collapsed lesions);
* :mod:`.preview`: before/after montages.

Heavy modules (torch, MONAI, Lightning) are imported when their names are first used.
"""

from __future__ import annotations

import importlib
from typing import Any

from .presets import (
    PRESETS,
    DiffusionConfig,
    HarmonizeConfig,
    ModelConfig,
    NoiseConfig,
    TrainConfig,
    diffusion_config,
)

_LAZY = {
    "ddim_timesteps": "schedule", "ddim_step": "schedule", "noise_to": "schedule", "sdedit": "schedule",
    "train_diffusion": "train", "DiffusionModule": "train", "TrainResult": "train",
    "harmonize_set": "harmonize", "harmonize_volume": "harmonize", "load_denoiser": "harmonize",
    "HarmonizeSummary": "harmonize", "lesion_boxes": "harmonize", "read_synthetic_set": "harmonize",
    "check_consistency": "consistency", "ConsistencyReport": "consistency",
    "write_before_after": "preview",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["PRESETS", "DiffusionConfig", "HarmonizeConfig", "ModelConfig", "NoiseConfig", "TrainConfig",
           "diffusion_config", *_LAZY]

"""Segmentation: 3D U-Net presets, training sets and patches, training and fine-tuning,
sliding-window inference and morphological post-processing (the paper's section 2.4).

Modules, in pipeline order: :mod:`.presets` (settings, ``paper``/``cpu``/``tiny``),
:mod:`.datasets` (training sets with the leakage filter, balanced patches, augmentation),
:mod:`.train` (Lightning module, ``train_segmentation``), :mod:`.inference`
(``SegmentationModel``, ``predict_volume``, ``predict_cohort``) and :mod:`.postprocess`.
Heavy modules (torch, Lightning, MONAI) load only when used.
"""

from __future__ import annotations

from .postprocess import PostprocessConfig, postprocess
from .presets import PRESETS, SegmentationConfig, segmentation_config

__all__ = ["PRESETS", "PostprocessConfig", "SegmentationConfig", "postprocess", "segmentation_config"]

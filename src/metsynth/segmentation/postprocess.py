"""Morphological post-processing of predicted lesion masks.

Three steps, each switchable, applied in this order:

1. ``min_lesion_mm3``: remove connected components smaller than this volume (in mm^3, from the
   mask's own voxel spacing, so the rule means the same on any grid);
2. ``keep_in_femur``: keep only components that overlap the femur mask (a metastasis of the
   femur touches bone; a blob in the muscle or in the other leg is a false positive);
3. ``fill_holes``: fill cavities fully enclosed by a lesion (3D).

Connected components use 26-connectivity (voxels touching by a face, an edge or a corner belong
to one lesion), the usual choice for lesion counting in 3D.
"""

from __future__ import annotations

import logging

import numpy as np
from pydantic import Field

from ..config import Settings
from ..errors import InputError
from ..volume import Volume

log = logging.getLogger(__name__)

_FULL = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity


class PostprocessConfig(Settings):
    """Post-processing of predicted masks; every step can be switched off."""

    min_lesion_mm3: float = Field(
        16.0, ge=0,
        description="Remove predicted components smaller than this (mm^3); 0 keeps all. Default: "
                    "the paper's smallest usable synthetic lesion (16 mm^3).")
    keep_in_femur: bool = Field(True, description="Keep only components that overlap the femur mask.")
    fill_holes: bool = Field(True, description="Fill cavities fully enclosed by a predicted lesion.")


def remove_small_components(mask: np.ndarray, spacing, min_mm3: float) -> np.ndarray:
    """``mask`` without its 26-connected components smaller than ``min_mm3`` (mm^3)."""
    from scipy import ndimage

    mask = np.asarray(mask).astype(bool)
    if min_mm3 <= 0 or not mask.any():
        return mask
    labels, n = ndimage.label(mask, structure=_FULL)
    sizes_mm3 = np.bincount(labels.ravel(), minlength=n + 1) * float(np.prod(spacing))
    keep = sizes_mm3 >= min_mm3
    keep[0] = False
    return keep[labels]


def keep_overlapping(mask: np.ndarray, femur: np.ndarray) -> np.ndarray:
    """Only the 26-connected components of ``mask`` that share at least one voxel with ``femur``."""
    from scipy import ndimage

    mask = np.asarray(mask).astype(bool)
    femur = np.asarray(femur).astype(bool)
    if mask.shape != femur.shape:
        raise InputError(f"femur mask shape {femur.shape} does not match the prediction {mask.shape}; "
                         "give the femur mask on the image's grid")
    if not mask.any():
        return mask
    labels, n = ndimage.label(mask, structure=_FULL)
    touching = np.unique(labels[femur & mask])
    keep = np.zeros(n + 1, dtype=bool)
    keep[touching] = True
    keep[0] = False
    return keep[labels]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill 3D cavities (background not connected to the volume's border)."""
    from scipy import ndimage

    mask = np.asarray(mask).astype(bool)
    if not mask.any():
        return mask
    return ndimage.binary_fill_holes(mask)


def postprocess(mask: Volume, femur: Volume | None = None, config: PostprocessConfig | None = None) -> Volume:
    """Apply the switched-on steps to a binary prediction; returns a uint8 mask on ``mask``'s grid.

    ``keep_in_femur`` needs ``femur`` on the same grid; without it that step is skipped with a
    warning (an empty femur mask would delete every lesion, which is never what is meant).
    """
    config = config or PostprocessConfig()
    array = np.asarray(mask.array).astype(bool)
    if config.min_lesion_mm3 > 0:
        array = remove_small_components(array, mask.spacing, config.min_lesion_mm3)
    if config.keep_in_femur:
        if femur is None:
            log.warning("%s: no femur mask, so 'keep_in_femur' is skipped", mask.name)
        else:
            diff = femur.grid_mismatch(mask, names=("femur mask", "prediction"))
            if diff is not None:
                raise InputError(f"{femur.name}: femur mask is not on the prediction's grid ({diff}); "
                                 "resample it onto the image with nearest-neighbour interpolation")
            array = keep_overlapping(array, femur.array)
    if config.fill_holes:
        array = fill_holes(array)
    return mask.with_array(array.astype(np.uint8))


__all__ = ["PostprocessConfig", "fill_holes", "keep_overlapping", "postprocess", "remove_small_components"]

"""All bone (step 2 of the method, :mod:`metsynth.bone`; used by :func:`segment_bone`).

Hysteresis threshold (voxels above ``bone_low_hu`` connected to voxels above ``bone_high_hu``, so
trabecular bone hangs on to the cortex), thin streaks near metal opened away, a closing of
``closing_mm`` that bridges small cortical breaks, and hole filling in 3D and in every axial plane
(perpendicular to the head-foot axis). Marrow and osteolytic lesions (soft-tissue density) inside
the bone are inside the mask.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..boxes import index_box
from ..errors import InputError
from ..volume import Volume
from .config import FemurSegConfig
from .grid import _WorkGrid
from .morphology import _close, _dilate, _erode, _fill_holes_2d, _largest_component


def _bone_mask(work: _WorkGrid, config: FemurSegConfig) -> np.ndarray:
    hu, spacing = work.hu, work.vol.spacing
    body = _largest_component(hu > config.body_hu)
    body = _fill_holes_2d(body, work.si_axis)  # lungs and bowel gas are inside the body
    candidate = (hu > config.bone_low_hu) & body
    candidate = _drop_streaks(candidate, work, config)
    labels, n = ndi.label(candidate)
    if n == 0:
        return candidate
    strong = np.zeros(n + 1, bool)
    strong[np.unique(labels[(hu > config.bone_high_hu) & candidate])] = True
    strong[0] = False
    bone = strong[labels]
    fill = work.filler(config)
    work.open_bone = fill(bone)  # before the closing: the hip joint space is still open where visible
    return fill(_close(bone, config.closing_mm, spacing))


def _drop_streaks(candidate: np.ndarray, work: _WorkGrid, config: FemurSegConfig) -> np.ndarray:
    """Open the bone candidates near metal: streak artefacts are thin, bone around an implant is not."""
    if config.streak_opening_mm <= 0:
        return candidate
    metal = work.metal
    if not metal.any():
        return candidate
    spacing = np.asarray(work.vol.spacing)
    reach = np.ceil((config.metal_margin_mm + 2 * config.streak_opening_mm) / spacing).astype(int) + 1
    idx = np.argwhere(metal)
    lo, hi = index_box(idx, metal.shape, reach)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    near = _dilate(metal[box], config.metal_margin_mm, spacing)
    sub = candidate[box]
    opened = _dilate(_erode(sub, config.streak_opening_mm, spacing), config.streak_opening_mm, spacing)
    out = candidate.copy()
    out[box] = np.where(near, opened | metal[box], sub)
    return out



def _require_bone(image: Volume, bone: np.ndarray, config: FemurSegConfig) -> None:
    if not bone.any():
        hi = float(np.max(image.array)) if image.array.size else float("nan")
        raise InputError(
            f"{image.name}: no bone found (no voxel above {config.bone_high_hu:g} HU inside the body; the "
            f"image's maximum is {hi:g}); check that the image is in Hounsfield units (not standardized "
            "or rescaled) and that the field of view includes the femur")


"""Separation of each femur from the other bones (step 3 of the method, :mod:`metsynth.bone`).

A marker-based watershed on the smoothed CT intensity inside the bone mask (the joint space is a
darker seam between the bright subchondral bone of the femoral head and of the acetabulum). Each
femur's region is then closed with ``lesion_closing_mm`` with hole filling between the dilation and
the erosion (sealing cortical breaks made by lesions) and kept apart from the other bones.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..boxes import index_box
from .config import FemurSegConfig
from .grid import _WorkGrid
from .markers import _Markers
from .morphology import _close, _largest_component


def _watershed(work: _WorkGrid, bone: np.ndarray, markers: _Markers, config: FemurSegConfig) -> np.ndarray:
    from skimage.segmentation import watershed

    sigma = [config.smoothing_mm / s for s in work.vol.spacing]
    relief = -ndi.gaussian_filter(work.hu, sigma) if config.smoothing_mm > 0 else -work.hu
    # Metal is flooded last: a prosthetic head in a metal cup would otherwise be a bright bridge
    # from the femur into the pelvis; its voxels go to whichever bone surrounds them.
    relief[work.metal] = -config.bone_low_hu
    return watershed(relief, markers.array, mask=bone)


def _finish_femur(labels: np.ndarray, k: int, work: _WorkGrid, config: FemurSegConfig) -> np.ndarray:
    femur = labels == k
    if not femur.any():
        return femur
    others = (labels > 0) & (labels != k)
    # Work in the femur's bounding box plus the closing radius.
    spacing = work.vol.spacing
    idx = np.argwhere(femur)
    pad = np.ceil(config.lesion_closing_mm / np.asarray(spacing)).astype(int) + 2
    lo, hi = index_box(idx, femur.shape, pad)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    sub = femur[box]
    sub = _close(sub, config.lesion_closing_mm, spacing, fill=work.filler(config)) & ~others[box]
    sub = _largest_component(sub | femur[box])
    out = np.zeros_like(femur)
    out[box] = sub
    return out

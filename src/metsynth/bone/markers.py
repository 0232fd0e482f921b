"""Markers of the watershed (step 3 of the method, :mod:`metsynth.bone`).

* femur: in the lowest ``seed_slab_mm`` of bone (the field of view must end across the femur
  shafts), the most lateral cross-section on each side of the body midline (one leg in view:
  the largest cross-section);
* other bone: the rest of that slab (ischium, pubis), bone within ``midline_mm`` of the midline
  (sacrum, spine, symphysis) when both hips are in view, and bone in the top ``top_slab_mm`` of
  the field of view.

Where a femur touches other bone, the femoral head adds markers of its own
(:mod:`metsynth.bone.head`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .config import FemurSegConfig
from .grid import _WorkGrid
from .morphology import _largest_component

log = logging.getLogger(__name__)


@dataclass
class _Markers:
    femurs: list[str]  # side of femur marker k (label k + 1 in ``array``)
    array: np.ndarray  # int32: 1..n femur markers, n + 1 other bone, 0 unknown
    bilateral: bool
    midline_x: float | None
    problem: str = ""  # why no femur marker was found


def _find_markers(work: _WorkGrid, bone: np.ndarray, config: FemurSegConfig) -> _Markers:
    spacing = work.vol.spacing
    voxel_mm3 = float(np.prod(spacing))
    wz = work.world_coordinate(0)
    wx = work.world_coordinate(2)

    # Ignore specks when finding the lowest bone.
    labels, n = ndi.label(bone)
    sizes = np.bincount(labels.ravel())
    min_voxels = max(1, int(config.min_femur_area_mm2 * config.seed_slab_mm / voxel_mm3 / 4))
    keep = sizes >= min_voxels
    keep[0] = False
    solid = keep[labels]
    empty = np.zeros(bone.shape, np.int32)
    if not solid.any():
        return _Markers([], empty, False, None, "no bone piece large enough to be a femur")
    z_low = float(wz[solid].min())
    gap = z_low - float(wz.min())
    if gap > config.max_seed_gap_mm:
        return _Markers([], empty, False, None,
                        f"the lowest bone is {gap:.0f} mm above the lower edge of the field of view, where the "
                        "femur shaft(s) should be cut")
    slab = solid & (wz <= z_low + config.seed_slab_mm)
    slice_mm = spacing[work.si_axis]
    slab_height = min(config.seed_slab_mm, float(wz[solid].max() - z_low)) + slice_mm

    # Body width tells whether both hips (and the midline) are in view.
    body = _largest_component(work.hu > config.body_hu)
    body_x = wx[body]
    lr_axis = int(np.argmax(np.abs(work.vol.direction[2])))
    width = float(body_x.max() - body_x.min()) + spacing[lr_axis] if body_x.size else 0.0
    bilateral = width >= config.bilateral_min_width_mm
    midline = float(body_x.mean()) if bilateral else 0.0

    slab_labels, n_slab = ndi.label(slab)
    index = np.arange(1, n_slab + 1)
    counts = ndi.sum_labels(np.ones_like(slab_labels), slab_labels, index) if n_slab else np.array([])
    cx = ndi.mean(wx, slab_labels, index) if n_slab else np.array([])
    area = np.asarray(counts) * voxel_mm3 / slab_height
    candidates = [i for i in range(n_slab) if area[i] >= config.min_femur_area_mm2]

    chosen: dict[str, int] = {}
    if bilateral:
        for side, sign in (("left", 1.0), ("right", -1.0)):
            lateral = [(sign * (cx[i] - midline), i) for i in candidates
                       if sign * (cx[i] - midline) >= config.min_lateral_offset_mm]
            if lateral:
                chosen[side] = max(lateral)[1]
    elif candidates:
        best = max(candidates, key=lambda i: area[i])
        chosen["left" if cx[best] > midline else "right"] = best
    log.debug("femur markers: bilateral=%s midline=%.1f chosen=%s", bilateral, midline, chosen)
    problem = "" if chosen else (
        f"no bone cross-section of at least {config.min_femur_area_mm2:g} mm^2 in the lowest "
        f"{config.seed_slab_mm:g} mm of bone" + (f", {config.min_lateral_offset_mm:g} mm or more lateral to the "
                                               "midline" if bilateral else ""))

    markers = np.zeros(bone.shape, np.int32)
    other = len(chosen) + 1
    markers[slab & (slab_labels > 0)] = other
    if bilateral and config.midline_mm > 0:
        markers[bone & (np.abs(wx - midline) < config.midline_mm)] = other
    if config.use_top_markers:
        markers[_top_markers(work, bone, wz, z_low, config)] = other
    sides = []
    for k, (side, i) in enumerate(sorted(chosen.items()), start=1):
        markers[slab_labels == i + 1] = k
        sides.append(side)
    return _Markers(sides, markers, bilateral, midline if bilateral else None, problem)


def _top_markers(work: _WorkGrid, bone: np.ndarray, wz: np.ndarray, z_low: float,
                 config: FemurSegConfig) -> np.ndarray:
    """Bone in the top ``top_slab_mm`` of the field of view (well above the femur seeds), except
    pieces shaped like the dome of a femoral head (seen from above: a round patch no wider than a
    head): a head cut by the top of the field of view with no pelvis around it must stay femur,
    while an ilium, an acetabular roof around the head, or a spine is wider or elongated."""
    top = bone & (wz >= float(wz.max()) - config.top_slab_mm) & (wz > z_low + 2 * config.seed_slab_mm)
    labels, n = ndi.label(top)
    if n == 0:
        return top
    wy, wx = work.world_coordinate(1), work.world_coordinate(2)
    in_plane = [s for i, s in enumerate(work.vol.spacing) if i != work.si_axis]
    keep = np.zeros(n + 1, bool)
    for i, piece in enumerate(ndi.find_objects(labels), start=1):
        inside = labels[piece] == i
        y, x = wy[piece][inside], wx[piece][inside]
        width = max(float(np.ptp(p)) for p in (x, y, (x + y) / np.sqrt(2), (x - y) / np.sqrt(2)))
        area = float(inside.any(axis=work.si_axis).sum()) * in_plane[0] * in_plane[1]  # seen from above
        round_patch = area >= 0.6 * np.pi * (width / 2) ** 2
        keep[i] = not (width <= 2 * config.head_radius_mm[1] and round_patch)
    return keep[labels]


"""Binary morphology with sizes in mm: dilation, erosion and closing by exact distance transforms
(the closing optionally fills holes between its dilation and erosion), hole filling in 3D and in
the planes perpendicular to one axis, and the largest connected component."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


def _dilate(mask: np.ndarray, radius_mm: float, spacing) -> np.ndarray:
    if radius_mm <= 0 or not mask.any():
        return mask.copy()
    return ndi.distance_transform_edt(~mask, sampling=spacing) <= radius_mm


def _erode(mask: np.ndarray, radius_mm: float, spacing) -> np.ndarray:
    if radius_mm <= 0:
        return mask.copy()
    return ndi.distance_transform_edt(mask, sampling=spacing) > radius_mm


def _close(mask: np.ndarray, radius_mm: float, spacing, fill: "_Filler | None" = None) -> np.ndarray:
    """Closing with a ball of ``radius_mm`` (exact, by distance transforms); the volume edge does
    not erode (padded). With ``fill``, holes are filled between the dilation and the erosion, so
    a cortical break narrower than ~2 radii seals the whole cavity behind it."""
    if radius_mm <= 0 or not mask.any():
        return fill(mask) if fill is not None else mask.copy()
    pad = [int(np.ceil(radius_mm / s)) + 1 for s in spacing]
    padded = np.pad(mask, [(p, p) for p in pad])
    dilated = _dilate(padded, radius_mm, spacing)
    if fill is not None:
        dilated = fill(dilated)
    closed = _erode(dilated, radius_mm, spacing)
    return closed[tuple(slice(p, p + n) for p, n in zip(pad, mask.shape))] | mask


@dataclass
class _Filler:
    """Hole filling in 3D and, optionally, in each plane perpendicular to ``axis`` (axial planes);
    2D holes larger than ``max_area_px`` voxels (e.g. the pelvic cavity inside a closed pelvic
    ring) are left open."""

    axis: int
    fill_2d: bool
    max_area_px: int

    def __call__(self, mask: np.ndarray) -> np.ndarray:
        filled = _fill_holes(mask)
        if self.fill_2d:
            filled = _fill_holes(_fill_holes_2d(filled, self.axis, self.max_area_px))
        return filled


def _fill_holes(mask: np.ndarray, max_size: int | None = None) -> np.ndarray:
    """Fill the background components that do not touch the array's edge (any dimension), up to
    ``max_size`` voxels each; labelling is much faster than scipy's iterative hole filling."""
    if mask.all() or not mask.any():
        return mask.copy()
    background, n = ndi.label(~mask)
    if n <= 1:
        return mask.copy()
    edge = np.zeros(n + 1, bool)
    for axis in range(mask.ndim):
        for end in (0, -1):
            edge[np.unique(np.take(background, end, axis=axis))] = True
    hole = ~edge
    hole[0] = False
    if max_size is not None:
        hole &= np.bincount(background.ravel(), minlength=n + 1) <= max_size
    return mask | hole[background]


def _fill_holes_2d(mask: np.ndarray, axis: int, max_area_px: int | None = None) -> np.ndarray:
    out = np.moveaxis(mask.copy(), axis, 0)
    for i in range(out.shape[0]):
        if out[i].any():
            out[i] = _fill_holes(out[i], max_area_px)
    return np.moveaxis(out, 0, axis)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


"""The inputs of the metrics: two masks on one grid with their spacing, their bounding box, their boundary.

:func:`boundary` is the mask minus its 6-neighbour erosion with border value 0 (a foreground voxel
on the edge of the volume is a boundary voxel); the private helpers crop both masks to the bounding
box of their union plus a one-voxel zero margin, which changes no result (see
:mod:`metsynth.evaluation.metrics`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    from ..volume import Volume


def _as_array_and_spacing(
    pred: "np.ndarray | Volume", truth: "np.ndarray | Volume", spacing: Sequence[float] | float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from ..volume import Volume

    spacings = []
    if isinstance(pred, Volume) and isinstance(truth, Volume):
        diff = pred.grid_mismatch(truth, names=("prediction", "ground truth"))
        if diff is not None:
            raise InputError(
                f"prediction {pred.name} and ground truth {truth.name} are not on the same grid ({diff}); "
                "resample the prediction onto the ground truth's grid (nearest neighbour)"
            )
    for v in (pred, truth):
        if isinstance(v, Volume):
            spacings.append(np.asarray(v.spacing, dtype=np.float64))
    p = pred.array if isinstance(pred, Volume) else np.asarray(pred)
    t = truth.array if isinstance(truth, Volume) else np.asarray(truth)
    if p.shape != t.shape:
        raise InputError(f"prediction shape {p.shape} differs from ground-truth shape {t.shape}; "
                         "both masks must be on the same grid")
    if p.ndim not in (2, 3):
        raise InputError(f"masks must be 2D or 3D arrays, got {p.ndim}D with shape {p.shape}")
    if spacing is None:
        sp = spacings[0] if spacings else np.ones(p.ndim)
    else:
        sp = np.asarray(spacing, dtype=np.float64)
        if sp.ndim == 0:
            sp = np.full(p.ndim, float(sp))
        if sp.shape != (p.ndim,):
            raise InputError(f"spacing {tuple(np.ravel(spacing))} needs {p.ndim} values in array order "
                             f"({'z, y, x' if p.ndim == 3 else 'y, x'}) for masks of shape {p.shape}")
        if spacings and not np.allclose(spacings[0], sp, rtol=1e-4):
            raise InputError(f"spacing {tuple(sp)} contradicts the volume's spacing {tuple(spacings[0])}; "
                             "leave spacing=None to use the volume's")
    if not (np.all(np.isfinite(sp)) and np.all(sp > 0)):
        raise InputError(f"spacing must be positive and finite, got {tuple(sp)}")
    return p, t, sp


def _foreground_box(a: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of the non-zero voxels, or None if there are none.

    Uses axis projections; for one-byte masks (bool, uint8, int8) whose rows are a multiple of
    8 bytes, the projections OR eight voxels at a time through a uint64 view (memory-bound).
    """
    if a.dtype == bool or a.dtype.itemsize == 1 and np.issubdtype(a.dtype, np.integer):
        a = a.view(np.uint8)
    elif not np.issubdtype(a.dtype, np.integer):
        a = a != 0  # float masks: NaN counts as foreground, as any non-zero value
        a = a.view(np.uint8)
    if a.size == 0:
        return None
    box: list[slice] = []
    sub = a
    for axis in range(a.ndim):
        proj = _project(sub, axis)
        nz = np.flatnonzero(proj)
        if nz.size == 0:
            return None
        sl = slice(int(nz[0]), int(nz[-1]) + 1)
        box.append(sl)
        index = [slice(None)] * a.ndim
        index[axis] = sl
        sub = sub[tuple(index)]  # later projections read only the part inside the box so far
    return tuple(box)


def _project(a: np.ndarray, axis: int) -> np.ndarray:
    """Boolean projection of ``a`` onto ``axis`` (whether any voxel of each slice is non-zero)."""
    last = a.shape[-1]
    if a.dtype == np.uint8 and last % 8 == 0 and a.strides[-1] == 1:
        wide = a.view(np.uint64)  # 8 voxels per element along the last axis
        for _ in range(axis):  # OR away the leading axes first: streams through memory
            wide = np.bitwise_or.reduce(wide, axis=0)
        if axis == a.ndim - 1:
            return wide.view(np.uint8) != 0
        return wide.reshape(wide.shape[0], -1).any(axis=1)
    return a.any(axis=tuple(i for i in range(a.ndim) if i != axis))


def _union_box(boxes: Iterable[tuple[slice, ...] | None]) -> tuple[slice, ...] | None:
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return None
    return tuple(slice(min(b[i].start for b in boxes), max(b[i].stop for b in boxes)) for i in range(len(boxes[0])))


def _padded_crop(a: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
    """``a[box] != 0`` inside a one-voxel margin of False (= erosion border value 0)."""
    shape = tuple(s.stop - s.start + 2 for s in box)
    out = np.zeros(shape, dtype=bool)
    inner = tuple(slice(1, -1) for _ in box)
    sub = a[box]
    if sub.dtype == bool:
        out[inner] = sub
    else:
        np.not_equal(sub, 0, out=out[inner])
    return out


def _boundary_of_padded(padded: np.ndarray) -> np.ndarray:
    """Boundary (mask minus 6-neighbour erosion) of the interior of a zero-margined mask."""
    inner = tuple(slice(1, -1) for _ in range(padded.ndim))
    mask = padded[inner]
    eroded = mask.copy()
    for axis in range(padded.ndim):
        for start in (0, 2):
            shifted = list(inner)
            shifted[axis] = slice(start, start + mask.shape[axis])
            np.logical_and(eroded, padded[tuple(shifted)], out=eroded)
    np.logical_xor(mask, eroded, out=eroded)  # eroded is a subset of mask: xor == mask & ~eroded
    return eroded


def boundary(mask: np.ndarray) -> np.ndarray:
    """Boolean boundary of a mask: mask minus its 6-neighbour erosion (volume edge is boundary)."""
    mask = np.asarray(mask)
    out = np.zeros(mask.shape, dtype=bool)
    box = _foreground_box(mask)
    if box is None:
        return out
    out[box] = _boundary_of_padded(_padded_crop(mask, box))
    return out


__all__ = ["boundary"]

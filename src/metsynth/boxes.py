"""Index boxes: the bounding box of some voxels grown by a margin, clipped to the array (one
definition for the femur crop, the bone search, the lesion crops and the realism patches)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def index_box(points: np.ndarray, shape: Sequence[int], margin: int | np.ndarray = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)``, the half-open index box of ``points`` (rows of ``np.argwhere``, at least one)
    grown by ``margin`` voxels (a number, or one per axis) and clipped to ``shape``."""
    points = np.asarray(points)
    lo = np.maximum(points.min(axis=0) - margin, 0)
    hi = np.minimum(points.max(axis=0) + margin + 1, np.asarray(shape))
    return lo, hi


__all__ = ["index_box"]

"""The regions ``region: lesion`` refines: a box around each lesion (margin and feather, at least one
patch, overlapping boxes merged) and the weight that blends a refined box back into its volume."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Box:
    """A box of voxels ``[lo, hi)`` per axis (z, y, x), and the lesion components it holds."""

    lo: tuple[int, int, int]
    hi: tuple[int, int, int]
    lesions: tuple[int, ...] = ()

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.lo, self.hi))  # type: ignore[return-value]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.lo, self.hi))  # type: ignore[return-value]

    def overlaps(self, other: "Box") -> bool:
        return all(a < d and c < b for a, b, c, d in zip(self.lo, self.hi, other.lo, other.hi))

    def union(self, other: "Box") -> "Box":
        return Box(tuple(min(a, c) for a, c in zip(self.lo, other.lo)),  # type: ignore[arg-type]
                   tuple(max(b, d) for b, d in zip(self.hi, other.hi)),  # type: ignore[arg-type]
                   tuple(sorted(self.lesions + other.lesions)))

    def to_dict(self) -> dict[str, Any]:
        return {"lo": list(self.lo), "hi": list(self.hi), "lesions": list(self.lesions)}


def _fit_axis(lo: int, hi: int, minimum: int, size: int) -> tuple[int, int]:
    """Grow [lo, hi) to at least ``minimum`` voxels (centred), then shift/clip into [0, size)."""
    length = hi - lo
    if length < minimum:
        extra = minimum - length
        lo -= extra // 2
        hi += extra - extra // 2
    if lo < 0:
        hi, lo = hi - lo, 0
    if hi > size:
        lo, hi = max(lo - (hi - size), 0), size
    return lo, hi


def lesion_boxes(label: np.ndarray, spacing, margin_mm: float, feather_mm: float, patch_size) -> list[Box]:
    """Boxes to refine: each lesion's bounding box plus margin and feather, at least one patch, merged."""
    components, count = ndimage.label(np.asarray(label) > 0)
    shape = components.shape
    pad = [int(math.ceil((margin_mm + feather_mm) / s)) for s in spacing]
    boxes = []
    for k, found in enumerate(ndimage.find_objects(components), start=1):
        lo, hi = [], []
        for axis, sl in enumerate(found):
            a, b = _fit_axis(sl.start - pad[axis], sl.stop + pad[axis], int(patch_size[axis]), shape[axis])
            lo.append(a)
            hi.append(b)
        boxes.append(Box(tuple(lo), tuple(hi), (k,)))
    merged = True
    while merged:  # merge until no two boxes overlap
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                if boxes[i].overlaps(boxes[j]):
                    boxes[i] = boxes[i].union(boxes.pop(j))
                    merged = True
                    break
            if merged:
                break
    return sorted(boxes, key=lambda b: b.lo)


def feather_weight(box: Box, shape, spacing, feather_mm: float) -> np.ndarray:
    """Blend weight over a box: 1 inside, falling linearly to ~0 over ``feather_mm`` at each box face.

    Faces on the volume border get no ramp (there is nothing outside to blend with).
    """
    profiles = []
    for axis in range(3):
        n = box.hi[axis] - box.lo[axis]
        width = feather_mm / spacing[axis]
        w = np.ones(n, dtype=np.float32)
        if width > 0:
            i = np.arange(n, dtype=np.float32)
            if box.lo[axis] > 0:
                w = np.minimum(w, (i + 0.5) / (width + 0.5))
            if box.hi[axis] < shape[axis]:
                w = np.minimum(w, (n - 1 - i + 0.5) / (width + 0.5))
        profiles.append(np.clip(w, 0.0, 1.0))
    return profiles[0][:, None, None] * profiles[1][None, :, None] * profiles[2][None, None, :]

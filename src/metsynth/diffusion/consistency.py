"""Label consistency after harmonization: is the lesion still where its label says?

For each lesion (connected component of the label) the mean intensity inside the label is
compared with the mean of a ring of ``ring_mm`` around it (the surrounding bone, plus any soft
tissue where the lesion reaches the cortex; other lesions are excluded from the ring), before
and after harmonization. ``contrast = ring - inside`` (positive for osteolytic lesions, negative
for blastic ones). A lesion whose contrast before was at least ``min_contrast`` is *collapsed*
when ``contrast_after / contrast_before < min_ratio`` (the lesion faded into the bone, or its
sign flipped). Components of fewer than ``min_voxels`` voxels (label fragments) are reported but
not judged. A volume is flagged when any of its lesions collapsed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from ..errors import InputError


@dataclass
class LesionContrast:
    index: int
    voxels: int
    ring_voxels: int
    inside_before: float
    ring_before: float
    inside_after: float
    ring_after: float
    contrast_before: float
    contrast_after: float
    ratio: float | None
    judged: bool
    collapsed: bool


@dataclass
class ConsistencyReport:
    """Per-volume result; ``collapsed`` is the flag. Plain data (``to_dict`` for sidecars)."""

    lesions: list[LesionContrast] = field(default_factory=list)
    inside_before: float | None = None
    ring_before: float | None = None
    inside_after: float | None = None
    ring_after: float | None = None
    contrast_before: float | None = None
    contrast_after: float | None = None
    ratio: float | None = None
    collapsed: bool = False
    ring_mm: float = 3.0
    min_ratio: float = 0.5
    min_contrast: float = 0.02
    min_voxels: int = 8

    def to_dict(self) -> dict:
        return asdict(self)


def lesion_rings(label: np.ndarray, spacing, ring_mm: float) -> tuple[np.ndarray, int, list[np.ndarray]]:
    """(components, count, ring masks): the ring of each component, other lesions excluded."""
    components, count = ndimage.label(np.asarray(label) > 0)
    rings = []
    any_lesion = components > 0
    for k, box in enumerate(ndimage.find_objects(components), start=1):
        pad = [int(np.ceil(ring_mm / s)) + 1 for s in spacing]
        sl = tuple(slice(max(b.start - p, 0), min(b.stop + p, n))
                   for b, p, n in zip(box, pad, components.shape))
        local = components[sl] == k
        distance = ndimage.distance_transform_edt(~local, sampling=spacing)
        ring_local = (distance <= ring_mm) & ~any_lesion[sl]
        ring = np.zeros(components.shape, dtype=bool)
        ring[sl] = ring_local
        rings.append(ring)
    return components, count, rings


def check_consistency(before: np.ndarray, after: np.ndarray, label: np.ndarray, spacing, ring_mm: float = 3.0,
                      min_ratio: float = 0.5, min_contrast: float = 0.02,
                      min_voxels: int = 8) -> ConsistencyReport:
    """Compare lesion-to-ring contrast before and after; see the module docstring."""
    before, after = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    if before.shape != after.shape or before.shape != np.asarray(label).shape:
        raise InputError(f"consistency check: shapes differ (before {before.shape}, after {after.shape}, "
                         f"label {np.asarray(label).shape})")
    components, count, rings = lesion_rings(label, spacing, ring_mm)
    report = ConsistencyReport(ring_mm=ring_mm, min_ratio=min_ratio, min_contrast=min_contrast,
                               min_voxels=min_voxels)
    if count == 0:
        return report
    for k, ring in enumerate(rings, start=1):
        inside = components == k
        if not ring.any():  # the lesion fills its surroundings: nothing to compare with
            continue
        ib, rb = float(before[inside].mean()), float(before[ring].mean())
        ia, ra = float(after[inside].mean()), float(after[ring].mean())
        cb, ca = rb - ib, ra - ia
        voxels = int(inside.sum())
        judged = abs(cb) >= min_contrast and voxels >= min_voxels
        ratio = ca / cb if cb != 0 else None
        collapsed = bool(judged and ratio is not None and ratio < min_ratio)
        report.lesions.append(LesionContrast(k, voxels, int(ring.sum()), ib, rb, ia, ra, cb, ca,
                                             ratio, judged, collapsed))
    lesion = components > 0
    all_rings = np.logical_or.reduce(rings) & ~lesion
    if all_rings.any():
        report.inside_before, report.ring_before = float(before[lesion].mean()), float(before[all_rings].mean())
        report.inside_after, report.ring_after = float(after[lesion].mean()), float(after[all_rings].mean())
        report.contrast_before = report.ring_before - report.inside_before
        report.contrast_after = report.ring_after - report.inside_after
        if report.contrast_before != 0:
            report.ratio = report.contrast_after / report.contrast_before
    report.collapsed = any(les.collapsed for les in report.lesions)
    return report


__all__ = ["ConsistencyReport", "LesionContrast", "check_consistency", "lesion_rings"]

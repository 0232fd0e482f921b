"""Lesion-centred features: what a reader (or a classifier) looks at to tell a pasted lesion.

:func:`lesion_features` measures one lesion (a binary mask) in its image: its size, the interior
and the bone around it, the contrast between them, how the edge goes from one to the other, and
the fine grain (noise) inside, around and further away. Every value is in the image's intensity
units (prepared cohorts: [-1, 1] for the HU window) or in mm, so real and generated lesions of
one cohort are directly comparable. :func:`lesion_patch` cuts the fixed-size patch around a
lesion that the CNN discriminator reads.

Where the lesion sits counts too: ``surface_contact`` (:mod:`metsynth.bone.contact`) tells a lesion
against or through the cortex (half of the phantom's real ones) from one in the middle of the
marrow (where the paper's uniform placement pastes almost all). The feature set is deliberately
small and readable: when a classifier separates two sets, the
per-feature medians name what differs (``metsynth realism`` prints them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..bone.contact import surface_contact
from ..boxes import index_box

__all__ = ["FEATURES", "Lesion", "lesion_components", "lesion_features", "lesion_patch"]

# name -> what it measures (printed in tables and the report)
FEATURES: dict[str, str] = {
    "log_volume_mm3": "log10 of the lesion volume (mm^3)",
    "interior_mean": "mean intensity inside the lesion (mask eroded by one voxel)",
    "interior_std": "intensity standard deviation inside the lesion",
    "ring_mean": "mean intensity of the bone ring around the lesion (inside the femur)",
    "ring_std": "intensity standard deviation of that ring",
    "contrast": "ring mean minus interior mean",
    "edge_inner": "where the mask's own boundary voxels sit between interior (0) and ring (1)",
    "edge_outer": "where the voxels just outside the mask sit between interior (0) and ring (1)",
    "edge_gradient": "mean gradient magnitude on the boundary / contrast (1/mm): edge sharpness",
    "grain_interior": "high-frequency noise inside the lesion (robust std of image - Gaussian(1 voxel))",
    "grain_ring": "high-frequency noise in the ring",
    "grain_far": "high-frequency noise in the femur away from the lesion",
    "grain_ratio": "grain inside / grain far away (1: the lesion's noise matches its femur's)",
    "surface_contact": "share of the voxels around the lesion outside the femur (0: deep in the bone; more: "
                       "against or through the cortex)",
}

_CROSS = ndi.generate_binary_structure(3, 1)
_FULL = ndi.generate_binary_structure(3, 3)


@dataclass(frozen=True)
class Lesion:
    """One lesion to measure: where it comes from, its group for cross-validation, its arrays."""

    key: str  # unique, e.g. "real/M001/L2" or "synthetic/<volume_id>"
    group: str  # lesions sharing a group are never split between CV folds (patient or donor case)
    source: str  # "real", "synthetic", "harmonized", "t40", ...


def lesion_components(mask: np.ndarray, min_voxels: int = 8) -> list[np.ndarray]:
    """The 26-connected components of ``mask`` with at least ``min_voxels`` voxels, largest first."""
    labels, n = ndi.label(np.asarray(mask).astype(bool), structure=_FULL)
    if n == 0:
        return []
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(-sizes, kind="stable")
    return [labels == (i + 1) for i in order if sizes[i] >= min_voxels]


def _robust_std(values: np.ndarray) -> float:
    if values.size < 2:
        return float("nan")
    med = np.median(values)
    return float(1.4826 * np.median(np.abs(values - med)))


def _box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    where = np.argwhere(mask)
    lo, hi = index_box(where, mask.shape, margin)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def lesion_features(image: np.ndarray, mask: np.ndarray, spacing: tuple[float, float, float],
                    femur: np.ndarray | None = None, ring_mm: float = 3.0) -> dict[str, float]:
    """The features of :data:`FEATURES` for one lesion ``mask`` (bool, one lesion) in ``image``.

    The ring is the shell of ``ring_mm`` around the mask, cut to ``femur`` when given (bone around
    the lesion, not the soft tissue beyond a cortical breach); "far" is the femur between 3 and 6
    ring widths from the lesion. All computations are on a box around the lesion.
    """
    sp = np.asarray(spacing, dtype=np.float64)
    mask = np.asarray(mask).astype(bool)
    if not mask.any():
        raise ValueError("lesion_features: the lesion mask is empty")
    ring_vox = max(int(round(ring_mm / float(sp.min()))), 1)
    box = _box(mask, 6 * ring_vox + 2)
    img = np.asarray(image[box], dtype=np.float32)
    m = mask[box]
    fem = np.asarray(femur[box]).astype(bool) if femur is not None else np.ones_like(m)
    contact = surface_contact(mask, np.asarray(femur).astype(bool)) if femur is not None else float("nan")
    fem = fem | m
    dist_out = ndi.distance_transform_edt(~m, sampling=sp)
    eroded = ndi.binary_erosion(m, structure=_CROSS)
    interior = eroded if eroded.sum() >= 4 else m
    boundary = m & ~eroded
    outer = (dist_out > 0) & (dist_out <= float(sp.max()) * 1.01) & fem
    ring = (dist_out > 0) & (dist_out <= ring_mm) & fem & ~outer
    if ring.sum() < 4:
        ring = (dist_out > 0) & (dist_out <= ring_mm) & fem
    far = (dist_out > 3 * ring_mm) & (dist_out <= 6 * ring_mm) & fem
    grain = img - ndi.gaussian_filter(img, 1.0, mode="nearest")
    grad = np.sqrt(sum(g * g for g in np.gradient(img, *sp)))

    i_mean = float(img[interior].mean())
    r_mean = float(img[ring].mean()) if ring.any() else float("nan")
    contrast = r_mean - i_mean
    safe = contrast if abs(contrast) > 1e-3 else np.sign(contrast or 1.0) * 1e-3

    def between(region: np.ndarray) -> float:
        return float((img[region].mean() - i_mean) / safe) if region.any() else float("nan")

    g_int = _robust_std(grain[interior])
    g_far = _robust_std(grain[far]) if far.sum() >= 8 else float("nan")
    return {
        "log_volume_mm3": float(np.log10(mask.sum() * float(np.prod(sp)))),
        "interior_mean": i_mean,
        "interior_std": float(img[interior].std()),
        "ring_mean": r_mean,
        "ring_std": float(img[ring].std()) if ring.any() else float("nan"),
        "contrast": contrast,
        "edge_inner": between(boundary),
        "edge_outer": between(outer),
        "edge_gradient": float(grad[boundary].mean() / abs(safe)) if boundary.any() else float("nan"),
        "grain_interior": g_int,
        "grain_ring": _robust_std(grain[ring]),
        "grain_far": g_far,
        "grain_ratio": float(g_int / g_far) if g_far and np.isfinite(g_far) and g_far > 0 else float("nan"),
        "surface_contact": contact,
    }


def lesion_patch(image: np.ndarray, mask: np.ndarray, size: int) -> np.ndarray:
    """A ``size``^3 patch of ``image`` centred on the mask's centroid (edge values repeated)."""
    centre = np.rint(np.argwhere(mask).mean(axis=0)).astype(int)
    lo = centre - size // 2
    hi = lo + size
    shape = np.asarray(image.shape)
    c_lo, c_hi = np.clip(lo, 0, shape), np.clip(hi, 0, shape)
    crop = np.asarray(image[tuple(slice(int(a), int(b)) for a, b in zip(c_lo, c_hi))], dtype=np.float32)
    width = [(int(a), int(b)) for a, b in zip(c_lo - lo, hi - c_hi)]
    return np.ascontiguousarray(np.pad(crop, width, mode="edge") if any(sum(w) for w in width) else crop)

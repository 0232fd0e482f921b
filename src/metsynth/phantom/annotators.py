"""Simulated operators: lesion masks that disagree with the exact outline the way people do.

Each operator has habits (an outward or inward bias of the boundary, the size of their random
hand jitter, whether thin parts get lost) and each round draws a new jitter and a slightly
different bias. Jitter is a smooth random displacement of the boundary, correlated in-plane and
less across slices (people draw slice by slice). Holes are filled, the drawing stays near the
bone, and a novice may miss a small lesion entirely.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi

from ..boxes import index_box
from ..seeds import PHANTOM_ANNOTATOR
from .config import AnnotatorProfile
from .fields import F32, Grid, smooth_noise
from .lesions import LesionShape

_CROSS = ndi.generate_binary_structure(3, 1)
REFERENCE_VOXEL_MM = 0.8  # voxel size at which the profiles' millimetre errors apply as given


@dataclass
class AnnotationDraw:
    """What one operator does in one round (drawn before anything is drawn on the image)."""

    annotator: str
    round: int
    expertise: str
    bias_mm: float
    missed: list[int]  # indices of lesions not segmented at all
    seed: int

    def as_dict(self) -> dict:
        return asdict(self)


def draw_annotations(rng: np.random.Generator, profiles: dict[str, AnnotatorProfile],
                     lesion_volumes: list[float]) -> list[AnnotationDraw]:
    draws = []
    for name, prof in profiles.items():
        for rnd in range(1, prof.rounds + 1):
            bias = float(prof.bias_mm + rng.normal(0, prof.round_bias_sd_mm))
            missed = [i + 1 for i, v in enumerate(lesion_volumes)
                      if v < prof.small_lesion_mm3 and rng.random() < prof.miss_small_probability]
            if len(missed) == len(lesion_volumes) and missed:
                missed = missed[:-1]  # everybody sees at least one lesion of a metastatic case
            draws.append(AnnotationDraw(name, rnd, prof.expertise, bias, missed, int(rng.integers(0, 2**31 - 1))))
    return draws


@dataclass
class Reference:
    """One exact lesion in a padded box, with its signed distance map (mm, negative inside)."""

    index: int
    box: tuple[slice, slice, slice]
    sdf: np.ndarray
    near_bone: np.ndarray  # femur dilated by one voxel, in the box


def resolution_scale(spacing) -> float:
    """How much larger people's errors get on coarse images (they draw on voxels): 1 up to
    ``REFERENCE_VOXEL_MM``, then growing with the square root of the voxel size."""
    return max(1.0, float(np.mean(spacing)) / REFERENCE_VOXEL_MM) ** 0.5


def references(shapes: list[LesionShape], femur: np.ndarray, grid: Grid, reach_mm: float) -> list[Reference]:
    """Distance maps of each lesion's exact mask, shared by every operator and round."""
    spacing = np.asarray(grid.spacing)
    h = float(spacing.min())
    out = []
    for shape in shapes:
        if not shape.mask.any():
            continue
        where = np.argwhere(shape.mask)
        start = np.array([s.start for s in shape.box])
        pad = np.ceil(reach_mm / spacing).astype(int) + 2
        lo, hi = index_box(where + start, grid.shape, pad)
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        ref = np.zeros(tuple(int(v) for v in hi - lo), dtype=bool)
        idx = where + start - lo
        ref[idx[:, 0], idx[:, 1], idx[:, 2]] = True
        inside = ndi.distance_transform_edt(ref, sampling=spacing)
        outside = ndi.distance_transform_edt(~ref, sampling=spacing)
        sdf = np.where(ref, -(inside - 0.5 * h), outside - 0.5 * h).astype(F32)
        near = ndi.binary_dilation(femur[box], structure=_CROSS)
        out.append(Reference(shape.params.index, box, sdf, near))
    return out


def annotate(draw: AnnotationDraw, profile: AnnotatorProfile, refs: list[Reference], grid: Grid) -> np.ndarray:
    """One operator's mask (uint8, full grid) for the lesions of a case."""
    out = np.zeros(grid.shape, dtype=np.uint8)
    spacing = np.asarray(grid.spacing)
    coarse = resolution_scale(grid.spacing)
    ss = np.random.SeedSequence([draw.seed, PHANTOM_ANNOTATOR])
    for ref, seq in zip(refs, ss.spawn(len(refs))):
        if ref.index in draw.missed:
            continue
        rng = np.random.default_rng(seq)
        scale = profile.jitter_scale_mm
        sigma = (0.4 * scale / spacing[0], scale / spacing[1], scale / spacing[2])
        shift = F32(draw.bias_mm * coarse) + F32(profile.jitter_mm * coarse) * smooth_noise(rng, ref.sdf.shape, sigma)
        drawn = ref.sdf < shift
        opening = int(round(profile.opening_mm / float(spacing.mean())))
        if opening:
            drawn = ndi.binary_opening(drawn, structure=_CROSS, iterations=opening)
        drawn = ndi.binary_fill_holes(drawn)
        drawn &= ref.near_bone
        lab, n = ndi.label(drawn, structure=_CROSS)
        if n > 1:
            sizes = ndi.sum(drawn, lab, index=np.arange(1, n + 1))
            keep = np.flatnonzero(sizes >= max(3, 0.05 * sizes.max())) + 1
            drawn = np.isin(lab, keep)
        out[ref.box] |= drawn.astype(np.uint8)
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total

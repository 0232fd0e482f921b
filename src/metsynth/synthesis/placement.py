"""Where a lesion goes: femoral regions and random placement inside the femur mask.

**Regions** (:func:`femur_regions`) are derived from the femur mask's geometry by a documented
heuristic, good enough to weight placement and to describe lesions (not an anatomical atlas):

1. the long axis is the first principal axis of the mask's voxels (in mm), pointed towards the
   patient's superior side (the proximal femur is superior in a CT of the hip);
2. the *shaft axis* joins the centroids of the lowest 15 % and of the next 15 % of the mask along
   that axis (kept only if within 35 degrees of the long axis); the shaft radius ``R`` is the
   90th percentile of the distance to this axis over the lowest 30 %;
3. the **head** centre is the deepest point of the mask (maximum of the distance transform, in
   mm) among voxels farther than ``R`` from the shaft axis in the upper half; its depth is the
   head radius ``r``; the direction from the shaft axis to the head is *medial* (coordinate
   ``u``); the head is the ball of radius ``1.05 r`` about it, plus the voxels within ``1.3 r``
   that are not more than ``r / 2`` closer to the shaft than the centre (a head is not a perfect
   ball), plus everything medial of the centre;
4. the **neck** is the rest of the mask that is medial of the shaft axis by more than ``R / 2``
   (``u > R / 2`` along the medial direction) and less than ``2 r`` below the head centre;
5. the **trochanter** region is the rest of the mask less than ``2.75 r`` below the head centre
   (greater and lesser trochanters, intertrochanteric region);
6. the **shaft** is everything below.

A mask without an off-axis head (e.g. a crop of the shaft only) is all shaft.

**Placement** (:func:`draw_placement`) picks a position for a transformed lesion such that at
least ``min_inside_fraction`` of its voxels lie in the femur mask (default: all). With region
weights, a region is first drawn with probability proportional to its weight (among regions where
the lesion fits), then a position in it. Candidate centres are femur voxels drawn uniformly and
accepted if the lesion fits (``max_tries`` tries, cheap); if none is accepted, every position is
tested exactly (an FFT correlation of the femur mask with the lesion mask) and one valid position
is drawn uniformly; both give the uniform distribution over valid centres. If the lesion fits
nowhere, the attempt is dropped with that reason.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from ..bone.contact import surface_contact
from ..config import Settings
from .transforms import TransformedLesion

__all__ = [
    "REGIONS",
    "FemurSite",
    "NoPlacement",
    "PlacementConfig",
    "PlacementParams",
    "draw_placement",
    "femur_regions",
]

REGIONS = ("head", "neck", "trochanter", "shaft")  # region codes 1..4 in region maps; 0 = outside


class PlacementConfig(Settings):
    """Where lesions may be pasted."""

    min_inside_fraction: float = Field(
        1.0, gt=0, le=1, description="Smallest fraction of the lesion's voxels that must lie inside the "
        "healthy femur mask (1 = entirely inside).")
    clip_to_femur: bool = Field(
        True, description="Cut the pasted lesion to the femur mask (matters when min_inside_fraction < 1; "
        "the cut lesion can then fall under the size limit and be dropped, as in the paper).")
    region_weights: dict[str, float] | None = Field(
        None, description="Probability weights of the femoral regions (head, neck, trochanter, shaft); "
        "a region left out or weighted 0 gets no lesion. None: uniform over all femur voxels (paper).")
    same_region_as_donor: bool = Field(
        False, description="Paste each lesion in the femoral region it was found in (head, neck, trochanter or "
        "shaft, from the bank), so that it keeps its surroundings: a lesion of the marrow-filled shaft is not "
        "pasted into the dense cancellous bone of the head, where it would stand out far more than any real "
        "one. Where it does not fit there, the other regions are tried (region_weights). Not in the paper.")
    match_donor_contact: int = Field(
        0, ge=0, description="Draw this many valid positions and keep the one where the lesion touches the "
        "femur's surface as much as its donor did (the bank's surface_contact: the share of the one-voxel shell "
        "around the lesion that lies outside its femur mask; measured on the lesion as pasted, i.e. cut to the "
        "femur with clip_to_femur), so that a lesion found against the cortex, or through it, is pasted against "
        "the cortex, not in the middle of the marrow. With min_inside_fraction < 1 it may cross the surface and be "
        "cut there: a breach of the cortex. 0 (paper): the first valid position, uniform over the femur. Not in "
        "the paper.")
    max_tries: int = Field(200, ge=1, description="Random candidate positions tried before the exact search.")
    exact_fallback: bool = Field(
        True, description="When the random tries fail, test every position exactly (slower, rare).")

    @field_validator("region_weights")
    @classmethod
    def _weights(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        import difflib

        for name, weight in value.items():
            if name not in REGIONS:
                hint = difflib.get_close_matches(name, REGIONS, n=1)
                extra = f"; did you mean '{hint[0]}'?" if hint else ""
                raise ValueError(f"unknown femoral region {name!r} (choose from {', '.join(REGIONS)}){extra}")
            if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
                raise ValueError(f"region weight of {name!r} must be a number >= 0, got {weight!r}")
        if not any(w > 0 for w in value.values()):
            raise ValueError("region_weights: at least one region needs a weight > 0")
        return {name: float(value[name]) for name in REGIONS if name in value}


# ---------------------------------------------------------------------------- regions
def femur_regions(femur: np.ndarray, spacing: tuple[float, float, float],
                  direction: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Region map (uint8: 0 outside, 1 head, 2 neck, 3 trochanter, 4 shaft) and the geometry found.

    ``direction`` is the volume's direction matrix (array order, see :mod:`metsynth.volume`),
    used only to point the long axis superiorly.
    """
    from scipy import ndimage

    femur = np.asarray(femur).astype(bool)
    regions = np.zeros(femur.shape, np.uint8)
    if not femur.any():
        return regions, {"method": "empty"}
    idx = np.argwhere(femur)
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    sp = np.asarray(spacing, dtype=np.float64)
    pts = (idx - lo) * sp  # mm, array frame, relative to the bounding box
    direction = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
    superior = direction[0, :]  # world-z component of each array axis = superior in array frame

    sample = pts[:: max(1, len(pts) // 200_000)]
    mean = sample.mean(axis=0)
    _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
    axis = vt[0] if float(vt[0] @ superior) >= 0 else -vt[0]
    s = (pts - mean) @ axis
    s_min, length = float(s.min()), float(s.max() - s.min())
    if length <= 0:
        regions[tuple(idx.T)] = 4
        return regions, {"method": "flat"}
    low1 = s < s_min + 0.15 * length
    low2 = (s >= s_min + 0.15 * length) & (s < s_min + 0.30 * length)
    shaft_dir = axis
    base = pts[low1].mean(axis=0) if low1.any() else mean
    if low1.any() and low2.any():
        d = pts[low2].mean(axis=0) - base
        if np.linalg.norm(d) > 0:
            d = d / np.linalg.norm(d)
            if float(d @ axis) >= math.cos(math.radians(35)):
                shaft_dir = d
    rel = pts - base
    s = rel @ shaft_dir
    radial = rel - s[:, None] * shaft_dir
    r = np.linalg.norm(radial, axis=1)
    s_min, s_max = float(s.min()), float(s.max())
    bottom = s < s_min + 0.30 * (s_max - s_min)
    shaft_radius = float(np.percentile(r[bottom], 90)) if bottom.any() else float(np.percentile(r, 50))

    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    depth = ndimage.distance_transform_edt(femur[box], sampling=sp)[tuple((idx - lo).T)]
    candidates = (r > shaft_radius) & (s > s_min + 0.5 * (s_max - s_min))
    info: dict[str, Any] = {
        "method": "heuristic",
        "long_axis": [float(x) for x in shaft_dir],
        "shaft_radius_mm": shaft_radius,
    }
    code = np.full(len(pts), 4, np.uint8)
    if candidates.any():
        i_head = int(np.flatnonzero(candidates)[np.argmax(depth[candidates])])
        head_radius = float(depth[i_head])
        head_centre = pts[i_head]
        medial = radial[i_head] / max(float(r[i_head]), 1e-9)
        u = radial @ medial
        s_head, u_head = float(s[i_head]), float(u[i_head])
        upper = s > s_head - 2.0 * head_radius
        dist = np.linalg.norm(pts - head_centre, axis=1)
        head = ((dist <= 1.05 * head_radius) | ((dist <= 1.3 * head_radius) & (u >= u_head - 0.5 * head_radius))
                | (upper & (u > u_head)))
        neck = ~head & upper & (u > 0.5 * shaft_radius)
        troch = ~head & ~neck & (s >= s_head - 2.75 * head_radius)
        code[troch] = 3
        code[neck] = 2
        code[head] = 1
        info.update({
            "head_centre_index": [float(x) for x in head_centre / sp + lo],
            "head_radius_mm": head_radius,
        })
    regions[tuple(idx.T)] = code
    info["voxels"] = {name: int(np.sum(code == k + 1)) for k, name in enumerate(REGIONS)}
    return regions, info


@dataclass
class FemurSite:
    """A healthy femur ready for placement: mask, region map, and cached candidate voxels."""

    femur: np.ndarray  # bool
    regions: np.ndarray  # uint8 codes, see REGIONS
    info: dict[str, Any] = field(default_factory=dict)
    _candidates: dict[str | None, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def from_mask(cls, femur: np.ndarray, spacing: tuple[float, float, float],
                  direction: np.ndarray | None = None) -> "FemurSite":
        femur = np.asarray(femur).astype(bool)
        regions, info = femur_regions(femur, spacing, direction)
        return cls(femur, regions, info)

    def contact_at(self, mask: np.ndarray, corner: np.ndarray) -> float:
        """How much ``mask`` (a box whose [0, 0, 0] is at index ``corner``) touches the femur's
        surface: :func:`metsynth.bone.contact.surface_contact`."""
        return surface_contact(mask, self.femur, corner)

    def contact_of(self, index: np.ndarray) -> float:
        """:meth:`contact_at` of a lesion given by its voxel indices (``(n, 3)``)."""
        index = np.asarray(index)
        lo = index.min(axis=0)
        mask = np.zeros(tuple(index.max(axis=0) - lo + 1), bool)
        mask[tuple((index - lo).T)] = True
        return self.contact_at(mask, lo)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.femur.shape)  # type: ignore[return-value]

    def candidates(self, region: str | None) -> np.ndarray:
        """Flat indices of the femur voxels of a region (``None``: the whole femur)."""
        if region not in self._candidates:
            if region is None:
                self._candidates[None] = np.flatnonzero(self.femur)
            else:
                self._candidates[region] = np.flatnonzero(self.regions == REGIONS.index(region) + 1)
        return self._candidates[region]

    def region_at(self, index: tuple[int, int, int] | np.ndarray) -> str:
        code = int(self.regions[tuple(int(i) for i in index)])
        return REGIONS[code - 1] if code else "outside"

    def majority_region(self, mask_index: np.ndarray) -> str:
        """Most frequent region among voxel indices (``(n, 3)``); 'outside' if none in the femur."""
        codes = self.regions[tuple(np.asarray(mask_index).T)]
        codes = codes[codes > 0]
        if codes.size == 0:
            return "outside"
        return REGIONS[int(np.bincount(codes, minlength=5)[1:].argmax())]


@dataclass(frozen=True)
class PlacementParams:
    """The drawn position of a lesion (JSON-ready)."""

    centre: tuple[int, int, int]  # voxel of the healthy image that receives the lesion's anchor
    corner: tuple[int, int, int]  # index of the lesion patch's [0, 0, 0] voxel in the healthy image
    region: str  # region of ``centre``
    requested_region: str | None  # region drawn from the weights (None without weights)
    inside_fraction: float
    tries: int
    method: str  # "sampled" or "exact"
    contact: float | None = None  # with match_donor_contact: the lesion's surface contact (FemurSite.contact_at)
    donor_contact: float | None = None  # and its donor's

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class NoPlacement:
    """No valid position: the reason, recorded in the dropped attempt's sidecar."""

    reason: str
    tries: int


def draw_placement(rng: np.random.Generator, site: FemurSite, lesion: TransformedLesion,
                   config: PlacementConfig, donor_region: str | None = None,
                   donor_contact: float | None = None) -> PlacementParams | NoPlacement:
    """Draw a position for ``lesion`` in ``site`` (see the module docstring). ``donor_region``: the
    region the lesion came from, tried first when ``config.same_region_as_donor``; ``donor_contact``:
    how much it touched its femur's surface, matched with ``config.match_donor_contact``."""
    matching = config.match_donor_contact > 0 and donor_contact is not None
    mask = lesion.mask.astype(bool)
    where = np.argwhere(mask)
    m_lo, m_hi = where.min(axis=0), where.max(axis=0) + 1
    mb = mask[tuple(slice(a, b) for a, b in zip(m_lo, m_hi))]
    anchor_b = np.asarray(lesion.anchor) - m_lo
    n = int(mb.sum())
    need = max(1, math.ceil(config.min_inside_fraction * n - 1e-9))
    shape = np.asarray(site.shape)

    if config.region_weights is None:
        pool: list[tuple[str | None, float]] = [(None, 1.0)]
    else:
        pool = [(name, w) for name, w in config.region_weights.items() if w > 0 and site.candidates(name).size]
    first = donor_region if config.same_region_as_donor and donor_region in REGIONS else None
    tries = 0
    while pool:
        if first is not None:  # the donor's region, before any other
            pool = [(first, 1.0)] + [(name, w) for name, w in pool if name != first]
            pick, first = 0, None
        else:
            weights = np.asarray([w for _, w in pool])
            pick = int(rng.choice(len(pool), p=weights / weights.sum())) if len(pool) > 1 else 0
        region = pool[pick][0]
        cand = site.candidates(region)
        if cand.size == 0:
            pool.pop(pick)
            continue
        found: list[tuple[float, float, np.ndarray, np.ndarray, int]] = []  # (gap, contact, centre, corner, inside)
        for _ in range(config.max_tries):
            tries += 1
            centre = np.asarray(np.unravel_index(int(cand[int(rng.integers(cand.size))]), site.shape))
            corner_b = centre - anchor_b
            if np.any(corner_b < 0) or np.any(corner_b + mb.shape > shape):
                continue
            kept = site.femur[tuple(slice(a, a + s) for a, s in zip(corner_b, mb.shape))] & mb
            inside = int(np.count_nonzero(kept))
            if inside < need:
                continue
            if not matching:
                return _params(centre, corner_b - m_lo, site, region, inside / n, tries, "sampled")
            # the lesion as it will be pasted: cut to the femur (clip_to_femur), like the donor's own label
            contact = site.contact_at(kept if config.clip_to_femur else mb, corner_b)
            found.append((abs(contact - float(donor_contact)), contact, centre, corner_b, inside))  # type: ignore[arg-type]
            if len(found) == config.match_donor_contact:
                break
        if found:  # the position whose contact is nearest the donor's (the first drawn among equals)
            _, contact, centre, corner_b, inside = min(found, key=lambda f: f[0])
            return replace(_params(centre, corner_b - m_lo, site, region, inside / n, tries, "sampled"),
                           contact=round(contact, 4), donor_contact=round(float(donor_contact), 4))  # type: ignore[arg-type]
        if config.exact_fallback:
            found = _exact(rng, site, mb, anchor_b, need, cand)
            if found is not None:
                centre, inside = found
                return _params(centre, centre - anchor_b - m_lo, site, region, inside / n, tries, "exact")
        pool.pop(pick)
    where_txt = "the femur" if config.region_weights is None else "any weighted femoral region"
    return NoPlacement(
        f"no position in {where_txt} holds >= {config.min_inside_fraction:.0%} of the lesion "
        f"({n} voxels) inside the femur mask", tries)


def _params(centre: np.ndarray, corner: np.ndarray, site: FemurSite, region: str | None, fraction: float,
            tries: int, method: str) -> PlacementParams:
    return PlacementParams(
        centre=tuple(int(c) for c in centre),  # type: ignore[arg-type]
        corner=tuple(int(c) for c in corner),  # type: ignore[arg-type]
        region=site.region_at(centre),
        requested_region=region,
        inside_fraction=float(fraction),
        tries=int(tries),
        method=method,
    )


def _exact(rng: np.random.Generator, site: FemurSite, mb: np.ndarray, anchor_b: np.ndarray, need: int,
           cand: np.ndarray) -> tuple[np.ndarray, int] | None:
    """All valid candidate centres by FFT correlation; draw one uniformly."""
    from scipy.signal import fftconvolve

    shape = np.asarray(site.shape)
    if np.any(mb.shape > shape):
        return None
    counts = fftconvolve(site.femur.astype(np.float32), mb[::-1, ::-1, ::-1].astype(np.float32), mode="valid")
    counts = np.rint(counts).astype(np.int64)  # counts[t] = voxels of the lesion inside with corner t
    centres = np.stack(np.unravel_index(cand, site.shape), axis=1)
    corners = centres - anchor_b
    ok = np.all(corners >= 0, axis=1) & np.all(corners <= np.asarray(counts.shape) - 1, axis=1)
    centres, corners = centres[ok], corners[ok]
    if len(corners) == 0:
        return None
    inside = counts[tuple(corners.T)]
    valid = inside >= need
    if not valid.any():
        return None
    choice = int(rng.integers(int(valid.sum())))
    return centres[valid][choice], int(inside[valid][choice])
